"""llm_alerts connector, in process: budget crossings, error-rate and p95 windows, guardrails."""

from __future__ import annotations

from typing import Any

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Signal, attrs_to_dict
from processors.llm_alerts import LLMAlertsConfig, LLMAlertsConnector
from tests.processors.llm_spans import LITELLM, OPENINFERENCE, OPENLLMETRY, Sink, pb_batch, trace_ids

T0 = 1_795_910_400_000_000_000  # 2026-11-29T00:00:00Z


def _conn(**cfg: Any) -> tuple[LLMAlertsConnector, Sink]:
    sink = Sink()
    s = CreateSettings(id=ComponentID.parse("llm_alerts"), kind=Kind.CONNECTOR,
                       consumers={Signal.LOGS: sink})  # type: ignore[dict-item]
    return LLMAlertsConnector(s, LLMAlertsConfig.model_validate(cfg)), sink


def _records(sink: Sink) -> list[tuple[str, dict[str, Any], Any]]:
    return [(r.body.string_value, attrs_to_dict(r.attributes), r) for b in sink.batches
            for rl in b.request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def _budget_span(tid: bytes, crossed: float | None, spent: float, end: int = T0 + 3_600_000_000_000) -> dict[str, Any]:
    attrs = {**OPENLLMETRY, "gen_ai.usage.cost": 0.5}
    if crossed is not None:
        attrs.update({"llm.budget.crossed": crossed, "llm.budget.key_name": "tenant.id", "llm.budget.key": "acme",
                      "llm.budget.spent_usd": spent, "llm.budget.limit_usd": 100.0})
        if crossed >= 1:
            attrs["llm.budget.exceeded"] = True
    return {"trace_id": tid, "attributes": attrs, "start": end - 1_000_000_000, "end": end}


async def test_budget_crossings_give_exactly_two_records() -> None:
    conn, sink = _conn()
    ids = trace_ids(6)
    await conn.consume(pb_batch([_budget_span(ids[0], None, 0), _budget_span(ids[1], 0.8, 80.5)]))
    await conn.consume(pb_batch([_budget_span(ids[2], None, 0), _budget_span(ids[3], 1.0, 100.2)]))
    await conn.consume(pb_batch([_budget_span(ids[3], 1.0, 100.2)]))  # redelivered: no second record
    await conn.consume(pb_batch([_budget_span(ids[4], None, 0)]))
    recs = _records(sink)
    assert len(recs) == 2
    (b1, a1, r1), (b2, a2, r2) = recs
    assert a1["alert.key"] == "budget:tenant.id=acme:0.8:2026-11-29"
    assert a2["alert.key"] == "budget:tenant.id=acme:1:2026-11-29"
    assert (a1["alert.kind"], a1["alert.severity"], a2["alert.severity"]) == ("budget", "warning", "critical")
    assert a1["alert.value"] == 80.5 and a1["alert.threshold"] == 80.0 and a2["alert.threshold"] == 100.0
    assert a1["alert.window"] == "2026-11-29" and a1["tenant.id"] == "acme"
    assert "acme" in b1 and "80%" in b1 and "$80.50" in b1 and "100%" in b2
    assert r1.trace_id == ids[1] and r1.severity_number == 13 and r2.severity_number == 17
    assert attrs_to_dict(sink.batches[0].request.resource_logs[0].resource.attributes) == {"service.name": "llm-app"}


async def test_no_budget_attributes_no_work_no_records() -> None:
    conn, sink = _conn()
    await conn.consume(pb_batch([{"trace_id": t, "attributes": dict(LITELLM)} for t in trace_ids(50)]))
    assert sink.batches == []


async def test_error_rate_fires_once_per_group_and_window() -> None:
    conn, sink = _conn(error_rate={"window": "5m", "threshold": 0.1, "min_requests": 20, "group_by": ["feature"]})
    ids = iter(trace_ids(400))

    def calls(n: int, errors: int, feature: str, at: int) -> list[dict[str, Any]]:
        return [{"trace_id": next(ids), "status": 2 if i < errors else 0, "start": at - 10**9, "end": at,
                 "attributes": {**OPENINFERENCE, "feature": feature}} for i in range(n)]

    base = T0 + 60 * 10**9  # inside the window starting at T0
    await conn.consume(pb_batch(calls(10, 5, "chat", base)))             # 10 calls: below min_requests
    assert _records(sink) == []
    await conn.consume(pb_batch(calls(15, 0, "chat", base + 10**9) + calls(30, 1, "search", base)))
    recs = _records(sink)
    assert len(recs) == 1  # chat: 5/25 = 20% > 10%; search: 1/30 below
    body, a, _r = recs[0]
    assert a["alert.kind"] == "error_rate" and a["feature"] == "chat" and a["alert.severity"] == "critical"
    assert a["alert.value"] == 0.2 and a["alert.threshold"] == 0.1
    assert a["alert.key"] == "error_rate:feature=chat:0.1:2026-11-29T00:00:00Z"
    assert a["alert.window"] == "2026-11-29T00:00:00Z/2026-11-29T00:05:00Z"
    assert "20.0%" in body and "feature=chat" in body
    await conn.consume(pb_batch(calls(20, 10, "chat", base + 2 * 10**9)))  # same window: no repeat
    assert len(_records(sink)) == 1
    await conn.consume(pb_batch(calls(30, 10, "chat", T0 + 6 * 60 * 10**9)))  # next window
    recs = _records(sink)
    assert len(recs) == 2 and recs[1][1]["alert.key"].endswith("2026-11-29T00:05:00Z")


async def test_latency_p95_and_guardrail() -> None:
    conn, sink = _conn(latency_p95={"window": "10m", "threshold_ms": 8000, "min_requests": 20,
                                    "group_by": ["model"]}, guardrail=True)
    ids = iter(trace_ids(100))
    spans = []
    for i in range(40):
        dur = 9_000 if i >= 36 else 1_000  # 4 of 40 slow: p95 is the 38th value -> 9000 ms
        spans.append({"trace_id": next(ids), "start": T0, "end": T0 + dur * 10**6, "attributes": dict(LITELLM)})
    spans.append({"trace_id": next(ids), "start": T0, "end": T0 + 10**9,
                  "attributes": {**LITELLM, "metadata.guardrail_status": "guardrail_intervened"}})
    await conn.consume(pb_batch(spans))
    recs = _records(sink)
    kinds = sorted(a["alert.kind"] for _b, a, _r in recs)
    assert kinds == ["guardrail", "latency_p95"]
    lat = next(a for _b, a, _r in recs if a["alert.kind"] == "latency_p95")
    assert lat["alert.value"] == 9000.0 and lat["alert.threshold"] == 8000.0
    assert lat["gen_ai.request.model"] == "gpt-4o" and lat["alert.severity"] == "warning"
    g = next(a for _b, a, _r in recs if a["alert.kind"] == "guardrail")
    assert g["tenant.id"] == "acme" and g["alert.key"].startswith("guardrail:tenant.id=acme")


async def test_bad_values_are_skipped_not_fatal() -> None:
    """Odd attribute types and empty ids never raise in any component of this branch."""
    from processors.filter import FilterConfig, FilterProcessor
    from processors.llm_metrics import LLMMetricsConfig, LLMMetricsConnector
    from processors.routing import RoutingConfig, RoutingConnector

    spans = [
        {"trace_id": b"", "attributes": {"llm.budget.crossed": "lots", "llm.budget.key": 7, "gen_ai.usage.cost": "x",
                                         "gen_ai.request.model": "m", "gen_ai.usage.input_tokens": "many"}},
        {"trace_id": b"\x01" * 16, "attributes": {"llm.budget.crossed": [1, 2], "tenant.id": 42,
                                                  "llm.no_log": "maybe", "feature": {"a": 1}}},
    ]
    conn, sink = _conn(error_rate={"threshold": 0.1, "min_requests": 1, "group_by": ["feature", "tenant"]},
                       latency_p95={"threshold_ms": 1, "min_requests": 1}, guardrail=True)
    await conn.consume(pb_batch(spans))
    assert all(a["alert.kind"] != "budget" for _b, a, _r in _records(sink))
    fsink = Sink()
    f = FilterProcessor(CreateSettings(id=ComponentID.parse("filter"), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                                       next=fsink),
                        FilterConfig.model_validate({"spans": {"drop": [{"attribute": "tenant.id", "gt": 100},
                                                                        {"attribute": "feature", "matches": "a"}]}}))
    await f.consume(pb_batch(spans))
    assert len(fsink.spans()) == 1  # the dict-valued feature matched "a" as text; "maybe" is not a no-log
    m = LLMMetricsConnector(CreateSettings(id=ComponentID.parse("llm_metrics"), kind=Kind.CONNECTOR,
                                           consumers={Signal.METRICS: Sink()}),  # type: ignore[dict-item]
                            LLMMetricsConfig())
    await m.consume(pb_batch(spans))
    assert m.build() is not None
    rsink = Sink()
    r = RoutingConnector(CreateSettings(id=ComponentID.parse("routing"), kind=Kind.CONNECTOR,
                                        pipelines={"traces/a": rsink}),  # type: ignore[dict-item]
                         RoutingConfig.model_validate({"attribute": "tenant.id",
                                                       "table": [{"value": "42", "pipelines": ["traces/a"]}]}))
    await r.consume(pb_batch(spans))
    assert len(rsink.spans()) == 1
