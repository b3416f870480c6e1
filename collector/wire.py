"""Byte-level reads and edits of a serialised trace export request.

Parsing a request into protobuf objects and serialising it again costs ~4 µs per 2 KB LLM span here, more
than a processor's own work. Most of what the LLM processors do to a span is small: add or replace a few
attributes, drop the span. :class:`TraceWire` lays the request out once (where each span is in the bytes)
and records such edits per span; :meth:`TraceWire.render` writes the edited request by copying the
unchanged bytes and fixing the length prefixes, which protobuf allows because a repeated field's entries
may come in any order and a message's fields may be appended.

Spans are numbered in message order (resource_spans, scope_spans, spans), the order in which the parsed
request lists them. ``Batch.wire()`` gives the TraceWire of a batch; processors that only need trace ids,
status and times read :meth:`TraceWire.lean`, a parse of the request that skips attribute and event
contents.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from collector.pdata import python_to_anyvalue

try:  # the native walk (collector/_wirec.c), built at install where a C compiler is at hand
    from collector import _wirec as _wirec  # noqa: PLC0414 - re-exported: genai reads it here
except ImportError:  # pragma: no cover - depends on the install
    _wirec = None  # type: ignore[assignment]

__all__ = ["TraceWire", "encode_attribute", "iter_fields", "read_varint", "varint"]


def varint(n: int) -> bytes:
    """The protobuf varint encoding of a non-negative ``n``."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes([i]) for i in range(0x80)]


_SPAN_HEADERS: dict[int, bytes] = {}


def _span_header(ln: int) -> bytes:
    """Tag and length of a span of ``ln`` bytes in a ScopeSpans (cached for lengths below 16 KiB)."""
    hd = b"\x12" + varint(ln)
    if ln < 0x4000:
        _SPAN_HEADERS[ln] = hd
    return hd


def read_varint(b: bytes, i: int) -> tuple[int, int]:
    """The varint at ``b[i]``: (value, position after it)."""
    x = 0
    shift = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def iter_fields(b: bytes, i: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, field start, value start, value end) of each field of one serialised message; for
    length-delimited fields the value range excludes the length prefix."""
    while i < end:
        start = i
        tag = b[i]
        if tag < 0x80:
            i += 1
        else:
            tag, i = read_varint(b, i)
        w = tag & 7
        if w == 2:
            ln = b[i]
            if ln < 0x80:
                i += 1
            else:
                ln, i = read_varint(b, i)
            vs = i
            i += ln
        elif w == 0:
            vs = i
            _, i = read_varint(b, i)
        elif w == 1:
            vs = i
            i += 8
        elif w == 5:
            vs = i
            i += 4
        elif w == 3:  # a group (proto2): skip to its end tag
            vs = i
            depth = 1
            while depth:
                if i >= end:
                    raise ValueError("unterminated group")
                t, i = read_varint(b, i)
                tw = t & 7
                if tw == 3:
                    depth += 1
                elif tw == 4:
                    depth -= 1
                elif tw == 0:
                    _, i = read_varint(b, i)
                elif tw == 1:
                    i += 8
                elif tw == 5:
                    i += 4
                elif tw == 2:
                    ln, i = read_varint(b, i)
                    i += ln
                else:
                    raise ValueError(f"unsupported wire type {tw}")
        else:
            raise ValueError(f"unsupported wire type {w}")
        if i > end:
            raise ValueError("truncated message")
        yield tag >> 3, start, vs, i


def encode_attribute(key: str, value: Any) -> bytes:
    """A span attribute as it appears in a serialised Span: field 9, a KeyValue."""
    t = type(value)
    if t is float:
        av = b"\x21" + _pack_d(value)
    elif t is str:
        vb = value.encode("utf-8", "surrogatepass")
        av = b"\x0a" + varint(len(vb)) + vb
    elif t is bool:
        av = b"\x10\x01" if value else b"\x10\x00"
    elif t is int and 0 <= value < 1 << 63:
        av = b"\x18" + varint(value)
    else:
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue

        m = AnyValue()
        python_to_anyvalue(value, m)
        av = m.SerializeToString()
    kb = key.encode()
    kv = b"\x0a" + varint(len(kb)) + kb + b"\x12" + varint(len(av)) + av
    return b"\x4a" + varint(len(kv)) + kv


_pack_d = struct.Struct("<d").pack


class TraceWire:
    """The layout of one serialised ``ExportTraceServiceRequest`` and the edits made to its spans.

    ``spans[i]`` is ``(field start, body start, body end)`` of span ``i`` in ``data``. Edits: attributes
    appended (``extra``), byte ranges cut out of a span (``cut``, e.g. an attribute being replaced), spans
    dropped (``dropped``), Resources replaced (``res_body``). ``values`` is filled by
    ``collector.genai.wire_values``: per span, the Python values of the attribute keys the processors asked
    for; ``ranges`` caches where some of those attributes are in ``data`` (for writers replacing them)."""

    __slots__ = ("_fields", "_head", "_lean", "_resources", "_spans", "cut", "data", "dropped", "extra", "ranges",
                 "res_body", "values")

    def __init__(self, data: bytes, lazy: bool = False) -> None:
        self.data = data
        self._head: list[tuple[int, int]] | None = None  # fields of the request other than resource_spans
        # per resource_spans: (its fields other than scope_spans as raw ranges, [(scope's other fields, first
        # span, span count)])
        self._resources: list[tuple[list[tuple[int, int]], list[tuple[list[tuple[int, int]], int, int]]]] | None \
            = None
        self._spans: list[tuple[int, int, int]] | None = None
        self.extra: dict[int, dict[str, bytes]] = {}
        self.cut: dict[int, list[tuple[int, int]]] = {}
        self.dropped: set[int] = set()
        self.res_body: dict[int, bytes] = {}
        self.values: list[dict[str, Any]] | None = None
        self.ranges: dict[int, dict[str, tuple[int, int]]] | None = None
        self._lean: Any = None
        self._fields: tuple[list[bytes], list[int], list[int], list[int]] | None = None
        if not lazy:
            self._layout()

    @property
    def spans(self) -> list[tuple[int, int, int]]:
        """Per span, (field start, body start, body end) in ``data``."""
        if self._spans is None:
            self._layout()
        return self._spans  # type: ignore[return-value]

    @property
    def resources(self) -> list[tuple[list[tuple[int, int]], list[tuple[list[tuple[int, int]], int, int]]]]:
        """Per resource_spans: its fields other than scope_spans (byte ranges), and per scope its fields other
        than spans, its first span and its span count."""
        if self._resources is None:
            self._layout()
        return self._resources  # type: ignore[return-value]

    def _layout(self) -> None:
        b = self.data
        spans: list[tuple[int, int, int]] = []
        resources: list[Any] = []
        head: list[tuple[int, int]] = []
        append = spans.append
        for f, s0, vs, ve in iter_fields(b, 0, len(b)):
            if f != 1 or b[s0] != 0x0A:
                head.append((s0, ve))
                continue
            others: list[tuple[int, int]] = []
            scopes: list[tuple[list[tuple[int, int]], int, int]] = []
            for f2, s2, vs2, ve2 in iter_fields(b, vs, ve):
                if f2 != 2 or b[s2] != 0x12:
                    others.append((s2, ve2))
                    continue
                first = len(spans)
                if _wirec is not None:
                    try:  # the spans laid out in C
                        scopes.append((_wirec.scope_layout(b, vs2, ve2, spans), first, len(spans) - first))
                        continue
                    except ValueError:  # (groups, which the C walk does not take): the Python loop says
                        del spans[first:]
                sc_others: list[tuple[int, int]] = []
                i = vs2
                while i < ve2:  # the spans: one field each, read inline (the loop runs once per span)
                    if b[i] == 0x12:
                        ln = b[i + 1]
                        if ln < 0x80:
                            j = i + 2
                        elif b[i + 2] < 0x80:
                            ln = (ln & 0x7F) | (b[i + 2] << 7)
                            j = i + 3
                        else:
                            ln, j = read_varint(b, i + 1)
                        if j + ln > ve2:
                            raise ValueError("truncated message")
                        append((i, j, j + ln))
                        i = j + ln
                    else:  # another field of the scope (scope, schema_url): the next field only
                        for _f3, s3, _vs3, ve3 in iter_fields(b, i, ve2):
                            sc_others.append((s3, ve3))
                            i = ve3
                            break
                scopes.append((sc_others, first, len(spans) - first))
            resources.append((others, scopes))
        self._spans, self._resources, self._head = spans, resources, head

    # -- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.spans)

    @property
    def dirty(self) -> bool:
        return bool(self.extra or self.cut or self.dropped or self.res_body)

    def span_count(self) -> int:
        """Spans after the edits (dropped ones not counted)."""
        return len(self.spans) - len(self.dropped)

    def span_bytes(self, i: int) -> bytes:
        """The serialised Span ``i`` with its edits."""
        _o, s, e = self.spans[i]
        return b"".join(self._pieces(i, s, e, memoryview(self.data)))

    def lean(self) -> Any:
        """The request parsed as ``LeanTraces``: per span only trace_id, span_id, times and status (the rest
        stays unparsed), resource attributes in full; or the full parse of ``data`` when the batch had it. It
        is a parse of ``data``, the bytes before the edits: right for those fields, which no edit here changes,
        and for span ``i`` being span ``i``."""
        if self._lean is None:
            lean = LeanTraces.FromString(self.data)
            lean.DiscardUnknownFields()  # attributes, events: most of the bytes, already in ``data``
            self._lean = lean
        return self._lean

    def span_fields(self) -> tuple[list[bytes], list[int], list[int], list[int]]:
        """Trace id, status code, start and end time of every span, as four lists in span order: a native walk
        of ``data`` (collector/_wirec.c), or read off :meth:`lean` without it. Like :meth:`lean`, of the bytes
        before the edits."""
        if self._fields is None:
            if _wirec is not None:
                self._fields = _wirec.span_fields(self.data, self.spans)
            else:
                sps = [sp for rs in self.lean().resource_spans for ss in rs.scope_spans for sp in ss.spans]
                self._fields = ([sp.trace_id for sp in sps], [sp.status.code for sp in sps],
                                [sp.start_time_unix_nano for sp in sps], [sp.end_time_unix_nano for sp in sps])
        return self._fields

    def resource(self, r: int) -> Any:
        """The Resource of resource_spans ``r``, parsed (a new message each call; edit it, then
        :meth:`set_resource`)."""
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource

        body = self.res_body.get(r)
        if body is None:
            rr = self._resource_range(r)
            body = self.data[rr[0]:rr[1]] if rr is not None else b""
        return Resource.FromString(body)

    def _resource_range(self, r: int) -> tuple[int, int] | None:
        """The byte range of resource_spans ``r``'s Resource message in ``data`` (None without one)."""
        b = self.data
        rr = None
        for s, e in self.resources[r][0]:
            if b[s] == 0x0A:
                _ln, vs = read_varint(b, s + 1)
                rr = (vs, e)
        return rr

    def item_layout(self) -> list[tuple[tuple[int, int] | None, list[tuple[int, int]]]]:
        """Per resource_spans, the byte range of its Resource (None without one) and of each span's body:
        the form of ``collector.genai.wire_layout``."""
        spans = self.spans
        body = itemgetter(1, 2)
        out: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]] = []
        for r, (_others, scopes) in enumerate(self.resources):
            items: list[tuple[int, int]] = []
            for _sc, first, n in scopes:
                items += map(body, spans[first:first + n])
            out.append((self._resource_range(r), items))
        return out

    # -- editing --------------------------------------------------------------------------------------------
    def append_attribute(self, i: int, key: str, encoded: bytes) -> None:
        """Add (or, called again with the same key, replace) an attribute appended to span ``i``;
        ``encoded`` from :func:`encode_attribute`. The caller makes sure the span does not already have
        ``key`` among its original attributes (:meth:`cut_range` it first)."""
        ex = self.extra.get(i)
        if ex is None:
            self.extra[i] = {key: encoded}
        else:
            ex[key] = encoded

    def cut_range(self, i: int, start: int, end: int) -> None:
        """Leave ``data[start:end]`` (inside span ``i``'s body) out of the span."""
        self.cut.setdefault(i, []).append((start, end))

    def drop(self, i: int) -> None:
        self.dropped.add(i)

    def set_resource(self, r: int, body: bytes) -> None:
        """Replace the Resource of resource_spans ``r`` with another serialised Resource."""
        self.res_body[r] = body

    # -- writing --------------------------------------------------------------------------------------------
    def _pieces(self, i: int, s: int, e: int, mv: memoryview) -> list[Any]:
        """Span ``i``'s body (``mv[s:e]``, ``mv`` a view of ``data``) with its cuts and appended attributes,
        as pieces."""
        cuts = self.cut.get(i)
        if cuts:
            out: list[Any] = []
            pos = s
            for cs, ce in sorted(cuts):
                if cs > pos:
                    out.append(mv[pos:cs])
                pos = max(pos, ce)
            if pos < e:
                out.append(mv[pos:e])
        else:
            out = [mv[s:e]]
        ex = self.extra.get(i)
        if ex:
            out.extend(ex.values())
        return out

    def render(self) -> bytes:
        """The request with the edits applied. Scopes and resources left without spans are left out, as the
        Collector's processors do. One copy of the bytes: the pieces are views into ``data`` until the final
        join."""
        if not self.dirty:
            return self.data
        mv = memoryview(self.data)
        b = self.data
        spans = self.spans
        extra, cut, dropped, res_body = self.extra, self.cut, self.dropped, self.res_body
        vi = varint
        simple = not (cut or dropped)
        hdr = _SPAN_HEADERS
        out: list[Any] = [mv[s:e] for s, e in self._head or ()]
        for r, (others, scopes) in enumerate(self.resources):
            nr = res_body.get(r)
            if nr is None:
                rs_parts: list[Any] = [mv[s:e] for s, e in others]
                rs_len = sum(e - s for s, e in others)
            else:
                hd = b"\x0a" + vi(len(nr))
                rs_parts = [hd, nr]
                rs_len = len(hd) + len(nr)
                for s, e in others:
                    if b[s] != 0x0A:
                        rs_parts.append(mv[s:e])
                        rs_len += e - s
            kept_any = False
            for sc_others, first, n in scopes:
                parts: list[Any] = [mv[s:e] for s, e in sc_others]
                sc_len = sum(e - s for s, e in sc_others)
                if simple and _wirec is not None:  # only attributes appended (the common case): in C
                    body = _wirec.render_spans(b, spans, first, n, extra)
                    parts.append(body)
                    sc_len += len(body)
                elif simple:  # the same, in a shorter loop than the general one
                    append, extend = parts.append, parts.extend
                    for i in range(first, first + n):
                        o, s, e = spans[i]
                        ex = extra.get(i)
                        if ex is None:
                            append(mv[o:e])
                            sc_len += e - o
                            continue
                        vals = ex.values()
                        ln = e - s + sum(map(len, vals))
                        hd = hdr.get(ln) or _span_header(ln)
                        append(hd)
                        append(mv[s:e])
                        extend(vals)
                        sc_len += len(hd) + ln
                if simple:
                    hd = b"\x12" + vi(sc_len)
                    rs_parts.append(hd)
                    rs_parts.extend(parts)
                    rs_len += len(hd) + sc_len
                    kept_any = True
                    continue
                run = -1  # start of a run of unchanged spans, copied in one piece with their tags
                run_end = -1
                kept = 0
                for i in range(first, first + n):
                    o, s, e = spans[i]
                    if i not in extra and i not in dropped and i not in cut:
                        kept += 1
                        if run >= 0 and o != run_end:  # something else between the two spans
                            parts.append(mv[run:run_end])
                            sc_len += run_end - run
                            run = -1
                        if run < 0:
                            run = o
                        run_end = e
                        continue
                    if run >= 0:
                        parts.append(mv[run:run_end])
                        sc_len += run_end - run
                        run = -1
                    if i in dropped:
                        continue
                    kept += 1
                    pcs = self._pieces(i, s, e, mv)
                    ln = sum(map(len, pcs))
                    hd = hdr.get(ln) or _span_header(ln)
                    parts.append(hd)
                    parts.extend(pcs)
                    sc_len += len(hd) + ln
                if run >= 0:
                    parts.append(mv[run:run_end])
                    sc_len += run_end - run
                if n and not kept:
                    continue  # every span of the scope dropped
                kept_any = True
                hd = b"\x12" + vi(sc_len)
                rs_parts.append(hd)
                rs_parts.extend(parts)
                rs_len += len(hd) + sc_len
            if scopes and not kept_any:
                continue
            out.append(b"\x0a" + vi(rs_len))
            out.extend(rs_parts)
        return b"".join(out)

    def rendered(self) -> TraceWire:
        """A TraceWire of :meth:`render`'s bytes (laid out when first used), keeping the span values."""
        if not self.dirty:
            return self
        tw = TraceWire(self.render(), lazy=True)
        if self.values is not None:
            vals = self.values
            dropped = self.dropped
            tw.values = [v for i, v in enumerate(vals) if i not in dropped] if dropped else vals
        return tw


# --- the lean view ---------------------------------------------------------------------------------------
# The fields of a span that tail sampling reads on every span, declared in a message type of our own with
# the OTLP field numbers: a parse of the request as this type reads those and skips the rest (attributes and
# events are most of the bytes).
def _lean_types() -> Any:
    import opentelemetry.proto.trace.v1.trace_pb2  # noqa: F401 - registers the OTLP types in the pool

    pool = descriptor_pool.Default()
    name = "llm_collector/lean_trace.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        F = descriptor_pb2.FieldDescriptorProto
        fd = descriptor_pb2.FileDescriptorProto(
            name=name, package="llm_collector.lean", syntax="proto3",
            dependency=["opentelemetry/proto/trace/v1/trace.proto", "opentelemetry/proto/resource/v1/resource.proto"])
        span = fd.message_type.add(name="Span")
        for fname, num, typ in (("trace_id", 1, F.TYPE_BYTES), ("span_id", 2, F.TYPE_BYTES),
                                ("start_time_unix_nano", 7, F.TYPE_FIXED64),
                                ("end_time_unix_nano", 8, F.TYPE_FIXED64)):
            span.field.add(name=fname, number=num, type=typ, label=F.LABEL_OPTIONAL)
        span.field.add(name="status", number=15, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                       type_name=".opentelemetry.proto.trace.v1.Status")
        ss = fd.message_type.add(name="ScopeSpans")
        ss.field.add(name="spans", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".llm_collector.lean.Span")
        rs = fd.message_type.add(name="ResourceSpans")
        rs.field.add(name="resource", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                     type_name=".opentelemetry.proto.resource.v1.Resource")
        rs.field.add(name="scope_spans", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".llm_collector.lean.ScopeSpans")
        rq = fd.message_type.add(name="Traces")
        rq.field.add(name="resource_spans", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".llm_collector.lean.ResourceSpans")
        pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("llm_collector.lean.Traces"))


LeanTraces: Any = _lean_types()
