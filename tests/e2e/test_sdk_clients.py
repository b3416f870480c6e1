"""Real clients: the OpenTelemetry SDK's own OTLP exporters (gRPC and HTTP/protobuf) and a raw OTLP/JSON POST
send traces, metrics and logs to a collector subprocess; every span, metric point and log record comes out of
the file exporter with its attributes intact."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc import Compression as GrpcCompression
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.pdata import Signal, attrs_to_dict, iter_log_records
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, int, int, Path]]:
    d = tmp_path_factory.mktemp("sdk")
    gp, hp = free_port(), free_port()
    quick = {"sending_queue": {"num_consumers": 1}, "retry_on_failure": {"initial_interval": "50ms"}}
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{gp}"},
                                             "http": {"endpoint": f"127.0.0.1:{hp}"}}}},
        "exporters": {f"file/{s}": {"path": str(d / f"{s}.jsonl"), **quick} for s in ("traces", "metrics", "logs")},
        "service": {"pipelines": {s: {"receivers": ["otlp"], "exporters": [f"file/{s}"]}
                                  for s in ("traces", "metrics", "logs")}},
    }
    with CollectorProcess(cfg, workdir=d) as col:
        yield col, gp, hp, d
    assert col.proc is not None and col.proc.returncode == 0, col.logs()


def _resource(tag: str) -> Resource:
    return Resource.create({"service.name": "sdk-test", "test.tag": tag})


def _spans(d: Path) -> list[Any]:
    return list(spans_of(read_otlp_jsonl(d / "traces.jsonl", Signal.TRACES)))


@pytest.mark.parametrize(("transport", "gzip"), [("grpc", False), ("http", False), ("grpc", True), ("http", True)],
                         ids=["grpc", "http", "grpc-gzip", "http-gzip"])
def test_traces_from_sdk(collector: tuple[CollectorProcess, int, int, Path], transport: str, gzip: bool) -> None:
    col, gp, hp, d = collector
    if transport == "grpc":
        exp: Any = GrpcSpanExporter(endpoint=f"127.0.0.1:{gp}", insecure=True,
                                    compression=GrpcCompression.Gzip if gzip else None)
    else:
        exp = HttpSpanExporter(endpoint=f"http://127.0.0.1:{hp}/v1/traces",
                               compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression)
    tag = uuid.uuid4().hex
    tp = TracerProvider(resource=_resource(tag))
    tp.add_span_processor(SimpleSpanProcessor(exp))
    tracer = tp.get_tracer("sdk-test")
    sent: dict[bytes, dict[str, Any]] = {}
    for i in range(5):
        with tracer.start_as_current_span(f"chat {i}") as span:
            attrs = {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10 + i,
                     "gen_ai.request.temperature": 0.5, "stream": i % 2 == 0, "tags": ["a", "b"], "tag": tag}
            span.set_attributes(attrs)
            sent[span.get_span_context().span_id.to_bytes(8, "big")] = attrs
    tp.shutdown()
    got = wait_for(lambda: {s.span_id: s for s in _spans(d) if attrs_to_dict(s.attributes).get("tag") == tag}
                   if len({s.span_id for s in _spans(d) if attrs_to_dict(s.attributes).get("tag") == tag}) == 5
                   else None, what="5 spans in the file")
    assert set(got) == set(sent)
    for sid, attrs in sent.items():
        assert attrs_to_dict(got[sid].attributes) == attrs
    assert col.metric_value("otelcol_receiver_accepted_spans_total", transport=transport) >= 5
    wait_for(lambda: col.metric_value("otelcol_exporter_sent_spans_total", exporter="file/traces") >= 5,
             what="file/traces counts the spans it wrote")
    assert col.metric_value("otelcol_process_memory_rss") > 10e6
    assert col.metric_value("otelcol_process_cpu_seconds_total") > 0


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_metrics_from_sdk(collector: tuple[CollectorProcess, int, int, Path], transport: str) -> None:
    _col, gp, hp, d = collector
    exp = (GrpcMetricExporter(endpoint=f"127.0.0.1:{gp}", insecure=True) if transport == "grpc"
           else HttpMetricExporter(endpoint=f"http://127.0.0.1:{hp}/v1/metrics"))
    tag = uuid.uuid4().hex
    reader = PeriodicExportingMetricReader(exp, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=_resource(tag), metric_readers=[reader])
    meter = mp.get_meter("sdk-test")
    counter = meter.create_counter("llm.requests")
    hist = meter.create_histogram("llm.latency", unit="ms")
    for model in ("gpt-4o", "claude"):
        counter.add(3, {"model": model, "tag": tag})
        hist.record(120.5, {"model": model, "tag": tag})
    mp.shutdown()

    def points() -> dict[tuple[str, str], Any] | None:
        out = {}
        for req in read_otlp_jsonl(d / "metrics.jsonl", Signal.METRICS):
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        for p in getattr(m, m.WhichOneof("data")).data_points:
                            a = attrs_to_dict(p.attributes)
                            if a.get("tag") == tag:
                                out[(m.name, a["model"])] = p
        return out if len(out) == 4 else None

    got = wait_for(points, what="4 metric points in the file")
    assert got[("llm.requests", "gpt-4o")].as_int == 3
    assert got[("llm.latency", "claude")].count == 1 and got[("llm.latency", "claude")].sum == 120.5


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_logs_from_sdk(collector: tuple[CollectorProcess, int, int, Path], transport: str) -> None:
    _col, gp, hp, d = collector
    exp = (GrpcLogExporter(endpoint=f"127.0.0.1:{gp}", insecure=True) if transport == "grpc"
           else HttpLogExporter(endpoint=f"http://127.0.0.1:{hp}/v1/logs"))
    tag = uuid.uuid4().hex
    lp = LoggerProvider(resource=_resource(tag))
    lp.add_log_record_processor(SimpleLogRecordProcessor(exp))
    logger = lp.get_logger("sdk-test")
    for i in range(3):
        logger.emit(body=f"prompt blocked {i}", severity_text="WARN", attributes={"tag": tag, "i": i})
    lp.shutdown()

    def records() -> dict[int, Any] | None:
        out = {}
        for req in read_otlp_jsonl(d / "logs.jsonl", Signal.LOGS):
            for _rl, _sl, rec in iter_log_records(req):
                a = attrs_to_dict(rec.attributes)
                if a.get("tag") == tag:
                    out[a["i"]] = rec
        return out if len(out) == 3 else None

    got = wait_for(records, what="3 log records in the file")
    for i in range(3):
        assert got[i].body.string_value == f"prompt blocked {i}"
        assert got[i].severity_text == "WARN"


def _post_json(url: str, obj: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()


def test_otlp_json_all_signals(collector: tuple[CollectorProcess, int, int, Path]) -> None:
    """The OTLP/JSON mapping: hex ids, enum ints, camelCase keys, int64 as strings."""
    _col, _gp, hp, d = collector
    tag = uuid.uuid4().hex
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    attrs = [{"key": "tag", "value": {"stringValue": tag}}, {"key": "gen_ai.usage.input_tokens",
                                                             "value": {"intValue": "42"}}]
    traces = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "json"}, "spans": [
        {"traceId": trace_id, "spanId": span_id, "name": "chat", "kind": 3, "startTimeUnixNano": "1000000000",
         "endTimeUnixNano": "2000000000", "attributes": attrs, "status": {"code": 2, "message": "boom"}}]}]}]}
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "tokens", "sum": {
        "aggregationTemporality": 2, "isMonotonic": True,
        "dataPoints": [{"asInt": "7", "timeUnixNano": "1000", "attributes": attrs}]}}]}]}]}
    logs = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1000", "severityNumber": 13, "body": {"stringValue": "hello"}, "attributes": attrs,
         "traceId": trace_id, "spanId": span_id}]}]}]}
    for sig, obj in (("traces", traces), ("metrics", metrics), ("logs", logs)):
        status, body = _post_json(f"http://127.0.0.1:{hp}/v1/{sig}", obj)
        assert status == 200 and json.loads(body) == {}
    span = wait_for(lambda: next((s for s in _spans(d) if attrs_to_dict(s.attributes).get("tag") == tag), None),
                    what="JSON span")
    assert span.trace_id.hex() == trace_id and span.span_id.hex() == span_id
    assert span.kind == 3 and span.status.code == 2 and span.status.message == "boom"
    assert attrs_to_dict(span.attributes)["gen_ai.usage.input_tokens"] == 42

    def metric() -> Any:
        for req in read_otlp_jsonl(d / "metrics.jsonl", Signal.METRICS):
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == "tokens" and attrs_to_dict(m.sum.data_points[0].attributes).get("tag") == tag:
                            return m
        return None

    m = wait_for(metric, what="JSON metric")
    assert m.sum.is_monotonic and m.sum.data_points[0].as_int == 7

    def log() -> Any:
        for req in read_otlp_jsonl(d / "logs.jsonl", Signal.LOGS):
            for _rl, _sl, rec in iter_log_records(req):
                if attrs_to_dict(rec.attributes).get("tag") == tag:
                    return rec
        return None

    rec = wait_for(log, what="JSON log record")
    assert rec.body.string_value == "hello" and rec.severity_number == 13 and rec.span_id.hex() == span_id
