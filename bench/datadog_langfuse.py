"""Throughput of the datadog and langfuse exporters: conversion alone, and delivery to local intakes.

    python bench/datadog_langfuse.py --spans 20000 --batch 500

Prints spans per second for: Datadog log conversion (genai read + entry + size), building the SDK models,
Langfuse mapping + protobuf + gzip, and a full send to the local intakes of tests/exporters/intake.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.pdata import Batch, Signal
from tests.exporters import spans as S
from tests.exporters.intake import DD_KEY, LF_PUBLIC, LF_SECRET, DatadogIntake, LangfuseIntake


def make(kind: str, cfg: dict) -> object:
    f = registry.get(Kind.EXPORTER, kind)
    assert f is not None
    return f.create(CreateSettings(ComponentID(kind), Kind.EXPORTER, signals=frozenset({Signal.TRACES})),
                    f.config_model.model_validate(cfg))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--spans", type=int, default=20000)
    p.add_argument("--batch", type=int, default=500)
    a = p.parse_args()
    n_batches = max(1, a.spans // a.batch)
    reqs = [S.request(a.batch, root=False) for _ in range(n_batches)]
    total = n_batches * a.batch

    with DatadogIntake() as dd, LangfuseIntake() as lf:
        d = make("datadog", {"api": {"key": DD_KEY}, "logs": {"endpoint": dd.url},
                             "metrics": {"endpoint": dd.url, "flush_interval": "1s"}})
        lfe = make("langfuse", {"public_key": LF_PUBLIC, "secret_key": LF_SECRET, "host": lf.url})
        await d.start()  # type: ignore[attr-defined]
        await lfe.start()  # type: ignore[attr-defined]

        t = time.perf_counter()
        converted = [d._convert(Batch(Signal.TRACES, r)) for r in reqs]  # type: ignore[attr-defined]
        conv = time.perf_counter() - t
        from datadog_api_client.model_utils import data_to_dict
        from datadog_api_client.v2.model.http_log import HTTPLog
        t = time.perf_counter()
        for c in converted:
            for r in c:
                data_to_dict(HTTPLog(r.items, _check_type=False))
        models = time.perf_counter() - t
        print(f"datadog: log conversion {total / conv:,.0f} spans/s; "
              f"SDK body + serialisation walk {total / models:,.0f} entries/s")

        from exporters.langfuse import build_requests
        t = time.perf_counter()
        for r in reqs:
            for out in build_requests(r, lfe.config, lfe._names):  # type: ignore[attr-defined]
                lfe._compress(out.SerializeToString())  # type: ignore[attr-defined]
        lconv = time.perf_counter() - t
        print(f"langfuse: mapping + protobuf + gzip {total / lconv:,.0f} spans/s")

        for name, exp, srv, path in (("datadog", d, dd, "/api/v2/logs"),
                                     ("langfuse", lfe, lf, LangfuseIntake.PATH)):
            t = time.perf_counter()
            for r in reqs:
                await exp.send(Batch(Signal.TRACES, r))  # type: ignore[attr-defined]
            el = time.perf_counter() - t
            print(f"{name}: send to the local intake (its schema check runs in this process) {total / el:,.0f} spans/s "
                  f"({len(srv.accepted(path))} requests, one consumer)")
        await d.shutdown()  # type: ignore[attr-defined]
        await lfe.shutdown()  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(main())
