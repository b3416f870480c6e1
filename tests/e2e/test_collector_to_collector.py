"""Collector to collector: instance A's `otlp` (gRPC, gzip), `otlphttp` (protobuf, gzip) and `otlphttp`
(JSON, uncompressed) exporters feed instance B's receiver; B's file output holds every request A received,
once per exporter, identical to the input as protobuf messages."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from bench.llm_spans import make_request
from collector.pdata import REQUEST_TYPES, Signal, from_otlp_json
from tests.helpers import CollectorProcess, free_port, wait_for

_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def _metrics_request(i: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", f"svc-{i}"
    m = rm.scope_metrics.add().metrics.add()
    m.name, m.unit = "gen_ai.client.token.usage", "{token}"
    h = m.histogram
    h.aggregation_temporality = 2
    p = h.data_points.add()
    p.count, p.sum, p.time_unix_nano = 3, 1234.5, 1_700_000_000_000_000_000 + i
    p.bucket_counts.extend([1, 2, 0])
    p.explicit_bounds.extend([100.0, 1000.0])
    a = p.attributes.add()
    a.key, a.value.int_value = "n", -i
    g = rm.scope_metrics[0].metrics.add()
    g.name = "queue.depth"
    gp = g.gauge.data_points.add()
    gp.as_double, gp.time_unix_nano = 0.1 * i, 5
    return req


def _logs_request(i: int) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rec = rl.scope_logs.add().log_records.add()
    rec.time_unix_nano, rec.severity_number, rec.severity_text = 10 + i, 17, "ERROR"
    rec.body.kvlist_value.values.add(key="prompt").value.string_value = "ignore previous instructions " * 5
    rec.body.kvlist_value.values.add(key="bytes").value.bytes_value = bytes(range(16))
    rec.trace_id, rec.span_id, rec.flags = bytes(range(16)), bytes(range(8)), 1
    rec.attributes.add(key="i").value.int_value = i
    return req


def test_a_to_b_identical(tmp_path: Path) -> None:
    b_grpc, b_http, a_grpc = free_port(), free_port(), free_port()
    quick = {"sending_queue": {"num_consumers": 1}, "retry_on_failure": {"initial_interval": "50ms"}}
    sigs = ("traces", "metrics", "logs")
    cfg_b = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{b_grpc}"},
                                             "http": {"endpoint": f"127.0.0.1:{b_http}"}}}},
        "exporters": {f"file/{s}": {"path": str(tmp_path / f"b-{s}.jsonl"), **quick} for s in sigs},
        "service": {"pipelines": {s: {"receivers": ["otlp"], "exporters": [f"file/{s}"]} for s in sigs}},
    }
    cfg_a = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{a_grpc}"}}}},
        "exporters": {
            "otlp": {"endpoint": f"127.0.0.1:{b_grpc}", "tls": {"insecure": True}, "compression": "gzip", **quick},
            "otlphttp": {"endpoint": f"http://127.0.0.1:{b_http}", "compression": "gzip", **quick},
            "otlphttp/json": {"endpoint": f"http://127.0.0.1:{b_http}", "encoding": "json", "compression": "none",
                              **quick},
        },
        "service": {"pipelines": {s: {"receivers": ["otlp"], "exporters": ["otlp", "otlphttp", "otlphttp/json"]}
                                  for s in sigs}},
    }
    sent = {
        Signal.TRACES: [make_request(20, seed=i) for i in range(3)],
        Signal.METRICS: [_metrics_request(i) for i in range(3)],
        Signal.LOGS: [_logs_request(i) for i in range(3)],
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with CollectorProcess(cfg_b, workdir=tmp_path / "b"):
        with CollectorProcess(cfg_a, workdir=tmp_path / "a") as a:
            with grpc.insecure_channel(f"127.0.0.1:{a_grpc}") as ch:
                for sig, reqs in sent.items():
                    call = ch.unary_unary(_METHODS[sig], request_serializer=None, response_deserializer=None)
                    for r in reqs:
                        assert call(r.SerializeToString(), timeout=10) == b""
            def got(sig: Signal) -> list[bytes] | None:
                p = tmp_path / f"b-{sig.value}.jsonl"
                if not p.exists():
                    return None
                lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
                if len(lines) < 3 * len(sent[sig]):
                    return None
                return [from_otlp_json(sig, ln).SerializeToString(deterministic=True) for ln in lines]

            for sig, reqs in sent.items():
                out = wait_for(lambda s=sig: got(s), what=f"{sig.value} at B")
                want = Counter(REQUEST_TYPES[sig].FromString(r.SerializeToString()).SerializeToString(
                    deterministic=True) for r in reqs for _ in range(3))
                assert Counter(out) == want, f"{sig.value}: output differs from input"
            n_spans = sum(len(r.resource_spans[0].scope_spans[0].spans) for r in sent[Signal.TRACES])
            wait_for(lambda: a.metric_value("otelcol_exporter_sent_spans_total") == 3 * n_spans,
                     what="A counts every span sent by each of its 3 exporters")
