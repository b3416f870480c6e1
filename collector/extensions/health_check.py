"""Extension `health_check`: HTTP 200 on ``path`` when every component started, 503 otherwise.

``/status`` (next to ``path``) serves each exporter's delivery status as JSON: active, retrying or error,
with the last error and when it happened, and its queue size and capacity.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel

__all__ = ["HealthCheck", "HealthCheckConfig"]


class HealthCheckConfig(StrictModel):
    endpoint: str = "localhost:13133"
    path: str = "/"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class HealthCheck:
    def __init__(self, settings: CreateSettings, config: HealthCheckConfig) -> None:
        self.host = settings.host
        self.config = config
        self._runner: web.AppRunner | None = None

    async def _health(self, _req: web.Request) -> web.Response:
        ok = bool(self.host is not None and self.host.started)
        body = {"status": "Server available" if ok else "Server not available"}
        return web.json_response(body, status=200 if ok else 503)

    def status(self) -> dict[str, Any]:
        exporters = {}
        for name, exp in (self.host.exporters if self.host else {}).items():
            info = getattr(exp, "status_info", None)
            exporters[name] = info() if info else {"status": "active"}
        return {"healthy": bool(self.host and self.host.started), "exporters": exporters,
                "failed": list(getattr(self.host, "failed", []))}

    async def _status(self, _req: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.status(), default=str), content_type="application/json")

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        path = self.config.path
        app.router.add_get(path, self._health)
        status_path = path.rstrip("/") + "/status"
        if status_path != path:
            app.router.add_get(status_path, self._status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_endpoint(self.config.endpoint)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise RuntimeError(f"cannot listen on {self.config.endpoint}: {e.strerror or e}") from None
        self._runner = runner

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


FACTORIES = [
    Factory("health_check", Kind.EXTENSION, HealthCheckConfig, HealthCheck, frozenset(),
            description="HTTP health endpoint and per-exporter status"),
]
