"""The default pipelines.yaml runs, accepts a span from the OpenTelemetry SDK and writes it to ./data/."""

from __future__ import annotations

from pathlib import Path

import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.pdata import Signal
from tests.helpers import ROOT, CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for


def test_default_config_roundtrip(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "pipelines.yaml").read_text())
    grpc_port, http_port = free_port(), free_port()
    env = {"OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}", "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http_port}"}
    del cfg["extensions"]["health_check"]
    del cfg["service"]["telemetry"]
    with CollectorProcess(cfg, workdir=tmp_path, env=env) as col:
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
        with tp.get_tracer("smoke").start_as_current_span("chat gpt-4o") as span:
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            sid = span.get_span_context().span_id
        tp.shutdown()
        got = wait_for(lambda: list(spans_of(read_otlp_jsonl(tmp_path / "data/traces.jsonl", Signal.TRACES))),
                       what="span in data/traces.jsonl")
        assert [s.span_id for s in got] == [sid.to_bytes(8, "big")]
        assert col.metric_value("otelcol_receiver_accepted_spans_total", transport="grpc") == 1
    assert col.proc is not None and col.proc.returncode == 0
