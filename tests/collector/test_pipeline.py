"""The pipelines graph: wiring, fan-out to several exporters, the batch read-only after the fan-out (its parsed
form dropped while the bytes wait in the queues), start/shutdown order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.llm_spans import make_request
from collector.config import validate
from collector.pdata import Batch, Signal
from collector.pipeline import Graph, ReleaseAfterExport
from tests.helpers import read_otlp_jsonl


async def test_fanout_and_release(tmp_path: Path) -> None:
    cfg = validate({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {"file/a": {"path": str(tmp_path / "a.jsonl")}, "file/b": {"path": str(tmp_path / "b.jsonl")},
                      "debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file/a", "file/b"]},
                                  "traces/2": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    })
    g = Graph(cfg)
    assert isinstance(g._entries["traces"], ReleaseAfterExport)
    assert set(g.exporters) == {"file/a", "file/b", "debug"}
    await g.start()
    try:
        req = make_request(5)
        raw = req.SerializeToString()
        batch = Batch.from_bytes(Signal.TRACES, raw)
        await g._entries["traces"].consume(batch)
        assert batch._request is None and batch.to_bytes() == raw and batch.item_count() == 5
        for _ in range(200):
            if all(read_otlp_jsonl(tmp_path / f"{n}.jsonl", Signal.TRACES) for n in ("a", "b")):
                break
            await asyncio.sleep(0.01)
        for n in ("a", "b"):
            assert read_otlp_jsonl(tmp_path / f"{n}.jsonl", Signal.TRACES) == [req]
    finally:
        await g.shutdown(5.0)
    assert not g.host.started
