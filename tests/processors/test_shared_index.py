"""The paths that read attribute values from collector/genai's shared per-request pass (when processors
earlier in the chain changed the request) give the same results as the paths that search the request's
bytes; and tail_sampling's wire path decides as the policies say."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Signal
from processors.filter import FilterConfig, FilterProcessor
from processors.llm_alerts import LLMAlertsConfig, LLMAlertsConnector
from processors.tail_sampling import TailSampler, TailSamplingConfig
from tests.processors.llm_spans import LITELLM, OPENLLMETRY, Sink, pb_batch, trace_ids


@pytest.fixture(params=["bytes", "shared"])
def mode(request: Any) -> str:
    """``bytes``: the batch as received (its bytes are searched); ``shared``: changed upstream (no bytes at
    hand), so the values come from collector/genai's shared per-request pass."""
    return str(request.param)


def _batch(spans: list[dict[str, Any]], mode: str) -> Any:
    b = pb_batch(spans)
    if mode == "shared":
        b.request.resource_spans[0].scope_spans[0].spans[1].name = "renamed"
        b.modified()
    return b


def _spans() -> list[dict[str, Any]]:
    ids = trace_ids(200, seed=13)
    out = []
    for i, t in enumerate(ids):
        a = dict(LITELLM if i % 2 else OPENLLMETRY)
        if i % 25 == 3:
            a["llm.budget.exceeded"] = True
        if i % 40 == 5:
            a["metadata.no-log"] = True
        if i == 7:
            a.update({"llm.budget.crossed": 0.8, "llm.budget.key_name": "tenant.id", "llm.budget.key": "acme",
                      "llm.budget.spent_usd": 8.0, "llm.budget.limit_usd": 10.0})
        out.append({"trace_id": t, "attributes": a, "status": 2 if i % 50 == 0 else 0})
    return out


async def test_tail_sampling_decisions() -> None:
    """tail_sampling reads its values on the serialised request (collector/wire.py), whatever the state of
    the batch it gets: with its received bytes, or changed (parsed, no bytes at hand)."""
    for changed in (False, True):
        await _tail_sampling(changed)


async def _tail_sampling(changed: bool) -> None:
    spans = _spans()
    sink = Sink()
    cfg = TailSamplingConfig.model_validate({"decision_wait": 0.02, "policies": [
        {"name": "budget", "type": "budget_exceeded"},
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]})
    ts = TailSampler(CreateSettings(id=ComponentID.parse("tail_sampling"), kind=Kind.PROCESSOR,
                                    signal=Signal.TRACES, next=sink), cfg)
    await ts.start()
    b = pb_batch(spans)
    if changed:
        b.request.resource_spans[0].scope_spans[0].spans[1].name = "renamed"
        b.modified()  # as after an object-path processor: no bytes at hand
    await ts.consume(b)
    await asyncio.sleep(0.1)
    await ts.shutdown()
    want = {s["trace_id"] for i, s in enumerate(spans) if i % 25 == 3 or i % 50 == 0}
    assert {s.trace_id for s in sink.spans()} == want


async def test_filter_and_alerts_same_results(mode: str) -> None:
    spans = _spans()
    sink = Sink()
    f = FilterProcessor(CreateSettings(id=ComponentID.parse("filter"), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                                       next=sink), FilterConfig())
    b = _batch(spans, mode)
    await f.consume(b)
    assert len(sink.spans()) == 200 - 5
    logs = Sink()
    a = LLMAlertsConnector(CreateSettings(id=ComponentID.parse("llm_alerts"), kind=Kind.CONNECTOR,
                                          consumers={Signal.LOGS: logs}), LLMAlertsConfig())  # type: ignore[dict-item]
    b2 = _batch(spans, mode)
    await a.consume(b2)
    recs = [r for x in logs.batches for rl in x.request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert len(recs) == 1 and recs[0].span_id == b2.request.resource_spans[0].scope_spans[0].spans[7].span_id
