"""Receiver `nats`: reads OTLP protobuf export requests from NATS JetStream with a durable pull consumer per
signal, and acknowledges a message only after the pipeline took it (the batch is in every exporter's queue).

A message the pipeline refuses (queue full, memory limit) is negatively acknowledged with the refusal's
delay, so JetStream redelivers it later; a message that is not an OTLP request is terminated (logged,
never redelivered). A collector killed before it acknowledged gets the message again after ``ack_wait``:
delivery is at least once. Several collectors (or workers) with the same ``durable`` name share the work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from google.protobuf.message import DecodeError
from pydantic import Field

from collector import telemetry as tm
from collector.component import Consumer, CreateSettings, Factory, Kind
from collector.config import Duration
from collector.errors import RefusedError
from collector.pdata import Batch, Signal
from exporters._jetstream import (
    METADATA_PREFIX,
    NatsConnectionConfig,
    connect,
    ensure_stream,
)

__all__ = ["NatsReceiver", "NatsReceiverConfig"]


class NatsReceiverConfig(NatsConnectionConfig):
    durable: str = Field(default="llm-collector", pattern=r"^[^.*>\s]+$")
    fetch_batch: int = Field(default=64, ge=1, le=10000)
    fetch_timeout: Duration = 1.0
    ack_wait: Duration = 30.0
    max_deliver: int = Field(default=-1, ge=-1)
    max_ack_pending: int = Field(default=1000, ge=1)


class NatsReceiver:
    def __init__(self, settings: CreateSettings, config: NatsReceiverConfig) -> None:
        self.settings = settings
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        self.consumers: dict[Signal, Consumer] = dict(settings.consumers)
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closed = False
        self._subscribed = False

    async def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run())

    async def _setup(self) -> list[tuple[Signal, Any]]:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        c = self.config
        self._nc = await connect(c.url, c.auth, c.connect_timeout, f"llm-collector {self.id}", self.log)
        js = self._nc.jetstream()
        await ensure_stream(js, c.stream, [c.subjects.for_signal(s) for s in Signal], self.log)
        subs = []
        for signal in self.consumers:
            subject = c.subjects.for_signal(signal)
            durable = f"{c.durable}-{signal.value}"
            cc = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=c.ack_wait,
                                max_deliver=c.max_deliver, filter_subject=subject,
                                max_ack_pending=c.max_ack_pending)
            sub = await js.pull_subscribe(subject, durable=durable, stream=c.stream.name, config=cc)
            subs.append((signal, sub))
        return subs

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                subs = await self._setup()
            except Exception as e:  # noqa: BLE001 - the server may come later
                self._rl.log(logging.WARNING, "connect", "cannot subscribe at %s: %s; retrying", self.config.url, e)
                await self._close_connection()
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
                continue
            self._subscribed = True
            self.log.info("consuming %s from stream %s", ", ".join(s.value for s, _ in subs),
                          self.config.stream.name)
            await asyncio.gather(*(self._fetch_loop(sig, sub) for sig, sub in subs))
            return

    async def _fetch_loop(self, signal: Signal, sub: Any) -> None:
        import nats.errors

        c = self.config
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(c.fetch_batch, timeout=c.fetch_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as e:  # noqa: BLE001 - disconnected: the client reconnects on its own
                self._rl.log(logging.WARNING, "fetch", "fetch from %s failed: %s", c.subjects.for_signal(signal), e)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.5)
                except TimeoutError:
                    pass
                continue
            # each message on its own: one refused or bad message does not hold back the others
            await asyncio.gather(*(self._handle(signal, m) for m in msgs))

    async def _handle(self, signal: Signal, msg: Any) -> None:
        md: dict[str, str] = {}
        if self.config.include_metadata and msg.headers:
            md = {k[len(METADATA_PREFIX):].lower(): v for k, v in msg.headers.items()
                  if k.startswith(METADATA_PREFIX)}
        try:
            batch = Batch.from_bytes(signal, msg.data, metadata=md, received_ns=time.time_ns())
        except DecodeError as e:
            self._rl.log(logging.ERROR, "decode", "dropping a message on %s that is not an OTLP %s request: %s",
                         msg.subject, signal.value, e)
            await self._settle(msg.term())
            return
        n = batch.item_count()
        try:
            await self.consumers[signal].consume(batch)
        except RefusedError as e:
            tm.receiver_refused[signal].labels(self.id, "nats").inc(n)
            await self._settle(msg.nak(delay=e.retry_after))
            return
        except Exception as e:  # noqa: BLE001 - a pipeline failure: let JetStream redeliver
            tm.receiver_refused[signal].labels(self.id, "nats").inc(n)
            self._rl.log(logging.ERROR, "push", "pipeline failed: %s", e)
            await self._settle(msg.nak(delay=1.0))
            return
        tm.receiver_accepted[signal].labels(self.id, "nats").inc(n)
        await self._settle(msg.ack())

    async def _settle(self, coro: Any) -> None:
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - the ack is lost: JetStream redelivers after ack_wait
            self._rl.log(logging.WARNING, "ack", "cannot acknowledge a message: %s", e)

    async def _close_connection(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            # flush the acks still buffered, then close (drain would wait for the pull subscriptions)
            try:
                if nc.is_connected:
                    await nc.flush(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            try:
                await nc.close()
            except Exception:  # noqa: BLE001
                pass

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._task is not None:
            # let the fetch loops finish what they hold (acked or nak'ed), then stop them; still connecting:
            # nothing is held, stop at once
            grace = self.config.fetch_timeout + 5.0 if self._subscribed else 0.0
            await asyncio.wait({self._task}, timeout=grace)
            if not self._task.done():
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_connection()


FACTORIES = [
    Factory("nats", Kind.RECEIVER, NatsReceiverConfig, NatsReceiver,
            description="OTLP protobuf from NATS JetStream (durable pull consumer, ack after commit)"),
]
