"""The `file` exporter (one OTLP/JSON request per line, rotation, gzip, flush interval) and the `debug`
exporter's three verbosities."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from bench.llm_spans import make_request
from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.pdata import Batch, Signal, from_otlp_json


def make(type_: str, cfg: dict[str, Any]) -> Any:
    f = registry.get(Kind.EXPORTER, type_)
    assert f is not None
    return f.create(CreateSettings(ComponentID(type_, uuid.uuid4().hex[:6]), Kind.EXPORTER,
                                   signals=frozenset(Signal)), f.config_model.model_validate(cfg))


def _ids(line: str) -> str:
    req = from_otlp_json(Signal.TRACES, line)
    return req.resource_spans[0].scope_spans[0].spans[0].span_id.hex()  # type: ignore[no-any-return]


async def test_one_request_per_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    exp = make("file", {"path": str(path)})
    await exp.start()
    reqs = [make_request(3, seed=i) for i in range(4)]
    for r in reqs:
        await exp.send(Batch(Signal.TRACES, r))
    await exp.shutdown()
    lines = path.read_text().splitlines()
    assert [from_otlp_json(Signal.TRACES, ln) for ln in lines] == reqs
    first = json.loads(lines[0])  # the OTLP/JSON mapping: camelCase, hex ids, int64 as strings
    span = first["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["spanId"] == reqs[0].resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert isinstance(span["startTimeUnixNano"], str) and span["kind"] == 3


async def test_rotation(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    exp = make("file", {"path": str(path), "rotation": {"max_megabytes": 1, "max_backups": 2}})
    await exp.start()
    written = []
    for i in range(12):  # ~ 12 x 300 KB: 3.6 MB through 1 MB files
        req = make_request(150, seed=i)
        written.append(req.resource_spans[0].scope_spans[0].spans[0].span_id.hex())
        await exp.send(Batch(Signal.TRACES, req))
    await exp.shutdown()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    kept: list[str] = []
    for name in ("traces.jsonl.2", "traces.jsonl.1", "traces.jsonl"):  # oldest first
        p = tmp_path / name
        assert p.stat().st_size <= 1024 * 1024, name
        kept += [_ids(ln) for ln in p.read_text().splitlines()]
    assert kept == written[-len(kept):], "the newest requests are kept, in order, none split across files"
    assert len(kept) >= 6



async def test_rotation_counts_an_existing_file(tmp_path: Path) -> None:
    """After a restart the exporter appends to the current file and counts the bytes already in it."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"{}\n" * 300_000)  # 900 KB from a previous run
    exp = make("file", {"path": str(path), "rotation": {"max_megabytes": 1, "max_backups": 1}})
    await exp.start()
    await exp.send(Batch(Signal.TRACES, make_request(100)))  # ~200 KB: would pass 1 MB
    await exp.shutdown()
    assert (tmp_path / "t.jsonl.1").stat().st_size == 900_000
    assert len(path.read_text().splitlines()) == 1


async def test_rotation_without_backups(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    exp = make("file", {"path": str(path), "rotation": {"max_megabytes": 1, "max_backups": 0}})
    await exp.start()
    for i in range(6):
        await exp.send(Batch(Signal.TRACES, make_request(150, seed=i)))
    await exp.shutdown()
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]
    assert 0 < path.stat().st_size <= 1024 * 1024


async def test_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    exp = make("file", {"path": str(path), "compression": "gzip"})
    await exp.start()
    reqs = [make_request(20, seed=i) for i in range(3)]
    for r in reqs:
        await exp.send(Batch(Signal.TRACES, r))
    await exp.shutdown()
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    assert [from_otlp_json(Signal.TRACES, ln) for ln in lines] == reqs
    assert path.stat().st_size < sum(len(ln) for ln in lines) / 2


async def test_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    exp = make("file", {"path": str(path), "flush_interval": "100ms"})
    await exp.start()
    await exp.send(Batch(Signal.TRACES, make_request(1)))
    for _ in range(50):
        if path.stat().st_size:
            break
        await asyncio.sleep(0.02)
    assert path.stat().st_size > 0, "flush_interval must flush without a further write"
    await exp.shutdown()


def _metrics() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "tokens"
    m.sum.data_points.add().as_int = 5
    m.sum.data_points.add().as_int = 6
    return req


def _logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.severity_text, rec.body.string_value = "ERROR", "budget exceeded for tenant acme"
    return req


@pytest.mark.parametrize("verbosity", ["basic", "normal", "detailed"])
async def test_debug_verbosity(verbosity: str, capsys: pytest.CaptureFixture[str]) -> None:
    exp = make("debug", {"verbosity": verbosity})
    await exp.start()
    req = make_request(2)
    await exp.consume(Batch(Signal.TRACES, req))
    await exp.consume(Batch(Signal.METRICS, _metrics()))
    await exp.consume(Batch(Signal.LOGS, _logs()))
    await exp.shutdown()
    err = capsys.readouterr().err
    assert f"{exp.id}: traces: 2 spans" in err
    assert f"{exp.id}: metrics: 2 metric_points" in err
    assert f"{exp.id}: logs: 1 log_records" in err
    sid = req.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    assert (sid in err) == (verbosity != "basic")
    assert ("metric tokens sum 2 points" in err) == (verbosity != "basic")
    assert ("budget exceeded for tenant acme" in err) == (verbosity != "basic")
    assert ('"resourceSpans"' in err) == (verbosity == "detailed")
