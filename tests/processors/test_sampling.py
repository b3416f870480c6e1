"""probabilistic_sampler and tail_sampling, in process: Collector-compatible hashing, shares, policies."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import validate
from collector.errors import ConfigError
from collector.pdata import Batch, Signal
from processors import _hashing as h
from processors.probabilistic_sampler import ProbabilisticSampler, ProbabilisticSamplerConfig
from processors.tail_sampling import TailSampler, TailSamplingConfig
from tests.processors.llm_spans import LITELLM, Sink, pb_batch, trace_ids


def settings(sink: Any, name: str = "tail_sampling", host: Any = None) -> CreateSettings:
    return CreateSettings(id=ComponentID.parse(name), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                          pipeline="traces", next=sink, host=host)


# --- hashing ------------------------------------------------------------------------------------------------
def _ref_fnv(data: bytes, bits: int) -> int:
    """Textbook FNV-1a, written independently of processors._hashing."""
    off, prime = (2166136261, 16777619) if bits == 32 else (14695981039346656037, 1099511628211)
    x = off
    for b in data:
        x = ((x ^ b) * prime) % (1 << bits)
    return x


def test_fnv_vectors_and_prefix_folding() -> None:
    assert h.fnv32a(b"a") == 0xE40C292C and h.fnv32a(b"foobar") == 0xBF9CF968
    assert h.fnv64a(b"a") == 0xAF63DC4C8601EC8C and h.fnv64a(b"foobar") == 0x85944171F73967E8
    ids = trace_ids(300)
    seed = 0x01020304
    # the Collector writes the seed as 4 little-endian bytes, then the trace id
    want32 = [_ref_fnv(bytes([4, 3, 2, 1]) + t, 32) for t in ids]
    assert h.fnv32a_many(ids, h.fnv32a_state(seed)) == want32          # numpy path (>= 48 ids)
    assert h.fnv32a_many(ids[:5], h.fnv32a_state(seed)) == want32[:5]  # pure-Python path
    want64 = [_ref_fnv(b"default-hash-seed" + t, 64) for t in ids]
    assert h.fnv64a_many(ids, h.fnv64a_state("default-hash-seed")) == want64
    assert h.fnv64a_many(ids[:3], h.fnv64a_state("default-hash-seed")) == want64[:3]
    assert h.scaled_rate(10) == 1638 and h.threshold64(1.0) == 2**64 - 1


# --- probabilistic_sampler ----------------------------------------------------------------------------------
async def test_probabilistic_ten_percent_of_100k_traces_within_one_point() -> None:
    ids = trace_ids(100_000, seed=11)
    # two spans per trace in the first 1000 traces, in different requests: they must share the decision
    sink = Sink()
    p = ProbabilisticSampler(settings(sink, "probabilistic_sampler"),
                             ProbabilisticSamplerConfig(sampling_percentage=10, hash_seed=22))
    for lo in range(0, len(ids), 5000):
        await p.consume(pb_batch([{"trace_id": t} for t in ids[lo:lo + 5000]]))
    kept = {s.trace_id for s in sink.spans()}
    share = len(kept) / len(ids)
    assert 0.09 <= share <= 0.11, share
    # same decision for later spans of the same traces, and equal to the Collector's formula
    sink2 = Sink()
    p2 = ProbabilisticSampler(settings(sink2, "probabilistic_sampler"),
                              ProbabilisticSamplerConfig(sampling_percentage=10, hash_seed=22))
    await p2.consume(pb_batch([{"trace_id": t} for t in ids[:1000]]))
    assert {s.trace_id for s in sink2.spans()} == {t for t in ids[:1000] if t in kept}
    formula = {t for t in ids[:1000] if (_ref_fnv((22).to_bytes(4, "little") + t, 32) & 0x3FFF) < 1638}
    assert {s.trace_id for s in sink2.spans()} == formula


async def test_probabilistic_edges_and_logs() -> None:
    ids = trace_ids(200)
    for pct, expect in ((0, 0), (100, 200)):
        sink = Sink()
        p = ProbabilisticSampler(settings(sink, "probabilistic_sampler"),
                                 ProbabilisticSamplerConfig(sampling_percentage=pct))
        await p.consume(pb_batch([{"trace_id": t} for t in ids]))
        assert sink.items() == expect
    # logs: by trace id; a record without one is dropped (fail_closed) unless fail_closed is false
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for t in ids:
        sl.log_records.add(trace_id=t).body.string_value = "x"
    sl.log_records.add().body.string_value = "no trace"
    sink = Sink()
    s = CreateSettings(id=ComponentID.parse("probabilistic_sampler"), kind=Kind.PROCESSOR, signal=Signal.LOGS,
                       next=sink)
    p = ProbabilisticSampler(s, ProbabilisticSamplerConfig(sampling_percentage=50))
    await p.consume(Batch(Signal.LOGS, req))
    got = [r for b in sink.batches for rl in b.request.resource_logs for sl2 in rl.scope_logs
           for r in sl2.log_records]
    want = {t for t, k in zip(ids, [(hv & 0x3FFF) < 8192 for hv in h.fnv32a_many(ids, h.fnv32a_state(0))]) if k}
    assert {r.trace_id for r in got} == want and all(r.trace_id for r in got)
    with pytest.raises(ValueError, match="from_attribute"):
        ProbabilisticSamplerConfig(sampling_percentage=5, attribute_source="record")


# --- tail_sampling ------------------------------------------------------------------------------------------
RECIPE = """
decision_wait: 1s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: budget, type: budget_exceeded}
  - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 5}}
"""


async def _run_tail(cfg: str | dict[str, Any], batches: list[Batch], wait: float = 0.0) -> tuple[Sink, TailSampler]:
    sink = Sink()
    conf = TailSamplingConfig.model_validate(yaml.safe_load(cfg) if isinstance(cfg, str) else cfg)
    ts = TailSampler(settings(sink), conf)
    await ts.start()
    for b in batches:
        await ts.consume(b)
        if wait:
            await asyncio.sleep(wait)
    await asyncio.sleep(conf.decision_wait + 0.1)
    await ts.shutdown()
    return sink, ts


async def test_recipe_keeps_every_error_and_budget_breach_and_5_percent_of_the_rest() -> None:
    rnd = random.Random(3)
    ids = trace_ids(4000, seed=5)
    errors = set(rnd.sample(ids, 150))
    breaches = set(rnd.sample([t for t in ids if t not in errors], 60))
    first, second = [], []
    for t in ids:
        # every trace has two spans in two different requests: the error / breach is on the second one
        first.append({"trace_id": t, "attributes": dict(LITELLM)})
        attrs = dict(LITELLM)
        if t in breaches:
            attrs["llm.budget.exceeded"] = True
        second.append({"trace_id": t, "status": 2 if t in errors else 0, "attributes": attrs})
    sink, _ = await _run_tail(RECIPE, [pb_batch(first[i:i + 500]) for i in range(0, 4000, 500)]
                              + [pb_batch(second[i:i + 500]) for i in range(0, 4000, 500)])
    spans = sink.spans()
    kept = {s.trace_id for s in spans}
    assert errors <= kept and breaches <= kept
    rest = len(kept - errors - breaches) / (4000 - len(errors) - len(breaches))
    assert 0.03 <= rest <= 0.07, rest
    # all spans of a kept trace are kept
    per: dict[bytes, int] = {}
    for s in spans:
        per[s.trace_id] = per.get(s.trace_id, 0) + 1
    assert set(per.values()) == {2}


async def test_late_spans_follow_the_cached_decision() -> None:
    ids = trace_ids(100, seed=9)
    cfg = {"decision_wait": 0.05, "policies": [{"name": "err", "type": "status_code",
                                                 "status_code": {"status_codes": ["ERROR"]}}]}
    sink = Sink()
    ts = TailSampler(settings(sink), TailSamplingConfig.model_validate(cfg))
    await ts.start()
    await ts.consume(pb_batch([{"trace_id": t, "status": 2 if i < 10 else 0} for i, t in enumerate(ids)]))
    await asyncio.sleep(0.2)
    assert {s.trace_id for s in sink.spans()} == set(ids[:10])
    await ts.consume(pb_batch([{"trace_id": t} for t in ids]))  # late: forwarded at once, filtered
    assert len(sink.spans()) == 20 and len(ts.held) == 0
    await ts.shutdown()
    await ts.shutdown()  # safe twice


def _mk(tid: bytes, **kw: Any) -> dict[str, Any]:
    return {"trace_id": tid, **kw}


async def test_policies() -> None:
    a, b, c, d = trace_ids(4, seed=1)
    base = 1_700_000_000_000_000_000
    cases: list[tuple[dict[str, Any], list[dict[str, Any]], set[bytes]]] = [
        ({"type": "latency", "latency": {"threshold_ms": 1000}},
         [_mk(a, start=base, end=base + 2_000_000_000), _mk(b, start=base, end=base + 10_000_000)], {a}),
        ({"type": "string_attribute", "string_attribute": {"key": "feature", "values": ["chat", "se.*"],
                                                           "enabled_regex_matching": True}},
         [_mk(a, attributes={"feature": "search"}), _mk(b, attributes={"feature": "x"})], {a}),
        ({"type": "string_attribute", "string_attribute": {"key": "service.name", "values": ["llm-app"]}},
         [_mk(a)], {a}),  # resource attributes count too
        ({"type": "string_attribute", "string_attribute": {"key": "feature", "values": ["chat"],
                                                           "invert_match": True}},
         [_mk(a, attributes={"feature": "chat"}), _mk(b, attributes={"feature": "x"})], {b}),
        ({"type": "numeric_attribute", "numeric_attribute": {"key": "http.status_code", "min_value": 500}},
         [_mk(a, attributes={"http.status_code": 503}), _mk(b, attributes={"http.status_code": 200})], {a}),
        ({"type": "boolean_attribute", "boolean_attribute": {"key": "cache_hit", "value": True}},
         [_mk(a, attributes={"cache_hit": True}), _mk(b, attributes={"cache_hit": False})], {a}),
        ({"type": "cost", "cost": {"min_cost_usd": 0.5}},
         [_mk(a, attributes={"gen_ai.usage.cost": 0.3}), _mk(a, attributes={"gen_ai.usage.cost": 0.3}),
          _mk(b, attributes={"gen_ai.usage.cost": 0.4}), _mk(c)], {a}),
        ({"type": "budget_exceeded"},
         [_mk(a, attributes={"llm.budget.exceeded": True}), _mk(b, attributes={"llm.budget.exceeded": False})],
         {a}),
        ({"type": "tenant_rate", "tenant_rate": {"sampling_percentage": 0, "tenants": {"acme": 100}}},
         [_mk(a, attributes={"metadata.user_api_key_team_id": "acme"}), _mk(b, attributes={"tenant.id": "x"}),
          _mk(c)], {a}),
        ({"type": "span_count", "span_count": {"min_spans": 2}}, [_mk(a), _mk(a), _mk(b)], {a}),
        ({"type": "and", "and": {"and_sub_policy": [
            {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "f", "type": "string_attribute", "string_attribute": {"key": "feature", "values": ["chat"]}}]}},
         [_mk(a, status=2, attributes={"feature": "chat"}), _mk(b, status=2), _mk(c, attributes={"feature": "chat"})],
         {a}),
        ({"type": "rate_limiting", "rate_limiting": {"spans_per_second": 3}}, [_mk(a), _mk(b), _mk(c), _mk(d)],
         None),  # type: ignore[list-item]
        ({"type": "always_sample"}, [_mk(a), _mk(b)], {a, b}),
    ]
    for pol, spans, want in cases:
        cfg = {"decision_wait": 0.02, "policies": [{"name": "p", **pol}]}
        sink, _ = await _run_tail(cfg, [pb_batch(spans)])
        got = {s.trace_id for s in sink.spans()}
        if want is None:  # rate limit 3 spans/s: fewer than 3 single-span traces
            assert 1 <= len(got) <= 2, pol
        else:
            assert got == want, (pol, got)


async def test_composite_allocates_rates() -> None:
    ids = trace_ids(50, seed=2)
    cfg = {"decision_wait": 0.02, "policies": [{"name": "comp", "type": "composite", "composite": {
        "max_total_spans_per_second": 10, "policy_order": ["errors", "all"],
        "composite_sub_policy": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "all", "type": "always_sample"}],
        "rate_allocation": [{"policy": "errors", "percent": 50}, {"policy": "all", "percent": 50}]}}]}
    spans = [_mk(t, status=2 if i % 2 else 0) for i, t in enumerate(ids)]
    sink, _ = await _run_tail(cfg, [pb_batch(spans)])
    got = sink.spans()
    assert len(got) == 10
    assert sum(1 for s in got if s.status.code == 2) == 5


def test_config_errors_name_their_path() -> None:
    doc = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"tail_sampling": {"policies": [
            {"name": "a", "type": "status_code"},
            {"name": "b", "type": "string_attribute",
             "string_attribute": {"key": "k", "values": ["(x"], "enabled_regex_matching": True}},
            {"name": "c", "type": "probabilistic", "probabilistic": {"sampling_percentage": 150}},
        ]}, "probabilistic_sampler": {"sampling_percentage": -1}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling",
                                                                                  "probabilistic_sampler"],
                                             "exporters": ["debug"]}}},
    }
    with pytest.raises(ConfigError) as ei:
        validate(doc)
    text = str(ei.value)
    assert "processors::tail_sampling::policies::0: policy 'a' of type status_code needs" in text
    assert "processors::tail_sampling::policies::1: string_attribute.values.0: invalid regex" in text
    assert "processors::tail_sampling::policies::2::probabilistic::sampling_percentage" in text
    assert "processors::probabilistic_sampler::sampling_percentage" in text


class _Ext:
    def __init__(self, d: Path) -> None:
        self.d, self.fsync = d, False

    def path_for(self, kind: str, cid: str) -> str:
        return str(self.d / f"{kind}_{cid}.sqlite")


class _Host:
    def __init__(self, d: Path) -> None:
        self.ext = _Ext(d)

    def extension(self, cid: str) -> Any:
        assert cid == "file_storage"
        return self.ext


async def test_storage_restores_held_requests_after_a_crash(tmp_path: Path) -> None:
    ids = trace_ids(300, seed=4)
    cfg = TailSamplingConfig.model_validate({"decision_wait": 30, "storage": "file_storage", "policies": [
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
    sink = Sink()
    ts = TailSampler(settings(sink, host=_Host(tmp_path)), cfg)
    await ts.start()
    await ts.consume(pb_batch([_mk(t, status=2 if i % 3 == 0 else 0) for i, t in enumerate(ids)]))
    assert sink.items() == 0 and os.path.exists(tmp_path / "processor_tail_sampling.sqlite")
    # "crash": the task dies, nothing is flushed, the file stays
    assert ts._task is not None
    ts._task.cancel()
    ts._store.close()  # type: ignore[union-attr]
    cfg2 = cfg.model_copy(update={"decision_wait": 0.05})
    sink2 = Sink()
    ts2 = TailSampler(settings(sink2, host=_Host(tmp_path)), cfg2)
    await ts2.start()
    await asyncio.sleep(0.2)
    assert {s.trace_id for s in sink2.spans()} == {t for i, t in enumerate(ids) if i % 3 == 0}
    await ts2.shutdown()
    # a held request whose traces were all decided before a crash is forwarded by those decisions on start
    import sqlite3

    db = sqlite3.connect(tmp_path / "processor_tail_sampling.sqlite")
    late = pb_batch([_mk(t) for t in ids[:6]])
    db.execute("INSERT INTO held VALUES (999, 0, '{}', ?)", (late.to_bytes(),))
    db.commit()
    db.close()
    sink3 = Sink()
    ts3 = TailSampler(settings(sink3, host=_Host(tmp_path)), cfg2)
    await ts3.start()
    assert len(ts3.held) == 0  # forwarded requests were deleted
    assert [s.trace_id for s in sink3.spans()] == [ids[0], ids[3]]
    # late spans (no error of their own) of traces decided before the restart follow the stored decision
    await ts3.consume(pb_batch([_mk(t) for t in ids]))
    assert {s.trace_id for s in sink3.spans()} == {t for i, t in enumerate(ids) if i % 3 == 0}
    await ts3.shutdown()


async def test_num_traces_forces_early_decisions() -> None:
    ids = trace_ids(100, seed=8)
    cfg = {"decision_wait": 30, "num_traces": 50, "policies": [{"name": "all", "type": "always_sample"}]}
    sink = Sink()
    ts = TailSampler(settings(sink), TailSamplingConfig.model_validate(cfg))
    await ts.start()
    for i in range(0, 100, 10):
        await ts.consume(pb_batch([_mk(t) for t in ids[i:i + 10]]))
    assert len(ts.pending) <= 50 and sink.items() >= 50
    await ts.shutdown()
    assert sink.items() == 100  # flushed on shutdown


async def test_overdue_decisions_are_released_by_the_next_consume() -> None:
    """When the process is too busy for the timer task, the next consume releases what is overdue (the
    receiver answers later and what is held stays about decision_wait's worth)."""
    now = [0.0]
    ids = trace_ids(20, seed=4)
    sink = Sink()
    cfg = TailSamplingConfig.model_validate({"decision_wait": 1, "policies": [{"name": "all", "type": "always_sample"}]})
    ts = TailSampler(settings(sink), cfg, clock=lambda: now[0])  # not started: no timer task
    await ts.consume(pb_batch([{"trace_id": t} for t in ids[:10]]))
    now[0] = 1.1  # due, but within a quarter of decision_wait: left to the timer
    await ts.consume(pb_batch([{"trace_id": t} for t in ids[10:15]]))
    assert sink.spans() == [] and len(ts.held) == 2
    now[0] = 1.3  # the first request is overdue
    await ts.consume(pb_batch([{"trace_id": t} for t in ids[15:]]))
    assert {s.trace_id for s in sink.spans()} == set(ids[:10])
    assert len(ts.held) == 2
    now[0] = 5.0
    await ts.flush()
    assert {s.trace_id for s in sink.spans()} == set(ids)


def test_decision_cache_keeps_the_newest() -> None:
    from processors.tail_sampling import _DecisionCache

    c = _DecisionCache(10)
    for i in range(100):
        c[bytes([i])] = i % 2 == 0
    assert 5 <= len(c) <= 10
    assert c.get(bytes([99])) is False and c.get(bytes([98])) is True and bytes([98]) in c
    assert bytes([0]) not in c and c.get(bytes([0])) is None and c.get(bytes([0]), False) is False


async def test_traces_across_scopes_requests_and_policies_without_a_fast_path() -> None:
    """A trace held as one span goes on as a whole trace when more of its spans come: in another scope of the
    same request, or in a later request; policies without a one-span shortcut (latency, and) see the same."""
    a, b, c, d = trace_ids(4, seed=21)
    req = pb_batch([{"trace_id": a}, {"trace_id": b}]).request
    extra = pb_batch([{"trace_id": a, "status": 2}, {"trace_id": c}]).request
    req.resource_spans[0].scope_spans.append(extra.resource_spans[0].scope_spans[0])  # a second scope
    cfg = {"decision_wait": 1, "policies": [  # long enough for all three requests, however slow the machine
        {"name": "err", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "and", "and": {"and_sub_policy": [
            {"name": "l", "type": "latency", "latency": {"threshold_ms": 5000}},
            {"name": "all", "type": "always_sample"}]}}]}
    late = pb_batch([{"trace_id": d, "start": 0, "end": 6_000_000_000}, {"trace_id": b}])
    sink, ts = await _run_tail(cfg, [Batch(Signal.TRACES, req), pb_batch([{"trace_id": d}]), late])
    got = sorted(s.trace_id for s in sink.spans())
    assert got == sorted([a, a, d, d]), got  # a: error in its second scope; d: 6 s across two requests
    assert not ts.pending
