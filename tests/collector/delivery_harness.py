"""In-process harness for the delivery tests: a collector (Service) with an OTLP/HTTP receiver and
`testotlp` exporters pointed at :class:`tests.delivery_support.OtlpBackend` servers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from collector.config import validate
from collector.service import Service
from tests.delivery_support import make_request, register
from tests.helpers import free_port

register()

FAST_RETRY = {"initial_interval": "50ms", "randomization_factor": 0, "multiplier": 2, "max_interval": "1s"}


def exporter_cfg(endpoint: str, **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"endpoint": endpoint, "retry_on_failure": dict(FAST_RETRY), "timeout": "2s"}
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


class Harness:
    def __init__(self, exporters: dict[str, dict[str, Any]], storage: Path | None = None,
                 processors: dict[str, dict[str, Any]] | None = None, shutdown_timeout: float = 1.0,
                 fsync: bool = False, port: int | None = None) -> None:
        self.port = port or free_port()
        cfg: dict[str, Any] = {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{self.port}"}}}},
            "exporters": exporters,
            "processors": processors or {},
            "extensions": {},
            "service": {"extensions": [], "shutdown_timeout": shutdown_timeout,
                        "telemetry": {"metrics": {"level": "none"}},
                        "pipelines": {"traces": {"receivers": ["otlp"], "processors": list(processors or {}),
                                                 "exporters": list(exporters)}}},
        }
        if storage is not None:
            cfg["extensions"]["file_storage"] = {"directory": str(storage), "fsync": fsync}
            cfg["service"]["extensions"].append("file_storage")
        self.config = validate(cfg)
        self.svc: Service | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Harness:
        self.svc = Service(self.config)
        await self.svc.start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
        if self.svc is not None:
            svc, self.svc = self.svc, None
            await svc.shutdown()

    def exporter(self, name: str) -> Any:
        assert self.svc is not None
        return self.svc.graph.exporters[name]

    async def post(self, ids: list[int], attrs: int = 0) -> aiohttp.ClientResponse:
        assert self.session is not None
        body = make_request(ids, attrs=attrs).SerializeToString()
        async with self.session.post(f"http://127.0.0.1:{self.port}/v1/traces", data=body,
                                     headers={"Content-Type": "application/x-protobuf"}) as r:
            await r.read()
            return r


async def wait_until(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ids_of(n: int, start: int = 1) -> set[bytes]:
    return {i.to_bytes(8, "big") for i in range(start, start + n)}
