"""The one delivery helper every exporter runs behind: sending queue -> retry -> timeout -> send.

An exporter subclasses :class:`BaseExporter` and implements only ``async send(batch)``, raising
:class:`~collector.errors.PermanentError` or :class:`~collector.errors.RetryableError` (``retry_after`` is
honoured). ``open()`` / ``close()`` are optional hooks for connections. Key names and defaults are the
OpenTelemetry Collector's (``timeout``, ``sending_queue``, ``retry_on_failure``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any, Literal

from pydantic import Field

from collector.component import CreateSettings
from collector.config import Duration, StrictModel
from collector.errors import PermanentError, RefusedError, RetryableError
from collector.pdata import Batch, to_otlp_json_obj
from collector import telemetry as tm

__all__ = [
    "RetryConfig",
    "QueueConfig",
    "DeadLetterConfig",
    "ExporterConfig",
    "BaseExporter",
    "Backoff",
]


class RetryConfig(StrictModel):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(default=0.5, ge=0, le=1)
    multiplier: float = Field(default=1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0


class QueueBatchConfig(StrictModel):
    flush_timeout: Duration = 0.2
    min_size: int = Field(default=8192, ge=0)
    max_size: int = Field(default=0, ge=0)
    sizer: Literal["requests", "items", "bytes"] = "items"


class QueueConfig(StrictModel):
    enabled: bool = True
    num_consumers: int = Field(default=10, ge=1)
    queue_size: int = Field(default=1000, ge=1)
    sizer: Literal["requests", "items"] = "requests"
    block_on_overflow: bool = False
    storage: str | None = None
    batch: QueueBatchConfig | None = None
    max_age: Duration = 86400.0
    max_size_mib: int = Field(default=1024, ge=1)


class DeadLetterConfig(StrictModel):
    path: str


class ExporterConfig(StrictModel):
    """Base of every exporter's config model: the shared delivery settings."""

    timeout: Duration = 5.0
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    dead_letter: DeadLetterConfig | None = None


class Backoff:
    """Exponential backoff with jitter, as the Collector's (cenkalti/backoff) defaults."""

    def __init__(self, cfg: RetryConfig) -> None:
        self.cfg = cfg
        self.interval = cfg.initial_interval
        self.started = time.monotonic()

    def next_delay(self) -> float:
        c = self.cfg
        delta = c.randomization_factor * self.interval
        delay = random.uniform(self.interval - delta, self.interval + delta)
        self.interval = min(self.interval * c.multiplier, c.max_interval)
        return max(0.0, delay)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class BaseExporter:
    """Queue, retry, timeout and metrics around an exporter's ``send``. One level of inheritance only."""

    config: ExporterConfig

    def __init__(self, settings: CreateSettings, config: ExporterConfig) -> None:
        self.settings = settings
        self.id = str(settings.id)
        self.config = config
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        q = config.sending_queue
        self._queue: asyncio.Queue[Batch] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._started = False
        self._closed = False
        self.status = "starting"
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self._capacity = q.queue_size

    # -- hooks for subclasses -------------------------------------------------------------------------
    async def open(self) -> None:
        """Open connections, check credentials. Raise to refuse to start."""

    async def close(self) -> None:
        """Close connections."""

    async def send(self, batch: Batch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.open()
        q = self.config.sending_queue
        if q.enabled:
            self._queue = asyncio.Queue(maxsize=q.queue_size)
            for sig in self.settings.signals:
                tm.exporter_queue_capacity.labels(self.id, sig.value).set(q.queue_size)
            self._consumers = [asyncio.create_task(self._consume_loop()) for _ in range(q.num_consumers)]
        if self.status == "starting":
            self.status = "active"

    def _deadline(self) -> float:
        host = self.settings.host
        d = getattr(host, "shutdown_deadline", None)
        return d if d is not None else time.monotonic() + 30.0

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        deadline = self._deadline()
        if self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.log.warning("shutdown deadline reached with %d batches still queued", self._queue.qsize())
        self._stopping.set()
        for t in self._consumers:
            t.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        await self.close()

    # -- data path --------------------------------------------------------------------------------------
    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise RefusedError(f"exporter {self.id} is shutting down")
        if self._queue is None:
            await self._send_with_retry(batch)
            return
        if self.config.sending_queue.block_on_overflow:
            await self._queue.put(batch)
        else:
            try:
                self._queue.put_nowait(batch)
            except asyncio.QueueFull:
                tm.exporter_enqueue_failed[batch.signal].labels(self.id).inc(batch.item_count())
                raise RefusedError(f"sending queue of exporter {self.id} is full") from None
        tm.exporter_queue_size.labels(self.id, batch.signal.value).set(self._queue.qsize())

    async def _consume_loop(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._queue.get()
            try:
                await self._send_with_retry(batch)
            except Exception:  # noqa: BLE001 - a consumer must never die
                self.log.exception("unexpected error while exporting")
            finally:
                self._queue.task_done()
                tm.exporter_queue_size.labels(self.id, batch.signal.value).set(self._queue.qsize())

    def _record_error(self, status: str, err: BaseException) -> None:
        self.status = status
        self.last_error = f"{type(err).__name__}: {err}"
        self.last_error_time = time.time()

    async def _send_with_retry(self, batch: Batch) -> bool:
        n = batch.item_count()
        retry = self.config.retry_on_failure
        backoff = Backoff(retry)
        while True:
            try:
                await asyncio.wait_for(self.send(batch), timeout=self.config.timeout or None)
            except PermanentError as e:
                tm.exporter_send_failed[batch.signal].labels(self.id).inc(n)
                self._record_error("error", e)
                self._rl.log(logging.ERROR, "permanent", "dropping %d %s: permanent error: %s",
                             n, batch.signal.item_name, e)
                self.dead_letter(batch, f"permanent error: {e}")
                return False
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything not permanent is retryable
                tm.exporter_send_failed[batch.signal].labels(self.id).inc(n)
                err = e if not isinstance(e, asyncio.TimeoutError) else RetryableError(
                    f"timed out after {self.config.timeout}s")
                self._record_error("retrying", err)
                if not retry.enabled:
                    self.dead_letter(batch, f"retries disabled: {err}")
                    return False
                delay = backoff.next_delay()
                ra = getattr(err, "retry_after", None)
                if ra:
                    delay = max(delay, ra)
                if retry.max_elapsed_time and backoff.elapsed() + delay > retry.max_elapsed_time:
                    self._rl.log(logging.ERROR, "gaveup", "giving up on %d %s after %.0fs: %s",
                                 n, batch.signal.item_name, backoff.elapsed(), err)
                    tm.exporter_dropped.labels(self.id, batch.signal.value, "max_elapsed_time").inc(n)
                    self.dead_letter(batch, f"retries exhausted: {err}")
                    return False
                self._rl.log(logging.WARNING, "retry", "export failed, retrying in %.2fs: %s", delay, err)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    return False  # stopping: the batch stays where the queue keeps it
                except asyncio.TimeoutError:
                    continue
            else:
                tm.exporter_sent[batch.signal].labels(self.id).inc(n)
                self.status = "active"
                return True

    def dead_letter(self, batch: Batch, reason: str) -> None:
        """Append the batch and the reason to the dead-letter file, if one is configured."""
        dl = self.config.dead_letter
        if dl is None:
            return
        line = json.dumps({
            "time": time.time(),
            "exporter": self.id,
            "signal": batch.signal.value,
            "reason": reason,
            "items": batch.item_count(),
            "request": to_otlp_json_obj(batch.request),
        }, separators=(",", ":"))
        try:
            with open(dl.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as e:
            self._rl.log(logging.ERROR, "deadletter", "cannot write dead-letter file %s: %s", dl.path, e)

    def status_info(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
            "queue_size": self._queue.qsize() if self._queue is not None else 0,
            "queue_capacity": self._capacity,
        }
