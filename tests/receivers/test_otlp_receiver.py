"""The `otlp` receiver in-process: client metadata into the batch context (include_metadata), CORS, custom
URL paths, and the JSON success answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from bench.llm_spans import make_request
from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.pdata import Batch, Signal
from tests.helpers import free_port

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Sink:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Any, Sink, int, int]]:
    f = registry.get(Kind.RECEIVER, "otlp")
    assert f is not None
    gp, hp = free_port(), free_port()
    cfg = f.config_model.model_validate({"protocols": {
        "grpc": {"endpoint": f"127.0.0.1:{gp}", "include_metadata": True},
        "http": {"endpoint": f"127.0.0.1:{hp}", "include_metadata": True, "traces_url_path": "/otlp/t",
                 "cors": {"allowed_origins": ["https://*.example.com"], "allowed_headers": ["x-tenant-id"],
                          "max_age": 60}}}})
    sink = Sink()
    rec = f.create(CreateSettings(ComponentID("otlp"), Kind.RECEIVER, consumers={s: sink for s in Signal}), cfg)
    await rec.start()
    yield rec, sink, gp, hp
    await rec.shutdown()
    await rec.shutdown()  # safe twice


async def test_grpc_metadata(receiver: tuple[Any, Sink, int, int]) -> None:
    _rec, sink, gp, _hp = receiver
    raw = make_request(2).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gp}") as ch:
        call = ch.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
        await call(raw, metadata=(("x-tenant-id", "acme"),), timeout=5)
    (b,) = sink.batches
    assert b.metadata["x-tenant-id"] == "acme" and b.to_bytes() == raw and b.item_count() == 2


async def test_http_metadata_paths_and_json(receiver: tuple[Any, Sink, int, int]) -> None:
    _rec, sink, _gp, hp = receiver
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{hp}/otlp/t", data=make_request(1).SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf", "X-Tenant-Id": "acme"}) as r:
            assert r.status == 200
        async with s.post(f"http://127.0.0.1:{hp}/v1/traces", data=b"",
                          headers={"Content-Type": "application/x-protobuf"}) as r:
            assert r.status == 404  # the traces path was moved
        async with s.post(f"http://127.0.0.1:{hp}/v1/logs", data=json.dumps({"resourceLogs": []}),
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200 and r.content_type == "application/json" and await r.json() == {}
    assert sink.batches[0].metadata["x-tenant-id"] == "acme"


async def test_cors(receiver: tuple[Any, Sink, int, int]) -> None:
    _rec, _sink, _gp, hp = receiver
    url = f"http://127.0.0.1:{hp}/otlp/t"
    async with aiohttp.ClientSession() as s:
        async with s.options(url, headers={"Origin": "https://app.example.com",
                                           "Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "x-tenant-id" in r.headers["Access-Control-Allow-Headers"]
            assert r.headers["Access-Control-Max-Age"] == "60"
        async with s.options(url, headers={"Origin": "https://evil.test"}) as r:
            assert r.status == 204 and "Access-Control-Allow-Origin" not in r.headers
        async with s.options(url) as r:  # no Origin: not a CORS request
            assert r.status == 204
        headers = {"Content-Type": "application/x-protobuf", "Origin": "https://app.example.com"}
        async with s.post(url, data=make_request(1).SerializeToString(), headers=headers) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
