"""Exporter `nats`: publishes OTLP protobuf export requests to NATS JetStream, one message per request, on one
subject per signal (``otlp.traces``, ``otlp.metrics``, ``otlp.logs`` by default).

A batch counts as sent only when JetStream acknowledged the publish (the message is stored in the stream);
anything else (no connection, timeout, no stream for the subject) is retryable. Each message carries a
``Nats-Msg-Id`` derived from its bytes, so a publish retried after a lost ack is dropped by JetStream's
duplicate window instead of stored twice. The stream is created when missing (``stream.create``).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from collector.component import CreateSettings, Factory, Kind
from collector.errors import RetryableError
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.pdata import Batch, Signal
from exporters._jetstream import (
    METADATA_PREFIX,
    NatsConnectionConfig,
    connect,
    ensure_stream,
)

__all__ = ["NatsExporter", "NatsExporterConfig"]


class NatsExporterConfig(ExporterConfig, NatsConnectionConfig):
    """The delivery settings of every exporter and the NATS connection settings (shared with the receiver)."""


class NatsExporter(BaseExporter):
    config: NatsExporterConfig

    def __init__(self, settings: CreateSettings, config: NatsExporterConfig) -> None:
        super().__init__(settings, config)
        self._nc: Any = None
        self._js: Any = None
        self._lock = asyncio.Lock()
        self._connecting: asyncio.Task[None] | None = None

    async def _connection(self) -> Any:
        if self._js is not None and not self._nc.is_closed:
            return self._js
        async with self._lock:
            if self._js is not None and not self._nc.is_closed:
                return self._js
            c = self.config
            try:
                nc = await connect(c.url, c.auth, c.connect_timeout, f"llm-collector {self.id}", self.log)
            except Exception as e:  # noqa: BLE001 - the server may come later
                raise RetryableError(f"cannot connect to NATS at {c.url}: {e}") from None
            js = nc.jetstream(timeout=c.timeout or 5.0)
            try:
                await ensure_stream(js, c.stream, [c.subjects.for_signal(s) for s in Signal], self.log)
            except Exception as e:  # noqa: BLE001
                await nc.close()
                raise RetryableError(f"JetStream stream {c.stream.name}: {e}") from None
            self._nc, self._js = nc, js
            return js

    async def open(self) -> None:
        # connect in the background: a NATS server that is not up yet must not stop the collector starting
        self._connecting = asyncio.create_task(self._connect_early())

    async def _connect_early(self) -> None:
        try:
            await self._connection()
        except RetryableError as e:
            self.log.warning("%s; will retry when data comes", e)

    async def send(self, batch: Batch) -> None:
        from nats.errors import Error as NatsError

        js = await self._connection()
        payload = batch.to_bytes()
        headers = {"Nats-Msg-Id": hashlib.blake2b(payload, digest_size=16).hexdigest()}
        if self.config.include_metadata:
            for k, v in batch.metadata.items():
                headers[METADATA_PREFIX + k] = v
        try:
            await js.publish(self.config.subjects.for_signal(batch.signal), payload,
                             timeout=self.config.timeout or None, headers=headers)
        except (TimeoutError, NatsError, OSError) as e:
            raise RetryableError(f"JetStream publish failed: {type(e).__name__}: {e}") from None

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._nc is not None:
            nc, self._nc, self._js = self._nc, None, None
            try:
                await nc.drain()
            except Exception:  # noqa: BLE001
                await nc.close()


FACTORIES = [
    Factory("nats", Kind.EXPORTER, NatsExporterConfig, NatsExporter,
            description="OTLP protobuf to NATS JetStream (publish acks awaited)"),
]
