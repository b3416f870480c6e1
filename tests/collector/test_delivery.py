"""Delivery guarantees of the exporter helper against a real OTLP backend (HTTP and gRPC) on loopback:
retries with backoff and Retry-After, permanent errors dead-lettered, back-pressure, persistent queue
(restart, fan-out sharing, max_age, disk budget, full at start-up), shutdown, batching in the queue."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from collector.telemetry import REGISTRY
from tests.collector.delivery_harness import (
    Harness,
    exporter_cfg,
    ids_of,
    read_dead_letters,
    wait_until,
)
from tests.delivery_support import Action, OtlpBackend


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scripted(*actions: Action) -> object:
    return lambda n: actions[n] if n < len(actions) else Action()


async def test_http_backend_recovers_backoff_and_retry_after() -> None:
    with OtlpBackend(scripted(Action(503), Action(503), Action(429, retry_after=1))) as be:
        async with Harness({"testotlp/h1": exporter_cfg(be.http_endpoint())}) as h:
            r = await h.post([1, 2, 3, 4, 5])
            assert r.status == 200
            await wait_until(lambda: be.received_ids() == ids_of(5), what="all spans delivered")
            t = be.attempt_times()
            assert len(t) == 4
            gaps = [b - a for a, b in zip(t, t[1:])]
            # backoff 50ms then 100ms (randomization 0, multiplier 2), then the backend's Retry-After: 1s
            assert 0.045 <= gaps[0] < 0.5, gaps
            assert 0.095 <= gaps[1] < 0.6, gaps
            assert 0.98 <= gaps[2] < 1.8, gaps
            await wait_until(lambda: h.exporter("testotlp/h1").status_info()["status"] == "active", what="active")
            assert metric("otelcol_exporter_sent_spans_total", exporter="testotlp/h1") == 5
            assert metric("otelcol_exporter_send_failed_spans_total", exporter="testotlp/h1") == 15


async def test_grpc_backend_unavailable_then_recovers() -> None:
    with OtlpBackend(scripted(Action(503), Action(429), Action(503))) as be:
        cfg = exporter_cfg(be.grpc_endpoint(), protocol="grpc")
        async with Harness({"testotlp/g1": cfg}) as h:
            assert (await h.post([7, 8])).status == 200
            await wait_until(lambda: be.received_ids() == ids_of(2, 7), what="spans over gRPC")
            assert [a.status for a in be.attempts] == [503, 429, 503, 200]
            gaps = [b - a for a, b in zip(be.attempt_times(), be.attempt_times()[1:])]
            assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19, gaps


async def test_permanent_error_is_dead_lettered_with_reason_and_never_retried(tmp_path: Path) -> None:
    dl = tmp_path / "dead" / "letters.jsonl"
    with OtlpBackend(lambda n: Action(400, message="span name too long")) as be:
        cfg = exporter_cfg(be.http_endpoint(), dead_letter={"path": str(dl)})
        async with Harness({"testotlp/p1": cfg}) as h:
            assert (await h.post([1, 2])).status == 200
            await wait_until(lambda: read_dead_letters(dl), what="dead letter")
            await asyncio.sleep(0.4)  # time for (wrong) retries to show up
            assert len(be.attempts) == 1
            (rec,) = read_dead_letters(dl)
            assert rec["exporter"] == "testotlp/p1" and rec["items"] == 2
            assert rec["reason"].startswith("permanent_error") and "span name too long" in rec["reason"]
            assert "HTTP 400" in rec["reason"]
            spans = rec["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
            assert [s["spanId"] for s in spans] == ["0000000000000001", "0000000000000002"]
            st = h.exporter("testotlp/p1").status_info()
            assert st["status"] == "error" and "span name too long" in st["last_error"]
            assert st["last_error_time"] and st["dropped"] == {"permanent_error": 2}
            assert metric("otelcol_exporter_dropped_items_total", exporter="testotlp/p1", data_type="traces",
                          reason="permanent_error") == 2


async def test_full_queue_refuses_with_429_and_counts(tmp_path: Path) -> None:
    with OtlpBackend(lambda n: Action(sleep=0.5)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"queue_size": 2, "num_consumers": 1})
        async with Harness({"testotlp/q1": cfg}) as h:
            rs = await asyncio.gather(*(h.post([i]) for i in range(1, 7)))
            statuses = sorted(r.status for r in rs)
            assert statuses.count(200) == 2 and statuses.count(429) == 4, statuses
            refused = [r for r in rs if r.status == 429]
            assert all(r.headers.get("Retry-After") for r in refused)
            assert metric("otelcol_exporter_enqueue_failed_spans_total", exporter="testotlp/q1") == 4
            accepted = {i.to_bytes(8, "big") for i, r in zip(range(1, 7), rs) if r.status == 200}
            await wait_until(lambda: be.received_ids() == accepted, what="accepted spans delivered")


async def test_block_on_overflow_waits_instead_of_refusing() -> None:
    with OtlpBackend(lambda n: Action(sleep=0.1)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"queue_size": 1, "num_consumers": 1,
                                                              "block_on_overflow": True})
        async with Harness({"testotlp/b1": cfg}) as h:
            rs = await asyncio.gather(*(h.post([i]) for i in range(1, 5)))
            assert [r.status for r in rs] == [200] * 4
            await wait_until(lambda: be.received_ids() == ids_of(4), what="all delivered")


async def test_persistent_queue_survives_restart(tmp_path: Path) -> None:
    up = False
    with OtlpBackend(lambda n: Action() if up else Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage"})
        h = Harness({"testotlp/r1": cfg}, storage=tmp_path, shutdown_timeout=0.3)
        async with h:
            for i in range(1, 4):
                assert (await h.post([i * 10, i * 10 + 1])).status == 200
            await wait_until(lambda: len(be.attempts) >= 3, what="failing attempts")
        assert be.received_ids() == set()
        db = sqlite3.connect(tmp_path / "exporter_sending_queues.sqlite")
        assert db.execute("SELECT count(*), sum(items) FROM entries WHERE queue='testotlp/r1'").fetchone() == (3, 6)
        db.close()
        up = True
        async with Harness({"testotlp/r1": cfg}, storage=tmp_path, port=h.port) as h2:
            want = {i.to_bytes(8, "big") for i in (10, 11, 20, 21, 30, 31)}
            await wait_until(lambda: be.received_ids() == want, what="restored spans delivered")
            await wait_until(lambda: h2.exporter("testotlp/r1").status_info()["queue_size"] == 0, what="empty")
        db = sqlite3.connect(tmp_path / "exporter_sending_queues.sqlite")
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM blobs").fetchone() == (0,)
        db.close()


async def test_fan_out_stores_one_copy_and_each_exporter_delivers(tmp_path: Path) -> None:
    a_up = False
    with OtlpBackend(lambda n: Action() if a_up else Action(503)) as a, OtlpBackend() as b:
        q = {"storage": "file_storage"}
        exps = {"testotlp/a": exporter_cfg(a.http_endpoint(), sending_queue=q),
                "testotlp/b": exporter_cfg(b.http_endpoint(), sending_queue=q)}
        async with Harness(exps, storage=tmp_path) as h:
            assert (await h.post([1, 2, 3], attrs=20)).status == 200
            await wait_until(lambda: b.received_ids() == ids_of(3), what="b delivered")
            await wait_until(lambda: h.exporter("testotlp/b").status_info()["queue_size"] == 0, what="b acked")
            store = h.exporter("testotlp/a")._queue.store
            st = await store.stats()
            # b acked: a's entry still holds the one shared blob, now with one reference left
            assert st["blobs"] == 1 and st["entries"] == 1 and st["blob_refs"] == 1
            a_up = True
            await wait_until(lambda: a.received_ids() == ids_of(3), what="a delivered")
            await wait_until(lambda: h.exporter("testotlp/a").status_info()["queue_size"] == 0, what="a empty")
            assert (await store.stats())["blobs"] == 0


async def test_large_requests_live_in_blob_files_shared_by_a_fan_out(tmp_path: Path) -> None:
    """Requests over 32 KiB are stored as one file each (fan-out included), survive a restart, and their
    files go when the last exporter has sent them; stale files are removed at start."""
    up = False
    blob_dir = tmp_path / "exporter_sending_queues.sqlite-blobs"
    with OtlpBackend(lambda n: Action() if up else Action(503)) as a, OtlpBackend() as b:
        q = {"storage": "file_storage"}
        exps = {"testotlp/la": exporter_cfg(a.http_endpoint(), sending_queue=q),
                "testotlp/lb": exporter_cfg(b.http_endpoint(), sending_queue=q)}
        h = Harness(exps, storage=tmp_path, shutdown_timeout=0.3)
        async with h:
            assert (await h.post([1, 2], attrs=1000)).status == 200  # ~90 KB: a file
            assert (await h.post([3])).status == 200  # small: inline in SQLite
            await wait_until(lambda: b.received_ids() == ids_of(3), what="b delivered")
            await wait_until(lambda: h.exporter("testotlp/lb").status_info()["queue_size"] == 0, what="b acked")
            st = await h.exporter("testotlp/la")._queue.store.stats()
            assert st["blobs"] == 2 and st["blob_files"] == 1 and st["entries"] == 2 and st["blob_refs"] == 2
            assert st["blob_bytes"] > 90_000
        (blob_dir / "999999").write_bytes(b"left by a transaction that never committed")
        db = sqlite3.connect(tmp_path / "exporter_sending_queues.sqlite")
        (fid,) = db.execute("SELECT id FROM blobs WHERE ext = 1").fetchone()
        db.close()
        assert sorted(p.name for p in blob_dir.iterdir()) == sorted([str(fid), "999999"])
        up = True
        async with Harness(exps, storage=tmp_path, port=h.port) as h2:
            assert sorted(p.name for p in blob_dir.iterdir()) == [str(fid)]  # the stale one is gone
            await wait_until(lambda: a.received_ids() == ids_of(3), what="a delivered after restart")
            await wait_until(lambda: h2.exporter("testotlp/la").status_info()["queue_size"] == 0, what="a empty")
            assert list(blob_dir.iterdir()) == []
            assert (await h2.exporter("testotlp/la")._queue.store.stats())["blobs"] == 0


async def test_missing_blob_file_is_dropped_with_a_reason_not_retried_forever(tmp_path: Path) -> None:
    up = False
    with OtlpBackend(lambda n: Action() if up else Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage"},
                           dead_letter={"path": str(tmp_path / "dl.jsonl")})
        h = Harness({"testotlp/lost": cfg}, storage=tmp_path, shutdown_timeout=0.3)
        async with h:
            assert (await h.post([1, 2], attrs=1000)).status == 200
            assert (await h.post([3])).status == 200
            await wait_until(lambda: len(be.attempts) >= 2, what="failing attempts")
        files = list((tmp_path / "exporter_sending_queues.sqlite-blobs").iterdir())
        assert len(files) == 1
        files[0].unlink()
        up = True
        async with Harness({"testotlp/lost": cfg}, storage=tmp_path, port=h.port) as h2:
            await wait_until(lambda: be.received_ids() == ids_of(1, 3), what="the intact request delivered")
            await wait_until(lambda: h2.exporter("testotlp/lost").status_info()["queue_size"] == 0, what="empty")
            assert h2.exporter("testotlp/lost").dropped == {"storage_lost": 2}
        recs = read_dead_letters(tmp_path / "dl.jsonl")
        assert len(recs) == 1 and recs[0]["reason"].startswith("storage_lost: ")


async def test_one_blob_for_several_queues_and_group_commit(tmp_path: Path) -> None:
    with OtlpBackend(lambda n: Action(503)) as be:
        q = {"storage": "file_storage", "queue_size": 500}
        exps = {f"testotlp/f{i}": exporter_cfg(be.http_endpoint(), sending_queue=q,
                                                retry_on_failure={"initial_interval": "10s"}) for i in range(3)}
        async with Harness(exps, storage=tmp_path, shutdown_timeout=0.2) as h:
            store = h.exporter("testotlp/f0")._queue.store
            c0 = store.commits
            rs = await asyncio.gather(*(h.post([i]) for i in range(1, 101)))
            assert all(r.status == 200 for r in rs)
            st = await store.stats()
            # fan-out to 3 queues, one stored copy per request, referenced 3 times
            assert st["entries"] == 300 and st["blobs"] == 100 and st["blob_refs"] == 300
            assert store.commits - c0 < 100, store.commits - c0  # group commits: far fewer than 100 requests


async def test_persistent_retries_do_not_give_up_after_max_elapsed_time(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with OtlpBackend(lambda n: Action() if time.monotonic() - t0 > 1.0 else Action(503)) as be:
        retry = {"max_elapsed_time": "200ms", "initial_interval": "50ms", "max_interval": "100ms"}
        mem = exporter_cfg(be.http_endpoint(), retry_on_failure=retry,
                           dead_letter={"path": str(tmp_path / "mem.jsonl")})
        disk = exporter_cfg(be.http_endpoint(), retry_on_failure=retry, sending_queue={"storage": "file_storage"},
                            dead_letter={"path": str(tmp_path / "disk.jsonl")})
        async with Harness({"testotlp/mem": mem, "testotlp/disk": disk}, storage=tmp_path) as h:
            assert (await h.post([1])).status == 200
            await wait_until(lambda: read_dead_letters(tmp_path / "mem.jsonl"), what="memory queue gives up")
            await wait_until(lambda: ids_of(1) <= be.received_ids(), what="persistent queue delivers")
            assert read_dead_letters(tmp_path / "disk.jsonl") == []
            (rec,) = read_dead_letters(tmp_path / "mem.jsonl")
            assert rec["reason"].startswith("retries_exhausted")
            assert h.exporter("testotlp/disk").status_info()["dropped"] == {}


async def test_max_age_drops_with_reason(tmp_path: Path) -> None:
    dl = tmp_path / "dl.jsonl"
    with OtlpBackend(lambda n: Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage", "max_age": "400ms"},
                           dead_letter={"path": str(dl)})
        async with Harness({"testotlp/age": cfg}, storage=tmp_path) as h:
            assert (await h.post([1, 2])).status == 200
            await wait_until(lambda: read_dead_letters(dl), what="max_age drop")
            (rec,) = read_dead_letters(dl)
            assert rec["reason"].startswith("max_age") and rec["items"] == 2
            await wait_until(lambda: h.exporter("testotlp/age").status_info()["queue_size"] == 0, what="empty")
            assert metric("otelcol_exporter_dropped_items_total", exporter="testotlp/age", data_type="traces",
                          reason="max_age") == 2
        assert be.received_ids() == set()


async def test_disk_budget_pushes_out_oldest(tmp_path: Path) -> None:
    dl = tmp_path / "dl.jsonl"
    with OtlpBackend(lambda n: Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), retry_on_failure={"initial_interval": "10s"},
                           sending_queue={"storage": "file_storage", "max_size_mib": 1, "num_consumers": 1},
                           dead_letter={"path": str(dl)})
        async with Harness({"testotlp/disk": cfg}, storage=tmp_path, shutdown_timeout=0.2) as h:
            # ~330 KB per request: the 4th pushes the oldest waiting one out of the 1 MiB budget
            for i in range(4):
                assert (await h.post(list(range(i * 100 + 1, i * 100 + 101)), attrs=70)).status == 200
            recs = read_dead_letters(dl)
            assert len(recs) == 1 and recs[0]["reason"].startswith("queue_disk_full"), recs
            dropped_ids = {s["spanId"] for s in recs[0]["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]}
            assert "0000000000000065" in dropped_ids  # span 101: the oldest not being sent
            assert h.exporter("testotlp/disk").status_info()["dropped"] == {"queue_disk_full": 100}
        assert be.received_ids() == set()


async def test_full_persistent_queue_at_startup_does_not_deadlock(tmp_path: Path) -> None:
    up = False
    with OtlpBackend(lambda n: Action() if up else Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage", "queue_size": 3})
        h = Harness({"testotlp/full": cfg}, storage=tmp_path, shutdown_timeout=0.2)
        async with h:
            assert [(await h.post([i])).status for i in range(1, 5)] == [200, 200, 200, 429]
        up = True
        # Collector issue 12532: blocking mode, restored in-flight request, less capacity than stored data
        small = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage", "queue_size": 2,
                                                                "block_on_overflow": True})
        async with Harness({"testotlp/full": small}, storage=tmp_path, port=h.port) as h2:
            # restarted full (even over its new capacity): it starts, drains, then accepts again
            await wait_until(lambda: be.received_ids() == ids_of(3), what="restored spans delivered")
            await wait_until(lambda: h2.exporter("testotlp/full").status_info()["queue_size"] == 0, what="empty")
            assert (await h2.post([9])).status == 200
            await wait_until(lambda: ids_of(1, 9) <= be.received_ids(), what="new span delivered")


async def test_shutdown_keeps_persistent_items_and_dead_letters_memory_ones(tmp_path: Path) -> None:
    with OtlpBackend(lambda n: Action(503)) as be:
        mem = exporter_cfg(be.http_endpoint(), dead_letter={"path": str(tmp_path / "mem.jsonl")})
        disk = exporter_cfg(be.http_endpoint(), sending_queue={"storage": "file_storage"},
                            dead_letter={"path": str(tmp_path / "disk.jsonl")})
        h = Harness({"testotlp/sm": mem, "testotlp/sd": disk}, storage=tmp_path, shutdown_timeout=0.3)
        async with h:
            assert (await h.post([1, 2, 3])).status == 200
            await wait_until(lambda: len(be.attempts) >= 2, what="attempts")
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 2.0  # the deadline interrupts the backoff waits
        recs = read_dead_letters(tmp_path / "mem.jsonl")
        assert len(recs) == 1 and recs[0]["reason"].startswith("shutdown") and recs[0]["items"] == 3
        assert read_dead_letters(tmp_path / "disk.jsonl") == []
        db = sqlite3.connect(tmp_path / "exporter_sending_queues.sqlite")
        assert db.execute("SELECT sum(items) FROM entries WHERE queue='testotlp/sd'").fetchone() == (3,)
        db.close()


async def test_shutdown_drains_queue_when_backend_is_up() -> None:
    with OtlpBackend(lambda n: Action(sleep=0.05)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"num_consumers": 1})
        h = Harness({"testotlp/drain": cfg}, shutdown_timeout=5)
        async with h:
            for i in range(1, 11):
                assert (await h.post([i])).status == 200
        assert be.received_ids() == ids_of(10)


async def test_batching_inside_the_queue() -> None:
    with OtlpBackend() as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={
            "num_consumers": 2, "batch": {"flush_timeout": "300ms", "min_size": 10, "max_size": 25}})
        async with Harness({"testotlp/batch": cfg}) as h:
            rs = await asyncio.gather(*(h.post([i * 2 + 1, i * 2 + 2]) for i in range(20)))
            assert all(r.status == 200 for r in rs)
            await wait_until(lambda: be.received_ids() == ids_of(40), what="all spans")
            sizes = [len(a.span_ids) for a in be.attempts]
            assert max(sizes) <= 25 and len(sizes) <= 4, sizes
            # a lone request waits flush_timeout for company, then goes alone
            n = len(be.attempts)
            t0 = time.monotonic()
            assert (await h.post([99])).status == 200
            await wait_until(lambda: len(be.attempts) > n, what="flush")
            assert 0.25 <= time.monotonic() - t0 < 1.5


async def test_status_endpoint_reports_per_exporter_state(tmp_path: Path) -> None:
    import aiohttp

    from tests.helpers import free_port

    with OtlpBackend(lambda n: Action(503, message="backend on fire")) as bad, OtlpBackend() as good:
        hc = free_port()
        h = Harness({"testotlp/bad": exporter_cfg(bad.http_endpoint(), retry_on_failure={"initial_interval": "5s"}),
                     "testotlp/good": exporter_cfg(good.http_endpoint())}, shutdown_timeout=0.2)
        raw = h.config.raw
        raw["extensions"]["health_check"] = {"endpoint": f"127.0.0.1:{hc}"}
        raw["service"]["extensions"].append("health_check")
        from collector.config import validate

        h.config = validate(raw)
        async with h:
            assert (await h.post([1])).status == 200
            await wait_until(lambda: ids_of(1) <= good.received_ids() and bad.attempts, what="attempts")
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{hc}/status") as r:
                body = await r.json()
            bad_st, good_st = body["exporters"]["testotlp/bad"], body["exporters"]["testotlp/good"]
            assert bad_st["status"] == "retrying" and "backend on fire" in bad_st["last_error"]
            assert bad_st["queue_size"] == 1 and bad_st["queue_capacity"] == 1000 and bad_st["last_error_time"]
            assert good_st["status"] == "active" and good_st["last_error"] is None and good_st["queue_size"] == 0
            lbl = {"exporter": "testotlp/bad", "data_type": "traces"}
            assert REGISTRY.get_sample_value("otelcol_exporter_queue_size", lbl) == 1
            assert REGISTRY.get_sample_value("otelcol_exporter_queue_capacity", lbl) == 1000


async def test_oversized_request_is_split_to_max_size(tmp_path: Path) -> None:
    with OtlpBackend() as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={
            "storage": "file_storage", "batch": {"flush_timeout": "50ms", "min_size": 1, "max_size": 4}})
        async with Harness({"testotlp/split": cfg}, storage=tmp_path) as h:
            assert (await h.post(list(range(1, 11)))).status == 200
            await wait_until(lambda: be.received_ids() == ids_of(10), what="all spans")
            assert sorted(len(a.span_ids) for a in be.attempts) == [2, 4, 4]


def test_split_batch_keeps_resource_and_scope() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from collector.pdata import Batch, Signal
    from collector.queue import split_batch

    req = ExportLogsServiceRequest()
    for r in range(2):
        rl = req.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        sl = rl.scope_logs.add()
        sl.scope.name = f"scope{r}"
        for i in range(3):
            sl.log_records.add().body.string_value = f"{r}.{i}"
    parts = split_batch(Batch(Signal.LOGS, req), 4)
    assert [p.item_count() for p in parts] == [4, 2]
    got = [(rl.resource.attributes[0].value.string_value, sl.scope.name, lr.body.string_value)
           for p in parts for rl in p.request.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    assert got == [(f"svc{r}", f"scope{r}", f"{r}.{i}") for r in range(2) for i in range(3)]


async def test_shutdown_without_retries_keeps_persistent_items(tmp_path: Path) -> None:
    """Collector issue 15677: with retry_on_failure disabled, requests that failed while the queue drained
    at shutdown were deleted. Here they stay on disk and are delivered after the restart."""
    up = False
    with OtlpBackend(lambda n: Action() if up else Action(503, sleep=0.3)) as be:
        cfg = exporter_cfg(be.http_endpoint(), retry_on_failure={"enabled": False},
                           sending_queue={"storage": "file_storage", "num_consumers": 1},
                           dead_letter={"path": str(tmp_path / "dl.jsonl")})
        h = Harness({"testotlp/noretry": cfg}, storage=tmp_path, shutdown_timeout=2)
        async with h:
            for i in range(1, 6):
                assert (await h.post([i])).status == 200
        # the request in flight failed during the drain: kept, like the four behind it
        await asyncio.sleep(0)
        assert len(be.attempts) == 1 and be.attempts[0].status == 503
        assert read_dead_letters(tmp_path / "dl.jsonl") == []
        db = sqlite3.connect(tmp_path / "exporter_sending_queues.sqlite")
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (5,)
        db.close()
        up = True
        async with Harness({"testotlp/noretry": cfg}, storage=tmp_path, port=h.port):
            await wait_until(lambda: be.received_ids() == ids_of(5), what="kept requests delivered")


async def test_second_process_on_the_same_queue_database_fails_clearly(tmp_path: Path) -> None:
    import subprocess
    import sys

    from collector.queue import SqliteStore

    store = SqliteStore(str(tmp_path / "q.sqlite"), timeout=0.2)
    store.open()
    try:
        code = ("import sys; from collector.queue import SqliteStore\n"
                f"s = SqliteStore({str(tmp_path / 'q.sqlite')!r}, timeout=0.2)\n"
                "try:\n    s.open()\nexcept RuntimeError as e:\n    print(e); sys.exit(3)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                           cwd=str(Path(__file__).resolve().parents[2]))
        assert r.returncode == 3 and "database is locked" in r.stdout, (r.stdout, r.stderr)
    finally:
        store.close()


def test_backoff_follows_the_collector_defaults() -> None:
    from collector.exporterhelper import Backoff, RetryConfig

    b = Backoff(RetryConfig())
    interval = 5.0
    for _ in range(12):
        d = b.next_delay()
        assert interval * 0.5 <= d <= interval * 1.5
        interval = min(interval * 1.5, 30.0)
    assert b.interval == 30.0


async def test_logs_and_metrics_through_the_persistent_queue(tmp_path: Path) -> None:
    import aiohttp
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from collector.config import validate
    from collector.pdata import Signal
    from collector.service import Service
    from tests.helpers import free_port, read_otlp_jsonl

    port = free_port()
    q = {"storage": "file_storage", "batch": {"flush_timeout": "50ms", "min_size": 100}}
    cfg = validate({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"file/logs": {"path": str(tmp_path / "logs.jsonl"), "sending_queue": q},
                      "file/metrics": {"path": str(tmp_path / "metrics.jsonl"), "sending_queue": q}},
        "extensions": {"file_storage": {"directory": str(tmp_path / "st")}},
        "service": {"extensions": ["file_storage"], "telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["file/logs"]},
                                  "metrics": {"receivers": ["otlp"], "exporters": ["file/metrics"]}}}})
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "budget crossed"
    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="gen_ai.client.token.usage")
    m.sum.data_points.add(as_int=1200)
    m.sum.data_points.add(as_int=300)
    svc = Service(cfg)
    await svc.start()
    try:
        async with aiohttp.ClientSession() as s:
            for path, req in (("/v1/logs", logs), ("/v1/logs", logs), ("/v1/metrics", metrics)):
                async with s.post(f"http://127.0.0.1:{port}{path}", data=req.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}) as r:
                    assert r.status == 200
        await wait_until(lambda: read_otlp_jsonl(tmp_path / "logs.jsonl", Signal.LOGS)
                         and read_otlp_jsonl(tmp_path / "metrics.jsonl", Signal.METRICS), what="files written")
    finally:
        await svc.shutdown()
    (lreq,) = read_otlp_jsonl(tmp_path / "logs.jsonl", Signal.LOGS)  # the two requests, merged in the queue
    assert [lr.body.string_value for rl in lreq.resource_logs for sl in rl.scope_logs for lr in sl.log_records] \
        == ["budget crossed"] * 2
    (mreq,) = read_otlp_jsonl(tmp_path / "metrics.jsonl", Signal.METRICS)
    assert mreq == metrics


def test_delivery_config_errors_name_the_path() -> None:
    import pytest

    from collector.config import validate
    from collector.errors import ConfigError

    def errors(exporter: dict) -> list[str]:
        doc = {"receivers": {"otlp": {"protocols": {"http": {}}}},
               "exporters": {"file/x": {"path": "/tmp/x.jsonl", **exporter}},
               "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file/x"]}}}}
        with pytest.raises(ConfigError) as ei:
            validate(doc)
        return ei.value.errors

    p = "exporters::file/x::"
    assert any(e.startswith(p + "sending_queue::queue_size") for e in errors({"sending_queue": {"queue_size": 0}}))
    assert any(e.startswith(p + "sending_queue::sizer") for e in errors({"sending_queue": {"sizer": "bytes"}}))
    assert any(e == p + "sending_queue::blocking: unknown key" for e in errors({"sending_queue": {"blocking": True}}))
    assert any(e.startswith(p + "sending_queue::batch::flush_timeout") and "invalid duration" in e
               for e in errors({"sending_queue": {"batch": {"flush_timeout": "soon"}}}))
    assert any(e.startswith(p + "retry_on_failure::multiplier") for e in errors({"retry_on_failure": {"multiplier": 0.5}}))
    assert any(e.startswith(p + "dead_letter::path") for e in errors({"dead_letter": {}}))
    ok = validate({"receivers": {"otlp": {"protocols": {"http": {}}}},
                   "exporters": {"file/x": {"path": "/tmp/x.jsonl", "timeout": "2s",
                                            "sending_queue": {"sizer": "items", "max_age": "1h",
                                                              "batch": {"flush_timeout": "1s"}},
                                            "retry_on_failure": {"max_elapsed_time": 0}}},
                   "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file/x"]}}}})
    from collector.component import ComponentID, Kind

    cfg = ok.get(Kind.EXPORTER, ComponentID.parse("file/x")).config
    assert cfg.sending_queue.max_age == 3600 and cfg.sending_queue.batch.min_size == 8192
    assert cfg.retry_on_failure.initial_interval == 5 and cfg.timeout == 2


async def test_without_queue_a_send_interrupted_by_shutdown_is_refused() -> None:
    import pytest

    from collector.errors import RefusedError

    with OtlpBackend(lambda n: Action(503)) as be:
        cfg = exporter_cfg(be.http_endpoint(), sending_queue={"enabled": False},
                           retry_on_failure={"initial_interval": "10s"})
        async with Harness({"testotlp/nq": cfg}) as h:
            exp = h.exporter("testotlp/nq")
            from collector.pdata import Batch, Signal
            from tests.delivery_support import make_request

            task = asyncio.create_task(exp.consume(Batch(Signal.TRACES, make_request([1]))))
            await wait_until(lambda: be.attempts, what="first attempt")
            await exp.shutdown()
            with pytest.raises(RefusedError):
                await task
