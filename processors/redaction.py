"""Processor `redaction`: masks PII and secrets, and handles prompt / completion content, before anything
leaves the collector.

The Collector's keys (``allow_all_keys``, ``allowed_keys``, ``ignored_keys``, ``blocked_key_patterns``,
``blocked_values``, ``allowed_values``, ``hash_function``, ``summary``) plus built-in ``detectors``, the user's
``patterns``, a ``content`` mode for content-bearing attributes and events (found through
:mod:`collector.genai`, JSON message arrays redacted inside the JSON) and HMAC-SHA256 ``hash_keys``.
Applies to span attributes and events, log bodies and attributes, resource attributes and metric data point
attributes.

Speed: all patterns are compiled once into one Hyperscan database (see :mod:`processors._detect`). A span
(log record, resource, data point) is serialised by protobuf in C and scanned once; only when that scan
finds a candidate, or a key rule needs it, are its attributes walked in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from bisect import bisect_left
from collections.abc import Callable
from operator import itemgetter
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal
from collector.processorhelper import SimpleProcessor
from collector.telemetry import RateLimitedLogger
from processors._detect import DETECTORS, HAVE_HYPERSCAN, Finder, any_match

_hs: Any
try:  # pragma: no cover
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None

__all__ = ["RedactionConfig", "RedactionProcessor", "Redactor"]


def _regex(v: str) -> str:
    try:
        re.compile(v)
    except re.error as e:
        raise ValueError(f"invalid regular expression {v!r}: {e}") from e
    return v


Regex = Annotated[str, AfterValidator(_regex)]
DetectorName = Literal["email", "phone", "credit_card", "ip", "iban", "us_ssn", "secrets"]


class PatternConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    regex: Regex


class RedactionConfig(StrictModel):
    allow_all_keys: bool = True
    allowed_keys: list[str] = Field(default_factory=list)
    ignored_keys: list[str] = Field(default_factory=list)
    blocked_key_patterns: list[Regex] = Field(default_factory=list)
    blocked_values: list[Regex] = Field(default_factory=list)
    allowed_values: list[Regex] = Field(default_factory=list)
    summary: Literal["silent", "info", "debug"] = "silent"
    detectors: list[DetectorName] = Field(default_factory=lambda: list(DETECTORS))  # type: ignore[arg-type]
    patterns: list[PatternConfig] = Field(default_factory=list)
    hash_key: SecretStr | None = None
    hash_function: Literal["none", "md5", "sha1", "sha3", "hmac-sha256"] = "none"
    content: Literal["keep", "redact", "drop", "hash"] = "redact"
    hash_keys: list[str] = Field(default_factory=list)
    use_hyperscan: bool = True

    @field_validator("hash_keys", "hash_function", "content")
    @classmethod
    def _needs_key(cls, v: Any, info: ValidationInfo) -> Any:
        key = info.data.get("hash_key")
        has_key = key is not None and bool(key.get_secret_value())
        if has_key:
            return v
        if info.field_name == "hash_keys" and v:
            raise ValueError("hash_keys needs hash_key (e.g. hash_key: ${env:LLM_COLLECTOR_HASH_KEY}), which is not set")
        if info.field_name == "hash_function" and v == "hmac-sha256":
            raise ValueError("hash_function hmac-sha256 needs hash_key, which is not set")
        if info.field_name == "content" and v == "hash":
            raise ValueError("content: hash needs hash_key, which is not set")
        return v


_KEY_BASE = 1 << 20

_REPL = {"email": "<EMAIL>", "phone": "<PHONE>", "credit_card": "<CREDIT_CARD>", "ip": "<IP>",
         "iban": "<IBAN>", "us_ssn": "<US_SSN>", "secret": "<SECRET>", "blocked": "****"}
_MASK = "****"


class _Stats:
    __slots__ = ("count", "deleted", "keys", "kinds")

    def __init__(self) -> None:
        self.count = 0
        self.kinds: set[str] = set()
        self.keys: set[str] = set()
        self.deleted: set[str] = set()


class Redactor:
    """The redaction rules, compiled; usable without a pipeline (tests, benchmarks)."""

    def __init__(self, cfg: RedactionConfig) -> None:
        self.cfg = cfg
        self.finder = Finder(cfg.detectors, [(p.name, p.regex) for p in cfg.patterns], cfg.blocked_values,
                             use_hyperscan=cfg.use_hyperscan)
        self.repl = dict(_REPL) | {p.name: f"<{p.name.upper()}>" for p in cfg.patterns}
        self.allowed = set(cfg.allowed_keys)
        self.ignored = set(cfg.ignored_keys)
        self.hash_keys = set(cfg.hash_keys)
        self.blocked_keys = re.compile("|".join(f"(?:{r})" for r in cfg.blocked_key_patterns)) \
            if cfg.blocked_key_patterns else None
        self.allowed_values = [re.compile(r) for r in cfg.allowed_values]
        key = cfg.hash_key.get_secret_value().encode() if cfg.hash_key is not None else b""
        self._key = key
        self.mask_hash = self._hasher(cfg.hash_function)
        self.content = cfg.content
        self._memo: dict[str, int] = {}
        self._rl = RateLimitedLogger(logging.getLogger("llm_collector.processor.redaction"))
        self._memo_event: dict[str, int] = {}
        self.summary = cfg.summary
        self.always_walk = (not cfg.allow_all_keys or self.blocked_keys is not None or not HAVE_HYPERSCAN
                            or not cfg.use_hyperscan or bool(self.finder._always))
        self._key_exprs: list[bytes] = []
        self._n_det = 0
        self._gates: list[Any] = []
        self.keygate = self._build_keygate() if not self.always_walk else None
        self.gate = self._build_gate() if not self.always_walk else None

    def _hasher(self, name: str) -> Callable[[str], str] | None:
        if name == "none":
            return None
        if name == "md5":
            return lambda s: hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()
        if name == "sha1":
            return lambda s: hashlib.sha1(s.encode(), usedforsecurity=False).hexdigest()
        if name == "sha3":
            return lambda s: hashlib.sha3_256(s.encode()).hexdigest()
        return self.hmac

    def hmac(self, s: str) -> str:
        return hmac.digest(self._key, s.encode("utf-8", "surrogatepass"), "sha256").hex()

    def _build_gate(self) -> Any:
        """Detector cores, user patterns (prefilter) and key rules in one database without start offsets:
        one scan over a whole serialised request says which spans / records need a walk. The email core
        goes to a database of its own (``self._gates``): Hyperscan compiles it together with the others into
        a much slower scan (~4 µs instead of ~2 µs per 2 KB span for the built-in detectors)."""
        assert _hs is not None
        self._n_det = len(self.finder.gate_exprs)
        exprs = list(self.finder.gate_exprs) + [(e, _hs.HS_FLAG_DOTALL) for e in self._key_exprs]
        if not exprs:
            return None
        alone = {i for i, d in enumerate(self.finder.dets) if d.kind == "email"}
        groups = [[i for i in range(len(exprs)) if i not in alone], sorted(alone)]
        dbs = []
        for ids in groups:
            if not ids:
                continue
            db = _hs.Database()
            db.compile(expressions=[exprs[i][0] for i in ids], ids=ids, elements=len(ids),
                       flags=[exprs[i][1] for i in ids])
            dbs.append(db)
        self._gates = dbs
        return dbs[0]

    def gate_hits(self, data: bytes) -> tuple[list[int], list[int]] | None:
        """Sorted end offsets in ``data`` of every detector / pattern candidate, and of every key a key rule
        names (hash_keys, content keys when content is drop or hash); None when there is no gate."""
        if self.gate is None:
            return None
        ends: list[int] = []
        keys: list[int] = []
        add = ends.append
        addk = keys.append
        n = self._n_det

        def cb(i: int, _f: int, t: int, _fl: int, _c: object) -> None:
            if i < n:
                add(t)
            else:
                addk(t)

        for db in self._gates:
            db.scan(data, match_event_handler=cb)
        ends.sort()
        keys.sort()
        return ends, keys

    def _build_keygate(self) -> Any:
        """A Hyperscan database of the protobuf encodings of the keys a key rule needs (hash_keys, content
        keys and events when content is drop or hash): if a serialised item has none, no key rule applies."""
        assert _hs is not None
        exprs: list[bytes] = []
        for k in self.hash_keys:
            kb = k.encode()
            if len(kb) < 128:
                exprs.append(b"\\x0a" + (b"\\x%02x" % len(kb)) + re.escape(kb))
            else:
                exprs.append(re.escape(kb))
        if self.content in ("drop", "hash"):
            for k in genai._CONTENT_EXACT:
                kb = k.encode()
                exprs.append(b"\\x0a" + (b"\\x%02x" % len(kb)) + re.escape(kb) + b"\\x12")
            for pfx in genai._CONTENT_PREFIXES:
                exprs.append(b"\\x0a[\\x00-\\x7f]" + re.escape(pfx.encode()))
            for name in genai.CONTENT_EVENT_NAMES:
                exprs.append(re.escape(name.encode()))
            exprs.append(rb"gen_ai\.[A-Za-z0-9_]+\.message")
        self._key_exprs = exprs
        if not exprs:
            return None
        db = _hs.Database()
        db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs),
                   flags=[_hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_DOTALL] * len(exprs))
        return db

    # -- gates ---------------------------------------------------------------------------------------------
    def needs_walk(self, msg: Any) -> bool:
        if self.always_walk:
            return True
        data = msg.SerializeToString()
        if self.finder.maybe(data):
            return True
        if self.keygate is None:
            return False
        return any_match(self.keygate, data)

    # -- strings -------------------------------------------------------------------------------------------
    def redact_text(self, s: str, st: _Stats) -> str:
        """Masks detector / pattern matches in one string; JSON stays valid JSON."""
        if len(s) < 6:
            return s
        probe = s
        if "\\" in s:  # JSON escapes next to a value must not hide it from the boundary guards
            probe = s.replace("\\\\", "  ").replace("\\n", "  ").replace("\\t", "  ").replace("\\r", "  ") \
                .replace('\\"', "  ")
        matches = self.finder.find(probe)
        if not matches:
            return s
        head = s.lstrip()[:1]
        if head in ("[", "{"):
            try:
                obj = json.loads(s)
            except ValueError:
                obj = None
            if isinstance(obj, (list, dict)):
                before = st.count
                obj = self._redact_json(obj, st)
                if st.count == before:
                    return s
                return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return self._apply(s, matches, st)

    def _redact_json(self, obj: Any, st: _Stats) -> Any:
        if isinstance(obj, str):
            if len(obj) < 6:
                return obj
            m = self.finder.find(obj)
            return self._apply(obj, m, st) if m else obj
        if isinstance(obj, list):
            return [self._redact_json(x, st) for x in obj]
        if isinstance(obj, dict):
            return {k: self._redact_json(v, st) for k, v in obj.items()}
        return obj

    def _apply(self, s: str, matches: list[tuple[int, int, str]], st: _Stats) -> str:
        out: list[str] = []
        last = 0
        n = 0
        for a, b, kind in matches:
            text = s[a:b]
            if self.allowed_values and any(r.fullmatch(text) for r in self.allowed_values):
                continue
            out.append(s[last:a])
            if self.mask_hash is not None:
                out.append(self.mask_hash(text))
            else:
                out.append(self.repl.get(kind) or f"<{kind.upper()}>")
            last = b
            n += 1
            st.kinds.add(kind)
        if not n:
            return s
        st.count += n
        out.append(s[last:])
        return "".join(out)

    # -- values and attribute lists -----------------------------------------------------------------------
    def redact_value(self, av: Any, st: _Stats, key: str) -> None:
        kind = av.WhichOneof("value")
        if kind == "string_value":
            s = av.string_value
            new = self.redact_text(s, st)
            if new is not s:
                av.string_value = new
                st.keys.add(key)
        elif kind == "array_value":
            for x in av.array_value.values:
                self.redact_value(x, st, key)
        elif kind == "kvlist_value":
            for kv in av.kvlist_value.values:
                self.redact_value(kv.value, st, key)

    def _hash_value(self, av: Any) -> None:
        kind = av.WhichOneof("value")
        if kind is None:
            return
        if kind == "string_value":
            text = av.string_value
        elif kind in ("array_value", "kvlist_value", "bytes_value"):
            text = av.SerializeToString().hex()
        else:
            text = str(getattr(av, kind))
        av.string_value = self.hmac(text)

    # what to do with a key, decided once per distinct key (keys repeat across spans)
    _SCAN, _SKIP, _DELETE, _HASH, _BLOCK, _CHASH = range(6)

    def _action(self, k: str, content_event: bool) -> int:
        memo = self._memo_event if content_event else self._memo
        act = memo.get(k)
        if act is not None:
            return act
        if k in self.ignored:
            act = self._SKIP
        elif not self.cfg.allow_all_keys and k not in self.allowed and not k.startswith("redaction."):
            act = self._DELETE
        elif k in self.hash_keys:
            act = self._HASH
        elif self.blocked_keys is not None and self.blocked_keys.search(k):
            act = self._BLOCK
        elif genai.is_content_event_attr(k) if content_event else genai.is_content_key(k):
            act = {"keep": self._SKIP, "drop": self._DELETE, "hash": self._CHASH}.get(self.content, self._SCAN)
        else:
            act = self._SCAN
        if len(memo) < 10000:
            memo[k] = act
        return act

    def redact_attrs(self, attrs: Any, st: _Stats, content_event: bool = False,
                     idx: dict[str, Any] | None = None, only: set[int] | None = None) -> None:
        """Walk one repeated KeyValue field. ``content_event``: the attributes of a content event (every
        non-structural attribute is content). ``idx`` receives the genai index as a side effect. ``only``:
        the positions whose values may hold a match (from the request scan); other values are not scanned,
        key rules apply to all."""
        delete: list[int] = []
        indexed = genai._INDEXED
        memo = self._memo_event if content_event else self._memo
        for i, kv in enumerate(attrs):
            k = kv.key
            if idx is not None and k in indexed and k not in idx:
                idx[k] = kv
            act = memo.get(k)
            if act is None:
                act = self._action(k, content_event)
            if act == 0:  # _SCAN
                if only is None or i in only:
                    self.redact_value(kv.value, st, k)
            elif act == 1:  # _SKIP
                continue
            elif act == 2:  # _DELETE
                delete.append(i)
            elif act == 3 or act == 5:  # _HASH, _CHASH
                self._hash_value(kv.value)
                st.keys.add(k)
                st.count += 1
                st.kinds.add("hash" if act == 3 else "content")
            else:  # _BLOCK
                if kv.value.WhichOneof("value") is not None:
                    kv.value.string_value = self.mask_hash(kv.value.SerializeToString().hex()) \
                        if self.mask_hash else _MASK
                    st.keys.add(k)
                    st.count += 1
                    st.kinds.add("blocked_key")
        for i in reversed(delete):
            k = attrs[i].key
            st.deleted.add(k)
            if idx is not None:
                idx.pop(k, None)
            del attrs[i]

    def summarize(self, attrs: Any, st: _Stats, idx: dict[str, Any] | None) -> None:
        if self.summary == "silent" or (not st.count and not st.deleted):
            return
        genai.set_value(attrs, idx, genai.REDACTION["count"], st.count)
        genai.set_value(attrs, idx, genai.REDACTION["kinds"], ",".join(sorted(st.kinds)))
        if self.summary == "debug":
            genai.set_value(attrs, idx, "redaction.masked.keys", ",".join(sorted(st.keys)))
            genai.set_value(attrs, idx, "redaction.redacted.keys", ",".join(sorted(st.deleted)))
            genai.set_value(attrs, idx, "redaction.redacted.count", len(st.deleted))

    # -- items ---------------------------------------------------------------------------------------------
    def span(self, req: Any, span: Any, walk: bool | None = None,
             flags: tuple[set[int], set[int]] | None = None) -> None:
        """``flags``: (attribute positions, event positions) that hold candidates, from the request scan."""
        if not (self.needs_walk(span) if walk is None else walk):
            return
        try:
            self._span(req, span, flags)
        except Exception as exc:  # noqa: BLE001 - fail closed: nothing unredacted leaves
            self._rl.log(logging.ERROR, "span", "redaction failed on a span, its string values are masked: %r", exc)
            self._fail_closed(span.attributes)
            for ev in span.events:
                self._fail_closed(ev.attributes)
            genai.remember_values(req, span, genai.values_from_index(genai.index(span.attributes)))

    def unchanged(self, span: Any, flags: tuple[set[int], set[int]]) -> bool:
        """Would a walk leave this span as it is? True only in the plain case: the candidates are all in
        span attributes (no event hit, no links), each a string scanned by the detectors (no key rule
        applies) in which they find nothing (a false candidate, e.g. digits failing the Luhn check)."""
        if flags[1] or len(span.links) or not flags[0]:
            return False
        attrs = span.attributes
        try:
            for i in flags[0]:
                if i >= len(attrs):
                    return False
                kv = attrs[i]
                k = kv.key
                act = self._memo.get(k)
                if act is None:
                    act = self._action(k, False)
                if act != self._SCAN or kv.value.WhichOneof("value") != "string_value":
                    return False
                s = kv.value.string_value
                st = _Stats()
                if self.redact_text(s, st) is not s or st.count:
                    return False
        except Exception:  # noqa: BLE001 - when in doubt, walk (and fail closed there)
            return False
        return True

    def key_rules(self, span: Any, positions: set[int]) -> dict[str, Any]:
        """Apply the key rules (hash_keys, content drop / hash) to the attributes at ``positions`` only;
        returns the changed values of the keys genai indexes (None for a deleted key)."""
        attrs = span.attributes
        st = _Stats()
        changed: dict[str, Any] = {}
        delete: list[int] = []
        indexed = genai._INDEXED
        for i in sorted(positions):
            if i >= len(attrs):
                continue
            kv = attrs[i]
            k = kv.key
            act = self._action(k, False)
            if act == 3 or act == 5:  # _HASH, _CHASH
                self._hash_value(kv.value)
                st.keys.add(k)
                st.count += 1
                st.kinds.add("hash" if act == 3 else "content")
                if k in indexed:
                    changed[k] = kv.value.string_value
            elif act == 2:  # _DELETE (content drop)
                delete.append(i)
        for i in reversed(delete):
            k = attrs[i].key
            st.deleted.add(k)
            changed[k] = None
            del attrs[i]
        if self.summary != "silent" and (st.count or st.deleted):
            self.summarize(attrs, st, None)
            changed[genai.REDACTION["count"]] = st.count
            changed[genai.REDACTION["kinds"]] = ",".join(sorted(st.kinds))
        return changed

    @staticmethod
    def _fail_closed(attrs: Any) -> None:
        for kv in attrs:
            if kv.value.WhichOneof("value") in ("string_value", "array_value", "kvlist_value", "bytes_value"):
                kv.value.string_value = "<REDACTION_FAILED>"

    def _span(self, req: Any, span: Any, flags: tuple[set[int], set[int]] | None) -> None:
        st = _Stats()
        idx: dict[str, Any] = {}
        self.redact_attrs(span.attributes, st, idx=idx, only=flags[0] if flags else None)
        if len(span.events):
            drop: list[int] = []
            for i, ev in enumerate(span.events):
                ce = genai.is_content_event(ev.name)
                if ce and self.content == "drop":
                    drop.append(i)
                    continue
                if flags is not None and i not in flags[1] and not (ce and self.content == "hash"):
                    continue
                self.redact_attrs(ev.attributes, st, content_event=ce)
            for i in reversed(drop):
                st.deleted.add(f"event:{span.events[i].name}")
                st.count += 1
                st.kinds.add("content")
                del span.events[i]
        for link in span.links:
            if len(link.attributes):
                self.redact_attrs(link.attributes, st)
        self.summarize(span.attributes, st, idx)
        genai.remember(req, span, idx)
        genai.remember_values(req, span, genai.values_from_index(idx))

    def resource(self, res: Any, walk: bool | None = None) -> bool:
        """Redact a resource's attributes; True if anything changed."""
        if len(res.attributes) and (self.needs_walk(res) if walk is None else walk):
            st = _Stats()
            self.redact_attrs(res.attributes, st)
            return bool(st.count or st.deleted)
        return False

    def log_record(self, rec: Any, walk: bool | None = None) -> None:
        if not (self.needs_walk(rec) if walk is None else walk):
            return
        st = _Stats()
        name = rec.event_name
        if not name:
            for kv in rec.attributes:
                if kv.key == "event.name":
                    name = kv.value.string_value
                    break
        ce = bool(name) and genai.is_content_event(name)
        self.redact_attrs(rec.attributes, st, content_event=ce)
        if rec.HasField("body"):
            if ce and self.content == "drop":
                rec.ClearField("body")
                st.count += 1
                st.kinds.add("content")
            elif ce and self.content == "hash":
                self._hash_value(rec.body)
                st.count += 1
                st.kinds.add("content")
            elif not (ce and self.content == "keep"):
                self.redact_value(rec.body, st, "body")
        self.summarize(rec.attributes, st, None)

    def data_point(self, dp: Any) -> None:
        if len(dp.attributes) and self.needs_walk(dp):
            self.redact_attrs(dp.attributes, _Stats())


class RedactionProcessor(SimpleProcessor):
    mutates = False  # marks the batch modified itself, only when it changed something

    def __init__(self, settings: CreateSettings, config: RedactionConfig) -> None:
        super().__init__(settings, config)
        self.r = Redactor(config)

    def process(self, batch: Batch) -> Batch | None:
        r = self.r
        sig = batch.signal
        if sig is not Signal.METRICS and r.gate is not None:
            data = batch.to_bytes()  # the received bytes when nothing changed the batch yet: no serialising
            got = r.gate_hits(data)
            assert got is not None
            det, keyhits = got
            ends = sorted(det + keyhits) if keyhits else det
            if not ends:
                return batch  # nothing to look at: the batch stays as it came (bytes, no parse)
            if sig is Signal.TRACES:
                try:
                    layout = batch.wire().item_layout()  # laid out once for the processors after too
                except ValueError:
                    layout = None
            else:
                layout = _layout(data)
            if layout is not None:
                req = batch.request
                overrides: dict[int, Any] = {}
                walked = self._gated(req, sig, data, ends, layout, det, keyhits, overrides)
                if walked or overrides:
                    batch.modified()
                if sig is Signal.TRACES and genai.WIRE_VALUES:
                    # the values genai knows, from these bytes, decoded only if cost / enrich / budget ask;
                    # the spans walked above stored theirs (after redaction), the ones changed by key rules
                    # only give the values they changed
                    genai.defer_wire_values(req, data, None, layout, walked, overrides)
                return batch
        req = batch.request
        if sig is Signal.TRACES:
            for rs in req.resource_spans:
                r.resource(rs.resource)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        r.span(req, span)
            if r.always_walk:
                genai.values_complete(req)
        elif sig is Signal.LOGS:
            for rl in req.resource_logs:
                r.resource(rl.resource)
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        r.log_record(rec)
        else:
            for rm in req.resource_metrics:
                r.resource(rm.resource)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is None:
                            continue
                        for dp in getattr(m, kind).data_points:
                            r.data_point(dp)
        batch.modified()
        return batch

    def _gated(self, req: Any, sig: Signal, data: bytes, ends: list[int],
               layout: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]],
               det: list[int] | None = None, keyhits: list[int] | None = None,
               overrides: dict[int, Any] | None = None) -> set[int]:
        """Walk only the items whose byte range holds a candidate end offset; returns the ids of the
        spans walked. A span with key-rule hits only (``keyhits``, no ``det`` hit) is changed in place at
        the attributes the hits point at, without a walk; it and its changed values go to ``overrides``."""
        walked: set[int] = set()
        r = self.r
        n = len(ends)
        traces = sig is Signal.TRACES
        outer = req.resource_spans if traces else req.resource_logs
        if len(outer) != len(layout):  # pragma: no cover - bytes and message disagree: be thorough
            layout = [(None, [])] * len(outer)
        for ro, (rrange, items) in zip(outer, layout):
            if rrange is not None:
                j = bisect_left(ends, rrange[0] + 1)
                if j < n and ends[j] <= rrange[1] and r.resource(ro.resource, True):
                    walked.add(id(ro))
            groups = [sc.spans if traces else sc.log_records for sc in (ro.scope_spans if traces else ro.scope_logs)]
            if sum(len(g) for g in groups) != len(items):  # pragma: no cover - bytes and message disagree
                for g in groups:
                    for item in g:
                        if traces:
                            r.span(req, item, True)
                            walked.add(id(item))
                        else:
                            r.log_record(item, True)
                continue
            # the items holding a candidate, found from the candidates (few) rather than from the items (many)
            starts = list(map(_first, items))
            hit: list[int] = []
            last = -1
            for t in ends:
                k = bisect_left(starts, t) - 1  # the item starting before t
                if k > last and k >= 0 and t <= items[k][1]:
                    hit.append(k)
                    last = k
            if not hit:
                continue
            bounds = []  # (first global index, group) per scope
            base = 0
            for g in groups:
                bounds.append((base, g))
                base += len(g)
            gi = 0
            for k in hit:
                while gi + 1 < len(bounds) and bounds[gi + 1][0] <= k:
                    gi += 1
                first, g = bounds[gi]
                item = g[k - first]
                if traces:
                    s, e = items[k]
                    if keyhits and det is not None and overrides is not None:
                        j = bisect_left(det, s + 1)
                        if not (j < len(det) and det[j] <= e):
                            targets = _flags(data, s, e, keyhits, bisect_left(keyhits, s + 1), 9, 11)
                            if targets is not None and not targets[1]:
                                overrides[id(item)] = (item, r.key_rules(item, targets[0]))
                                continue
                    flags = _flags(data, s, e, ends, bisect_left(ends, s + 1), 9, 11)
                    if flags is not None and not (keyhits and _has(keyhits, s, e)) and r.unchanged(item, flags):
                        continue  # false candidates only (e.g. a hex id that looks like a card number)
                    r.span(req, item, True, flags)
                    walked.add(id(item))
                else:
                    r.log_record(item, True)
        return walked


_fields = genai.wire_fields
_first = itemgetter(0)


def _has(offsets: list[int], s: int, e: int) -> bool:
    """Is one of the sorted ``offsets`` in ``(s, e]``?"""
    j = bisect_left(offsets, s + 1)
    return j < len(offsets) and offsets[j] <= e
_layout = genai.wire_layout


def _flags(data: bytes, s: int, e: int, ends: list[int], j: int, attr_field: int,
           event_field: int) -> tuple[set[int], set[int]] | None:
    """Positions of the attributes and events of the item at ``data[s:e]`` that hold a candidate end
    offset (``ends[j]`` is the first one in the item)."""
    try:
        fields = _fields(data, s, e)
    except (IndexError, ValueError):
        return None
    attrs: set[int] = set()
    events: set[int] = set()
    ai = ei = 0
    n = len(ends)
    for f, a, b in fields:
        if f == attr_field or f == event_field:
            while j < n and ends[j] <= a:
                j += 1
            if j < n and ends[j] <= b:
                (attrs if f == attr_field else events).add(ai if f == attr_field else ei)
            if f == attr_field:
                ai += 1
            else:
                ei += 1
    return attrs, events


def _create(settings: CreateSettings, config: RedactionConfig) -> RedactionProcessor:
    return RedactionProcessor(settings, config)


FACTORIES = [
    Factory("redaction", Kind.PROCESSOR, RedactionConfig, _create,
            description="masks PII and secrets, drops / hashes / redacts prompt and completion content"),
]
