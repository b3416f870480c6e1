"""llm_metrics connector, in process: values, semconv buckets, cardinality overflow, temporality."""

from __future__ import annotations

import asyncio
from typing import Any

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Signal, attrs_to_dict
from processors.llm_metrics import (
    DURATION_BUCKETS,
    TOKEN_USAGE_BUCKETS,
    LLMMetricsConfig,
    LLMMetricsConnector,
)
from tests.processors.llm_spans import LITELLM, OPENINFERENCE, OPENLLMETRY, Sink, pb_batch, trace_ids

T0 = 1_700_000_000_000_000_000


def _conn(**cfg: Any) -> tuple[LLMMetricsConnector, Sink]:
    sink = Sink()
    s = CreateSettings(id=ComponentID.parse("llm_metrics"), kind=Kind.CONNECTOR,
                       consumers={Signal.METRICS: sink})  # type: ignore[dict-item]
    return LLMMetricsConnector(s, LLMMetricsConfig.model_validate(cfg)), sink


def _points(req: Any, name: str) -> list[tuple[dict[str, Any], Any]]:
    out = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    data = getattr(m, m.WhichOneof("data"))
                    out += [(attrs_to_dict(dp.attributes), dp) for dp in data.data_points]
    return out


async def test_llm_metrics_from_three_conventions() -> None:
    conn, sink = _conn(metrics_flush_interval="50ms")
    await conn.start()
    ids = trace_ids(5)
    await conn.consume(pb_batch([
        {"trace_id": ids[0], "attributes": {**LITELLM, "gen_ai.usage.cost": 0.01}, "start": T0, "end": T0 + 700_000_000},
        {"trace_id": ids[1], "attributes": {**LITELLM, "gen_ai.usage.cost": 0.02, "error.type": "InternalServerError"},
         "start": T0,
         "end": T0 + 3_000_000_000, "status": 2},
        {"trace_id": ids[2], "attributes": dict(OPENLLMETRY), "start": T0, "end": T0 + 50_000_000},
        {"trace_id": ids[3], "attributes": dict(OPENINFERENCE), "start": T0, "end": T0 + 120_000_000},
        {"trace_id": ids[4], "attributes": {"http.route": "/health"}},  # not an LLM span
    ]))
    await asyncio.sleep(0.15)
    await conn.shutdown()
    assert sink.batches, "flushed on the timer"
    req = sink.batches[-1].request
    reqs = {(a["model"], a["tenant.id"], a["outcome"]): dp.as_int for a, dp in _points(req, "llm.requests")}
    assert reqs == {("gpt-4o-2024-08-06", "acme", "success"): 1, ("gpt-4o-2024-08-06", "acme", "error"): 1,
                    ("claude-3-5-sonnet-20241022", "globex", "success"): 1, ("gpt-4o-mini", "initech", "success"): 1}
    errs = sum(dp.as_int for _a, dp in _points(req, "llm.errors"))
    assert errs == 1
    tokens: dict[tuple[str, str], int] = {}
    for a, dp in _points(req, "llm.tokens"):
        tokens[(a["provider"], a["token.type"])] = tokens.get((a["provider"], a["token.type"]), 0) + dp.as_int
    assert tokens[("openai", "input")] == 120 + 120 + 50 and tokens[("Anthropic", "output")] == 80
    cost = sum(dp.as_double for _a, dp in _points(req, "llm.cost_usd"))
    assert abs(cost - 0.03) < 1e-12
    lat = next(dp for a, dp in _points(req, "llm.latency_ms") if a["model"] == "gpt-4o-mini")
    assert lat.count == 1 and lat.sum == 120.0 and lat.bucket_counts[2] == 1  # (100, 250]
    usage = _points(req, "gen_ai.client.token.usage")
    assert all(list(dp.explicit_bounds) == [float(b) for b in TOKEN_USAGE_BUCKETS] for _a, dp in usage)
    inp = next(dp for a, dp in usage if a.get("gen_ai.request.model") == "claude-3-5-sonnet"
           and a["gen_ai.token.type"] == "input")
    assert inp.count == 1 and inp.sum == 300 and inp.bucket_counts[5] == 1  # (256, 1024]
    dur = _points(req, "gen_ai.client.operation.duration")
    assert all(list(dp.explicit_bounds) == DURATION_BUCKETS for _a, dp in dur)
    failed = [a for a, dp in dur if "error.type" in a]
    assert failed == [{"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                       "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                       "error.type": "InternalServerError"}]
    rm = req.resource_metrics[0]
    assert attrs_to_dict(rm.resource.attributes) == {"service.name": "llm-app"}
    assert req.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 2


async def test_cardinality_limit_and_delta() -> None:
    conn, sink = _conn(dimensions=["tenant"], cardinality_limit=2, aggregation_temporality="delta",
                       metrics_flush_interval="1h")
    await conn.start()
    spans = [{"trace_id": t, "attributes": {**LITELLM, "tenant.id": f"t{i}"}} for i, t in enumerate(trace_ids(5))]
    await conn.consume(pb_batch(spans))
    await conn.flush()
    req = sink.batches[-1].request
    got = {tuple(sorted(a.items())): dp.as_int for a, dp in _points(req, "llm.requests")}
    assert got == {(("tenant.id", "t0"),): 1, (("tenant.id", "t1"),): 1, (("otel.metric.overflow", True),): 3}
    assert req.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1
    await conn.flush()
    assert len(sink.batches) == 1  # delta: nothing new, nothing emitted
    await conn.consume(pb_batch(spans[:1]))
    await conn.shutdown()
    req2 = sink.batches[-1].request
    assert [dp.as_int for _a, dp in _points(req2, "llm.requests")] == [1]
    p = _points(req2, "llm.requests")[0][1]
    assert p.start_time_unix_nano >= _points(req, "llm.requests")[0][1].time_unix_nano  # delta: since last flush
