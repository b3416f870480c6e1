"""The `otlp` (gRPC) and `otlphttp` exporters against real local servers: bytes on the wire, headers, URLs,
compression, encodings, TLS, partial success, and the mapping of every kind of failure."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import duration_pb2, json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.llm_spans import make_request
from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.errors import PermanentError, RetryableError
from collector.pdata import RESPONSE_TYPES, Batch, Signal, from_otlp_json
from collector.telemetry import REGISTRY
from tests.exporters.conftest import Certs, Recorded, Server
from tests.helpers import free_port


def make(type_: str, cfg: dict[str, Any], signals: frozenset[Signal] = frozenset(Signal)) -> Any:
    f = registry.get(Kind.EXPORTER, type_)
    assert f is not None
    name = uuid.uuid4().hex[:8]
    return f.create(CreateSettings(ComponentID(type_, name), Kind.EXPORTER, signals=signals),
                    f.config_model.model_validate(cfg))


def rejected(exp: Any, signal: str = "traces") -> float:
    return REGISTRY.get_sample_value("otelcol_exporter_rejected_items_total",
                                     {"exporter": exp.id, "data_type": signal}) or 0.0


def sent(exp: Any) -> float:
    return REGISTRY.get_sample_value("otelcol_exporter_sent_spans_total", {"exporter": exp.id}) or 0.0


def grpc_error(code: int, msg: str, retry_after: float | None = None) -> grpc.Status:
    details = []
    if retry_after is not None:
        a = AnyProto()
        a.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(retry_after), nanos=int(retry_after % 1 * 1e9))))
        details.append(a)
    return rpc_status.to_status(status_pb2.Status(code=code, message=msg, details=details))


def raw_batch(n: int = 5) -> tuple[Batch, bytes]:
    raw = make_request(n).SerializeToString()
    return Batch(Signal.TRACES, None, raw=raw), raw


# --- otlp (gRPC) ----------------------------------------------------------------------------------------
async def test_grpc_sends_received_bytes_unparsed(grpc_backend: Server) -> None:
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "headers": {"X-Tenant-Id": "acme", "authorization": "Bearer s3cret"}})
    await exp.start()
    try:
        batch, raw = raw_batch()
        await exp.send(batch)
        assert batch._request is None, "an unmodified batch must go out without being parsed or re-serialised"
        logs = ExportLogsServiceRequest()
        logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
        await exp.send(Batch(Signal.LOGS, logs))
    finally:
        await exp.shutdown()
    assert [g.signal for g in grpc_backend.got] == [Signal.TRACES, Signal.LOGS]
    assert grpc_backend.got[0].body == raw
    assert grpc_backend.got[0].headers["x-tenant-id"] == "acme"
    assert grpc_backend.got[0].headers["authorization"] == "Bearer s3cret"
    assert ExportLogsServiceRequest.FromString(grpc_backend.got[1].body) == logs


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_grpc_compression(grpc_backend: Server, compression: str) -> None:
    exp = make("otlp", {"endpoint": f"http://127.0.0.1:{grpc_backend.port}", "compression": compression})
    await exp.start()
    batch, raw = raw_batch(50)
    await exp.send(batch)
    await exp.shutdown()
    assert grpc_backend.got[0].body == raw  # the server decompressed what the client compressed


@pytest.mark.parametrize("compression", ["none", "gzip"], ids=["grpcio", "h2+isal"])
async def test_grpc_partial_success(grpc_backend: Server, compression: str) -> None:
    resp = RESPONSE_TYPES[Signal.TRACES]()
    resp.partial_success.rejected_spans = 2
    resp.partial_success.error_message = "2 spans had no trace id"
    grpc_backend.answer = lambda rec: resp
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "compression": compression})
    await exp.start()
    await exp.send(raw_batch()[0])  # not an error: the rest was accepted
    await exp.shutdown()
    assert rejected(exp) == 2


@pytest.mark.parametrize(
    ("status", "kind", "retry_after"),
    [
        (grpc_error(code_pb2.UNAVAILABLE, "overloaded", 2.5), RetryableError, 2.5),
        (grpc_error(code_pb2.RESOURCE_EXHAUSTED, "slow down", 4), RetryableError, 4.0),
        (grpc_error(code_pb2.UNAVAILABLE, "restarting"), RetryableError, None),
        (grpc_error(code_pb2.INVALID_ARGUMENT, "bad span"), PermanentError, None),
        (grpc_error(code_pb2.UNAUTHENTICATED, "who are you"), PermanentError, None),
    ],
    ids=["unavailable+retryinfo", "resource_exhausted+retryinfo", "unavailable", "invalid_argument",
         "unauthenticated"],
)
@pytest.mark.parametrize("compression", ["none", "gzip"], ids=["grpcio", "h2+isal"])
async def test_grpc_error_mapping(grpc_backend: Server, status: grpc.Status, kind: type,
                                  retry_after: float | None, compression: str) -> None:
    grpc_backend.answer = lambda rec: status
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "compression": compression})
    await exp.start()
    with pytest.raises(kind) as ei:
        await exp.send(raw_batch()[0])
    await exp.shutdown()
    assert status.details in str(ei.value)
    if kind is RetryableError:
        assert ei.value.retry_after == retry_after  # type: ignore[attr-defined]


@pytest.mark.parametrize("compression", ["none", "gzip"], ids=["grpcio", "h2+isal"])
async def test_grpc_unreachable_and_timeout(grpc_backend: Server, compression: str) -> None:
    exp = make("otlp", {"endpoint": f"127.0.0.1:{free_port()}", "tls": {"insecure": True}, "timeout": "1s",
                        "compression": compression})
    await exp.start()
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await exp.send(raw_batch()[0])
    await exp.shutdown()

    async def slow(rec: Recorded) -> None:
        await asyncio.sleep(2)

    grpc_backend.answer = slow
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "timeout": "200ms", "compression": compression})
    await exp.start()
    with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED"):
        await exp.send(raw_batch()[0])
    await exp.shutdown()


@pytest.mark.parametrize("compression", ["none", "gzip"], ids=["grpcio", "h2+isal"])
async def test_grpc_tls(grpc_tls_backend: Server, certs: Certs, compression: str) -> None:
    ep = f"127.0.0.1:{grpc_tls_backend.port}"
    ok = make("otlp", {"endpoint": ep, "tls": {"ca_file": str(certs.ca), "server_name_override": "collector.test"},
                       "compression": compression})
    await ok.start()
    await ok.send(raw_batch()[0])
    await ok.shutdown()
    skip = make("otlp", {"endpoint": ep, "tls": {"insecure_skip_verify": True}, "compression": compression})
    await skip.start()
    await skip.send(raw_batch()[0])
    await skip.shutdown()
    assert len(grpc_tls_backend.got) == 2
    # system CAs do not know our certificate
    untrusted = make("otlp", {"endpoint": ep, "timeout": "2s", "compression": compression})
    await untrusted.start()
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await untrusted.send(raw_batch()[0])
    await untrusted.shutdown()
    plain = make("otlp", {"endpoint": ep, "tls": {"insecure": True}, "timeout": "2s", "compression": compression})
    await plain.start()
    with pytest.raises(RetryableError):
        await plain.send(raw_batch()[0])
    await plain.shutdown()
    assert len(grpc_tls_backend.got) == 2


async def test_grpc_skip_verify_with_the_backend_down_at_start() -> None:
    """grpcio cannot skip verification, so the server's certificate is fetched: on the first send, so that a
    backend that is down does not stop the collector from starting."""
    exp = make("otlp", {"endpoint": f"127.0.0.1:{free_port()}", "compression": "none", "timeout": "1s",
                        "tls": {"insecure_skip_verify": True}})
    await exp.start()
    with pytest.raises(RetryableError, match="cannot fetch the certificate"):
        await exp.send(raw_batch()[0])
    await exp.shutdown()


async def test_grpc_retry_through_the_helper(grpc_backend: Server) -> None:
    """Behind the shared delivery helper: a throttled first attempt is retried after the server's delay."""
    calls = []

    def answer(rec: Recorded) -> Any:
        calls.append(asyncio.get_running_loop().time())
        return grpc_error(code_pb2.UNAVAILABLE, "busy", 0.3) if len(calls) == 1 else None

    grpc_backend.answer = answer
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "retry_on_failure": {"initial_interval": "10ms"}}, frozenset({Signal.TRACES}))
    await exp.start()
    await exp.consume(raw_batch(4)[0])
    for _ in range(100):
        if sent(exp) == 4:
            break
        await asyncio.sleep(0.02)
    await exp.shutdown()
    assert sent(exp) == 4 and len(calls) == 2
    assert calls[1] - calls[0] >= 0.3 * 0.95, "RetryInfo's delay was not honoured"


async def test_h2_gzip_large_concurrent_and_reconnect(grpc_backend: Server) -> None:
    """The h2 client: messages far over the HTTP/2 flow-control window, many streams at once on one
    connection, custom metadata, and a new connection after the server went away."""
    exp = make("otlp", {"endpoint": f"127.0.0.1:{grpc_backend.port}", "tls": {"insecure": True},
                        "compression": "gzip", "compression_level": 2, "headers": {"x-tenant-id": "acme"}})
    await exp.start()
    raws = [make_request(500, seed=i).SerializeToString() for i in range(6)]  # ~1 MB each, ~240 KB gzipped
    await asyncio.gather(*(exp.send(Batch(Signal.TRACES, None, raw=r)) for r in raws))
    assert sorted(g.body for g in grpc_backend.got) == sorted(raws)
    assert all(g.headers["x-tenant-id"] == "acme" for g in grpc_backend.got)
    conn = exp._h2._conn
    assert conn is not None and conn.transport is not None
    conn.transport.abort()  # the connection breaks (as on a server restart)
    await asyncio.sleep(0.05)
    await exp.send(Batch(Signal.TRACES, None, raw=raws[0]))
    assert exp._h2._conn is not conn and len(grpc_backend.got) == 7
    await exp.shutdown()


# --- otlphttp ---------------------------------------------------------------------------------------------
async def test_http_urls_headers_gzip(http_backend: Server) -> None:
    base = f"http://127.0.0.1:{http_backend.port}"
    exp = make("otlphttp", {"endpoint": base + "/", "logs_endpoint": base + "/custom/logs",
                            "headers": {"X-Tenant-Id": "acme"}})
    await exp.start()
    batch, raw = raw_batch()
    await exp.send(batch)
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hi"
    await exp.send(Batch(Signal.LOGS, logs))
    await exp.shutdown()
    t, lg = http_backend.got
    assert t.path == "/v1/traces" and lg.path == "/custom/logs"
    assert t.headers["Content-Type"] == "application/x-protobuf"
    assert t.headers["Content-Encoding"] == "gzip" and t.headers["X-Tenant-Id"] == "acme"
    assert gzip.decompress(t.body) == raw
    assert batch._request is None
    assert ExportLogsServiceRequest.FromString(gzip.decompress(lg.body)) == logs


async def test_http_json_uncompressed(http_backend: Server) -> None:
    exp = make("otlphttp", {"endpoint": f"http://127.0.0.1:{http_backend.port}", "encoding": "json",
                            "compression": "none"})
    await exp.start()
    req = make_request(3)
    await exp.send(Batch(Signal.TRACES, req))
    await exp.shutdown()
    got = http_backend.got[0]
    assert got.headers["Content-Type"] == "application/json" and "Content-Encoding" not in got.headers
    obj = json.loads(got.body)
    assert obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] == req.resource_spans[0].scope_spans[
        0].spans[0].span_id.hex()  # OTLP/JSON: hex ids
    assert from_otlp_json(Signal.TRACES, got.body) == req


@pytest.mark.parametrize("as_json", [False, True], ids=["proto", "json"])
async def test_http_partial_success(http_backend: Server, as_json: bool) -> None:
    resp = RESPONSE_TYPES[Signal.TRACES]()
    resp.partial_success.rejected_spans = 3
    resp.partial_success.error_message = "too old"
    if as_json:
        http_backend.answer = lambda rec: web.Response(text=json_format.MessageToJson(resp),
                                                       content_type="application/json")
    else:
        http_backend.answer = lambda rec: web.Response(body=resp.SerializeToString(),
                                                       content_type="application/x-protobuf")
    exp = make("otlphttp", {"endpoint": f"http://127.0.0.1:{http_backend.port}",
                            "encoding": "json" if as_json else "proto"})
    await exp.start()
    await exp.send(raw_batch()[0])
    await exp.shutdown()
    assert rejected(exp) == 3


def _status_body(code: int, msg: str) -> bytes:
    return status_pb2.Status(code=code, message=msg).SerializeToString()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("response", "kind", "retry_after", "text"),
    [
        (lambda: web.Response(status=429, headers={"Retry-After": "7"}), RetryableError, 7.0, "429"),
        (lambda: web.Response(status=503, body=_status_body(14, "draining"), content_type="application/x-protobuf"),
         RetryableError, None, "draining"),
        (lambda: web.Response(status=502, text="bad gateway"), RetryableError, None, "502"),
        (lambda: web.Response(status=400, body=_status_body(3, "span without id"),
                              content_type="application/x-protobuf"), PermanentError, None, "span without id"),
        (lambda: web.Response(status=401, text="no"), PermanentError, None, "401"),
        (lambda: web.Response(status=413), PermanentError, None, "413"),
    ],
    ids=["429+retry-after", "503+status", "502", "400+status", "401", "413"],
)
async def test_http_error_mapping(http_backend: Server, response: Any, kind: type, retry_after: float | None,
                                  text: str) -> None:
    http_backend.answer = lambda rec: response()
    exp = make("otlphttp", {"endpoint": f"http://127.0.0.1:{http_backend.port}"})
    await exp.start()
    with pytest.raises(kind, match=text) as ei:
        await exp.send(raw_batch()[0])
    await exp.shutdown()
    if kind is RetryableError:
        assert ei.value.retry_after == retry_after  # type: ignore[attr-defined]


async def test_http_unreachable_and_timeout(http_backend: Server) -> None:
    exp = make("otlphttp", {"endpoint": f"http://127.0.0.1:{free_port()}"})
    await exp.start()
    with pytest.raises(RetryableError, match="cannot reach"):
        await exp.send(raw_batch()[0])
    await exp.shutdown()

    async def slow(rec: Recorded) -> None:
        await asyncio.sleep(2)

    http_backend.answer = slow
    exp = make("otlphttp", {"endpoint": f"http://127.0.0.1:{http_backend.port}", "timeout": "200ms"})
    await exp.start()
    with pytest.raises(RetryableError, match="Timeout"):
        await exp.send(raw_batch()[0])
    await exp.shutdown()


async def test_https(https_backend: Server, certs: Certs) -> None:
    base = f"https://127.0.0.1:{https_backend.port}"
    ok = make("otlphttp", {"endpoint": base, "tls": {"ca_file": str(certs.ca),
                                                     "server_name_override": "collector.test"}})
    await ok.start()
    await ok.send(raw_batch()[0])
    await ok.shutdown()
    skip = make("otlphttp", {"endpoint": base, "tls": {"insecure_skip_verify": True}})
    await skip.start()
    await skip.send(raw_batch()[0])
    await skip.shutdown()
    untrusted = make("otlphttp", {"endpoint": base, "timeout": "2s"})
    await untrusted.start()
    with pytest.raises(RetryableError, match="cannot reach"):
        await untrusted.send(raw_batch()[0])
    await untrusted.shutdown()
    assert len(https_backend.got) == 2


async def test_http_missing_signal_url_is_a_config_error() -> None:
    from collector.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics_endpoint"):
        make("otlphttp", {"traces_endpoint": "http://x/v1/traces"}, frozenset({Signal.TRACES, Signal.METRICS}))
