"""Workers benchmark: the OTLP/gRPC pass-through with ``service.workers: 1`` and then ``2``; prints the ratio.

The collector runs as a subprocess (``otlp`` receiver -> an OTLP/gRPC exporter: the ``otlp`` exporter when
this checkout has it, else ``loadbalancing`` with one static backend, which forwards the received bytes as
they are); this process is the load generator (concurrent gRPC clients, each on its own TCP connection so
that SO_REUSEPORT spreads them over the workers, sending requests of ``--spans`` LLM spans) and the sink (a
grpc.aio server counting what arrives). Figures: spans/s delivered to the sink, collector CPU-seconds
(supervisor + workers), spans per collector CPU-second. Prints, never asserts.

    python -m bench.bench_workers --seconds 10 --clients 8

On a machine with as many cores as workers + load generator, the ratio is the scaling of the receive path;
on 2 cores shared with the load generator and the sink, expect well under 2.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.bench_passthrough import EXPORT, TRACES_SVC, free_port


def make_request(spans: int) -> bytes:
    """One export request of LLM chat spans with GenAI attributes and ~1 KB of content each."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "chat-api"
    ss = rs.scope_spans.add()
    ss.scope.name = "openllmetry"
    for i in range(spans):
        sp = ss.spans.add()
        sp.trace_id = os.urandom(16)
        sp.span_id = os.urandom(8)
        sp.name = "chat gpt-4o"
        sp.kind = 3
        sp.start_time_unix_nano = time.time_ns()
        sp.end_time_unix_nano = sp.start_time_unix_nano + 850_000_000
        for k, v in (("gen_ai.system", "openai"), ("gen_ai.request.model", "gpt-4o"),
                     ("gen_ai.prompt.0.content", "Summarise this ticket for the on-call engineer. " * 10),
                     ("gen_ai.completion.0.content", "The customer reports intermittent 502s. " * 10)):
            a = sp.attributes.add()
            a.key, a.value.string_value = k, v
        for k, n in (("gen_ai.usage.input_tokens", 812 + i), ("gen_ai.usage.output_tokens", 164)):
            a = sp.attributes.add()
            a.key, a.value.int_value = k, n
    return req.SerializeToString()


def _sink_process(port_out: Any, count: Any, stop: Any) -> None:
    """The sink, in a process of its own so that it does not share a core's GIL with the load generator."""
    async def main() -> None:
        async def export(raw: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
            with count.get_lock():
                count.value += 1
            return b""

        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            TRACES_SVC, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
        port_out.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop(0)

    asyncio.run(main())


class Sink:
    """Counts the export requests the collector delivers."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._port, self._count, self._stop = ctx.Value("i", 0), ctx.Value("q", 0), ctx.Event()
        self._proc = ctx.Process(target=_sink_process, args=(self._port, self._count, self._stop), daemon=True)

    @property
    def requests(self) -> int:
        return int(self._count.value)

    async def start(self) -> int:
        self._proc.start()
        while self._port.value == 0:
            await asyncio.sleep(0.05)
        return int(self._port.value)

    async def stop(self) -> None:
        self._stop.set()
        self._proc.join(10)


def exporter_config(kind: str, sink_port: int) -> dict:
    common = {"timeout": "10s", "sending_queue": {"queue_size": 200, "num_consumers": 4},
              "compression": "none"}
    if kind == "otlp":
        return {"otlp": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True}, **common}}
    return {"loadbalancing": {"resolver": {"static": {"hostnames": [f"127.0.0.1:{sink_port}"]}},
                              "protocol": {"otlp": {"tls": {"insecure": True}, **common}}}}


def pick_exporter(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    from collector.component import Kind, registry

    return "otlp" if registry.get(Kind.EXPORTER, "otlp") is not None else "loadbalancing"


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def run_one(workers: int, exporter: str, seconds: float, clients: int, spans: int) -> dict:
    sink = Sink()
    sink_port = await sink.start()
    port, health, metrics = free_port(), free_port(), free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}",
                                                      "max_recv_msg_size_mib": 64}}}},
        "exporters": exporter_config(exporter, sink_port),
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health}"}},
        "service": {"workers": workers, "extensions": ["health_check"], "shutdown_timeout": "5s",
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics}"}, "logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": [next(iter(
                        exporter_config(exporter, sink_port)))]}}},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "collector", "run", "--config", str(tmp / "config.yaml")],
                            cwd=tmp, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{health}/", timeout=1).status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("collector did not start")
        await asyncio.sleep(0.1)
    ps = psutil.Process(proc.pid)
    payload = make_request(spans)
    stop_at = 0.0
    sent = [0]

    async def client() -> None:
        # one TCP connection per client: SO_REUSEPORT balances connections, not requests
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1),
                                                                      ("grpc.max_send_message_length", 64 << 20)])
        call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            while time.monotonic() < stop_at:
                try:
                    await call(payload, timeout=10)
                    sent[0] += 1
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.01)
        finally:
            await ch.close()

    # warm-up, then the measured run
    stop_at = time.monotonic() + 1.0
    await asyncio.gather(*(client() for _ in range(clients)))
    r0, c0, t0 = sink.requests, tree_cpu(ps), time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(*(client() for _ in range(clients)))
    r1, c1, t1 = sink.requests, tree_cpu(ps), time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for p in [*ps.children(recursive=True), ps]:
            p.kill()
        proc.wait()
    await sink.stop()
    delivered = (r1 - r0) * spans
    cpu = c1 - c0
    return {"workers": workers, "spans_per_s": delivered / (t1 - t0), "cpu_s": cpu,
            "spans_per_cpu_s": delivered / cpu if cpu else 0.0, "delivered": delivered}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--spans", type=int, default=200, help="spans per request")
    ap.add_argument("--exporter", choices=["auto", "otlp", "loadbalancing"], default="auto")
    args = ap.parse_args()
    exporter = pick_exporter(args.exporter)
    print(f"pass-through otlp -> {exporter}; {args.clients} clients, {args.spans} spans/request, "
          f"{args.seconds:.0f}s per run, {os.cpu_count()} CPUs")
    results = []
    for w in (1, 2):
        r = await run_one(w, exporter, args.seconds, args.clients, args.spans)
        results.append(r)
        print(f"workers={w}: {r['spans_per_s']:>10,.0f} spans/s delivered   "
              f"{r['spans_per_cpu_s']:>10,.0f} spans per collector CPU-second   ({r['delivered']:,} spans)")
    ratio = results[1]["spans_per_s"] / results[0]["spans_per_s"] if results[0]["spans_per_s"] else 0.0
    print(f"throughput ratio workers=2 / workers=1: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
