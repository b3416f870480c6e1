"""Two gateway collectors behind a third that routes by trace id with the `loadbalancing` exporter.

Every span of a trace lands on the same gateway (the one the hash ring names); stopping a gateway moves only
its traces to the other one and loses nothing the agent acknowledged; when it is back, its traces come back.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from collector.pdata import Signal
from exporters._hashring import HashRing
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for

SPANS_PER_TRACE = 4


def gateway(port: int, out: Path) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"file": {"path": str(out)}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }


def make_traces(n: int) -> list[list[ReadableSpan]]:
    """n traces of SPANS_PER_TRACE spans each, as the SDK records them."""
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("lb-test")
    for _ in range(n):
        tid = int.from_bytes(os.urandom(16), "big")
        parent = set_span_in_context(NonRecordingSpan(SpanContext(tid, 1, True, TraceFlags(1))))
        for j in range(SPANS_PER_TRACE):
            tracer.start_span(f"llm call {j}", context=parent).end()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for s in mem.get_finished_spans():
        by_trace.setdefault(s.context.trace_id, []).append(s)
    tp.shutdown()
    return list(by_trace.values())


def send_interleaved(exporter: OTLPSpanExporter, traces: list[list[ReadableSpan]]) -> set[bytes]:
    """Request k carries span k of every trace, so each request must be split; returns acknowledged span ids."""
    acked: set[bytes] = set()
    for j in range(SPANS_PER_TRACE):
        chunk = [t[j] for t in traces]
        for k in range(0, len(chunk), 25):
            part = chunk[k:k + 25]
            if exporter.export(part) is SpanExportResult.SUCCESS:
                acked.update(s.context.span_id.to_bytes(8, "big") for s in part)
    return acked


def landed(path: Path) -> list[tuple[bytes, bytes]]:
    return [(s.trace_id, s.span_id) for s in spans_of(read_otlp_jsonl(path, Signal.TRACES))]


def test_traces_stick_to_one_gateway_and_survive_a_gateway_stop(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    endpoints = [f"127.0.0.1:{p}" for p in ports]
    outs = [tmp_path / "gw0.jsonl", tmp_path / "gw1.jsonl"]
    gws = [CollectorProcess(gateway(p, o), workdir=tmp_path) for p, o in zip(ports, outs)]
    agent_port = free_port()
    agent = CollectorProcess({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{agent_port}"}}}},
        "exporters": {"loadbalancing": {
            "routing_key": "traceID",
            "resolver": {"static": {"hostnames": endpoints}},
            "rebalance": {"failure_threshold": 2, "probe_interval": "200ms"},
            "protocol": {"otlp": {"tls": {"insecure": True}, "timeout": "2s", "compression": "gzip",
                                  "retry_on_failure": {"initial_interval": "50ms", "max_interval": "200ms"}}},
        }},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["loadbalancing"]}}},
    }, workdir=tmp_path)
    ring = HashRing(endpoints)
    owner = {}  # trace id -> index of the gateway the ring names
    for g in gws:
        g.start()
    agent.start()
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{agent_port}", insecure=True)
    try:
        # 1. both gateways up: each trace lands whole on the gateway that owns it
        phase1 = make_traces(40)
        acked1 = send_interleaved(exporter, phase1)
        assert len(acked1) == 40 * SPANS_PER_TRACE
        wait_for(lambda: len(landed(outs[0])) + len(landed(outs[1])) >= len(acked1), what="phase 1 delivered")
        for i, out in enumerate(outs):
            for tid, _sid in landed(out):
                owner.setdefault(tid, endpoints.index(ring.lookup(tid) or ""))
                assert owner[tid] == i, "a span landed on a gateway that does not own its trace"
        assert {0, 1} <= set(owner.values()), "both gateways should own some traces"

        # 2. gateway 1 stops: its traces move to gateway 0, gateway 0's traces stay where they were
        assert gws[1].stop() == 0
        before = {i: len(landed(o)) for i, o in enumerate(outs)}
        phase2 = make_traces(40)
        acked2 = send_interleaved(exporter, phase2)
        assert len(acked2) == 40 * SPANS_PER_TRACE
        wait_for(lambda: len(landed(outs[0])) - before[0] >= len(acked2), what="phase 2 delivered", timeout=20)
        new0 = landed(outs[0])[before[0]:]
        assert {sid for _t, sid in new0} >= acked2
        assert len(landed(outs[1])) == before[1]
        assert _backend_status(agent)[endpoints[1]]["down"] is True

        # 3. gateway 1 is back: the ring gives it its traces again (after the probe sees it)
        gws[1] = CollectorProcess(gateway(ports[1], outs[1]), workdir=tmp_path).start()
        wait_for(lambda: not any(v["down"] for v in _backend_status(agent).values()),
                 what="backend up again", timeout=10)
        before = {i: len(landed(o)) for i, o in enumerate(outs)}
        phase3 = make_traces(40)
        acked3 = send_interleaved(exporter, phase3)
        total3 = len(acked3)
        wait_for(lambda: sum(len(landed(o)) - before[i] for i, o in enumerate(outs)) >= total3,
                 what="phase 3 delivered")
        for i, out in enumerate(outs):
            for tid, _sid in landed(out)[before[i]:]:
                assert endpoints.index(ring.lookup(tid) or "") == i

        # nothing acknowledged is lost; count duplicates (a retried request may be delivered twice)
        all_landed = Counter(sid for o in outs for _t, sid in landed(o))
        assert set(all_landed) >= acked1 | acked2 | acked3
        dups = sum(c - 1 for c in all_landed.values())
        print(f"loadbalancing: {len(all_landed)} spans delivered, {dups} duplicates")
    finally:
        exporter.shutdown()
        assert agent.stop() == 0
        for g in gws:
            g.stop()


def _backend_status(agent: CollectorProcess) -> dict:
    import json

    from tests.helpers import http_get

    status, body = http_get(f"http://127.0.0.1:{agent.health_port}/status")
    assert status == 200
    return json.loads(body)["exporters"]["loadbalancing"]["backends"]
