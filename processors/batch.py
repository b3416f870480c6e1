"""Processor `batch`: merges requests before the exporters, for compatibility with Collector configs.

Prefer ``sending_queue.batch`` on the exporters: it batches inside the durable queue. This processor keeps
the acknowledgement honest anyway: a ``consume`` call returns (and so the receiver answers the client) only
once the merged batch it joined has been handed to the next consumer (the exporters' queues), and it fails
if that hand-over failed, so the client retries. Keys as in the Collector: ``timeout`` (200ms),
``send_batch_size`` (8192 items), ``send_batch_max_size`` (0: no limit), ``metadata_keys`` (one batch per
distinct value combination), ``metadata_cardinality_limit`` (1000).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from collector import telemetry as tm
from collector.component import Consumer, CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import RefusedError
from collector.pdata import Batch

__all__ = ["BatchConfig", "BatchProcessor"]


class BatchConfig(StrictModel):
    timeout: Duration = 0.2
    send_batch_size: int = Field(default=8192, ge=0)
    send_batch_max_size: int = Field(default=0, ge=0)
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater than or equal to send_batch_size")
        return self


@dataclass
class _Pending:
    parts: list[Batch] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    items: int = 0
    timer: asyncio.TimerHandle | None = None


class BatchProcessor:
    def __init__(self, settings: CreateSettings, config: BatchConfig) -> None:
        assert settings.next is not None, "a processor needs a next consumer"
        self.settings = settings
        self.config = config
        self.next: Consumer = settings.next
        self._buckets: dict[tuple[Any, ...], _Pending] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        sig = settings.signal.value if settings.signal else ""
        pid = settings.pipeline or ""
        self._in = tm.processor_incoming.labels(str(settings.id), pid, sig)
        self._out = tm.processor_outgoing.labels(str(settings.id), pid, sig)

    def _key(self, batch: Batch) -> tuple[Any, ...]:
        keys = self.config.metadata_keys
        if not keys:
            return (batch.signal,)
        md = {k.lower(): v for k, v in batch.metadata.items()}
        return (batch.signal, *(md.get(k.lower(), "") for k in keys))

    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise RefusedError("batch processor is shutting down")
        n = batch.item_count()
        self._in.inc(n)
        key = self._key(batch)
        if key not in self._buckets and self.config.metadata_cardinality_limit and \
                len(self._buckets) >= self.config.metadata_cardinality_limit:
            raise RefusedError("batch processor: too many distinct metadata combinations")
        c = self.config
        b = self._buckets.get(key)
        if b is not None and c.send_batch_max_size and b.items + n > c.send_batch_max_size:
            self._flush(key)
            b = None
        if b is None:
            b = self._buckets[key] = _Pending()
            b.timer = asyncio.get_running_loop().call_later(c.timeout, self._flush, key)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        b.parts.append(batch)
        b.waiters.append(fut)
        b.items += n
        if b.items >= c.send_batch_size:
            self._flush(key)
        await asyncio.shield(fut)

    def _flush(self, key: tuple[Any, ...]) -> None:
        b = self._buckets.pop(key, None)
        if b is None:
            return
        if b.timer is not None:
            b.timer.cancel()
        t = asyncio.get_running_loop().create_task(self._send(b))
        self._flushes.add(t)
        t.add_done_callback(self._flushes.discard)

    async def _send(self, b: _Pending) -> None:
        first = b.parts[0]
        if len(b.parts) == 1:
            merged = first
        else:  # OTLP requests concatenate: the bytes of several are the bytes of their merge
            merged = Batch(first.signal, raw=b"".join(p.to_bytes() for p in b.parts), metadata=first.metadata,
                           received_ns=first.received_ns)
        try:
            await self.next.consume(merged)
        except BaseException as e:  # noqa: BLE001 - handed to every contributor
            for f in b.waiters:
                if not f.done():
                    f.set_exception(e)
            return
        self._out.inc(b.items)
        for f in b.waiters:
            if not f.done():
                f.set_result(None)

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        self._closed = True
        try:
            for key in list(self._buckets):
                self._flush(key)
        except RuntimeError:  # no running loop
            return
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)


FACTORIES = [
    Factory("batch", Kind.PROCESSOR, BatchConfig, BatchProcessor,
            description="merge requests (prefer sending_queue.batch on exporters)"),
]
