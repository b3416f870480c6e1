"""Whole-process delivery tests: crash safety with SIGKILL, and overload with the OpenTelemetry SDK.

The collector runs as a subprocess (``python -m tests.delivery_support run``: the real CLI with the test-only
`testotlp` exporter registered) in front of a real OTLP backend on loopback.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from tests.delivery_support import Action, OtlpBackend, make_request
from tests.helpers import CollectorProcess, free_port, wait_for


class DeliveryCollector(CollectorProcess):
    module = "tests.delivery_support"


def _config(backend: OtlpBackend, http_port: int, grpc_port: int, storage: Path | None,
            queue: dict[str, Any] | None = None) -> dict[str, Any]:
    sq: dict[str, Any] = dict(queue or {})
    exts: dict[str, Any] = {}
    if storage is not None:
        sq["storage"] = "file_storage"
        exts["file_storage"] = {"directory": str(storage)}
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"},
                                             "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "exporters": {"testotlp": {"endpoint": backend.http_endpoint(), "sending_queue": sq,
                                   "retry_on_failure": {"initial_interval": "50ms", "max_interval": "200ms"}}},
        "extensions": exts,
        "service": {"extensions": list(exts), "shutdown_timeout": "1s",
                    "telemetry": {"logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["testotlp"]}}},
    }


def test_sigkill_loses_no_acknowledged_span(tmp_path: Path) -> None:
    """Two exporters on one persistent store (fan-out: one stored copy), the second batching in its queue;
    every third request is over 32 KiB (stored in a blob file, not in SQLite)."""
    up = threading.Event()
    policy = lambda n: Action() if up.is_set() else Action(503)
    with OtlpBackend(policy) as be, OtlpBackend(policy) as be2:
        http_port, grpc_port = free_port(), free_port()
        cfg = _config(be, http_port, grpc_port, tmp_path / "storage")
        second = json.loads(json.dumps(cfg["exporters"]["testotlp"]))
        second["endpoint"] = be2.http_endpoint()
        second["sending_queue"]["batch"] = {"flush_timeout": "100ms", "min_size": 50, "max_size": 200}
        cfg["exporters"]["testotlp/batched"] = second
        cfg["service"]["pipelines"]["traces"]["exporters"].append("testotlp/batched")
        col = DeliveryCollector(cfg, workdir=tmp_path).start()
        acked: set[int] = set()
        lock = threading.Lock()
        stop = threading.Event()
        counter = iter(range(1, 1_000_000))

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
            while not stop.is_set():
                with lock:
                    i = next(counter)
                body = make_request([i], attrs=1000 if i % 3 == 0 else 0).SerializeToString()
                try:
                    conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                    r = conn.getresponse()
                    r.read()
                    if r.status == 200:
                        with lock:
                            acked.add(i)
                except OSError:
                    conn.close()
                    time.sleep(0.01)
                    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(acked) >= 300, timeout=20, what="300 acknowledged spans")
            col.kill()  # SIGKILL mid-stream: the clients are still sending
            time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert be.received_ids() == set() and be2.received_ids() == set()
        assert any((tmp_path / "storage" / "exporter_sending_queues.sqlite-blobs").iterdir())  # large ones
        sent = next(counter) - 1
        up.set()
        col2 = DeliveryCollector(cfg, workdir=tmp_path).start()
        try:
            want = {i.to_bytes(8, "big") for i in acked}
            try:
                wait_for(lambda: want <= be.received_ids() and want <= be2.received_ids(), timeout=20,
                         what="every acknowledged span at both backends")
            finally:
                delivered = len(want & be.received_ids())
                delivered2 = len(want & be2.received_ids())
                print(f"\nacked {len(acked)}, delivered {delivered}, lost {len(acked) - delivered} "
                      f"(second exporter, batching in its queue: delivered {delivered2}, "
                      f"lost {len(acked) - delivered2}; requests tried: {sent})")
            assert delivered == delivered2 == len(acked) >= 300
            assert max(len(a.span_ids) for a in be2.attempts) > 1  # the second one really batched
        finally:
            col2.stop()


class _RecordingExporter(OTLPSpanExporter):
    results: list[SpanExportResult]

    def export(self, spans: Any) -> SpanExportResult:
        res = super().export(spans)
        self.results.append(res)
        return res


def test_overload_refusals_are_retried_by_the_sdk(tmp_path: Path) -> None:
    with OtlpBackend(lambda n: Action(sleep=0.1)) as be:
        http_port, grpc_port = free_port(), free_port()
        cfg = _config(be, http_port, grpc_port, None, queue={"queue_size": 1, "num_consumers": 1})
        with DeliveryCollector(cfg, workdir=tmp_path) as col:
            sent: list[bytes] = []
            lock = threading.Lock()
            exporters: list[_RecordingExporter] = []

            def app(k: int) -> None:
                exp = _RecordingExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=30)
                exp.results = []
                exporters.append(exp)
                tp = TracerProvider()
                tp.add_span_processor(SimpleSpanProcessor(exp))
                tracer = tp.get_tracer("overload")
                for j in range(3):
                    with tracer.start_as_current_span(f"chat {k}.{j}") as span, lock:
                        sent.append(span.get_span_context().span_id.to_bytes(8, "big"))
                tp.shutdown()

            threads = [threading.Thread(target=app, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wait_for(lambda: set(sent) <= be.received_ids(), timeout=30, what="every span")
            refused = col.metric_value("otelcol_receiver_refused_spans_total", transport="grpc")
            failed = col.metric_value("otelcol_exporter_enqueue_failed_spans_total", exporter="testotlp")
            print(f"\nspans {len(sent)}, refused attempts {refused:.0f}, delivered {len(set(sent) & be.received_ids())}")
            assert refused >= 1 and failed == refused
            assert all(r is SpanExportResult.SUCCESS for e in exporters for r in e.results)
            assert len(sent) == 12
