"""The one delivery helper every exporter runs behind: sending queue -> retry -> timeout -> send.

An exporter subclasses :class:`BaseExporter` and implements only ``async send(batch)``, raising
:class:`~collector.errors.PermanentError` or :class:`~collector.errors.RetryableError` (``retry_after`` is
honoured). ``open()`` / ``close()`` are optional hooks for connections. Key names and defaults are the
OpenTelemetry Collector's (``timeout``, ``sending_queue``, ``retry_on_failure``).

Delivery rules (docs/delivery.md):

* ``consume`` puts the batch in the exporter's own :class:`~collector.queue.SendingQueue` and returns once it
  is stored (committed to disk with ``sending_queue.storage``); a full queue raises
  :class:`~collector.errors.RefusedError`, which the receiver turns into a retryable answer.
* ``num_consumers`` tasks take batches from the queue (merged per ``sending_queue.batch``) and send them,
  retrying with exponential backoff (never less than the backend's Retry-After). Waits are interruptible
  by shutdown.
* An entry leaves the queue only when sent, on a permanent error, when older than ``max_age``, when pushed
  out by the disk budget (``max_size_mib``), or - in memory only - when retries exceed
  ``max_elapsed_time`` or at shutdown. Every such drop is counted by reason and written to the dead-letter
  file with the reason. With persistent storage, retries never give up on time alone.
* Shutdown: new data is refused, the queue drains until the service's shutdown deadline; what is left stays
  on disk (persistent) or is dead-lettered (in memory).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from collector import telemetry as tm
from collector.component import CreateSettings
from collector.config import Duration, StrictModel
from collector.errors import PermanentError, RefusedError, RetryableError
from collector.pdata import Batch, Signal, to_otlp_json_obj
from collector.queue import Entry, QueueFullError, SendingQueue

__all__ = [
    "Backoff",
    "BaseExporter",
    "DeadLetterConfig",
    "ExporterConfig",
    "QueueBatchConfig",
    "QueueConfig",
    "RetryConfig",
]


class RetryConfig(StrictModel):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(default=0.5, ge=0, le=1)
    multiplier: float = Field(default=1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0
    """0 means no limit. Ignored with persistent storage: there, entries leave by ``max_age`` only."""


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


class _Outcome(enum.Enum):
    SENT = "sent"
    DROPPED = "dropped"
    KEEP = "keep"  # stopping: the entries stay queued (on disk)


class BaseExporter:
    """Queue, retry, timeout and metrics around an exporter's ``send``. One level of inheritance only."""

    config: ExporterConfig

    def __init__(self, settings: CreateSettings, config: ExporterConfig) -> None:
        self.settings = settings
        self.id = str(settings.id)
        self.config = config
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        self._queue: SendingQueue | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._started = False
        self._closed = False
        self.status = "starting"
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.dropped: Counter[str] = Counter()
        self._retrying = 0
        self._counters: dict[tuple[int, Signal], Any] = {}

    def _count(self, family: dict[Signal, Any], signal: Signal, n: int) -> None:
        key = (id(family), signal)
        c = self._counters.get(key)
        if c is None:
            c = self._counters[key] = family[signal].labels(self.id)
        c.inc(n)

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
            store = None
            if q.storage:
                host = self.settings.host
                if host is None:
                    raise RuntimeError("sending_queue.storage needs a running collector (no host)")
                ext = host.extension(q.storage)
                if not hasattr(ext, "queue_store"):
                    raise RuntimeError(f"sending_queue.storage: extension {q.storage!r} is not a file_storage")
                store = ext.queue_store()
            self._queue = SendingQueue(self.id, q, store, on_drop=self._on_queue_drop,
                                       signals=sorted(self.settings.signals, key=lambda s: s.value))
            await self._queue.open()
            self._consumers = [asyncio.create_task(self._consume_loop(), name=f"{self.id}-consumer-{i}")
                               for i in range(q.num_consumers)]
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
        q = self._queue
        if q is not None:
            q.start_draining()
            deadline = self._deadline()
            pending: set[asyncio.Task[None]] = set(self._consumers)
            if pending:
                _done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            self._stopping.set()  # interrupts backoff waits: their batches go back to the queue
            if pending:
                _done, pending = await asyncio.wait(pending, timeout=0.2)
            for t in pending:  # sends still in progress at the deadline
                t.cancel()
            await asyncio.gather(*self._consumers, return_exceptions=True)
            left = q.remaining()
            if left:
                n = sum(e.items for e in left)
                if q.persistent:
                    self.log.warning("shutdown deadline reached: %d requests (%d items) stay in the persistent "
                                     "queue and are sent after the next start", len(left), n)
                else:
                    self.log.error("shutdown deadline reached: dropping %d requests (%d items) of the in-memory "
                                   "queue (written to the dead-letter file if configured)", len(left), n)
                    await q.drop_all("shutdown")
            await q.close()
        self._stopping.set()
        await self.close()

    # -- data path --------------------------------------------------------------------------------------
    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise RefusedError(f"exporter {self.id} is shutting down")
        if self._queue is None:  # no queue: the client waits for the send (and its retries)
            outcome = await self._send_with_retry(batch, batch.received_ns / 1e9)
            if outcome is _Outcome.KEEP:  # interrupted by shutdown: not sent, so not acknowledged either
                raise RefusedError(f"exporter {self.id} is shutting down")
            return
        try:
            await self._queue.put(batch)
        except QueueFullError as e:
            self._count(tm.exporter_enqueue_failed, batch.signal, batch.item_count())
            self._rl.log(logging.WARNING, "full", "refusing data: %s", e)
            raise RefusedError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - storage failure (disk full, I/O error): the client retries
            self._count(tm.exporter_enqueue_failed, batch.signal, batch.item_count())
            self._rl.log(logging.ERROR, "store", "cannot store data in the sending queue: %s", e)
            raise RefusedError(f"exporter {self.id} cannot store data: {e}", retry_after=5.0) from None

    async def _consume_loop(self) -> None:
        q = self._queue
        assert q is not None
        while True:
            try:
                entries = await q.get()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - storage trouble: wait and try again, never die
                self._record_error("error", e)
                self._rl.log(logging.ERROR, "get", "cannot read the sending queue: %s", e)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
                    return
                except TimeoutError:
                    continue
            if entries is None:
                return
            try:
                batch = q.batch_of(entries)
                outcome = await self._send_with_retry(batch, min(e.created for e in entries), entries)
            except asyncio.CancelledError:
                q.release(entries)
                raise
            except Exception:
                self.log.exception("unexpected error while exporting; the batch stays queued")
                q.release(entries)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
                    return
                except TimeoutError:
                    continue
            if outcome is _Outcome.KEEP:
                q.release(entries)
                return
            await q.ack(entries)

    def _record_error(self, status: str, err: BaseException) -> None:
        self.status = status
        self.last_error = f"{type(err).__name__}: {err}"
        self.last_error_time = time.time()

    def _drop(self, batch: Batch, reason: str, detail: str, entries: Sequence[Entry] = ()) -> None:
        n = sum(e.items for e in entries) if entries else batch.item_count()
        tm.exporter_dropped.labels(self.id, batch.signal.value, reason).inc(n)
        self.dropped[reason] += n
        self.dead_letter(batch, f"{reason}: {detail}" if detail else reason)

    def _on_queue_drop(self, batch: Batch, reason: str, entries: Sequence[Entry]) -> None:
        detail = {"max_age": f"older than sending_queue.max_age ({self.config.sending_queue.max_age:g}s)",
                  "queue_disk_full": f"sending_queue.max_size_mib ({self.config.sending_queue.max_size_mib}) "
                                     "reached; oldest data pushed out",
                  "shutdown": "in-memory queue not drained before the shutdown deadline",
                  "storage_lost": "the stored request is gone (its blob file was deleted)"}.get(reason, "")
        self._rl.log(logging.ERROR, "drop-" + reason, "dropping %d %s: %s", sum(e.items for e in entries),
                     batch.signal.item_name, detail or reason)
        self._drop(batch, reason, detail, entries)

    async def _send_with_retry(self, batch: Batch, created: float, entries: Sequence[Entry] = ()) -> _Outcome:
        n = sum(e.items for e in entries) if entries else batch.item_count()
        retry = self.config.retry_on_failure
        persistent = self._queue is not None and self._queue.persistent
        max_age = self.config.sending_queue.max_age
        backoff = Backoff(retry)
        warned_forever = False
        while True:
            try:
                async with asyncio.timeout(self.config.timeout or None):
                    await self.send(batch)
            except PermanentError as e:
                self._count(tm.exporter_send_failed, batch.signal, n)
                self._record_error("error", e)
                self._rl.log(logging.ERROR, "permanent", "dropping %d %s: permanent error: %s",
                             n, batch.signal.item_name, e)
                self._drop(batch, "permanent_error", str(e), entries)
                return _Outcome.DROPPED
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - anything not permanent is retryable
                self._count(tm.exporter_send_failed, batch.signal, n)
                err: BaseException = e
                if isinstance(e, asyncio.TimeoutError):
                    err = RetryableError(f"timed out after {self.config.timeout:g}s")
                self._record_error("retrying", err)
                if not retry.enabled:
                    if persistent and self._closed:
                        # shutting down (Collector issue 15677): the entry stays on disk for the next start
                        return _Outcome.KEEP
                    self._rl.log(logging.ERROR, "noretry", "dropping %d %s (retry_on_failure disabled): %s",
                                 n, batch.signal.item_name, err)
                    self._drop(batch, "retry_disabled", str(err), entries)
                    return _Outcome.DROPPED
                delay = backoff.next_delay()
                ra = getattr(err, "retry_after", None)
                if ra:
                    delay = max(delay, float(ra))
                if persistent and max_age and time.time() + delay > created + max_age:
                    self._rl.log(logging.ERROR, "maxage", "dropping %d %s older than max_age: %s",
                                 n, batch.signal.item_name, err)
                    self._drop(batch, "max_age", f"still failing when older than sending_queue.max_age: {err}",
                               entries)
                    return _Outcome.DROPPED
                if retry.max_elapsed_time and backoff.elapsed() + delay > retry.max_elapsed_time:
                    if not persistent:
                        self._rl.log(logging.ERROR, "gaveup", "giving up on %d %s after %.0fs: %s",
                                     n, batch.signal.item_name, backoff.elapsed(), err)
                        self._drop(batch, "retries_exhausted", f"after {backoff.elapsed():.0f}s: {err}", entries)
                        return _Outcome.DROPPED
                    if not warned_forever:
                        warned_forever = True
                        self._rl.log(logging.WARNING, "forever", "still failing after max_elapsed_time; the "
                                     "persistent queue keeps retrying until sending_queue.max_age: %s", err)
                self._rl.log(logging.WARNING, "retry", "export failed, retrying in %.2fs: %s", delay, err)
                self._retrying += 1
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                    return _Outcome.KEEP
                except TimeoutError:
                    continue
                finally:
                    self._retrying -= 1
            else:
                self._count(tm.exporter_sent, batch.signal, n)
                self.status = "active"
                return _Outcome.SENT

    def dead_letter(self, batch: Batch, reason: str) -> None:
        """Append the batch and the reason to the dead-letter file, if one is configured."""
        dl = self.config.dead_letter
        if dl is None:
            return
        try:
            request: Any = to_otlp_json_obj(batch.request)
        except Exception as e:  # noqa: BLE001 - undecodable bytes still go to the file
            request = {"undecodable": str(e), "bytes_hex": batch.to_bytes().hex()}
        line = json.dumps({
            "time": time.time(),
            "exporter": self.id,
            "signal": batch.signal.value,
            "reason": reason,
            "items": batch.item_count() if "undecodable" not in request else 0,
            "request": request,
        }, separators=(",", ":"))
        try:
            d = os.path.dirname(dl.path)
            if d:
                os.makedirs(d, exist_ok=True)
            with open(dl.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as e:
            self._rl.log(logging.ERROR, "deadletter", "cannot write dead-letter file %s: %s", dl.path, e)

    def status_info(self) -> dict[str, Any]:
        """The exporter's delivery status, served by health_check at ``/status``."""
        q = self._queue
        status = self.status
        if status == "active" and self._retrying:
            status = "retrying"
        when = None
        if self.last_error_time is not None:
            when = _dt.datetime.fromtimestamp(self.last_error_time, _dt.UTC).isoformat()
        return {
            "status": status,
            "last_error": self.last_error,
            "last_error_time": when,
            "queue_size": q.size() if q is not None else 0,
            "queue_capacity": q.capacity if q is not None else 0,
            "queue_sizer": self.config.sending_queue.sizer,
            "queue_requests": len(q) if q is not None else 0,
            "in_flight": q.in_flight() if q is not None else 0,
            "persistent": bool(q is not None and q.persistent),
            "retrying_batches": self._retrying,
            "dropped": dict(self.dropped),
        }
