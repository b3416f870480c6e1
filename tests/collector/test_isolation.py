"""Isolation: a backend that hangs 10 s per request next to a healthy one changes neither the healthy
exporter's delivery time nor the receiver's acknowledgement latency (behaviour check, generous margins)."""

from __future__ import annotations

import asyncio
import time

from tests.collector.delivery_harness import Harness, exporter_cfg, ids_of, wait_until
from tests.delivery_support import Action, OtlpBackend

N = 200


async def _run(exporters: dict, healthy: OtlpBackend) -> tuple[float, float, float, dict]:
    """(seconds until the healthy backend has every span, p50 and p99 acknowledgement latency, the slow
    exporter's status if there is one)."""
    async with Harness(exporters, shutdown_timeout=0.2) as h:
        lat: list[float] = []
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                r = await h.post([i])
                lat.append(time.perf_counter() - t)
                assert r.status == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(1, N + 1)))
        await wait_until(lambda: ids_of(N) <= healthy.received_ids(), timeout=20, what="healthy delivery")
        took = time.perf_counter() - t0
        slow = h.exporter("testotlp/slow").status_info() if "testotlp/slow" in exporters else {}
    lat.sort()
    return took, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], slow


async def test_slow_backend_does_not_slow_the_healthy_one() -> None:
    with OtlpBackend() as h1, OtlpBackend() as h2, OtlpBackend(lambda n: Action(sleep=10)) as slow:
        alone = await _run({"testotlp/healthy": exporter_cfg(h1.http_endpoint())}, h1)
        exps = {"testotlp/healthy": exporter_cfg(h2.http_endpoint()),
                "testotlp/slow": exporter_cfg(slow.http_endpoint(), timeout="30s")}
        beside = await _run(exps, h2)
        print(f"healthy alone: {alone[0]:.2f}s p50 {alone[1]*1e3:.1f}ms p99 {alone[2]*1e3:.1f}ms; "
              f"beside a 10s backend: {beside[0]:.2f}s p50 {beside[1]*1e3:.1f}ms p99 {beside[2]*1e3:.1f}ms")
        # the slow exporter really was stuck: all its consumers waiting on the backend, the rest queued
        assert beside[3]["in_flight"] == 10 and beside[3]["queue_size"] == N, beside[3]
        assert beside[0] <= alone[0] * 3 + 1.0
        assert beside[1] <= alone[1] * 3 + 0.02
        assert beside[2] <= alone[2] * 3 + 0.1
