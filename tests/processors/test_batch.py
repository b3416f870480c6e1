"""batch processor: merges requests, and the client's acknowledgement waits for the merged batch to be
queued (a refusal downstream reaches every contributing client)."""

from __future__ import annotations

import asyncio
import time

from tests.collector.delivery_harness import Harness, exporter_cfg, ids_of, wait_until
from tests.delivery_support import Action, OtlpBackend


async def test_merges_and_acks_after_queueing() -> None:
    with OtlpBackend() as be:
        procs = {"batch": {"timeout": "300ms", "send_batch_size": 6}}
        async with Harness({"testotlp/bp": exporter_cfg(be.http_endpoint())}, processors=procs) as h:
            rs = await asyncio.gather(*(h.post([i * 2 + 1, i * 2 + 2]) for i in range(3)))
            assert [r.status for r in rs] == [200] * 3
            await wait_until(lambda: be.received_ids() == ids_of(6), what="merged batch")
            assert [len(a.span_ids) for a in be.attempts] == [6]
            t0 = time.monotonic()
            assert (await h.post([50])).status == 200  # alone: the ack comes after the timeout flush
            assert time.monotonic() - t0 >= 0.25


async def test_refusal_downstream_reaches_every_client() -> None:
    with OtlpBackend(lambda n: Action(sleep=1)) as be:
        procs = {"batch": {"timeout": "100ms", "send_batch_size": 100}}
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"queue_size": 1, "num_consumers": 1})
        async with Harness({"testotlp/bp2": cfg}, processors=procs, shutdown_timeout=0.2) as h:
            assert (await h.post([1])).status == 200  # fills the queue
            rs = await asyncio.gather(h.post([2]), h.post([3]))
            assert [r.status for r in rs] == [429, 429]
