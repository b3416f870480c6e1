"""Local HTTP intakes for the Datadog and Langfuse exporters' tests.

Each runs an aiohttp server on 127.0.0.1 in its own thread (so a collector subprocess and an in-process
exporter can both use it) and checks what arrives against the vendor's own schema: Datadog bodies are
parsed with datadog-api-client's models (``HTTPLog``/``HTTPLogItem``, ``MetricPayload``,
``DistributionPointsPayload``) and must not come back ``_unparsed``; Langfuse bodies are decoded as OTLP
``ExportTraceServiceRequest``. Wrong key, encoding, limits or schema are answered with a 4xx and recorded in
``problems``, which every test asserts empty. ``plan(path, status, headers, body)`` queues fault answers.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.helpers import free_port, wait_for

DD_KEY = "0123456789abcdef0123456789abcdef"
LF_PUBLIC = "pk-lf-test"
LF_SECRET = "sk-lf-test"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    parsed: Any = None
    status: int = 0


@dataclass
class _Planned:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class _ThreadedServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.problems: list[str] = []
        self._plans: dict[str, deque[_Planned]] = defaultdict(deque)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    def routes(self, app: web.Application) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan(self, path: str, status: int, headers: dict[str, str] | None = None, body: Any = None,
             times: int = 1) -> None:
        with self.lock:
            for _ in range(times):
                self._plans[path].append(_Planned(status, headers or {}, body))

    def _planned(self, path: str) -> _Planned | None:
        with self.lock:
            q = self._plans.get(path)
            return q.popleft() if q else None

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def record(self, r: Received) -> None:
        with self.lock:
            self.received.append(r)

    def accepted(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path and 200 <= r.status < 300]

    def start(self) -> _ThreadedServer:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=64 * 1024 * 1024)
            self.routes(app)
            # keep the raw (compressed) bytes: the encoding is part of what is checked
            runner = web.AppRunner(app, access_log=None, auto_decompress=False)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self._runner = runner
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> _ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DatadogIntake(_ThreadedServer):
    """``/api/v2/logs``, ``/api/v2/series``, ``/api/v1/distribution_points``, ``/api/v1/validate``."""

    MAX_LOG_ENTRIES = 1000
    MAX_LOG_PAYLOAD = 5 * 1000 * 1000
    MAX_LOG_ENTRY = 1000 * 1000

    def __init__(self, key: str = DD_KEY) -> None:
        super().__init__()
        self.key = key
        self.validations = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/logs", self._logs)
        app.router.add_post("/api/v2/series", self._series)
        app.router.add_post("/api/v1/distribution_points", self._dist)
        app.router.add_get("/api/v1/validate", self._validate)

    @staticmethod
    def _deserialize(text: str, model: Any) -> Any:
        from datadog_api_client import ApiClient, Configuration

        client = ApiClient(Configuration())
        try:
            return client.deserialize(text, (model,), True)
        finally:
            client.close()

    def _auth_ok(self, req: web.Request) -> bool:
        return req.headers.get("DD-API-KEY") == self.key

    async def _validate(self, req: web.Request) -> web.Response:
        self.validations += 1
        if not self._auth_ok(req):
            return web.json_response({"errors": ["Forbidden"]}, status=403)
        return web.json_response({"valid": True})

    async def _common(self, req: web.Request, model: Any, encoding: str) -> tuple[Received, web.Response | None]:
        raw = await req.read()
        r = Received(req.path, dict(req.headers), raw, b"")
        self.record(r)
        if not self._auth_ok(req):
            r.status = 403
            return r, web.json_response({"errors": ["Forbidden"]}, status=403)
        planned = self._planned(req.path)
        if planned is not None and not 200 <= planned.status < 300:  # a planned 2xx: answer as usual
            r.status = planned.status
            return r, web.json_response(planned.body if planned.body is not None else {"errors": ["planned"]},
                                        status=planned.status, headers=planned.headers)
        if req.headers.get("Content-Encoding") != encoding:
            self.problem(f"{req.path}: Content-Encoding {req.headers.get('Content-Encoding')!r}, want {encoding}")
            r.status = 400
            return r, web.json_response({"errors": ["bad encoding"]}, status=400)
        try:
            r.body = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw)
        except Exception as e:  # noqa: BLE001
            self.problem(f"{req.path}: body is not {encoding}: {e}")
            r.status = 400
            return r, web.json_response({"errors": ["bad body"]}, status=400)
        parsed = self._deserialize(r.body.decode(), model)
        if not isinstance(parsed, model) or getattr(parsed, "_unparsed", False):
            self.problem(f"{req.path}: body does not match {model.__name__}: {r.body[:300]!r}")
            r.status = 400
            return r, web.json_response({"errors": ["schema"]}, status=400)
        r.parsed = parsed
        return r, None

    async def _logs(self, req: web.Request) -> web.Response:
        from datadog_api_client.v2.model.http_log import HTTPLog

        r, resp = await self._common(req, HTTPLog, "gzip")
        if resp is not None:
            return resp
        if len(r.body) > self.MAX_LOG_PAYLOAD:
            self.problem(f"logs payload of {len(r.body)} bytes over 5 MB")
        items = json.loads(r.body)
        if len(items) > self.MAX_LOG_ENTRIES:
            self.problem(f"logs payload of {len(items)} entries over 1000")
        for it in items:
            if len(json.dumps(it)) > self.MAX_LOG_ENTRY:
                self.problem("log entry over 1 MB")
        r.status = 202
        return web.json_response({}, status=202)

    async def _series(self, req: web.Request) -> web.Response:
        from datadog_api_client.v2.model.metric_payload import MetricPayload

        r, resp = await self._common(req, MetricPayload, "gzip")
        if resp is not None:
            return resp
        r.status = 202
        return web.json_response({"errors": []}, status=202)

    async def _dist(self, req: web.Request) -> web.Response:
        from datadog_api_client.v1.model.distribution_points_payload import DistributionPointsPayload

        r, resp = await self._common(req, DistributionPointsPayload, "deflate")
        if resp is not None:
            return resp
        r.status = 202
        return web.json_response({"status": "ok"}, status=202)

    # -- what arrived, as plain JSON --------------------------------------------------------------------
    def logs(self) -> list[dict[str, Any]]:
        return [it for r in self.accepted("/api/v2/logs") for it in json.loads(r.body)]

    def series(self) -> list[dict[str, Any]]:
        return [s for r in self.accepted("/api/v2/series") for s in json.loads(r.body)["series"]]

    def distributions(self) -> list[dict[str, Any]]:
        return [s for r in self.accepted("/api/v1/distribution_points") for s in json.loads(r.body)["series"]]


class LangfuseIntake(_ThreadedServer):
    """``/api/public/otel/v1/traces``: basic auth, x-langfuse-ingestion-version 4, OTLP protobuf (gzip)."""

    PATH = "/api/public/otel/v1/traces"

    def __init__(self, public_key: str = LF_PUBLIC, secret_key: str = LF_SECRET, max_bytes: int | None = None) -> None:
        super().__init__()
        self.auth = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.max_bytes = max_bytes

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.PATH, self._traces)

    async def _traces(self, req: web.Request) -> web.Response:
        raw = await req.read()
        r = Received(req.path, dict(req.headers), raw, b"")
        self.record(r)
        if req.headers.get("Authorization") != self.auth:
            r.status = 401
            return web.json_response({"message": "Invalid credentials"}, status=401)
        planned = self._planned(req.path)
        if planned is not None:
            r.status = planned.status
            return web.json_response(planned.body if planned.body is not None else {"message": "planned"},
                                     status=planned.status, headers=planned.headers)
        if req.headers.get("x-langfuse-ingestion-version") != "4":
            self.problem("missing x-langfuse-ingestion-version: 4")
        if req.headers.get("Content-Type") != "application/x-protobuf":
            self.problem(f"Content-Type {req.headers.get('Content-Type')!r}")
        body = gzip.decompress(raw) if req.headers.get("Content-Encoding") == "gzip" else raw
        r.body = body
        if self.max_bytes is not None and len(body) > self.max_bytes:
            r.status = 413
            return web.json_response({"message": "payload too large"}, status=413)
        msg = ExportTraceServiceRequest()
        try:
            msg.ParseFromString(body)
        except Exception as e:  # noqa: BLE001
            self.problem(f"not an OTLP ExportTraceServiceRequest: {e}")
            r.status = 400
            return web.json_response({"message": "bad protobuf"}, status=400)
        r.parsed = msg
        r.status = 200
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def spans(self) -> list[tuple[Any, Any]]:
        """(resource_spans, span) of every accepted request, in arrival order."""
        return [(rs, sp) for r in self.accepted(self.PATH) for rs in r.parsed.resource_spans
                for ss in rs.scope_spans for sp in ss.spans]


__all__ = ["DD_KEY", "LF_PUBLIC", "LF_SECRET", "DatadogIntake", "LangfuseIntake", "Received", "wait_for"]
