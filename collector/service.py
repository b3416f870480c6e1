"""The running collector: builds the graph, serves our own metrics, starts, waits for a signal, shuts down."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from collector.config import CollectorConfig
from collector.errors import ConfigError
from collector.pipeline import Graph
from collector.telemetry import serve_metrics

__all__ = ["Service", "run"]

log = logging.getLogger("llm_collector")


class Service:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.graph = Graph(config)
        self._metrics_server: Any = None

    async def start(self) -> None:
        addr = self.config.service.telemetry.metrics
        if addr.level != "none" and addr.address:
            try:
                self._metrics_server = serve_metrics(addr.address)
            except OSError as e:
                raise RuntimeError(f"service::telemetry::metrics: cannot listen on {addr.address}: "
                                   f"{e.strerror or e}") from None
        await self.graph.start()

    async def shutdown(self) -> None:
        await self.graph.shutdown(self.config.service.shutdown_timeout)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None


async def run(config: CollectorConfig, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); returns the process exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        svc = Service(config)
    except ConfigError as e:
        for line in e.errors:
            log.error("invalid configuration: %s", line)
        return 1
    try:
        await svc.start()
    except Exception as e:  # noqa: BLE001
        log.error("failed to start: %s", e)
        await svc.shutdown()
        return 1
    log.info("llm-collector started; pipelines: %s", ", ".join(config.service.pipelines))
    await stop.wait()
    log.info("shutting down (timeout %.0fs)", config.service.shutdown_timeout)
    await svc.shutdown()
    log.info("stopped")
    return 0
