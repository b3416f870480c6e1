"""Local OTLP servers for the exporter tests: a grpc.aio server and an aiohttp server that record what they get
and answer what the test says (success, partial success, errors with RetryInfo / Retry-After), plus a
self-signed certificate for TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from collector.pdata import RESPONSE_TYPES, Signal

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


@dataclass
class Recorded:
    signal: Signal
    body: bytes
    headers: dict[str, str]
    path: str = ""


@dataclass
class Server:
    port: int
    got: list[Recorded] = field(default_factory=list)
    # answer(recorded) -> None for an empty success, or something the server type understands
    answer: Callable[[Recorded], Any] | None = None


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("certs")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("collector.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    _ = ipaddress  # the certificate names collector.test only: clients must use server_name_override
    return Certs(ca=d / "cert.pem", cert=d / "cert.pem", key=d / "key.pem")


async def _grpc_server(tls: Certs | None) -> tuple[grpc.aio.Server, Server]:
    srv = grpc.aio.server()
    state = Server(port=0)

    def handler(sig: Signal) -> Any:
        async def export(raw: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
            rec = Recorded(sig, raw, {k: v for k, v in ctx.invocation_metadata() or () if isinstance(v, str)})
            state.got.append(rec)
            ans = state.answer(rec) if state.answer else None
            if asyncio.iscoroutine(ans):
                ans = await ans
            if ans is None:
                return b""
            if isinstance(ans, grpc.Status):
                await ctx.abort_with_status(ans)
            return ans.SerializeToString()  # type: ignore[no-any-return]
        return grpc.unary_unary_rpc_method_handler(export)

    for sig, svc in SERVICES.items():
        srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(svc, {"Export": handler(sig)}),))
    if tls is None:
        state.port = srv.add_insecure_port("127.0.0.1:0")
    else:
        creds = grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())])
        state.port = srv.add_secure_port("127.0.0.1:0", creds)
    await srv.start()
    return srv, state


@pytest.fixture
async def grpc_backend() -> AsyncIterator[Server]:
    srv, state = await _grpc_server(None)
    yield state
    await srv.stop(None)


@pytest.fixture
async def grpc_tls_backend(certs: Certs) -> AsyncIterator[Server]:
    srv, state = await _grpc_server(certs)
    yield state
    await srv.stop(None)


async def _http_server(tls: Certs | None) -> tuple[web.AppRunner, Server]:
    state = Server(port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        sig = {"traces": Signal.TRACES, "metrics": Signal.METRICS, "logs": Signal.LOGS}.get(
            request.path.rstrip("/").rsplit("/", 1)[-1], Signal.TRACES)
        rec = Recorded(sig, await request.read(), dict(request.headers), request.path)
        state.got.append(rec)
        ans = state.answer(rec) if state.answer else None
        if asyncio.iscoroutine(ans):
            ans = await ans
        if ans is None:
            return web.Response(body=RESPONSE_TYPES[sig]().SerializeToString(), content_type="application/x-protobuf")
        return ans  # type: ignore[no-any-return]

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    ctx = None
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.cert, tls.key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, state


@pytest.fixture
async def http_backend() -> AsyncIterator[Server]:
    runner, state = await _http_server(None)
    yield state
    await runner.cleanup()


@pytest.fixture
async def https_backend(certs: Certs) -> AsyncIterator[Server]:
    runner, state = await _http_server(certs)
    yield state
    await runner.cleanup()
