"""Pass-through benchmark: realistic LLM spans over OTLP/gRPC through `otlp receiver -> otlp exporter`.

The collector runs as a subprocess; this process is the load generator (concurrent gRPC clients sending
export requests of 500 GenAI spans with 0.5-2 KB of prompt/response content each) and the sink (a minimal
grpc.aio server that counts what arrives). Figures are for the collector process only (psutil):
spans/s delivered to the sink, CPU-seconds per 100k spans, spans per CPU-second, peak RSS.
Cases: no compression, gzip on the exporter, the persistent queue, and the LLM processor chain with the
persistent queue. Every request carries new trace ids, as live traffic does (``--reuse-trace-ids`` re-sends
them as they are). Prints, never asserts. Targets: >= 150,000 spans per collector CPU-second without
compression, >= 40,000 with gzip, peak RSS < 150 MB (issue 2); >= 60,000 for the chain (issue 4).

    python -m bench.bench_passthrough --seconds 10 --pin

``--profile PREFIX`` records the collector with py-spy; ``BENCH_EXTRA_PATH=DIR`` puts DIR on the collector's
PYTHONPATH after the project (e.g. a ``sitecustomize.py`` that logs garbage-collection times).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.llm_spans import make_request

TRACES_SVC = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT = f"/{TRACES_SVC}/Export"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trace_id_offsets(payload: bytes) -> list[int]:
    """Where each span's trace id is in a serialised request (the first field of every span here)."""
    from collector.wire import TraceWire

    out = []
    for _o, s, _e in TraceWire(payload).spans:
        assert payload[s:s + 2] == b"\x0a\x10"
        out.append(s + 2)
    return out


def fresh_trace_ids(payload: bytes, offsets: list[int]) -> bytes:
    """The payload with new random trace ids, as live traffic has: tail_sampling must hold and decide every
    trace (re-sent ids would all be decided already, and follow the cached decision at once)."""
    buf = bytearray(payload)
    ids = os.urandom(16 * len(offsets))
    for k, off in enumerate(offsets):
        buf[off:off + 16] = ids[16 * k:16 * k + 16]
    return bytes(buf)


class Sink:
    """Counts the requests the collector delivers (every request holds `spans_per_request` spans)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def start(self) -> int:
        async def export(raw: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
            self.requests += 1
            self.bytes += len(raw)
            return b""

        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            TRACES_SVC, {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port


# The full LLM chain of issue 4: memory_limiter -> redaction -> cost -> enrich -> tail_sampling.
CHAIN_PROCESSORS: dict[str, object] = {
    "memory_limiter": {"check_interval": "1s", "limit_mib": 1500, "spike_limit_mib": 300},
    "redaction": {"content": "redact"},
    "cost": {},
    "enrich": {},
    "tail_sampling": {"decision_wait": "1s", "num_traces": 200000, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "budget", "type": "budget_exceeded"},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 100}},
    ]},
}


def collector_config(in_port: int, sink_port: int, case: str, level: int | None,
                     queue_size: int, consumers: int, workdir: Path | None = None) -> dict[str, object]:
    """Cases: ``none`` / ``gzip`` (exporter compression, in-memory queue), ``persistent`` (no compression,
    persistent queue), ``chain`` (persistent queue and the full processor chain, keeping every span so that
    the exporter sends as much as in the pass-through)."""
    compression = "gzip" if case == "gzip" else "none"
    exp: dict[str, object] = {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True},
                              "compression": compression, "sending_queue": {"queue_size": queue_size, "num_consumers": consumers}}
    if level is not None:
        exp["compression_level"] = level
    cfg: dict[str, object] = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{in_port}",
                                                      "max_recv_msg_size_mib": 64}}}},
        "exporters": {"otlp": exp},
        "service": {"telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}},
    }
    if case in ("persistent", "chain", "chain5"):
        cfg["extensions"] = {"file_storage": {"directory": str((workdir or Path(".")) / "queue")}}
        cfg["service"]["extensions"] = ["file_storage"]  # type: ignore[index]
        exp["sending_queue"]["storage"] = "file_storage"  # type: ignore[index]
    if case in ("chain", "chain5"):
        procs = dict(CHAIN_PROCESSORS)
        if case == "chain5":  # the README's recipe: every error and budget breach, 5% of the rest
            ts = dict(procs["tail_sampling"])  # type: ignore[call-overload]
            ts["policies"] = [*ts["policies"][:2], {"name": "rest", "type": "probabilistic",
                                                     "probabilistic": {"sampling_percentage": 5}}]
            procs["tail_sampling"] = ts
        cfg["processors"] = procs
        cfg["service"]["pipelines"]["traces"]["processors"] = list(procs)  # type: ignore[index]
    return cfg


async def run_case(compression: str, seconds: float, senders: int, spans: int, pin: bool,
                   level: int | None, profile: str | None, queue_size: int,
                   consumers: int, reuse_ids: bool = False) -> dict[str, float]:
    sink = Sink()
    sink_port = await sink.start()
    in_port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-passthrough-"))
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(collector_config(in_port, sink_port, compression, level, queue_size,
                                                      consumers, workdir)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("BENCH_EXTRA_PATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(cfg_path), env=env, cwd=workdir,
        stderr=open(workdir / "collector.log", "wb"))
    ps = psutil.Process(proc.pid)
    if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(proc.pid, {0})
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    payloads = [make_request(spans, seed=i).SerializeToString() for i in range(8)]
    id_offsets = [trace_id_offsets(p) for p in payloads]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{in_port}", options=[("grpc.max_send_message_length", 64 << 20)])
    call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    deadline = time.monotonic() + 20
    while True:
        try:
            await call(payloads[0], timeout=2)
            break
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline or proc.returncode is not None:
                raise RuntimeError((workdir / "collector.log").read_text()) from None
            await asyncio.sleep(0.2)
    spy = None
    if profile:
        spy = await asyncio.create_subprocess_exec("py-spy", "record", "-o", profile, "-f", "raw", "-p", str(proc.pid),
                                                   "-d", str(int(seconds)), "-r", "200", "--nonblocking",
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    stop = asyncio.Event()
    refused = 0
    acked = 0

    async def sender(i: int) -> None:
        nonlocal refused, acked
        k = i
        while not stop.is_set():
            try:
                payload = payloads[k % len(payloads)]
                if not reuse_ids:
                    payload = fresh_trace_ids(payload, id_offsets[k % len(payloads)])
                await call(payload, timeout=30)
                acked += 1
            except grpc.aio.AioRpcError as e:
                if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused += 1
                    await asyncio.sleep(0.01)
                else:
                    raise
            k += 1

    peak_rss = ps.memory_info().rss

    async def sample_rss() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            peak_rss = max(peak_rss, ps.memory_info().rss)
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(sender(i)) for i in range(senders)]
    rss_task = asyncio.create_task(sample_rss())
    await asyncio.sleep(min(2.0, seconds / 4))  # warm-up
    # spans counted at the sink; with sampling (chain5) most are dropped, so at the client (acknowledged)
    count: Any = (lambda: acked) if compression == "chain5" else (lambda: sink.requests)
    cpu0, req0, t0 = sum(ps.cpu_times()[:2]), count(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, req1, t1 = sum(ps.cpu_times()[:2]), count(), time.monotonic()
    stop.set()
    await asyncio.gather(*tasks, rss_task, return_exceptions=True)
    if spy is not None:
        await spy.wait()
    await channel.close()
    proc.terminate()
    await proc.wait()
    await sink.server.stop(None)
    n_spans = (req1 - req0) * spans
    cpu = cpu1 - cpu0
    return {
        "spans_per_s": n_spans / (t1 - t0),
        "cpu_s_per_100k": cpu / n_spans * 100_000 if n_spans else float("inf"),
        "spans_per_cpu_s": n_spans / cpu if cpu else 0.0,
        "cpu_util": cpu / (t1 - t0),
        "peak_rss_mb": peak_rss / 1e6,
        "refused": refused,
        "bytes_per_span_out": (sink.bytes / sink.requests / spans) if sink.requests else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per case (after a warm-up)")
    p.add_argument("--senders", type=int, default=4, help="concurrent gRPC export calls")
    p.add_argument("--spans", type=int, default=500, help="spans per request")
    p.add_argument("--pin", action="store_true", help="collector on CPU 0, load generator and sink on the rest")
    p.add_argument("--cases", default="none,gzip,persistent,chain",
                   help="comma-separated cases: none, gzip (exporter compression), persistent (queue on disk), "
                        "chain (persistent queue + memory_limiter, redaction, cost, enrich, tail_sampling keeping "
                        "every span), chain5 (the same keeping errors, budget breaches and 5%% of the rest)")
    p.add_argument("--queue-size", type=int, default=32,
                   help="exporter sending_queue.queue_size in requests (each ~1 MB here: bounds the RSS)")
    p.add_argument("--consumers", type=int, default=10, help="exporter sending_queue.num_consumers")
    p.add_argument("--profile", default=None, help="py-spy the collector: collapsed stacks per case in PREFIX-<case>.txt")
    p.add_argument("--reuse-trace-ids", action="store_true",
                   help="re-send the same 8 requests as they are (the method before fresh ids): tail_sampling then "
                        "finds every trace decided already and forwards at once, without holding")
    args = p.parse_args()
    payload = make_request(args.spans).SerializeToString()
    print(f"request: {args.spans} spans, {len(payload) / 1e6:.2f} MB, {len(payload) / args.spans:.0f} B/span; "
          f"{args.senders} senders; {args.seconds:.0f}s per case; pinned={args.pin}; cpus={os.cpu_count()}; "
          f"queue_size={args.queue_size}; num_consumers={args.consumers}; "
          f"trace ids {'re-sent' if args.reuse_trace_ids else 'fresh per request'}")
    targets = {"none": 150_000, "gzip": 40_000, "chain": 60_000}  # chain5 counts spans received, not delivered
    for case in args.cases.split(","):
        prof = f"{args.profile}-{case}.txt" if args.profile else None
        r = asyncio.run(run_case(case, args.seconds, args.senders, args.spans, args.pin, None, prof,
                                 args.queue_size, args.consumers, args.reuse_trace_ids))
        tgt = targets.get(case)
        print(f"case={case:<10} {r['spans_per_s']:>10,.0f} spans/s  "
              f"{r['cpu_s_per_100k']:.3f} CPU-s/100k spans  {r['spans_per_cpu_s']:>10,.0f} spans/CPU-s"
              f"{f' (target >= {tgt:,})' if tgt else ''}  collector CPU {r['cpu_util'] * 100:.0f}%  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (target < 150)  refused {r['refused']}  "
              f"out {r['bytes_per_span_out']:.0f} B/span")


if __name__ == "__main__":
    main()
