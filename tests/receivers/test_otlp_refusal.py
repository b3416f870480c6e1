"""Retryable refusal: when an exporter's queue is full (queue_size 1, a backend that never answers) the
receiver answers HTTP 429 + Retry-After and gRPC RESOURCE_EXHAUSTED + RetryInfo, as the OTLP spec says, and
the collector still stops within its shutdown_timeout."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bench.llm_spans import make_request
from tests.helpers import CollectorProcess, free_port

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_queue_full_is_a_retryable_refusal(tmp_path: Path) -> None:
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)  # accepts connections (backlog) and never answers
    gp, hp = free_port(), free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{gp}"},
                                             "http": {"endpoint": f"127.0.0.1:{hp}"}}}},
        "exporters": {"otlphttp": {
            "endpoint": f"http://127.0.0.1:{blackhole.getsockname()[1]}", "timeout": "60s",
            "sending_queue": {"queue_size": 1, "num_consumers": 1}}},
        "service": {"shutdown_timeout": "1s",
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}},
    }
    body = make_request(3).SerializeToString()
    col = CollectorProcess(cfg, workdir=tmp_path).start()
    try:
        statuses = []
        for _ in range(6):
            req = urllib.request.Request(f"http://127.0.0.1:{hp}/v1/traces", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    statuses.append((r.status, b"", {}))
            except urllib.error.HTTPError as e:
                statuses.append((e.code, e.read(), dict(e.headers)))
            time.sleep(0.05)
        assert statuses[0][0] == 200, statuses
        refused = [s for s in statuses if s[0] == 429]
        assert refused, statuses
        _code, resp, headers = refused[0]
        assert int(headers["Retry-After"]) >= 1
        st = status_pb2.Status.FromString(resp)
        assert st.code == code_pb2.RESOURCE_EXHAUSTED and "queue" in st.message

        with grpc.insecure_channel(f"127.0.0.1:{gp}") as ch:
            call = ch.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
            try:
                call(body, timeout=5)
                raise AssertionError("the gRPC export was accepted although the queue is full")
            except grpc.RpcError as e:
                assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                status = rpc_status.from_call(e)  # type: ignore[arg-type]
                assert status is not None
                info = error_details_pb2.RetryInfo()
                assert status.details[0].Unpack(info) and info.retry_delay.ToTimedelta().total_seconds() > 0
        assert col.metric_value("otelcol_receiver_refused_spans_total") >= 6
        assert col.metric_value("otelcol_exporter_enqueue_failed_spans_total") >= 6
    finally:
        t0 = time.monotonic()
        rc = col.stop(timeout=15)
        blackhole.close()
    assert rc == 0, col.logs()
    assert time.monotonic() - t0 < 5, "SIGTERM must stop the collector within shutdown_timeout (+ exit)"
