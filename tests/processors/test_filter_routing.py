"""filter and routing, in process."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import validate
from collector.errors import ConfigError
from collector.pdata import Batch, Signal, python_to_anyvalue
from processors.filter import FilterConfig, FilterProcessor
from processors.routing import RoutingConfig, RoutingConnector
from tests.processors.llm_spans import (
    LITELLM,
    OPENINFERENCE,
    OPENLLMETRY,
    Sink,
    pb_batch,
    pb_request,
    trace_ids,
)


def _filter(cfg: dict[str, Any], signal: Signal = Signal.TRACES) -> tuple[FilterProcessor, Sink]:
    sink = Sink()
    s = CreateSettings(id=ComponentID.parse("filter"), kind=Kind.PROCESSOR, signal=signal, next=sink)
    return FilterProcessor(s, FilterConfig.model_validate(cfg)), sink


async def test_filter_conditions_on_llm_spans() -> None:
    ids = trace_ids(8)
    spans = [
        {"trace_id": ids[0], "name": "chat gpt-4o", "attributes": dict(LITELLM)},
        {"trace_id": ids[1], "name": "healthcheck", "attributes": dict(OPENLLMETRY)},
        {"trace_id": ids[2], "name": "chat", "attributes": {**OPENINFERENCE, "llm.token_count.total": 9000}},
        {"trace_id": ids[3], "name": "chat", "attributes": {**LITELLM, "metadata.no-log": True}},
        {"trace_id": ids[4], "name": "chat", "attributes": {**OPENLLMETRY, "llm.no_log": "true"}},
        {"trace_id": ids[5], "name": "chat", "kind": 2, "attributes": {"feature": "internal-eval"}},
        {"trace_id": ids[6], "name": "chat", "status": 2, "attributes": {"feature": "x"}},
        {"trace_id": ids[7], "name": "embed", "attributes": {"feature": "x"}},
    ]
    f, sink = _filter({"spans": {"drop": [
        {"field": "name", "matches": "^health"},
        {"attribute": "llm.token_count.total", "gt": 5000},
        {"all": [{"field": "kind", "equals": "SPAN_KIND_SERVER"}, {"attribute": "feature", "matches": "eval"}]},
        {"any": [{"field": "status", "equals": "error"}, {"resource": "deployment.environment", "equals": "dev"}]},
        {"attribute": "feature", "exists": False},
    ]}})
    await f.consume(pb_batch(spans))
    kept = [s.trace_id for s in sink.spans()]
    # 0 kept (no feature? LITELLM has metadata.feature, not feature -> dropped by exists: false)
    assert kept == [ids[7]]
    # drop_no_log alone, and a batch where no key occurs is passed through untouched (same bytes)
    f2, sink2 = _filter({})
    b = pb_batch(spans[:5])
    raw = b.to_bytes()
    await f2.consume(b)
    assert [s.trace_id for s in sink2.spans()] == ids[:3]
    clean = Batch.from_bytes(Signal.TRACES, pb_request(spans[:3]).SerializeToString())
    raw2 = clean.to_bytes()
    await f2.consume(clean)
    assert sink2.batches[-1].to_bytes() is raw2 and raw  # unmodified: bytes reused
    f3, sink3 = _filter({"drop_no_log": False})
    await f3.consume(pb_batch(spans[:5]))
    assert len(sink3.spans()) == 5


async def test_filter_resource_logs_and_metrics() -> None:
    f, sink = _filter({"spans": {"drop": [{"resource": "deployment.environment", "equals": "dev"}]}})
    await f.consume(pb_batch([{"trace_id": trace_ids(1)[0]}], resource={"deployment.environment": "dev"}))
    await f.consume(pb_batch([{"trace_id": trace_ids(1)[0]}], resource={"deployment.environment": "prod"}))
    assert len(sink.spans()) == 1
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for body, sev in (("debug noise", 5), ("real", 17)):
        r = sl.log_records.add(severity_number=sev)
        r.body.string_value = body
    r = sl.log_records.add(severity_number=17)
    r.body.string_value = "secret"
    kv = r.attributes.add(key="no-log")
    kv.value.bool_value = True
    lf, lsink = _filter({"logs": {"drop": [{"field": "severity_number", "lt": 9}]}}, Signal.LOGS)
    await lf.consume(Batch(Signal.LOGS, req))
    assert [r.body.string_value for b in lsink.batches for rl in b.request.resource_logs for s in rl.scope_logs
            for r in s.log_records] == ["real"]
    mreq = ExportMetricsServiceRequest()
    sm = mreq.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="llm.requests")
    for tenant in ("acme", "test"):
        dp = m.sum.data_points.add(as_int=1)
        kv = dp.attributes.add(key="tenant.id")
        python_to_anyvalue(tenant, kv.value)
    sm.metrics.add(name="debug.metric").gauge.data_points.add(as_double=1.0)
    mf, msink = _filter({"metrics": {"drop": [{"attribute": "tenant.id", "equals": "test"},
                                              {"field": "name", "matches": "^debug\\."}]}}, Signal.METRICS)
    await mf.consume(Batch(Signal.METRICS, mreq))
    out = msink.batches[0].request.resource_metrics[0].scope_metrics[0].metrics
    assert [x.name for x in out] == ["llm.requests"] and len(out[0].sum.data_points) == 1


def test_filter_config_errors() -> None:
    doc = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"filter": {"spans": {"drop": [
            {"attribute": "x", "matches": "(unclosed"},
            {"attribute": "x"},
            {"field": "body", "equals": "x"},
        ]}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["filter"],
                                             "exporters": ["debug"]}}},
    }
    with pytest.raises(ConfigError) as ei:
        validate(doc)
    text = str(ei.value)
    assert "processors::filter::spans::drop::0: matches: invalid regex '(unclosed'" in text
    assert "processors::filter::spans::drop::1: a condition needs exactly one operator" in text
    doc["processors"]["filter"]["spans"]["drop"] = [{"field": "body", "equals": "x"}]
    with pytest.raises(ConfigError, match="field 'body' does not apply to spans"):
        validate(doc)


def _router(cfg: dict[str, Any], names: list[str]) -> tuple[RoutingConnector, dict[str, Sink]]:
    sinks = {n: Sink() for n in names}
    s = CreateSettings(id=ComponentID.parse("routing"), kind=Kind.CONNECTOR, pipelines=sinks)  # type: ignore[arg-type]
    return RoutingConnector(s, RoutingConfig.model_validate(cfg)), sinks


async def test_routing_by_attribute_splits_per_destination() -> None:
    r, sinks = _router({"attribute": "tenant.id", "table": [
        {"value": "acme", "pipelines": ["traces/acme"]},
        {"value": "globex", "pipelines": ["traces/acme", "traces/globex"]}],
        "default_pipelines": ["traces/default"]}, ["traces/acme", "traces/globex", "traces/default"])
    ids = trace_ids(4)
    # resource-level tenant: whole request to one pipeline, not copied
    b = pb_batch([{"trace_id": ids[0]}], resource={"service.name": "a", "tenant.id": "acme"})
    await r.consume(b)
    assert sinks["traces/acme"].batches == [b]
    # span-level tenants under one resource: split
    await r.consume(pb_batch([
        {"trace_id": ids[1], "attributes": {"tenant.id": "globex"}},
        {"trace_id": ids[2], "attributes": {"tenant.id": "initech"}},
        {"trace_id": ids[3], "attributes": {"tenant.id": "acme"}},
    ], resource={"service.name": "gw"}))
    assert [s.trace_id for s in sinks["traces/globex"].spans()] == [ids[1]]
    assert [s.trace_id for s in sinks["traces/default"].spans()] == [ids[2]]
    assert [s.trace_id for s in sinks["traces/acme"].spans()] == [ids[0], ids[1], ids[3]]
    last = sinks["traces/acme"].batches[-1].request.resource_spans[0]
    assert last.resource.attributes[0].value.string_value == "gw"
    # the two copies of the globex span are independent objects
    assert sinks["traces/acme"].batches[-1] is not sinks["traces/globex"].batches[-1]


async def test_routing_from_context_and_config_errors() -> None:
    r, sinks = _router({"from_context": "metadata.x-team", "table": [{"value": "ml", "pipelines": ["traces/ml"]}]},
                       ["traces/ml", "logs/ml"])
    await r.consume(Batch(Signal.TRACES, pb_request([{"trace_id": trace_ids(1)[0]}]), metadata={"x-team": "ml"}))
    await r.consume(Batch(Signal.TRACES, pb_request([{"trace_id": trace_ids(1)[0]}]), metadata={"x-team": "web"}))
    assert len(sinks["traces/ml"].batches) == 1 and not sinks["logs/ml"].batches
    with pytest.raises(ConfigError, match="table::0::pipelines: pipeline 'traces/x' does not list the connector"):
        _router({"attribute": "a", "table": [{"value": "v", "pipelines": ["traces/x"]}]}, ["traces/y"])
    doc = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "connectors": {"routing": {"attribute": "tenant.id", "table": [{"value": "a", "pipelines": ["traces/a"]}],
                                   "default_pipelines": ["traces/nope"]}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["routing"]},
                                  "traces/a": {"receivers": ["routing"], "exporters": ["debug"]},
                                  "traces/nope": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }
    with pytest.raises(ConfigError, match="connectors::routing::default_pipelines: pipeline 'traces/nope' does not"):
        validate(doc)
    doc["connectors"]["routing"]["default_pipelines"] = ["traces/a"]
    validate(doc)
    with pytest.raises(ValueError, match="exactly one of attribute or from_context"):
        RoutingConfig.model_validate({"table": [{"value": "v", "pipelines": ["p"]}]})
