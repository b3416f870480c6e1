"""Exporter `s3` against moto's S3 server on loopback (a real S3 protocol server, started here)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import ClientSession, web
from moto.server import ThreadedMotoServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from collector.component import ComponentID, CreateSettings, Kind
from collector.errors import PermanentError, RetryableError
from collector.pdata import Batch, Signal, new_keyvalue
from exporters.s3 import S3Exporter, S3ExporterConfig, map_error
from tests.helpers import ROOT, CollectorProcess, free_port, wait_for

SECRET = "SECRET-PROMPT-7d1f"
WHEN_NS = 1772600767_000_000_000  # 2026-03-04T05:06:07Z: when the spans happened
RECEIVED_NS = time.time_ns()  # when the collector got them: the partition (and queue age) go by this
PARTITION = time.strftime("year=%Y/month=%m/day=%d/hour=%H/minute=%M", time.gmtime(RECEIVED_NS / 1e9))
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


_n = 0


@pytest.fixture()
def bucket(moto: str) -> str:
    global _n
    _n += 1
    name = f"archive-{os.getpid()}-{_n}"
    s3client(moto).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    c = s3client(endpoint)
    out = {}
    for o in c.list_objects_v2(Bucket=bucket).get("Contents", []):
        out[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def trace_batch(n: int, seed: int, when_ns: int = WHEN_NS) -> Batch:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(new_keyvalue("service.name", "chat-api"))
    ss = rs.scope_spans.add()
    ss.scope.name = "litellm"
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = hashlib.md5(f"t{seed}-{i // 2}".encode()).digest()
        s.span_id = hashlib.md5(f"s{seed}-{i}".encode()).digest()[:8]
        if i % 2:
            s.parent_span_id = hashlib.md5(f"s{seed}-{i - 1}".encode()).digest()[:8]
        s.name = "chat gpt-4o"
        s.kind = 3
        s.start_time_unix_nano = when_ns - 2_000_000_000 + i
        s.end_time_unix_nano = when_ns - 1_158_000_000 + i
        for k, v in (("gen_ai.request.model", "gpt-4o"), ("gen_ai.system", "openai"),
                     ("gen_ai.usage.input_tokens", 1200 + i), ("gen_ai.usage.output_tokens", 323),
                     ("gen_ai.usage.cost", 0.02), ("tenant.id", "acme"), ("feature", "search"),
                     ("http.route", "/v1/chat"), ("gen_ai.prompt.0.content", f"{SECRET} hello {i}"),
                     ("gen_ai.prompt.0.role", "user"), ("input.value", SECRET)):
            s.attributes.append(new_keyvalue(k, v))
        ev = s.events.add()
        ev.name = "gen_ai.choice"
        ev.attributes.append(new_keyvalue("message", SECRET))
        ev2 = s.events.add()
        ev2.name = "exception"
        ev2.attributes.append(new_keyvalue("exception.type", "Timeout"))
        if i == 3:
            s.status.code = 2
            s.status.message = "upstream timeout"
    return Batch(Signal.TRACES, req, received_ns=RECEIVED_NS)


def exporter(endpoint: str, bucket: str, **over: Any) -> S3Exporter:
    cfg: dict[str, Any] = {
        "s3uploader": {"s3_bucket": bucket, "endpoint": endpoint, "s3_force_path_style": True,
                       "s3_prefix": "llm/archive"},
        "marshaler": "ndjson",
        "timeout": "5s",
        "sending_queue": {"num_consumers": 10, "batch": {"flush_timeout": "300ms", "min_size": 100000}},
        "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed_time": "5s"},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    settings = CreateSettings(ComponentID("s3"), Kind.EXPORTER, signals=frozenset(Signal))
    return S3Exporter(settings, S3ExporterConfig.model_validate(cfg))


def span_ids(batches: list[Batch]) -> set[str]:
    return {s.span_id.hex() for b in batches for rs in b.request.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


async def test_ndjson_one_object_partitioned_no_content(moto: str, bucket: str) -> None:
    exp = exporter(moto, bucket, s3uploader={"sse": "AES256", "storage_class": "STANDARD_IA"})
    await exp.start()
    batches = [trace_batch(20, seed) for seed in range(5)]
    for b in batches:
        await exp.consume(b)
    await exp.shutdown()
    objs = objects(moto, bucket)
    assert len(objs) == 1, list(objs)  # five requests, one object
    key, data = next(iter(objs.items()))
    m = re.fullmatch(rf"llm/archive/{PARTITION}/traces_([0-9a-f]{{32}})\.ndjson\.gz", key)
    assert m, key
    body = gzip.decompress(data)
    assert hashlib.sha256(body).hexdigest()[:32] == m.group(1)
    head = s3client(moto).head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    assert head["ContentType"] == "application/x-ndjson"
    assert SECRET.encode() not in body
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert {r["span_id"] for r in rows} == span_ids(batches) and len(rows) == 100
    r = next(r for r in rows if r["span_id"] == batches[0].request.resource_spans[0].scope_spans[0].spans[3]
             .span_id.hex())
    assert r["model"] == "gpt-4o" and r["provider"] == "openai" and r["input_tokens"] == 1203
    assert r["output_tokens"] == 323 and r["cost"] == 0.02 and r["tenant"] == "acme" and r["feature"] == "search"
    assert r["outcome"] == "timeout" and r["status"] == "error" and r["service"] == "chat-api"
    assert r["duration_ms"] == pytest.approx(842.0) and r["start_time"] == "2026-03-04T05:06:05.000000Z"
    assert r["parent_span_id"] is not None and r["kind"] == "client"
    assert r["attributes"] == {"http.route": "/v1/chat", "gen_ai.prompt.0.role": "user"}
    assert [e["name"] for e in r["events"]] == ["exception"]
    # the batches themselves were not touched (read-only after the fan-out)
    assert SECRET.encode() in batches[0].to_bytes()
    assert exp.status == "active"


@pytest.mark.parametrize("marshaler,include_content", [("otlp_json", True), ("otlp_proto", True),
                                                      ("otlp_proto", False)])
async def test_otlp_marshalers_decode_back(moto: str, bucket: str, marshaler: str, include_content: bool) -> None:
    exp = exporter(moto, bucket, marshaler=marshaler, include_content=include_content,
                   s3uploader={"compression": "none", "s3_prefix": ""})
    await exp.start()
    batches = [trace_batch(10, seed) for seed in (7, 8)]
    await asyncio.gather(*(exp.consume(b) for b in batches))
    await exp.shutdown()
    objs = objects(moto, bucket)
    assert len(objs) == 1
    key, body = next(iter(objs.items()))
    ext = "json" if marshaler == "otlp_json" else "binpb"
    assert re.fullmatch(rf"{PARTITION}/traces_[0-9a-f]{{32}}\.{ext}", key), key
    if marshaler == "otlp_json":
        from collector.pdata import from_otlp_json
        req = from_otlp_json(Signal.TRACES, body)
    else:
        req = ExportTraceServiceRequest.FromString(body)
    got = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    sent = [s for b in batches for rs in b.request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert {s.span_id.hex() for s in got} == span_ids(batches) and len(got) == len(sent)
    if include_content:
        assert got == sent
    else:
        assert SECRET.encode() not in body
        for g, s in zip(got, sent):
            assert g.span_id == s.span_id and g.name == s.name
            assert {kv.key for kv in g.attributes} == {kv.key for kv in s.attributes} - {
                "gen_ai.prompt.0.content", "input.value"}
            assert [e.name for e in g.events] == ["exception"]


async def test_logs_ndjson_strip_content_event_bodies(moto: str, bucket: str) -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i, (event, body) in enumerate((("gen_ai.user.message", SECRET), ("", "request done"))):
        rec = sl.log_records.add()
        rec.time_unix_nano = WHEN_NS + i
        rec.event_name = event
        rec.body.string_value = body
        rec.trace_id = bytes(range(16))
        rec.attributes.append(new_keyvalue("gen_ai.input.messages", SECRET))
        rec.attributes.append(new_keyvalue("tenant.id", "acme"))
    exp = exporter(moto, bucket, sending_queue={"enabled": False, "batch": None})
    await exp.start()
    await exp.consume(Batch(Signal.LOGS, req, received_ns=RECEIVED_NS))
    await exp.shutdown()
    (key, data), = objects(moto, bucket).items()
    assert "/logs_" in key and key.endswith(".ndjson.gz")
    body = gzip.decompress(data)
    assert SECRET.encode() not in body
    rows = [json.loads(x) for x in body.decode().splitlines()]
    assert [r["body"] for r in rows] == [None, "request done"]
    assert rows[0]["event_name"] == "gen_ai.user.message" and rows[0]["attributes"] == {"tenant.id": "acme"}
    assert rows[1]["trace_id"] == bytes(range(16)).hex()


async def test_retried_upload_overwrites_same_object(moto: str, bucket: str) -> None:
    """A proxy stores the first PUT in S3 but answers 503 SlowDown: the retry must write the same key."""
    puts: list[str] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding", "expect")}
        async with ClientSession() as s:
            async with s.request(request.method, moto + request.path_qs, data=body, headers=headers) as r:
                payload = await r.read()
                status, ctype = r.status, r.headers.get("Content-Type", "application/xml")
        if request.method == "PUT":
            puts.append(request.path)
            if len(puts) == 1:
                return web.Response(status=503, content_type="application/xml", text=(
                    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                    "<Message>Please reduce your request rate.</Message></Error>"))
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        exp = exporter(f"http://127.0.0.1:{port}", bucket)
        await exp.start()
        batches = [trace_batch(5, seed) for seed in (20, 21, 22)]
        await asyncio.gather(*(exp.consume(b) for b in batches))
        await exp.shutdown()
    finally:
        await runner.cleanup()
    assert len(puts) == 2 and puts[0] == puts[1], puts
    objs = objects(moto, bucket)
    assert len(objs) == 1
    rows = [json.loads(x) for x in gzip.decompress(next(iter(objs.values()))).decode().splitlines()]
    assert {r["span_id"] for r in rows} == span_ids(batches) and len(rows) == 15
    assert exp.objects_written == 1


async def test_missing_bucket_is_permanent_and_dead_lettered(moto: str, tmp_path: Path) -> None:
    dl = tmp_path / "dead.jsonl"
    exp = exporter(moto, "no-such-archive-bucket", dead_letter={"path": str(dl)},
                   sending_queue={"enabled": False, "batch": None})
    await exp.start()
    with pytest.raises(PermanentError, match="no-such-archive-bucket.*does not exist"):
        await exp.send(trace_batch(2, 1))
    await exp.consume(trace_batch(3, 2))  # through the helper: not retried, dead-lettered
    await exp.shutdown()
    lines = [json.loads(x) for x in dl.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["items"] == 3
    assert "no-such-archive-bucket" in lines[0]["reason"] and "NoSuchBucket" in lines[0]["reason"]
    assert exp.status == "error"


async def test_network_error_is_retryable(moto: str) -> None:
    exp = exporter(f"http://127.0.0.1:{free_port()}", "archive-x", sending_queue={"enabled": False, "batch": None})
    await exp.start()
    with pytest.raises(RetryableError, match="archive-x"):
        await exp.send(trace_batch(1, 1))
    await exp.shutdown()


def test_metrics_ndjson_one_row_per_point() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from exporters.s3 import marshal
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(new_keyvalue("service.name", "gw"))
    sm = rm.scope_metrics.add()
    m = sm.metrics.add()
    m.name, m.unit = "llm.cost_usd", "USD"
    for i, tenant in enumerate(("acme", "globex")):
        p = m.sum.data_points.add()
        p.as_double = 1.5 + i
        p.time_unix_nano = WHEN_NS
        p.attributes.append(new_keyvalue("tenant", tenant))
    h = sm.metrics.add()
    h.name = "llm.latency_ms"
    hp = h.histogram.data_points.add()
    hp.count, hp.sum = 3, 900.0
    hp.bucket_counts.extend([1, 2, 0])
    hp.explicit_bounds.extend([100.0, 1000.0])
    rows = [json.loads(x) for x in marshal(Signal.METRICS, [Batch(Signal.METRICS, req)], "ndjson", False).splitlines()]
    assert [(r["name"], r["type"], r.get("value"), r["attributes"]) for r in rows[:2]] == [
        ("llm.cost_usd", "sum", 1.5, {"tenant": "acme"}), ("llm.cost_usd", "sum", 2.5, {"tenant": "globex"})]
    assert rows[2]["count"] == 3 and rows[2]["bucket_counts"] == [1, 2, 0] and rows[2]["service"] == "gw"
    assert rows[0]["time"] == "2026-03-04T05:06:07.000000Z"


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError
    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"retry-after": "3"}}},
                       "PutObject")


@pytest.mark.parametrize("code,status,kind", [
    ("SlowDown", 503, RetryableError), ("InternalError", 500, RetryableError), ("AccessDenied", 403, PermanentError),
    ("NoSuchBucket", 404, PermanentError), ("BadDigest", 400, PermanentError), ("Whatever", 502, RetryableError),
])
def test_error_mapping(code: str, status: int, kind: type) -> None:
    err = map_error(_client_error(code, status), "my-bucket")
    assert isinstance(err, kind) and "my-bucket" in str(err)
    if kind is RetryableError:
        assert err.retry_after == 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("cfg,path", [
    ({"s3uploader": {"s3_bucket": "Bad_Bucket"}}, "s3uploader"),
    ({"s3uploader": {"s3_bucket": "ok-bucket", "sse_kms_key_id": "k"}}, "s3uploader"),
    ({"s3uploader": {"s3_bucket": "ok-bucket", "compression": "zstd"}}, "s3uploader.compression"),
    ({"s3uploader": {"s3_bucket": "ok-bucket"}, "marshaler": "csv"}, "marshaler"),
    ({"s3uploader": {"s3_bucket": "ok-bucket"}, "timeout": "5s"}, "timeout"),
    ({"s3uploader": {}}, "s3uploader.s3_bucket"),
])
def test_invalid_configs(cfg: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as ei:
        S3ExporterConfig.model_validate(cfg)
    locs = {".".join(str(x) for x in e["loc"]) for e in ei.value.errors()}
    assert path in locs or (path == "timeout" and "" in locs and "flush_timeout" in str(ei.value)), locs


def test_example_config_validates() -> None:
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(ROOT / "examples/s3.yaml")],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr


def test_collector_process_otlp_traces_to_s3(moto: str, bucket: str, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    http_port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"s3": {
            "s3uploader": {"s3_bucket": bucket, "endpoint": moto, "s3_force_path_style": True, "s3_prefix": "raw"},
            "marshaler": "ndjson",
            "timeout": "5s",
            "sending_queue": {"batch": {"flush_timeout": "500ms", "min_size": 100000}},
        }},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["s3"]}}},
    }
    with CollectorProcess(cfg, workdir=tmp_path, env=CREDS):
        tp = TracerProvider(resource=Resource.create({"service.name": "e2e"}))
        tp.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces"), max_export_batch_size=50))
        tracer = tp.get_tracer("t")
        sent = set()
        for i in range(200):
            with tracer.start_as_current_span("chat") as span:
                span.set_attribute("gen_ai.request.model", "claude-sonnet-4")
                span.set_attribute("gen_ai.usage.input_tokens", i)
                span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "content": SECRET}]))
                sent.add(f"{span.get_span_context().span_id:016x}")
        tp.shutdown()

        def rows() -> list[dict[str, Any]]:
            out = []
            for k, v in objects(moto, bucket).items():
                assert k.startswith("raw/year=")
                out += [json.loads(x) for x in gzip.decompress(v).decode().splitlines()]
            return out if len(out) >= 200 else []
        got = wait_for(rows, timeout=20, what="200 spans in S3")
    assert {r["span_id"] for r in got} == sent and len(got) == 200
    assert all(r["model"] == "claude-sonnet-4" and r["service"] == "e2e" for r in got)
    assert all(SECRET not in json.dumps(r) for r in got)
    assert len(objects(moto, bucket)) < 200 / 50 + 1  # requests were grouped into objects
