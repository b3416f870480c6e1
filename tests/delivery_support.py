"""Test support for the delivery tests: a real OTLP backend (HTTP and gRPC) with scripted failures, and a
small test exporter (`testotlp`) that posts OTLP over HTTP (aiohttp) or gRPC to it.

The backend decodes every request with opentelemetry-proto and records the span ids it accepted, with the
time of every attempt, so tests can check that every span arrives and that retries respect the backoff and
Retry-After. ``python -m tests.delivery_support run --config F`` runs the collector with `testotlp`
registered (for whole-process tests).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from collector.component import CreateSettings, Factory, Kind, registry
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.pdata import Batch, Signal
from collector.protocol_errors import from_grpc_error, from_http_status
from tests.helpers import free_port

__all__ = [
    "FACTORY",
    "Action",
    "OtlpBackend",
    "OtlpTestConfig",
    "OtlpTestExporter",
    "make_request",
    "span_ids",
]

_TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Action:
    """What the backend answers to one request."""

    status: int = 200  # HTTP status; for gRPC: 200 -> OK, 503 -> UNAVAILABLE, 429 -> RESOURCE_EXHAUSTED, 400
    retry_after: float | None = None
    sleep: float = 0.0
    message: str = ""


OK = Action()


@dataclass
class Attempt:
    time: float
    protocol: str
    status: int
    span_ids: list[bytes]


@dataclass
class OtlpBackend:
    """A thread running an aiohttp OTLP/HTTP server and a grpc.aio OTLP server on loopback."""

    policy: Callable[[int], Action] = field(default=lambda n: OK)
    http_port: int = 0
    grpc_port: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    # -- observations -------------------------------------------------------------------------------------
    def received_ids(self) -> set[bytes]:
        with self._lock:
            return set(self.received)

    def attempt_times(self) -> list[float]:
        with self._lock:
            return [a.time for a in self.attempts]

    def _next_action(self) -> Action:
        with self._lock:
            n = self._n
            self._n += 1
        return self.policy(n)

    def _record(self, protocol: str, status: int, ids: list[bytes]) -> None:
        with self._lock:
            self.attempts.append(Attempt(time.monotonic(), protocol, status, ids))
            if status == 200:
                self.received.extend(ids)

    # -- servers -------------------------------------------------------------------------------------------
    async def _http(self, request: web.Request) -> web.Response:
        body = await request.read()
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)  # a bad body fails the test loudly (500)
        ids = span_ids(req)
        act = self._next_action()
        if act.sleep:
            await asyncio.sleep(act.sleep)
        self._record("http", act.status, ids)
        if act.status == 200:
            return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                                content_type="application/x-protobuf")
        headers = {"Retry-After": f"{act.retry_after:g}"} if act.retry_after is not None else None
        return web.Response(status=act.status, text=act.message or f"scripted {act.status}", headers=headers)

    async def _grpc(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = ExportTraceServiceRequest()
        req.ParseFromString(raw)
        ids = span_ids(req)
        act = self._next_action()
        if act.sleep:
            await asyncio.sleep(act.sleep)
        self._record("grpc", act.status, ids)
        if act.status == 200:
            return ExportTraceServiceResponse().SerializeToString()
        code = {503: grpc.StatusCode.UNAVAILABLE, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
                400: grpc.StatusCode.INVALID_ARGUMENT}.get(act.status, grpc.StatusCode.INTERNAL)
        await context.abort(code, act.message or f"scripted {code.name}")
        return b""

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._http)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self.http_port = self.http_port or free_port()
        await web.TCPSite(runner, "127.0.0.1", self.http_port).start()
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._grpc)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),))
        self.grpc_port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port or 0}")
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)
        await runner.cleanup()

    def start(self) -> OtlpBackend:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._main())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="otlp-backend")
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("backend did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OtlpBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def span_ids(req: ExportTraceServiceRequest) -> list[bytes]:
    return [s.span_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def make_request(ids: list[int], name: str = "chat gpt-4o", attrs: int = 0) -> ExportTraceServiceRequest:
    """One trace request with a span per id (span id = id as 8 bytes)."""
    spans = []
    for i in ids:
        sp = Span(trace_id=i.to_bytes(16, "big"), span_id=i.to_bytes(8, "big"), name=name,
                  start_time_unix_nano=1, end_time_unix_nano=2)
        for k in range(attrs):
            kv = KeyValue(key=f"attr.{k}")
            kv.value.string_value = "x" * 32
            sp.attributes.append(kv)
        spans.append(sp)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


# --- the test exporter ------------------------------------------------------------------------------------
class OtlpTestConfig(ExporterConfig):
    endpoint: str
    protocol: Literal["http", "grpc"] = "http"


class OtlpTestExporter(BaseExporter):
    """Posts OTLP traces to a backend; maps its answers with collector.protocol_errors."""

    config: OtlpTestConfig

    def __init__(self, settings: CreateSettings, config: OtlpTestConfig) -> None:
        super().__init__(settings, config)
        self._session: Any = None
        self._channel: grpc.aio.Channel | None = None
        self.sent_batches = 0

    async def open(self) -> None:
        if self.config.protocol == "http":
            import aiohttp

            self._session = aiohttp.ClientSession()
        else:
            self._channel = grpc.aio.insecure_channel(self.config.endpoint)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._channel is not None:
            await self._channel.close()

    async def send(self, batch: Batch) -> None:
        body = batch.to_bytes()
        if self.config.protocol == "http":
            import aiohttp

            try:
                async with self._session.post(self.config.endpoint, data=body,
                                              headers={"Content-Type": "application/x-protobuf"}) as r:
                    text = await r.text()
                    err = from_http_status(r.status, dict(r.headers), text, backend="test backend")
            except aiohttp.ClientError as e:
                from collector.errors import RetryableError

                raise RetryableError(f"cannot reach test backend: {e}") from e
        else:
            assert self._channel is not None
            call = self._channel.unary_unary(_TRACE_METHOD)
            try:
                await call(body)
                err = None
            except grpc.aio.AioRpcError as e:
                err = from_grpc_error(e, backend="test backend")
        if err is not None:
            raise err
        self.sent_batches += 1


FACTORY = Factory("testotlp", Kind.EXPORTER, OtlpTestConfig, OtlpTestExporter, frozenset({Signal.TRACES}),
                  description="test-only OTLP exporter")


def register() -> None:
    if registry.get(Kind.EXPORTER, "testotlp") is None:
        registry.register(FACTORY)


if __name__ == "__main__":
    import sys

    from collector.cli import main

    register()
    raise SystemExit(main(sys.argv[1:]))
