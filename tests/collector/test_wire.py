"""collector/wire.py and genai's wire path: edits made on the bytes give the same request as the same edits
made on parsed protobuf objects, and values read from the bytes equal the attributes' values."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bench.llm_spans import make_request
from collector import genai
from collector.pdata import Batch, Signal, anyvalue_to_python, python_to_anyvalue
from collector.wire import TraceWire, encode_attribute, iter_fields, varint


@pytest.fixture(params=["native", "python"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The native walk and render (collector/_wirec.c), or the Python paths (values from Hyperscan and a
    decode per hit, render in Python): an install without a C compiler has only those."""
    from collector import wire

    if request.param == "python":
        monkeypatch.setattr(wire, "_wirec", None)
    return str(request.param)


def _attrs(span: Span) -> dict[str, object]:
    return {kv.key: anyvalue_to_python(kv.value) for kv in span.attributes}


def _request(n_rs: int = 2, n_scopes: int = 2, n_spans: int = 3) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    k = 0
    for r in range(n_rs):
        rs = req.resource_spans.add()
        a = rs.resource.attributes.add()
        a.key = "service.name"
        a.value.string_value = f"svc-{r}"
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        for s in range(n_scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope-{s}"
            ss.schema_url = "x"
            for _ in range(n_spans):
                sp = ss.spans.add()
                sp.trace_id = bytes([k % 256]) * 16
                sp.span_id = bytes([k % 256]) * 8
                sp.name = f"span {k}"
                sp.start_time_unix_nano = 1_000 + k
                sp.end_time_unix_nano = 2_000 + k
                sp.status.code = 2 if k % 4 == 0 else 1
                for key, val in (("gen_ai.request.model", "gpt-4o"), ("gen_ai.usage.input_tokens", 100 + k),
                                 ("tenant.id", f"t{k % 3}"), ("x.other", "z" * (k * 50)),
                                 ("gen_ai.usage.cost", 0.5 * k)):
                    kv = sp.attributes.add()
                    kv.key = key
                    python_to_anyvalue(val, kv.value)
                ev = sp.events.add()
                ev.name = "gen_ai.choice"
                k += 1
    return req


def _spans(req: ExportTraceServiceRequest) -> list[Span]:
    return [sp for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans]


def test_layout_and_untouched_render_are_the_bytes(walk: str) -> None:
    data = _request().SerializeToString()
    tw = TraceWire(data)
    assert len(tw) == 12
    assert tw.render() is data
    for i, sp in enumerate(_spans(_request())):
        assert Span.FromString(tw.span_bytes(i)) == sp


@pytest.mark.parametrize("kinds", [5, 3])
def test_edits_match_the_same_edits_on_objects(kinds: int, walk: str) -> None:
    """``kinds`` 5: drops, replaced keys (double and string) and appends; 3: appended attributes only and
    untouched spans (the render's short path)."""
    req = _request()
    tw = TraceWire(req.SerializeToString())
    genai.want("gen_ai.usage.cost", "tenant.id", "gen_ai.request.model", "gen_ai.usage.input_tokens", "team")
    vals = genai.wire_values(tw)
    spans = _spans(req)
    rng = random.Random(3)
    dropped = set()
    for i, sp in enumerate(spans):
        assert vals[i] == {k: v for k, v in _attrs(sp).items() if genai.wanted(k)}
        choice = rng.randrange(5) if kinds == 5 else 2 + rng.randrange(2) * 2
        if choice == 0:
            tw.drop(i)
            dropped.add(i)
        elif choice == 1:  # replace an existing key, add a new one
            genai.wire_put(tw, i, "gen_ai.usage.cost", 1.25)
            genai.wire_put(tw, i, "team", "search")
        elif choice == 2:  # a put twice of the same new key
            genai.wire_put(tw, i, "team", "a")
            genai.wire_put(tw, i, "team", "b")
        elif choice == 3:  # a string attribute the span came with, replaced
            genai.wire_put(tw, i, "tenant.id", f"t-new-{i}")
    out = ExportTraceServiceRequest.FromString(tw.render())
    got = _spans(out)
    want = [i for i in range(len(spans)) if i not in dropped]
    assert len(got) == len(want)
    for g, i in zip(got, want):
        orig = _attrs(spans[i])
        a = _attrs(g)
        assert len(a) == len(g.attributes), "a key appears twice"
        assert g.name == spans[i].name and g.status == spans[i].status and g.events == spans[i].events
        for k, v in a.items():
            assert v == vals[i].get(k, orig.get(k))
    # every resource / scope keeps its own fields, empty scopes are left out
    for rs in out.resource_spans:
        assert rs.resource.attributes[0].key == "service.name" and rs.schema_url
        for ss in rs.scope_spans:
            assert ss.spans and ss.scope.name.startswith("scope-") and ss.schema_url == "x"


def test_dropping_every_span_of_a_scope_and_resource() -> None:
    req = _request(2, 2, 2)
    tw = TraceWire(req.SerializeToString())
    for i in (0, 1, 2, 3):  # the whole first resource
        tw.drop(i)
    tw.drop(5)
    out = ExportTraceServiceRequest.FromString(tw.render())
    assert len(out.resource_spans) == 1
    assert [len(ss.spans) for ss in out.resource_spans[0].scope_spans] == [1, 2]
    assert tw.span_count() == 3


def test_batch_keeps_wire_and_objects_apart() -> None:
    req = make_request(20, seed=1)
    b = Batch(Signal.TRACES, None, raw=req.SerializeToString())
    genai.want("gen_ai.usage.cost")
    tw = b.wire()
    vals = genai.wire_values(tw)
    assert all("gen_ai.usage.cost" not in v for v in vals)
    genai.wire_put(tw, 3, "gen_ai.usage.cost", 0.01)
    b.wire_changed()
    assert b.item_count() == 20 and not b.has_bytes
    parsed = b.request  # renders, then parses
    sp = parsed.resource_spans[0].scope_spans[0].spans[3]
    assert _attrs(sp)["gen_ai.usage.cost"] == 0.01
    # values survive the render; a later put of the now-own key replaces it rather than adding one
    tw2 = b.wire()
    assert tw2.values is not None and tw2.values[3]["gen_ai.usage.cost"] == 0.01
    genai.wire_put(tw2, 3, "gen_ai.usage.cost", 0.02)
    b.wire_changed()
    sp = b.request.resource_spans[0].scope_spans[0].spans[3]
    assert [kv.key for kv in sp.attributes].count("gen_ai.usage.cost") == 1
    assert _attrs(sp)["gen_ai.usage.cost"] == 0.02
    # an object change drops the wire
    b.request.resource_spans[0].scope_spans[0].spans[0].name = "x"
    b.modified()
    assert b.wire().values is None


@pytest.mark.parametrize("value", ["short", "é" * 200, 7, -3, 2**40, 1.5, True, [1, "a"], {"k": "v"}, b"\x00\x01"])
def test_encode_attribute_round_trips(value: object, walk: str) -> None:
    sp = Span.FromString(encode_attribute("some.key", value))
    assert sp.attributes[0].key == "some.key"
    assert anyvalue_to_python(sp.attributes[0].value) == value
    genai.want("some.key")
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.append(sp)
    tw = TraceWire(req.SerializeToString())
    assert genai.wire_values(tw)[0]["some.key"] == value


def test_lean_view_reads_ids_times_status() -> None:
    req = _request()
    tw = TraceWire(req.SerializeToString())
    lean = [sp for rs in tw.lean().resource_spans for ss in rs.scope_spans for sp in ss.spans]
    for a, b in zip(lean, _spans(req)):
        assert (a.trace_id, a.span_id, a.start_time_unix_nano, a.end_time_unix_nano, a.status.code) == \
            (b.trace_id, b.span_id, b.start_time_unix_nano, b.end_time_unix_nano, b.status.code)
    assert tw.lean().resource_spans[1].resource.attributes[0].value.string_value == "svc-1"


def test_malformed_bytes_raise_value_error(walk: str) -> None:
    with pytest.raises(ValueError):
        TraceWire(b"\x0a\x05\x12\x09abc")


def test_wire_is_for_trace_batches_only() -> None:
    with pytest.raises(TypeError):
        Batch(Signal.LOGS).wire()


async def test_redaction_without_candidates_leaves_the_bytes() -> None:
    """No detector candidate in a request: redaction neither parses nor changes it, so the processors after
    it on the wire and the exporters reuse the received bytes."""
    from bench.bench_chain import build

    class _Sink:
        def __init__(self) -> None:
            self.got: list[Batch] = []

        async def consume(self, batch: Batch) -> None:
            self.got.append(batch)

    sink = _Sink()
    (red,) = build(["redaction"], sink)
    raw = make_request(5, seed=2).SerializeToString()
    b = Batch(Signal.TRACES, None, raw=raw)
    await red.consume(b)
    assert sink.got == [b] and b.has_bytes and b.to_bytes() is raw and b._request is None


def _kv_bytes(key: bytes, any_value: bytes | None) -> bytes:
    """A span attribute (Span field 9) with raw KeyValue contents, for encodings a producer may send that
    python_to_anyvalue never writes."""
    kv = b"\x0a" + varint(len(key)) + key
    if any_value is not None:
        kv += b"\x12" + bytes([len(any_value)]) + any_value
    return b"\x4a" + bytes([len(kv)]) + kv


def test_native_walk_reads_what_the_python_walk_reads() -> None:
    """collector/_wirec.c (built at install) and genai's Python walk give the same values for every kind of
    AnyValue, odd encodings included; the native module is part of the install on this platform."""
    from collector import _wirec

    long_key = "k." + "x" * 140
    keys = ("gen_ai.request.model", "gen_ai.usage.input_tokens", "tenant.id", "gen_ai.usage.cost", "flag",
            "arr", "empty", "twice", "bad.utf8", "neg", "modèle", long_key)
    genai.want(*keys)
    spans = []
    kinds = ["gpt-4o", 7, -3, 2**62, 1.5, True, False, [1, "a"], {"k": "v"}, b"\x00\x01", "é" * 200]
    for k, val in enumerate(kinds):
        sp = Span(trace_id=bytes([k + 1]) * 16, span_id=bytes([k + 1]) * 8, name=f"s{k}")
        for key in ("gen_ai.request.model", "arr", "modèle", long_key, "other.key"):
            python_to_anyvalue(val, sp.attributes.add(key=key).value)
        ev = sp.events.add(name="e")
        ev.attributes.add(key="tenant.id").value.string_value = "an event's attribute, not the span's"
        spans.append(sp.SerializeToString())
    quoted = _kv_bytes(b"tenant.id", b"\x0a\x03bad")  # an attribute's encoding quoted inside a string value
    spans += [
        _kv_bytes(b"empty", b"") + _kv_bytes(b"flag", None),  # empty AnyValue, KeyValue without a value
        _kv_bytes(b"twice", b"\x0a\x01a") + _kv_bytes(b"twice", b"\x18\x05"),  # the last one counts
        _kv_bytes(b"twice", b"\x0a\x01a\x18\x09"),  # two fields in one AnyValue: the last one counts
        _kv_bytes(b"bad.utf8", b"\x0a\x03a\xffb"),
        _kv_bytes(b"neg", b"\x18" + b"\xff" * 9 + b"\x01"),  # -1 as a 10-byte varint
        _kv_bytes(b"gen_ai.usage.cost", b"\x21" + b"\x00" * 7 + b"\x40"),  # 2.0
        _kv_bytes(b"other", b"\x0a" + bytes([len(quoted)]) + quoted),
        b"\x0a\x10" + b"\x07" * 16 + b"\x52\x02\x08\x01",  # no attributes at all, an unknown field after
    ]
    # laid out by hand: a parse would refuse the bad UTF-8 (the receiver does; the walk must not fail on it)
    scope = b"".join(b"\x12" + varint(len(raw)) + raw for raw in spans)
    rs = b"\x12" + varint(len(scope)) + scope
    tw = TraceWire(b"\x0a" + varint(len(rs)) + rs)
    native = _wirec.span_values(tw.data, tw.spans, genai._WANTED_LIST, genai._decode_value)
    # (the Python walk parses each attribute, so it refuses bad UTF-8: a request with it never gets here)
    walked = [genai._walk_values(tw.data[s:e])[0] for k, (_o, s, e) in enumerate(tw.spans) if k != 14]
    assert native[:14] + native[15:] == walked
    assert native[0] == dict.fromkeys(("gen_ai.request.model", "arr", "modèle", long_key), "gpt-4o")
    assert native[7]["arr"] == [1, "a"] and native[8]["arr"] == {"k": "v"}
    assert [native[k]["arr"] for k in (1, 2, 3, 5, 6, 9)] == [7, -3, 2**62, True, False, b"\x00\x01"]
    assert native[11] == {"empty": None, "flag": None}
    assert native[12] == {"twice": 5} and native[13] == {"twice": 9}
    assert native[14] == {"bad.utf8": "a\ufffdb"} and native[15] == {"neg": -1}
    assert native[16] == {"gen_ai.usage.cost": 2.0} and native[17] == {} and native[18] == {}
    assert genai.wire_values(TraceWire(tw.data)) == native  # what the processors get


def test_span_fields_native_and_from_the_parse_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector import wire

    req = _request()
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    sp.ClearField("trace_id")  # absent fields read as a parse reads them
    sp.ClearField("status")
    data = req.SerializeToString()
    native = TraceWire(data).span_fields()
    monkeypatch.setattr(wire, "_wirec", None)
    parsed = TraceWire(data).span_fields()
    assert native == parsed
    spans = _spans(req)
    assert native == ([s.trace_id for s in spans], [s.status.code for s in spans],
                      [s.start_time_unix_nano for s in spans], [s.end_time_unix_nano for s in spans])
    assert native[0][0] == b"" and native[1][0] == 0 and native[1][1] == 1 and native[1][4] == 2


def test_native_walk_shares_repeated_strings_and_keeps_distinct_ones() -> None:
    """The native walk decodes a short string once per request and hands out the same object after; more
    distinct strings than its table has slots still each read as themselves."""
    genai.want("tenant.id", "gen_ai.request.model")
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for k in range(1500):
        sp = ss.spans.add(trace_id=k.to_bytes(16, "big"), span_id=k.to_bytes(8, "big"))
        sp.attributes.add(key="tenant.id").value.string_value = f"tenant-{k}"
        sp.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o" if k % 2 else "é-model"
    tw = TraceWire(req.SerializeToString())
    vals = genai.wire_values(tw)
    assert [v["tenant.id"] for v in vals] == [f"tenant-{k}" for k in range(1500)]
    models = [v["gen_ai.request.model"] for v in vals]
    assert models == ["gpt-4o" if k % 2 else "é-model" for k in range(1500)]
    assert vals[1]["gen_ai.request.model"] is vals[3]["gen_ai.request.model"]


def test_native_functions_take_mutated_bytes_without_failing() -> None:
    """Bytes changed at random (as a bug elsewhere could leave them) never crash the native walk: values and
    fields come back for every span, a bad scope is a ValueError, a render has the length it should."""
    from collector import _wirec

    base = make_request(20).SerializeToString()
    spans = TraceWire(base).spans
    keys = genai._KEY_LIST
    rng = random.Random(11)
    compared = 0
    for _ in range(500):
        b = bytearray(base)
        for _k in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
        assert len(_wirec.span_values(data, spans, keys, genai._decode_value)) == len(spans)
        assert all(len(col) == len(spans) for col in _wirec.span_fields(data, spans))
        try:
            _wirec.scope_layout(data, rng.randrange(len(data)), len(data), [])
        except ValueError:
            pass
        _o, s, e = spans[rng.randrange(len(spans))]
        try:
            native = _wirec.length_fields(data, s, e)
        except ValueError:
            native = None
        try:
            walked = [(f, vs, ve) for f, s2, vs, ve in iter_fields(data, s, e) if data[s2] & 7 == 2]
        except (ValueError, IndexError):
            walked = None
        if native is not None and walked is not None:
            assert native == walked
            compared += 1
        extra = {i: {"k": bytes(rng.randrange(300))} for i in range(0, len(spans), 3)}
        out = _wirec.render_spans(data, spans, 0, len(spans), extra)
        assert len(out) == sum(e - o for o, _s, e in spans) + sum(
            len(varint(e - s + len(extra[i]["k"]))) - (s - o - 1) + len(extra[i]["k"])
            for i, (o, s, e) in enumerate(spans) if i in extra)
    assert compared > 300
