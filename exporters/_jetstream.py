"""What the `nats` exporter and receiver share: connection settings, subjects per signal, the stream.

Messages are OTLP protobuf export requests (the bytes a collector received or would send), one per message,
on one subject per signal. The stream is created when missing (``stream.create``); an existing stream is
used as it is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pydantic import Field

from collector.config import Duration, StrictModel
from collector.pdata import Signal

__all__ = ["METADATA_PREFIX", "NatsAuthConfig", "StreamSettings", "SubjectsConfig", "connect", "ensure_stream"]

METADATA_PREFIX = "Otlp-Md-"
"""Client metadata (``include_metadata``) travels as NATS headers with this prefix."""


class SubjectsConfig(StrictModel):
    traces: str = Field(default="otlp.traces", min_length=1)
    metrics: str = Field(default="otlp.metrics", min_length=1)
    logs: str = Field(default="otlp.logs", min_length=1)

    def for_signal(self, signal: Signal) -> str:
        return str(getattr(self, signal.value))


class StreamSettings(StrictModel):
    name: str = Field(default="OTLP", pattern=r"^[^.*>\s]+$")
    create: bool = True
    storage: Literal["file", "memory"] = "file"
    max_age: Duration = 86400.0
    max_bytes: int = Field(default=-1, ge=-1)
    replicas: int = Field(default=1, ge=1, le=5)
    duplicate_window: Duration = 120.0


class NatsAuthConfig(StrictModel):
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds_file: str | None = None


class NatsConnectionConfig(StrictModel):
    """The settings the NATS exporter and receiver share: where the server is, the subjects and stream, how to
    log in, and whether client metadata travels in message headers."""

    url: str = "nats://localhost:4222"
    subjects: SubjectsConfig = Field(default_factory=SubjectsConfig)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    auth: NatsAuthConfig = Field(default_factory=NatsAuthConfig)
    connect_timeout: Duration = 2.0
    include_metadata: bool = False


async def connect(url: str, auth: NatsAuthConfig, connect_timeout: float, name: str,
                  log: logging.Logger) -> Any:
    """A connection that reconnects for ever once established."""
    import nats.aio.client

    async def on_error(e: Exception) -> None:
        log.warning("nats: %s", e)

    async def on_disconnect() -> None:
        log.info("nats: disconnected from %s", url)

    async def on_reconnect() -> None:
        log.info("nats: reconnected to %s", url)

    opts: dict[str, Any] = dict(
        servers=[u.strip() for u in url.split(",")], name=name, connect_timeout=connect_timeout,
        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
        error_cb=on_error, disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
    )
    if auth.token:
        opts["token"] = auth.token
    if auth.user:
        opts["user"] = auth.user
        opts["password"] = auth.password or ""
    if auth.creds_file:
        opts["user_credentials"] = auth.creds_file
    # with unlimited reconnects nats-py would also retry the first connect for ever: bound it
    nc = nats.aio.client.Client()
    try:
        await asyncio.wait_for(nc.connect(**opts), timeout=connect_timeout * 2 + 0.5)
    except BaseException:
        try:
            await nc.close()
        except Exception:  # noqa: BLE001
            pass
        raise
    return nc


async def ensure_stream(js: Any, stream: StreamSettings, subjects: list[str], log: logging.Logger) -> None:
    """Create the stream over ``subjects`` when it does not exist and ``create`` is set."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(stream.name)
        return
    except NotFoundError:
        if not stream.create:
            raise RuntimeError(f"JetStream stream {stream.name} does not exist and stream.create is false")
    cfg = StreamConfig(
        name=stream.name, subjects=subjects,
        storage=StorageType.FILE if stream.storage == "file" else StorageType.MEMORY,
        max_age=stream.max_age or None, max_bytes=stream.max_bytes, num_replicas=stream.replicas,
        duplicate_window=stream.duplicate_window,
    )
    try:
        await js.add_stream(cfg)
        log.info("created JetStream stream %s on %s", stream.name, ", ".join(subjects))
    except Exception as e:  # noqa: BLE001 - created concurrently by another collector: fine if it exists now
        try:
            await js.stream_info(stream.name)
        except Exception:  # noqa: BLE001
            raise e from None
