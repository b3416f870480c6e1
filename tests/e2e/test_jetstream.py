"""Agent collector -> NATS JetStream -> gateway collector; the gateway is SIGKILLed mid-stream and restarted.

Every span the agent acknowledged (= stored in JetStream, the agent's nats exporter has no in-memory queue)
must reach the gateway's file: at least once, duplicates counted and printed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.pdata import Signal
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for
from tests.nats_server import NatsServer

REQUESTS, PER_REQUEST = 120, 10


def gateway_config(url: str, out: Path) -> dict:
    return {
        "receivers": {"nats": {"url": url, "durable": "gateway", "ack_wait": "1s", "fetch_timeout": "200ms",
                               "fetch_batch": 16}},
        # no in-memory queue: a batch is in the file before the receiver acknowledges the message
        "exporters": {"file": {"path": str(out), "sending_queue": {"enabled": False}}},
        "service": {"pipelines": {"traces": {"receivers": ["nats"], "exporters": ["file"]}}},
    }


def landed(path: Path) -> Counter[bytes]:
    try:
        return Counter(s.span_id for s in spans_of(read_otlp_jsonl(path, Signal.TRACES)))
    except ValueError:  # a line cut by SIGKILL while being written: read again
        return Counter()


def test_gateway_killed_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    out = tmp_path / "gateway.jsonl"
    agent_port = free_port()
    with NatsServer(tmp_path / "js") as nats:
        agent = CollectorProcess({
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{agent_port}"}}}},
            "exporters": {"nats": {"url": nats.url, "timeout": "2s", "sending_queue": {"enabled": False},
                                   "retry_on_failure": {"initial_interval": "50ms", "max_elapsed_time": "5s"}}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nats"]}}},
        }, workdir=tmp_path).start()
        gateway = CollectorProcess(gateway_config(nats.url, out), workdir=tmp_path).start()

        mem = InMemorySpanExporter()
        tp = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
        tp.add_span_processor(SimpleSpanProcessor(mem))
        tracer = tp.get_tracer("js-test")
        for i in range(REQUESTS * PER_REQUEST):
            tracer.start_span(f"chat {i}").end()
        spans = list(mem.get_finished_spans())
        tp.shutdown()

        acked: set[bytes] = set()
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{agent_port}", insecure=True)

        killed = threading.Event()

        def send() -> None:
            for k in range(REQUESTS):
                if k == REQUESTS // 2:
                    killed.wait(30)  # the second half goes out after the kill, whatever the machine's speed
                part = spans[k * PER_REQUEST:(k + 1) * PER_REQUEST]
                if exporter.export(part) is SpanExportResult.SUCCESS:
                    acked.update(s.context.span_id.to_bytes(8, "big") for s in part)
                time.sleep(0.015)

        sender = threading.Thread(target=send)
        try:
            sender.start()
            wait_for(lambda: sum(landed(out).values()) >= 300, what="gateway consuming", timeout=20)
            gateway.kill()  # SIGKILL mid-stream
            killed_at = len(acked)
            killed.set()
            gateway = CollectorProcess(gateway_config(nats.url, out), workdir=tmp_path).start()
            sender.join(timeout=30)
            assert not sender.is_alive()
            assert killed_at < len(acked), "the kill should happen while the agent is still sending"
            assert len(acked) == REQUESTS * PER_REQUEST
            wait_for(lambda: set(landed(out)) >= acked, what="every acknowledged span at the gateway", timeout=20)
            got = landed(out)
            dups = sum(c - 1 for c in got.values())
            print(f"jetstream: {len(acked)} spans acknowledged, {len(got)} distinct delivered, {dups} duplicates")
            assert set(got) == acked
        finally:
            killed.set()
            sender.join(timeout=30)
            exporter.shutdown()
            assert gateway.stop() == 0
            assert agent.stop() == 0
