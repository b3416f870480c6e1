"""CPU cost of the full LLM processor chain of bench_passthrough (memory_limiter → redaction → cost → enrich →
tail_sampling, config ``CHAIN_PROCESSORS``), in process, on the realistic spans of ``bench/llm_spans.py``.

Each request is parsed from its bytes (as the receiver does), goes through the chain, tail_sampling holds it
and releases it at a flush (as after ``decision_wait``), and the sink serialises what comes out (as the
exporter or the persistent queue does). Printed: CPU µs per span of the chain alone (parse and serialise
excluded), of each processor added in turn, and the whole (parse + chain + serialise).

    python -m bench.bench_chain [--requests 20] [--spans 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from bench.bench_passthrough import CHAIN_PROCESSORS
from bench.llm_spans import make_request
from collector.cli import _tune_gc
from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.pdata import Batch, Signal


class _Sink:
    def __init__(self, serialise: bool) -> None:
        self.items = 0
        self.serialise = serialise
        self.ns = 0

    async def consume(self, batch: Batch) -> None:
        self.items += batch.item_count()
        if self.serialise:
            t0 = time.process_time_ns()
            batch.to_bytes()
            self.ns += time.process_time_ns() - t0


def build(names: list[str], sink: Any) -> list[Any]:
    """The processors ``names`` of CHAIN_PROCESSORS, wired in order to ``sink``; first element first."""
    nxt = sink
    comps: list[Any] = []
    for name in reversed(names):
        f = registry.get(Kind.PROCESSOR, name)
        assert f is not None
        model: Any = f.config_model
        cfg = model.model_validate(CHAIN_PROCESSORS[name])
        s = CreateSettings(id=ComponentID.parse(name), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                           pipeline="traces", next=nxt)
        nxt = f.create(s, cfg)
        comps.insert(0, nxt)
    return comps


async def run(names: list[str], raws: list[bytes], serialise: bool) -> tuple[float, float, float, int]:
    """(parse ns, chain ns, serialise ns, spans out) in CPU time."""
    sink = _Sink(serialise)
    comps = build(names, sink)
    for c in comps:
        if type(c).__name__ == "TailSampler":
            from processors._hashing import preload
            preload()
    head = comps[0] if comps else sink
    await head.consume(Batch.from_bytes(Signal.TRACES, raws[-1]))  # warm-up: compiled patterns, tables
    for c in comps:
        if hasattr(c, "flush"):
            await c.flush()
    sink.items = sink.ns = 0
    gc.collect()
    t0 = time.process_time_ns()
    batches = [Batch.from_bytes(Signal.TRACES, r) for r in raws[:-1]]
    for b in batches:
        b.request  # noqa: B018 - parse
    t1 = time.process_time_ns()
    for b in batches:
        await head.consume(b)
    for c in comps:
        if hasattr(c, "flush"):
            await c.flush()
    t2 = time.process_time_ns()
    return t1 - t0, t2 - t1 - sink.ns, sink.ns, sink.items


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--spans", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="measure only these processors (comma-separated), e.g. for profiling")
    args = ap.parse_args()
    raws = [make_request(args.spans, seed=i).SerializeToString() for i in range(args.requests + 1)]
    n = args.requests * args.spans
    registry.all()
    _tune_gc()  # as `collector run` does
    print(f"{n} spans, {sum(map(len, raws)) / n:.0f} bytes per span")
    full = list(CHAIN_PROCESSORS)
    steps = [args.only.split(",")] if args.only else [[]] + [full[:i + 1] for i in range(len(full))]
    prev = 0.0
    for names in steps:
        best = min([await run(names, raws, True) for _ in range(args.repeat)], key=lambda r: r[1] + r[2])
        parse, chain, ser, out = best
        label = " → ".join(names) or "(none)"
        tot = parse + chain + ser
        print(f"{label:70s} chain {chain / n / 1000:6.2f} µs/span (+{(chain / n - prev) / 1000:5.2f})  "
              f"parse {parse / n / 1000:5.2f}  serialise {ser / n / 1000:5.2f}  total {tot / n / 1000:6.2f} µs/span "
              f"{n * 1e9 / tot:9,.0f} spans/CPU-s  out {out}")
        prev = chain / n


if __name__ == "__main__":
    asyncio.run(main())
