"""Receiver `otlp`: OTLP over gRPC (default localhost:4317) and HTTP (default localhost:4318).

Answers as the OTLP specification says: success (an empty response: no partial rejection), 400 /
INVALID_ARGUMENT for data that cannot be decoded, 415 for another content type, 413 for a body over
``max_request_body_size`` (also after gzip decompression), 429 + Retry-After / RESOURCE_EXHAUSTED + RetryInfo
when the pipeline refuses (queue full, memory limit), 503 / UNAVAILABLE on an unexpected pipeline failure.
A bad request never affects other clients. Bytes are parsed once (upb) and kept for the exporters.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import duration_pb2, json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from isal import isal_zlib
from pydantic import Field, model_validator

from collector import telemetry as tm
from collector.component import Consumer, CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.errors import PermanentError, RefusedError
from collector.pdata import RESPONSE_TYPES, Batch, Signal, from_otlp_json

__all__ = ["OtlpReceiver", "OtlpReceiverConfig"]

log = logging.getLogger(__name__)

_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


class GrpcConfig(StrictModel):
    endpoint: str = "localhost:4317"
    max_recv_msg_size_mib: int = Field(default=4, ge=1)
    max_concurrent_streams: int = Field(default=0, ge=0)
    include_metadata: bool = False


class CorsConfig(StrictModel):
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(default=0, ge=0)


class HttpConfig(StrictModel):
    endpoint: str = "localhost:4318"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    max_request_body_size: int = Field(default=20 * 1024 * 1024, ge=1)
    include_metadata: bool = False
    cors: CorsConfig | None = None


class ProtocolsConfig(StrictModel):
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # `grpc:` with no value enables the protocol with its defaults, as in the Collector
        if isinstance(data, dict):
            data = {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_protocol(self) -> ProtocolsConfig:
        if self.grpc is None and self.http is None:
            raise ValueError("at least one of grpc or http must be enabled")
        return self


class OtlpReceiverConfig(StrictModel):
    protocols: ProtocolsConfig


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class OtlpReceiver:
    def __init__(self, settings: CreateSettings, config: OtlpReceiverConfig) -> None:
        self.settings = settings
        self.config = config
        self.id = str(settings.id)
        self.consumers: dict[Signal, Consumer] = dict(settings.consumers)
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._rl = tm.RateLimitedLogger(settings.logger)
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    # -- shared ---------------------------------------------------------------------------------------
    async def _push(self, signal: Signal, batch: Batch, transport: str) -> None:
        n = batch.item_count()
        try:
            await self.consumers[signal].consume(batch)
        except BaseException:
            tm.receiver_refused[signal].labels(self.id, transport).inc(n)
            raise
        tm.receiver_accepted[signal].labels(self.id, transport).inc(n)

    # -- gRPC -----------------------------------------------------------------------------------------
    def _grpc_handler(self, signal: Signal) -> Any:
        response: bytes = RESPONSE_TYPES[signal]().SerializeToString()
        include_md = self.config.protocols.grpc.include_metadata if self.config.protocols.grpc else False

        async def export(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            md = {}
            if include_md:
                md = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            try:
                batch = Batch.from_bytes(signal, raw, metadata=md, received_ns=time.time_ns())
            except DecodeError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode {signal.value} request: {e}")
            try:
                await self._push(signal, batch, "grpc")
            except RefusedError as e:
                info = error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=int(e.retry_after),
                                                      nanos=int((e.retry_after % 1) * 1e9)))
                detail = AnyProto()
                detail.Pack(info)
                st = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=str(e), details=[detail])
                # RetryInfo goes in the status details only, as the spec says. Not also in the
                # `google.rpc.retryinfo-bin` trailer: the Python SDK would then retry at this fixed delay and
                # give up after six tries, where its own jittered exponential backoff waits about 30 s.
                await context.abort_with_status(rpc_status.to_status(st))
            except PermanentError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            except Exception as e:  # noqa: BLE001
                self._rl.log(logging.ERROR, "push", "pipeline failed: %s", e)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"pipeline failed: {e}")
            return response

        return grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)

    async def _start_grpc(self, cfg: GrpcConfig) -> None:
        reuse = 1 if getattr(self.settings.host, "reuse_port", False) else 0
        options = [
            ("grpc.max_receive_message_length", cfg.max_recv_msg_size_mib * 1024 * 1024),
            ("grpc.so_reuseport", reuse),
        ]
        if cfg.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", cfg.max_concurrent_streams))
        server = grpc.aio.server(options=options)
        for signal in self.consumers:
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(_SERVICES[signal], {"Export": self._grpc_handler(signal)}),)
            )
        host, port = _host_port(cfg.endpoint)
        try:
            bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise RuntimeError(f"cannot listen on {cfg.endpoint} (OTLP/gRPC): address already in use or not "
                               "available")
        self.grpc_port = bound
        await server.start()
        self._grpc = server

    # -- HTTP -----------------------------------------------------------------------------------------
    def _http_handler(self, signal: Signal, cfg: HttpConfig) -> Any:
        resp_type = RESPONSE_TYPES[signal]
        limit = cfg.max_request_body_size

        def error(status: int, code: int, message: str, proto: bool, headers: dict[str, str] | None = None,
                  details: list[AnyProto] | None = None) -> web.Response:
            st = status_pb2.Status(code=code, message=message, details=details or [])
            if proto:
                return web.Response(status=status, body=st.SerializeToString(),
                                    content_type="application/x-protobuf", headers=headers)
            return web.Response(status=status, text=json_format.MessageToJson(st, indent=None),
                                content_type="application/json", headers=headers)

        async def handle(request: web.Request) -> web.StreamResponse:
            ctype = request.content_type
            if ctype not in ("application/x-protobuf", "application/json"):
                return web.Response(status=415, text=f"unsupported content type {ctype!r}; "
                                    "use application/x-protobuf or application/json")
            proto = ctype == "application/x-protobuf"
            if request.content_length is not None and request.content_length > limit:
                return error(413, code_pb2.INVALID_ARGUMENT, f"request body over {limit} bytes", proto)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return error(413, code_pb2.INVALID_ARGUMENT, f"request body over {limit} bytes", proto)
            enc = request.headers.get("Content-Encoding", "").lower().strip()
            if enc in ("gzip", "deflate", "zlib"):
                d = isal_zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
                try:
                    out = d.decompress(body, limit + 1)
                except (zlib.error, isal_zlib.error) as e:  # type: ignore[misc]  # isal's stubs: not an exception
                    return error(400, code_pb2.INVALID_ARGUMENT, f"invalid {enc} body: {e}", proto)
                if len(out) > limit or d.unconsumed_tail:
                    return error(413, code_pb2.INVALID_ARGUMENT,
                                 f"decompressed request body over {limit} bytes", proto)
                body = out
            elif enc not in ("", "identity"):
                return error(400, code_pb2.INVALID_ARGUMENT, f"unsupported content encoding {enc!r}", proto)
            md = {}
            if cfg.include_metadata:
                md = {k.lower(): v for k, v in request.headers.items()}
            try:
                if proto:
                    batch = Batch.from_bytes(signal, body, metadata=md, received_ns=time.time_ns())
                else:
                    batch = Batch(signal, from_otlp_json(signal, body), metadata=md, received_ns=time.time_ns())
            except (DecodeError, ValueError, json_format.ParseError, RecursionError) as e:
                return error(400, code_pb2.INVALID_ARGUMENT, f"cannot decode {signal.value} request: {e}", proto)
            try:
                await self._push(signal, batch, "http")
            except RefusedError as e:
                ra = max(1, round(e.retry_after))
                info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=ra))
                detail = AnyProto()
                detail.Pack(info)
                return error(429, code_pb2.RESOURCE_EXHAUSTED, str(e), proto, {"Retry-After": str(ra)}, [detail])
            except PermanentError as e:
                return error(400, code_pb2.INVALID_ARGUMENT, str(e), proto)
            except Exception as e:  # noqa: BLE001
                self._rl.log(logging.ERROR, "push", "pipeline failed: %s", e)
                return error(503, code_pb2.UNAVAILABLE, f"pipeline failed: {e}", proto, {"Retry-After": "1"})
            if proto:
                return web.Response(body=resp_type().SerializeToString(), content_type="application/x-protobuf")
            return web.Response(text="{}", content_type="application/json")

        return handle

    def _cors_middleware(self, cors: CorsConfig) -> Any:
        origins = cors.allowed_origins
        allow_any = "*" in origins
        allowed_headers = ", ".join(["Content-Type", "Content-Encoding", "X-Requested-With", *cors.allowed_headers])

        def allowed(origin: str) -> bool:
            if allow_any:
                return True
            for o in origins:
                if o == origin or (o.startswith("*.") or "://*." in o) and origin.endswith(o.split("*", 1)[1]):
                    return True
            return False

        @web.middleware
        async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if request.method == "OPTIONS" and origin:
                if not allowed(origin):
                    return web.Response(status=204)
                h = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "POST",
                     "Access-Control-Allow-Headers": allowed_headers, "Vary": "Origin"}
                if cors.max_age:
                    h["Access-Control-Max-Age"] = str(cors.max_age)
                return web.Response(status=204, headers=h)
            resp: web.StreamResponse = await handler(request)
            if origin and allowed(origin):
                resp.headers["Access-Control-Allow-Origin"] = origin
                resp.headers["Vary"] = "Origin"
            return resp

        return mw

    async def _start_http(self, cfg: HttpConfig) -> None:
        middlewares = [self._cors_middleware(cfg.cors)] if cfg.cors and cfg.cors.allowed_origins else []
        app = web.Application(client_max_size=cfg.max_request_body_size, middlewares=middlewares)
        paths = {Signal.TRACES: cfg.traces_url_path, Signal.METRICS: cfg.metrics_url_path,
                 Signal.LOGS: cfg.logs_url_path}
        async def preflight(_request: web.Request) -> web.StreamResponse:
            return web.Response(status=204)  # the CORS middleware adds the headers for allowed origins

        for signal in self.consumers:
            app.router.add_post(paths[signal], self._http_handler(signal, cfg))
            if cfg.cors and cfg.cors.allowed_origins:
                app.router.add_route("OPTIONS", paths[signal], preflight)
        # we decompress ourselves (isal, with the size limit applied to the output: gzip bombs get 413)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False,
                               shutdown_timeout=5.0)
        await runner.setup()
        host, port = _host_port(cfg.endpoint)
        reuse = bool(getattr(self.settings.host, "reuse_port", False))
        site = web.TCPSite(runner, host, port, reuse_port=reuse or None)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise RuntimeError(f"cannot listen on {cfg.endpoint} (OTLP/HTTP): {e.strerror or e}") from None
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.http_port = server.sockets[0].getsockname()[1]
        self._http = runner

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        p = self.config.protocols
        try:
            if p.grpc is not None and self._grpc is None:
                await self._start_grpc(p.grpc)
            if p.http is not None and self._http is None:
                await self._start_http(p.http)
        except BaseException:
            await self.shutdown()
            raise

    def _grace(self) -> float:
        """Time in-flight requests get to finish: 5 s, less if the service's shutdown deadline is nearer."""
        deadline = getattr(self.settings.host, "shutdown_deadline", None)
        if deadline is None:
            return 5.0
        return max(0.0, min(5.0, (float(deadline) - time.monotonic()) / 2))

    async def shutdown(self) -> None:
        if self._grpc is not None:
            server, self._grpc = self._grpc, None
            await server.stop(grace=self._grace())
        if self._http is not None:
            runner, self._http = self._http, None
            await runner.cleanup()


FACTORIES = [
    Factory("otlp", Kind.RECEIVER, OtlpReceiverConfig, OtlpReceiver,
            description="OTLP over gRPC and HTTP (protobuf and JSON)",
            example={"protocols": {"grpc": {"endpoint": "localhost:4317"}, "http": {"endpoint": "localhost:4318"}}}),
]
