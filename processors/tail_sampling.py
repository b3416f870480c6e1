"""Processor `tail_sampling`: decides per trace, after ``decision_wait``, from all the spans seen so far.

The Collector's keys and policy shapes (``always_sample``, ``status_code``, ``latency``, ``string_attribute``,
``numeric_attribute``, ``boolean_attribute``, ``probabilistic``, ``rate_limiting``, ``span_count``, ``and``,
``composite``) plus LLM policies: ``cost`` (keep traces that cost at least ``min_cost_usd``),
``budget_exceeded`` (a span carries ``llm.budget.exceeded = true``) and ``tenant_rate`` (a sampling
percentage per tenant). A trace is kept when any policy samples it (an ``invert_match`` policy that matches
drops it, as in the Collector). Policies are evaluated in order and evaluation stops at the first one that
samples, so put cheap policies (``status_code``) first.

How it holds data: an incoming request is kept whole, with its spans grouped by trace id per scope (no
per-span objects). Every trace in a request was first seen at or before the request arrived, so when the
request's own ``decision_wait`` has passed, every trace in it can be decided; the request is then filtered in
place and forwarded. Spans of an already decided trace follow the cached decision. With
``storage: file_storage[/name]`` the held requests are also written to a SQLite file before ``consume``
returns (so before the receiver acknowledges the client) and deleted once forwarded: a SIGKILL during
``decision_wait`` loses nothing, and on restart the held requests are decided and forwarded.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import Counter, Gauge
from pydantic import Field, model_validator

from collector import genai
from collector import telemetry as tm
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import ConfigError
from collector.pdata import Batch, Signal
from processors._hashing import fnv64a_many, fnv64a_state, preload, threshold64

__all__ = ["PolicyConfig", "TailSampler", "TailSamplingConfig"]

log = logging.getLogger(__name__)

traces_sampled = Counter(
    "otelcol_processor_tail_sampling_count_traces_sampled",
    "Count of traces that were sampled or not per sampling policy.",
    ["processor", "policy", "sampled"], registry=tm.REGISTRY,
)
traces_on_memory = Gauge(
    "otelcol_processor_tail_sampling_sampling_traces_on_memory",
    "Tracks the number of traces current on memory.", ["processor"], registry=tm.REGISTRY,
)
early_decisions = Counter(
    "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early",
    "Traces decided before decision_wait because num_traces was reached.", ["processor"],
    registry=tm.REGISTRY,
)

# --- config ------------------------------------------------------------------------------------------------


class StatusCodeCfg(StrictModel):
    status_codes: list[Literal["OK", "ERROR", "UNSET"]] = Field(min_length=1)


class LatencyCfg(StrictModel):
    threshold_ms: int = Field(ge=0)
    upper_threshold_ms: int = Field(default=0, ge=0)


class StringAttributeCfg(StrictModel):
    key: str
    values: list[str] = Field(min_length=1)
    enabled_regex_matching: bool = False
    cache_max_size: int = Field(default=0, ge=0)
    invert_match: bool = False


class NumericAttributeCfg(StrictModel):
    key: str
    min_value: float | None = None
    max_value: float | None = None
    invert_match: bool = False


class BooleanAttributeCfg(StrictModel):
    key: str
    value: bool
    invert_match: bool = False


class ProbabilisticCfg(StrictModel):
    hash_salt: str = ""
    sampling_percentage: float = Field(ge=0, le=100)


class RateLimitingCfg(StrictModel):
    spans_per_second: int = Field(ge=1)


class SpanCountCfg(StrictModel):
    min_spans: int = Field(ge=0)
    max_spans: int = Field(default=0, ge=0)


class CostCfg(StrictModel):
    min_cost_usd: float = Field(ge=0)


class BudgetExceededCfg(StrictModel):
    pass


class TenantRateCfg(StrictModel):
    sampling_percentage: float = Field(default=100.0, ge=0, le=100)
    tenants: dict[str, float] = Field(default_factory=dict)
    hash_salt: str = ""

    @model_validator(mode="after")
    def _check(self) -> TenantRateCfg:
        for k, v in self.tenants.items():
            if not 0 <= v <= 100:
                raise ValueError(f"tenants.{k}: a percentage must be between 0 and 100")
        return self


class RateAllocationCfg(StrictModel):
    policy: str
    percent: float = Field(ge=0, le=100)


_TYPES = ("always_sample", "status_code", "latency", "string_attribute", "numeric_attribute",
          "boolean_attribute", "probabilistic", "rate_limiting", "span_count", "and", "composite", "cost",
          "budget_exceeded", "tenant_rate")
_NEEDS_CFG = {"status_code", "latency", "string_attribute", "numeric_attribute", "boolean_attribute",
              "probabilistic", "rate_limiting", "span_count", "and", "composite", "cost"}


class AndCfg(StrictModel):
    and_sub_policy: list[PolicyConfig] = Field(min_length=1)


class CompositeCfg(StrictModel):
    max_total_spans_per_second: int = Field(ge=1)
    policy_order: list[str] = Field(min_length=1)
    composite_sub_policy: list[PolicyConfig] = Field(min_length=1)
    rate_allocation: list[RateAllocationCfg] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> CompositeCfg:
        names = {p.name for p in self.composite_sub_policy}
        for n in self.policy_order:
            if n not in names:
                raise ValueError(f"policy_order names {n!r}, which is not a composite_sub_policy")
        for ra in self.rate_allocation:
            if ra.policy not in names:
                raise ValueError(f"rate_allocation names {ra.policy!r}, which is not a composite_sub_policy")
        return self


class PolicyConfig(StrictModel):
    name: str
    type: Literal[
        "always_sample", "status_code", "latency", "string_attribute", "numeric_attribute",
        "boolean_attribute", "probabilistic", "rate_limiting", "span_count", "and", "composite", "cost",
        "budget_exceeded", "tenant_rate",
    ]
    status_code: StatusCodeCfg | None = None
    latency: LatencyCfg | None = None
    string_attribute: StringAttributeCfg | None = None
    numeric_attribute: NumericAttributeCfg | None = None
    boolean_attribute: BooleanAttributeCfg | None = None
    probabilistic: ProbabilisticCfg | None = None
    rate_limiting: RateLimitingCfg | None = None
    span_count: SpanCountCfg | None = None
    cost: CostCfg | None = None
    budget_exceeded: BudgetExceededCfg | None = None
    tenant_rate: TenantRateCfg | None = None
    and_: AndCfg | None = Field(default=None, alias="and")
    composite: CompositeCfg | None = None

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        attr = "and_" if self.type == "and" else self.type
        if self.type in _NEEDS_CFG and getattr(self, attr) is None:
            raise ValueError(f"policy {self.name!r} of type {self.type} needs its `{self.type}:` settings")
        for t in _TYPES:
            a = "and_" if t == "and" else t
            if t != self.type and getattr(self, a, None) is not None:
                raise ValueError(f"policy {self.name!r} is of type {self.type} but has `{t}:` settings")
        if self.type == "string_attribute" and self.string_attribute and self.string_attribute.enabled_regex_matching:
            for i, v in enumerate(self.string_attribute.values):
                try:
                    re.compile(v)
                except re.error as e:
                    raise ValueError(f"string_attribute.values.{i}: invalid regex {v!r}: {e}") from None
        return self


class DecisionCacheCfg(StrictModel):
    sampled_cache_size: int = Field(default=0, ge=0)
    non_sampled_cache_size: int = Field(default=0, ge=0)


class TailSamplingConfig(StrictModel):
    decision_wait: Duration = 30.0
    num_traces: int = Field(default=50000, ge=1)
    expected_new_traces_per_sec: int = Field(default=0, ge=0)
    decision_cache: DecisionCacheCfg = Field(default_factory=DecisionCacheCfg)
    policies: list[PolicyConfig] = Field(min_length=1)
    storage: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TailSamplingConfig:
        names = [p.name for p in self.policies]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"policy names must be unique (repeated: {', '.join(sorted(dup))})")
        return self


AndCfg.model_rebuild()
CompositeCfg.model_rebuild()
PolicyConfig.model_rebuild()

# --- decisions ---------------------------------------------------------------------------------------------
NOT_SAMPLED, SAMPLED, INVERT_SAMPLED, INVERT_NOT_SAMPLED = 0, 1, 2, 3
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


class _Held:
    """One incoming request waiting for the decisions of its traces."""

    __slots__ = ("arrival_ns", "batch", "captured", "deadline", "groups", "seq")

    def __init__(self, batch: Batch, deadline: float, seq: int, arrival_ns: int) -> None:
        self.batch = batch
        self.deadline = deadline
        self.seq = seq
        self.arrival_ns = arrival_ns
        # per scope: (scope ordinal, {trace_id: [span index, ...]}, the scope's first span in the request's
        # TraceWire, the resource's values of the policies' keys, the scope's span fields)
        self.groups: list[tuple[int, dict[bytes, tuple[int, ...]], int, dict[str, Any] | None, _Fields]] = []
        # (scope ordinal, span index) -> {key: value} of the policies' keys, for the spans that have any
        self.captured: dict[tuple[int, int], dict[str, Any]] = {}


class _Fields:
    """What the policies read of the spans of one scope, taken at hold time (so that the parse can go):
    status codes, start and end times (each only when a policy reads it)."""

    __slots__ = ("codes", "ends", "starts")

    def __init__(self, codes: list[int] | None, starts: list[int] | None, ends: list[int] | None) -> None:
        self.codes = codes
        self.starts = starts
        self.ends = ends


class _DecisionCache:
    """Decisions of recent traces, for spans arriving after theirs: about ``size`` of the newest, kept in two
    plain dicts that take turns (inserts cost a dict insert; an LRU evicting one by one costs ~4 times more
    at this rate)."""

    __slots__ = ("new", "old", "size")

    def __init__(self, size: int) -> None:
        self.size = max(2, size)
        self.new: dict[bytes, bool] = {}
        self.old: dict[bytes, bool] = {}

    def __setitem__(self, tid: bytes, sampled: bool) -> None:
        self.update({tid: sampled})

    def get(self, tid: bytes, default: bool | None = None) -> bool | None:
        v = self.new.get(tid)
        if v is None:
            v = self.old.get(tid, default)
        return v

    def __contains__(self, tid: object) -> bool:
        return tid in self.new or tid in self.old

    def update(self, decisions: dict[bytes, bool]) -> None:
        """Many decisions at once (one dict update)."""
        new = self.new
        new.update(decisions)
        if len(new) >= self.size // 2:
            self.old, self.new = new, {}

    def __len__(self) -> int:
        return len(self.new) + len(self.old)


class Trace:
    """A trace waiting for its decision: where its spans are, no copies."""

    __slots__ = ("_attrs", "frags", "tid")

    def __init__(self, tid: bytes,
                 first: tuple[_Held, dict[str, Any] | None, _Fields, int, tuple[int, ...]] | None = None) -> None:
        self.tid = tid
        # per fragment (the spans of the trace in one scope of one held request): (held request, the
        # resource's values of the policies' keys, the scope's span fields, scope ordinal, span indexes)
        self.frags: list[tuple[_Held, dict[str, Any] | None, _Fields, int, tuple[int, ...]]] = \
            [first] if first is not None else []
        self._attrs: list[dict[str, Any]] | None = None

    @property
    def span_count(self) -> int:
        return sum(len(f[4]) for f in self.frags)

    def times(self) -> Any:
        """(start, end) of each span."""
        for _h, _r, fl, _o, idx in self.frags:
            starts, ends = fl.starts, fl.ends
            assert starts is not None and ends is not None
            for i in idx:
                yield starts[i], ends[i]

    def span_attrs(self, keys: frozenset[str]) -> list[dict[str, Any]]:
        """Per span (only spans that have one), the wanted attributes as AnyValues."""
        if self._attrs is not None:
            return self._attrs
        attrs: list[dict[str, Any]] = []
        for held, _r, _f, ordinal, idx in self.frags:
            cap = held.captured
            if cap:
                for i in idx:
                    d = cap.get((ordinal, i))
                    if d:
                        attrs.append(d)
        self._attrs = attrs
        return attrs

    def resource_attrs(self, keys: frozenset[str]) -> list[dict[str, Any]]:
        return [r for _h, r, _f, _o, _i in self.frags if r]


def _single_trace(entry: _Held, single: tuple[bytes, int, int]) -> Trace:
    """The Trace of a span held alone (its trace has no other span held)."""
    tid, k, i = single
    ordinal, _groups, _first, rvals, fl = entry.groups[k]
    return Trace(tid, (entry, rvals, fl, ordinal, (i,)))


_SINGLES: list[tuple[int]] = []


def _singles(n: int) -> list[tuple[int]]:
    """``[(0,), (1,), ...]``, ``n`` long: one tuple per position, made once for the whole process."""
    if len(_SINGLES) < n:
        _SINGLES.extend((i,) for i in range(len(_SINGLES), n))
    return _SINGLES[:n]


def _as_trace(tid: bytes, entry: _Held) -> Trace:
    """A Trace of the spans of ``tid`` held in ``entry`` (in the first scope that has it)."""
    for ordinal, groups, _first, rvals, fl in entry.groups:
        idx = groups.get(tid)
        if idx is not None:
            return Trace(tid, (entry, rvals, fl, ordinal, idx))
    raise KeyError(tid)


def _pv(v: Any) -> Any:
    """A Python value from an AnyValue (bytes / own-index paths) or as it is (genai's values path)."""
    return genai.value_of(v) if isinstance(v, AnyValue) else v


_num = genai.as_number


class _Policy:
    name: str
    invert = False
    keys: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()  # span fields read: "status", "times"

    def children(self) -> list[_Policy]:
        return []

    def prepare(self, tids: list[bytes]) -> None:
        """Called with the trace ids about to be decided together (hash them in one go)."""
        return

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def sampled_singles(self, entry: _Held, singles: list[tuple[bytes, int, int]],
                        keys: frozenset[str]) -> list[bool]:
        """:meth:`sampled_many` for traces of one span each, all in ``entry``: (trace id, scope position in
        ``entry.groups``, span index). Policies that read such spans directly override it."""
        return self.sampled_many([_single_trace(entry, s) for s in singles], keys)

    def sampled_many(self, traces: list[Trace], keys: frozenset[str]) -> list[bool]:
        """Per trace, does this policy sample it (evaluated in order, as one by one)."""
        out = []
        for t in traces:
            d = self.evaluate(t, keys)
            out.append(d == SAMPLED or d == INVERT_SAMPLED)
        return out


class _Always(_Policy):
    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        return SAMPLED

    def sampled_many(self, traces: list[Trace], keys: frozenset[str]) -> list[bool]:
        return [True] * len(traces)

    def sampled_singles(self, entry: _Held, singles: list[tuple[bytes, int, int]],
                        keys: frozenset[str]) -> list[bool]:
        return [True] * len(singles)


class _StatusCode(_Policy):
    reads = frozenset({"status"})

    def __init__(self, c: StatusCodeCfg) -> None:
        self.codes = frozenset(_STATUS[s] for s in c.status_codes)

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        codes = self.codes
        for _h, _r, fl, _o, idx in t.frags:
            sc = fl.codes
            assert sc is not None
            for i in idx:
                if sc[i] in codes:
                    return SAMPLED
        return NOT_SAMPLED

    def sampled_singles(self, entry: _Held, singles: list[tuple[bytes, int, int]],
                        keys: frozenset[str]) -> list[bool]:
        codes = self.codes
        groups = entry.groups
        return [groups[k][4].codes[i] in codes for _t, k, i in singles]  # type: ignore[index]


class _Latency(_Policy):
    reads = frozenset({"times"})

    def __init__(self, c: LatencyCfg) -> None:
        self.lo = c.threshold_ms * 1_000_000
        self.hi = c.upper_threshold_ms * 1_000_000

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        start, end = None, None
        for st, en in t.times():
            start = st if start is None or st < start else start
            end = en if end is None or en > end else end
        if start is None or end is None:
            return NOT_SAMPLED
        d = end - start
        if self.hi:
            return SAMPLED if self.lo <= d <= self.hi else NOT_SAMPLED
        return SAMPLED if d >= self.lo else NOT_SAMPLED


class _AttrPolicy(_Policy):
    """Matches when any span (or resource) of the trace has the key with a matching value."""

    def match(self, v: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        key = next(iter(self.keys))
        hit = False
        for d in t.resource_attrs(keys):
            av = d.get(key)
            if av is not None and self.match(_pv(av)):
                hit = True
                break
        if not hit:
            for d in t.span_attrs(keys):
                av = d.get(key)
                if av is not None and self.match(_pv(av)):
                    hit = True
                    break
        if self.invert:
            return INVERT_NOT_SAMPLED if hit else INVERT_SAMPLED
        return SAMPLED if hit else NOT_SAMPLED


class _StringAttr(_AttrPolicy):
    def __init__(self, c: StringAttributeCfg) -> None:
        self.keys = frozenset({c.key})
        self.invert = c.invert_match
        self.values = frozenset(c.values)
        self.regexes = [re.compile(v) for v in c.values] if c.enabled_regex_matching else None

    def match(self, v: Any) -> bool:
        if not isinstance(v, str):
            return False
        if self.regexes is not None:
            return any(r.search(v) for r in self.regexes)
        return v in self.values


class _NumericAttr(_AttrPolicy):
    def __init__(self, c: NumericAttributeCfg) -> None:
        self.keys = frozenset({c.key})
        self.invert = c.invert_match
        self.lo, self.hi = c.min_value, c.max_value

    def match(self, v: Any) -> bool:
        n = _num(v) if not isinstance(v, str) else None
        if n is None:
            return False
        return (self.lo is None or n >= self.lo) and (self.hi is None or n <= self.hi)


class _BooleanAttr(_AttrPolicy):
    def __init__(self, c: BooleanAttributeCfg) -> None:
        self.keys = frozenset({c.key})
        self.invert = c.invert_match
        self.value = c.value

    def match(self, v: Any) -> bool:
        return isinstance(v, bool) and v == self.value


class _Probabilistic(_Policy):
    def __init__(self, c: ProbabilisticCfg) -> None:
        self.state = fnv64a_state(c.hash_salt or "default-hash-seed")
        self.threshold = threshold64(c.sampling_percentage / 100.0)
        self.hashes: dict[bytes, int] = {}

    def prepare(self, tids: list[bytes]) -> None:
        self.hashes = dict(zip(tids, fnv64a_many(tids, self.state)))

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        h = self.hashes.get(t.tid)
        if h is None:
            h = fnv64a_many([t.tid], self.state)[0]
        return SAMPLED if h <= self.threshold else NOT_SAMPLED

    def sampled_many(self, traces: list[Trace], keys: frozenset[str]) -> list[bool]:
        return self._sampled([t.tid for t in traces])

    def sampled_singles(self, entry: _Held, singles: list[tuple[bytes, int, int]],
                        keys: frozenset[str]) -> list[bool]:
        return self._sampled([t for t, _k, _i in singles])

    def _sampled(self, tids: list[bytes]) -> list[bool]:
        hashes = self.hashes
        if not all(t in hashes for t in tids):
            hashes = dict(zip(tids, fnv64a_many(tids, self.state)))
        th = self.threshold
        return [hashes[t] <= th for t in tids]


class _RateLimiting(_Policy):
    def __init__(self, c: RateLimitingCfg, clock: Callable[[], float] = time.time) -> None:
        self.sps = c.spans_per_second
        self.second = 0
        self.count = 0
        self.clock = clock

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        now = int(self.clock())
        if now != self.second:
            self.second, self.count = now, 0
        if self.count + t.span_count < self.sps:
            self.count += t.span_count
            return SAMPLED
        return NOT_SAMPLED


class _SpanCount(_Policy):
    def __init__(self, c: SpanCountCfg) -> None:
        self.lo, self.hi = c.min_spans, c.max_spans

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        n = t.span_count
        return SAMPLED if n >= self.lo and (not self.hi or n <= self.hi) else NOT_SAMPLED


class _Cost(_Policy):
    """Total ``gen_ai.usage.cost`` of the trace (every name collector/genai knows for a cost)."""

    def __init__(self, c: CostCfg) -> None:
        self.min = c.min_cost_usd
        self.names = genai.KEYS["cost"]
        self.keys = frozenset(self.names)

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        total = 0.0
        for d in t.span_attrs(keys):
            for n in self.names:
                av = d.get(n)
                if av is not None:
                    total += _num(_pv(av)) or 0.0
                    break
        return SAMPLED if total >= self.min and total > 0 else NOT_SAMPLED


class _BudgetExceeded(_Policy):
    def __init__(self) -> None:
        self.names = genai.KEYS["budget_exceeded"]
        self.keys = frozenset(self.names)

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        for d in t.span_attrs(keys):
            for n in self.names:
                av = d.get(n)
                if av is not None and genai.as_bool(_pv(av)):
                    return SAMPLED
        return NOT_SAMPLED

    def sampled_many(self, traces: list[Trace], keys: frozenset[str]) -> list[bool]:
        # traces none of whose held requests has a value of the policies' keys are not sampled here
        return [any(f[0].captured for f in t.frags) and self.evaluate(t, keys) == SAMPLED for t in traces]

    def sampled_singles(self, entry: _Held, singles: list[tuple[bytes, int, int]],
                        keys: frozenset[str]) -> list[bool]:
        if not entry.captured:
            return [False] * len(singles)
        return super().sampled_singles(entry, singles, keys)


class _TenantRate(_Policy):
    def __init__(self, c: TenantRateCfg) -> None:
        self.names = genai.KEYS["tenant"]
        self.keys = frozenset(self.names)
        self.state = fnv64a_state(c.hash_salt or "default-hash-seed")
        self.default = threshold64(c.sampling_percentage / 100.0)
        self.per = {k: threshold64(v / 100.0) for k, v in c.tenants.items()}
        self.hashes: dict[bytes, int] = {}

    def prepare(self, tids: list[bytes]) -> None:
        self.hashes = dict(zip(tids, fnv64a_many(tids, self.state)))

    def tenant(self, t: Trace, keys: frozenset[str]) -> str | None:
        for src in (t.span_attrs(keys), t.resource_attrs(keys)):
            for d in src:
                for n in self.names:
                    av = d.get(n)
                    if av is not None:
                        v = _pv(av)
                        if v not in (None, ""):
                            return str(v)
        return None

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        ten = self.tenant(t, keys)
        th = self.per.get(ten, self.default) if ten is not None else self.default
        h = self.hashes.get(t.tid)
        if h is None:
            h = fnv64a_many([t.tid], self.state)[0]
        return SAMPLED if h <= th else NOT_SAMPLED


class _And(_Policy):
    def __init__(self, subs: list[_Policy]) -> None:
        self.subs = subs
        self.keys = frozenset().union(*(s.keys for s in subs))

    def prepare(self, tids: list[bytes]) -> None:
        for s in self.subs:
            s.prepare(tids)

    def children(self) -> list[_Policy]:
        return list(self.subs)

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        for s in self.subs:
            d = s.evaluate(t, keys)
            if d in (NOT_SAMPLED, INVERT_NOT_SAMPLED):
                return NOT_SAMPLED
        return SAMPLED


class _Composite(_Policy):
    def __init__(self, c: CompositeCfg, subs: dict[str, _Policy], clock: Callable[[], float] = time.time) -> None:
        self.max_total = c.max_total_spans_per_second
        alloc = {ra.policy: ra.percent for ra in c.rate_allocation}
        self.order = [(n, subs[n], int(self.max_total * alloc[n] / 100) if n in alloc else self.max_total)
                      for n in c.policy_order]
        self.keys = frozenset().union(*(s.keys for s in subs.values()))
        self.clock = clock
        self.second = 0
        self.used: dict[str, int] = {}
        self.total = 0

    def prepare(self, tids: list[bytes]) -> None:
        for _n, sub, _a in self.order:
            sub.prepare(tids)

    def children(self) -> list[_Policy]:
        return [sub for _n, sub, _a in self.order]

    def evaluate(self, t: Trace, keys: frozenset[str]) -> int:
        now = int(self.clock())
        if now != self.second:
            self.second, self.used, self.total = now, {}, 0
        n = t.span_count
        for name, sub, allowed in self.order:
            d = sub.evaluate(t, keys)
            if d in (SAMPLED, INVERT_SAMPLED):
                used = self.used.get(name, 0)
                if used + n <= allowed and self.total + n <= self.max_total:
                    self.used[name] = used + n
                    self.total += n
                    return SAMPLED
        return NOT_SAMPLED


def build_policy(p: PolicyConfig, clock: Callable[[], float] = time.time) -> _Policy:
    t = p.type
    pol: _Policy
    if t == "always_sample":
        pol = _Always()
    elif t == "status_code":
        assert p.status_code is not None
        pol = _StatusCode(p.status_code)
    elif t == "latency":
        assert p.latency is not None
        pol = _Latency(p.latency)
    elif t == "string_attribute":
        assert p.string_attribute is not None
        pol = _StringAttr(p.string_attribute)
    elif t == "numeric_attribute":
        assert p.numeric_attribute is not None
        pol = _NumericAttr(p.numeric_attribute)
    elif t == "boolean_attribute":
        assert p.boolean_attribute is not None
        pol = _BooleanAttr(p.boolean_attribute)
    elif t == "probabilistic":
        assert p.probabilistic is not None
        pol = _Probabilistic(p.probabilistic)
    elif t == "rate_limiting":
        assert p.rate_limiting is not None
        pol = _RateLimiting(p.rate_limiting, clock)
    elif t == "span_count":
        assert p.span_count is not None
        pol = _SpanCount(p.span_count)
    elif t == "cost":
        assert p.cost is not None
        pol = _Cost(p.cost)
    elif t == "budget_exceeded":
        pol = _BudgetExceeded()
    elif t == "tenant_rate":
        pol = _TenantRate(p.tenant_rate or TenantRateCfg())
    elif t == "and":
        assert p.and_ is not None
        pol = _And([build_policy(s, clock) for s in p.and_.and_sub_policy])
    else:
        assert p.composite is not None
        subs = {s.name: build_policy(s, clock) for s in p.composite.composite_sub_policy}
        pol = _Composite(p.composite, subs, clock)
    pol.name = p.name
    return pol


# --- the processor -----------------------------------------------------------------------------------------
class _Store:
    """Held requests on disk (SQLite, WAL): written before consume returns, deleted once forwarded."""

    def __init__(self, path: str, fsync: bool) -> None:
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA page_size=16384")  # held requests are large blobs: fewer, bigger pages
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self.db.execute("CREATE TABLE IF NOT EXISTS held (seq INTEGER PRIMARY KEY, arrival_ns INTEGER NOT NULL, "
                        "metadata TEXT NOT NULL, data BLOB NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS decisions (tid BLOB PRIMARY KEY, sampled INTEGER NOT NULL)")
        self._writes = 0

    def load_decisions(self, limit: int) -> list[tuple[bytes, int]]:
        rows = self.db.execute("SELECT tid, sampled FROM decisions ORDER BY rowid DESC LIMIT ?", (limit,))
        return list(reversed(list(rows)))

    def put_decisions(self, rows: list[tuple[bytes, int]], keep: int) -> None:
        """Remember decisions (for spans that arrive after a restart); the newest ``keep`` are kept."""
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?)", rows)
        finally:
            self.db.execute("COMMIT")  # one transaction, not one per row
        self._writes += 1
        if self._writes % 50 == 0:
            self.db.execute("DELETE FROM decisions WHERE rowid <= (SELECT MAX(rowid) FROM decisions) - ?", (keep,))

    def load(self) -> list[tuple[int, int, str, bytes]]:
        return list(self.db.execute("SELECT seq, arrival_ns, metadata, data FROM held ORDER BY seq"))

    def put(self, seq: int, arrival_ns: int, metadata: str, data: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)", (seq, arrival_ns, metadata, data))

    def delete(self, seq: int) -> None:
        self.db.execute("DELETE FROM held WHERE seq = ?", (seq,))

    def close(self) -> None:
        self.db.close()


class TailSampler:
    """Stateful processor: holds ``settings.next`` and forwards from a timer task."""

    def __init__(self, settings: CreateSettings, config: TailSamplingConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert settings.next is not None, "a processor needs a next consumer"
        self.settings = settings
        self.config = config
        self.next = settings.next
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        self.clock = clock
        self.policies = [build_policy(p) for p in config.policies]
        self.keys: frozenset[str] = frozenset().union(*(p.keys for p in self.policies))
        genai.want(*self.keys)
        reads: set[str] = set()
        todo = list(self.policies)
        while todo:
            pol = todo.pop()
            reads |= pol.reads
            todo.extend(pol.children())
        self._reads = frozenset(reads)
        self._invert = any(_has_invert(p) for p in config.policies)
        self.pending: dict[bytes, Trace | _Held] = {}  # a held request: the trace's one span is there
        self._cache_size = max(config.num_traces, config.decision_cache.sampled_cache_size
                               + config.decision_cache.non_sampled_cache_size)
        self.decided = _DecisionCache(self._cache_size)
        self.held: collections.deque[_Held] = collections.deque()
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store: _Store | None = None
        self._stopped = False
        self._lock = asyncio.Lock()
        pid, sid = settings.pipeline or "", str(settings.id)
        self._in = tm.processor_incoming.labels(sid, pid, "traces")
        self._out = tm.processor_outgoing.labels(sid, pid, "traces")
        self._mem = traces_on_memory.labels(sid)
        self._early = early_decisions.labels(sid)
        self._counters = {(p.name, s): traces_sampled.labels(sid, p.name, s)
                          for p in self.policies for s in ("true", "false")}

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        preload()
        if self.config.storage:
            ext = self.settings.host.extension(self.config.storage)
            path = ext.path_for("processor", str(self.settings.id))
            self._store = _Store(path, bool(getattr(ext, "fsync", False)))
            for tid, sampled in self._store.load_decisions(self._cache_size):
                self.decided[tid] = bool(sampled)
            restored = self._store.load()
            now_wall, now = time.time_ns(), self.clock()
            for seq, arrival_ns, md, data in restored:
                try:
                    batch = Batch.from_bytes(Signal.TRACES, data, metadata=json.loads(md), received_ns=arrival_ns)
                except Exception as e:  # noqa: BLE001 - a bad row must not stop the rest
                    self.log.error("tail_sampling: dropping an unreadable stored request %d: %s", seq, e)
                    self._store.delete(seq)
                    continue
                left = self.config.decision_wait - (now_wall - arrival_ns) / 1e9
                self._seq = max(self._seq, seq)
                entry, new = self._hold(batch, now + max(0.0, min(left, self.config.decision_wait)), seq,
                                        arrival_ns)
                if not new:  # every trace in it was decided before the crash: forward by those decisions
                    self._apply(entry)
                    await self._forward(batch)
                    self._store.delete(seq)
            if restored:
                self.log.info("tail_sampling: restored %d held requests from %s", len(restored), path)
        self._task = asyncio.create_task(self._run(), name=f"tail_sampling {self.settings.id}")

    async def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def flush(self) -> None:
        """Decide and forward everything held now (shutdown)."""
        async with self._lock:
            while self.held:
                await self._release(self.held.popleft())

    # -- data path ------------------------------------------------------------------------------------
    async def consume(self, batch: Batch) -> None:
        n = batch.item_count()
        self._in.inc(n)
        if n == 0:
            return
        self._seq += 1
        seq, arrival_ns = self._seq, batch.received_ns or time.time_ns()
        entry, new = self._hold(batch, self.clock() + self.config.decision_wait, seq, arrival_ns)
        if not new:  # every trace already decided: late spans follow the cached decision now
            self._apply(entry)
            await self._forward(batch)
            return
        if self._stopped:  # after shutdown (receivers stop first, so only in tests): decide at once
            self.held.remove(entry)
            await self._release(entry)
            return
        if self._store is not None:
            self._store.put(seq, arrival_ns, json.dumps(dict(batch.metadata)), batch.to_bytes())
        if len(self.pending) > self.config.num_traces:
            async with self._lock:
                while len(self.pending) > self.config.num_traces and self.held:
                    self._early.inc()
                    await self._release(self.held.popleft())
        held = self.held
        if held and held[0].deadline < self.clock() - self.config.decision_wait / 4:
            # Decisions are overdue: the process is too busy for the timer task to keep up. Release them here,
            # in the caller's time: the receiver answers later, clients slow down, and what is held stays about
            # decision_wait's worth (instead of growing until the memory_limiter refuses).
            async with self._lock:
                now = self.clock()
                while held and held[0].deadline <= now:
                    await self._release(held.popleft())
        self._wake.set()

    def _hold(self, batch: Batch, deadline: float, seq: int, arrival_ns: int) -> tuple[_Held, bool]:
        """Group the spans of ``batch`` by trace. Works on the serialised request (collector/wire.py): trace
        ids, times and status from a lean parse, the policies' attribute values from collector/genai; the
        request itself stays bytes, and unsampled spans are cut out of them at the decision."""
        entry = _Held(batch, deadline, seq, arrival_ns)
        pending = self.pending
        dnew, dold = self.decided.new, self.decided.old
        keys = self.keys
        tw = batch.wire()
        values = genai.wire_values(tw) if keys else None
        # trace ids, status, times: copied out of the request (a native walk, or the receiver's parse), so
        # that no parse (~1.7 MB per MB of request) is held
        all_tids, all_codes, all_starts, all_ends = tw.span_fields()
        if tw.dirty:  # hold the request compact: its rendered bytes, not the bytes and the edits
            batch.to_bytes()
        batch.release_request()  # the receiver's parse, when no processor before changed the request
        batch.wire().values = None  # the few values the policies read are copied below (``captured``)
        if values is not None and keys.isdisjoint(set().union(*values)):
            values = None  # no span of the request has any of the keys
        captured = entry.captured
        key1 = next(iter(keys)) if len(keys) == 1 else None
        status, times = "status" in self._reads, "times" in self._reads
        new = False
        ordinal = 0
        for r, (_others, scopes) in enumerate(tw.resources):
            rvals = None
            if keys:
                rvals = {kv.key: genai.value_of(kv.value) for kv in tw.resource(r).attributes if kv.key in keys}
            for _sc, first, n in scopes:
                last = first + n
                fl = _Fields(all_codes[first:last] if status else None,
                             all_starts[first:last] if times else None,
                             all_ends[first:last] if times else None)
                tids = all_tids[first:last]
                # span positions per trace, as tuples: shared 1-tuples here (no allocation), and tuples of
                # ints leave the garbage collector's lists, which would walk them at every collection while held
                groups: dict[bytes, tuple[int, ...]] = dict(zip(tids, _singles(len(tids))))
                if len(groups) != len(tids):  # a trace with several spans in the scope
                    many: dict[bytes, list[int]] = {}
                    for i, tid in enumerate(tids):
                        g = many.get(tid)
                        if g is None:
                            many[tid] = [i]
                        else:
                            g.append(i)
                    groups = {tid: tuple(g) for tid, g in many.items()}
                if values is not None:
                    for i in range(len(tids)):
                        own = values[first + i]
                        if key1 is not None:
                            if key1 in own:
                                captured[(ordinal, i)] = {key1: own[key1]}
                        elif own:
                            d = {k: own[k] for k in keys if k in own}
                            if d:
                                captured[(ordinal, i)] = d
                entry.groups.append((ordinal, groups, first, rvals, fl))
                if len(groups) == len(tids) and pending.keys().isdisjoint(tids) and \
                        dnew.keys().isdisjoint(tids) and dold.keys().isdisjoint(tids):
                    # the common case: every trace new and of one span here (the loop below, in C)
                    pending.update(dict.fromkeys(tids, entry))
                    new = new or bool(tids)
                    ordinal += 1
                    continue
                for tid, idx in groups.items():
                    tr = pending.get(tid)
                    if tr is None:
                        if tid in dnew or tid in dold:
                            continue  # decided: its spans follow that decision
                        if len(idx) == 1:
                            pending[tid] = entry  # one span, held here: no Trace unless another comes
                        else:
                            pending[tid] = Trace(tid, (entry, rvals, fl, ordinal, idx))
                    elif type(tr) is _Held:  # a second fragment of a trace held alone so far
                        tr = pending[tid] = _as_trace(tid, tr)
                        tr.frags.append((entry, rvals, fl, ordinal, idx))
                    else:
                        tr.frags.append((entry, rvals, fl, ordinal, idx))  # type: ignore[union-attr]
                    new = True
                ordinal += 1
        if new:
            self.held.append(entry)
            self._mem.set(len(pending))
        return entry, new

    def decide(self, tr: Trace, evaluated: list[int] | None = None, hits: list[int] | None = None) -> bool:
        """Evaluate every policy for one trace (counting into ``evaluated`` / ``hits`` per policy), as the
        Collector does when a policy inverts its match: sampled when one samples and no inverted one drops."""
        keys = self.keys
        sampled = inverted_drop = False
        for n, p in enumerate(self.policies):
            d = p.evaluate(tr, keys)
            hit = d == SAMPLED or d == INVERT_SAMPLED
            if evaluated is not None and hits is not None:
                evaluated[n] += 1
                hits[n] += hit
            if d == INVERT_NOT_SAMPLED:
                inverted_drop = True
            sampled = sampled or hit
        return sampled and not inverted_drop

    def _decide_entry(self, entry: _Held) -> list[bytes]:
        """Decide the traces of ``entry`` still pending; their ids."""
        pending, decided = self.pending, self.decided
        due: list[Trace] = []
        singles: list[tuple[bytes, int, int]] = []
        for k, (_o, groups, _f, _r, _fl) in enumerate(entry.groups):
            for tid, idx in groups.items():
                ref = pending.get(tid)
                if ref is entry:
                    singles.append((tid, k, idx[0]))
                elif type(ref) is Trace:
                    due.append(ref)
                    del pending[tid]
        for tid, _k, _i in singles:
            del pending[tid]
        tids = [t.tid for t in due]
        tids += [t for t, _k, _i in singles]
        if tids:
            policies = self.policies
            for p in policies:
                p.prepare(tids)
            evaluated = [0] * len(policies)
            hits = [0] * len(policies)
            out: dict[bytes, bool] = {}
            if self._invert:
                decide = self.decide
                for tr in due + [_single_trace(entry, s) for s in singles]:
                    out[tr.tid] = decide(tr, evaluated, hits)
            else:
                # the first policy that samples a trace decides it: each policy in turn over the traces the
                # earlier ones left (the same evaluations, in the same order, as trace by trace); traces of one
                # span held here are read straight from the request's fields
                keys = self.keys
                left, left_s = due, singles
                for n, p in enumerate(policies):
                    evaluated[n] = len(left) + len(left_s)
                    got = 0
                    if left:
                        rest = []
                        for tr, hit in zip(left, p.sampled_many(left, keys)):
                            if hit:
                                out[tr.tid] = True
                            else:
                                rest.append(tr)
                        got += len(left) - len(rest)
                        left = rest
                    if left_s:
                        rest_s = []
                        for sg, hit in zip(left_s, p.sampled_singles(entry, left_s, keys)):
                            if hit:
                                out[sg[0]] = True
                            else:
                                rest_s.append(sg)
                        got += len(left_s) - len(rest_s)
                        left_s = rest_s
                    hits[n] = got
                for tr in left:
                    out[tr.tid] = False
                for sg in left_s:
                    out[sg[0]] = False
            decided.update(out)
            for n, p in enumerate(policies):
                if hits[n]:
                    self._counters[(p.name, "true")].inc(hits[n])
                if evaluated[n] - hits[n]:
                    self._counters[(p.name, "false")].inc(evaluated[n] - hits[n])
        self._mem.set(len(pending))
        return tids

    def _apply(self, entry: _Held) -> None:
        """Cut the spans of the entry's traces that are not sampled (undecided counts as not) out of its
        request's bytes."""
        dnew, dold = self.decided.new, self.decided.old
        tw = entry.batch.wire()
        dropped = False
        for _o, groups, first, _r, _fl in entry.groups:
            for tid, idx in groups.items():
                v = dnew.get(tid)
                if not (v if v is not None else dold.get(tid, False)):
                    for i in idx:
                        tw.drop(first + i)
                    dropped = True
        if dropped:
            entry.batch.wire_changed()
        entry.groups = []
        entry.captured = {}

    async def _release(self, entry: _Held) -> None:
        due = self._decide_entry(entry)
        self._apply(entry)
        if self._store is not None and due:
            decided = self.decided
            self._store.put_decisions([(t, int(bool(decided.get(t, False)))) for t in due], self._cache_size)
        await self._forward(entry.batch)
        if self._store is not None:
            self._store.delete(entry.seq)

    async def _forward(self, batch: Batch) -> None:
        n = batch.item_count()
        if n == 0:
            return
        for attempt in range(5):
            try:
                await self.next.consume(batch)
                self._out.inc(n)
                return
            except Exception as e:  # noqa: BLE001 - a refusing exporter must not kill the timer
                if attempt == 4 or self._stopped:
                    self._rl.log(logging.ERROR, "fwd", "tail_sampling: dropping %d sampled spans: %s", n, e)
                    return
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _run(self) -> None:
        while not self._stopped:
            if not self.held:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self.held[0].deadline - self.clock()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            async with self._lock:
                now = self.clock()
                while self.held and self.held[0].deadline <= now and not self._stopped:
                    try:
                        await self._release(self.held.popleft())
                    except Exception:
                        self.log.exception("tail_sampling: failed to release a held request")


def _has_invert(p: PolicyConfig) -> bool:
    for c in (p.string_attribute, p.numeric_attribute, p.boolean_attribute):
        if c is not None and c.invert_match:
            return True
    return False


def _create(settings: CreateSettings, config: TailSamplingConfig) -> TailSampler:
    if settings.signal is not None and settings.signal is not Signal.TRACES:
        raise ConfigError([f"processors::{settings.id}: tail_sampling supports traces only"])
    return TailSampler(settings, config)


FACTORIES = [
    Factory("tail_sampling", Kind.PROCESSOR, TailSamplingConfig, _create, frozenset({Signal.TRACES}),
            description="samples whole traces after decision_wait by policies (errors, latency, cost, budget...)",
            example={"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]}),
]
