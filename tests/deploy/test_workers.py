"""`service.workers: 2`: two worker processes share the OTLP ports, each with its own queue directory;
a killed worker is restarted; the supervisor serves health and every worker's metrics; SIGTERM exits 0."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.pdata import Signal
from collector.workers import merge_metrics
from tests.helpers import CollectorProcess, free_port, http_get, read_otlp_jsonl, spans_of, wait_for


def listeners(pid: int, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in psutil.Process(pid).net_connections(kind="tcp"))


def workers_of(col: CollectorProcess) -> list[psutil.Process]:
    assert col.proc is not None
    return [p for p in psutil.Process(col.proc.pid).children() if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


def send_spans(http_port: int, n: int) -> None:
    """n spans, each over a new connection (a new exporter), so the kernel spreads them over the workers."""
    for i in range(n):
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces")))
        tp.get_tracer("workers").start_span(f"span {i}").end()
        tp.shutdown()


def test_two_workers_share_the_port_and_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    col = CollectorProcess({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                                             "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"file": {"path": str(tmp_path / "out-${env:LLM_COLLECTOR_WORKER}.jsonl")}},
        "extensions": {"file_storage": {"directory": str(tmp_path / "storage")}},
        "service": {"workers": 2, "extensions": ["file_storage"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }, workdir=tmp_path)
    col.start()
    try:
        ws = workers_of(col)
        assert len(ws) == 2
        for w in ws:  # both workers listen on the same ports
            assert listeners(w.pid, grpc_port) and listeners(w.pid, http_port)
        assert sorted(p.name for p in (tmp_path / "storage").iterdir()) == ["worker-0", "worker-1"]

        send_spans(http_port, 24)
        outs = [tmp_path / "out-0.jsonl", tmp_path / "out-1.jsonl"]
        wait_for(lambda: sum(len(list(spans_of(read_otlp_jsonl(o, Signal.TRACES)))) for o in outs) == 24,
                 what="24 spans written")
        per_worker = [len(list(spans_of(read_otlp_jsonl(o, Signal.TRACES)))) for o in outs]
        assert all(n > 0 for n in per_worker), f"one worker took every connection: {per_worker}"

        # the supervisor's metrics: every worker's, labelled by worker
        assert col.metric_value("otelcol_receiver_accepted_spans_total") == 24
        for i in range(2):
            assert col.metric_value("otelcol_receiver_accepted_spans_total", worker=str(i)) == per_worker[i]
            assert col.metric_value("otelcol_supervisor_worker_up", worker=str(i)) == 1

        # kill one worker: it is restarted under the same index, and the collector is healthy again
        victim = ws[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        wait_for(lambda: col.metric_value("otelcol_supervisor_worker_restarts_total") == 1, what="restart counted")
        wait_for(lambda: len(workers_of(col)) == 2 and victim.pid not in [p.pid for p in workers_of(col)],
                 what="worker replaced")
        wait_for(lambda: http_get(f"http://127.0.0.1:{col.health_port}/")[0] == 200, what="healthy again")
        status = json.loads(http_get(f"http://127.0.0.1:{col.health_port}/status")[1])
        assert sum(w["restarts"] for w in status["workers"].values()) == 1
        assert all(w["healthy"] for w in status["workers"].values())
        for w in workers_of(col):
            assert listeners(w.pid, http_port)
        base = col.metric_value("otelcol_receiver_accepted_spans_total")  # the new worker counts from 0
        send_spans(http_port, 4)
        wait_for(lambda: col.metric_value("otelcol_receiver_accepted_spans_total") == base + 4,
                 what="accepting again")
    finally:
        children = workers_of(col) if col.proc and col.proc.poll() is None else []
        rc = col.stop()
    assert rc == 0
    for c in children:
        assert not c.is_running() or c.status() == psutil.STATUS_ZOMBIE


def test_merge_metrics_labels_every_sample_with_its_worker() -> None:
    a = '# HELP x_total d\n# TYPE x_total counter\nx_total{exporter="f"} 3.0\n# TYPE g gauge\ng 1.0\n'
    b = '# HELP x_total d\n# TYPE x_total counter\nx_total{exporter="f"} 4.0\n'
    text = merge_metrics([("0", a), ("1", b), ("2", "")]).decode()
    assert 'x_total{exporter="f",worker="0"} 3.0' in text
    assert 'x_total{exporter="f",worker="1"} 4.0' in text
    assert 'g{worker="0"} 1.0' in text
    assert text.count("# TYPE x_total counter") == 1


async def test_file_storage_gives_each_worker_index_its_own_files(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from collector.component import ComponentID, CreateSettings, Kind
    from collector.extensions.file_storage import FileStorage, FileStorageConfig

    def storage() -> FileStorage:
        return FileStorage(CreateSettings(ComponentID("file_storage"), Kind.EXTENSION),
                           FileStorageConfig(directory=str(tmp_path / "q")))

    monkeypatch.delenv("LLM_COLLECTOR_WORKER", raising=False)
    single = storage().path_for("exporter", "otlp")
    paths = {}
    for i in ("0", "1", "0"):
        monkeypatch.setenv("LLM_COLLECTOR_WORKER", i)
        fs = storage()
        await fs.start()
        paths.setdefault(i, set()).add(fs.path_for("exporter", "otlp"))
    assert single == str(tmp_path / "q" / "exporter_otlp.sqlite")
    assert paths["0"] == {str(tmp_path / "q" / "worker-0" / "exporter_otlp.sqlite")}  # a successor: same file
    assert paths["1"] == {str(tmp_path / "q" / "worker-1" / "exporter_otlp.sqlite")}
    assert (tmp_path / "q" / "worker-1").is_dir()


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    port = free_port()
    col = CollectorProcess({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "exporters": {"debug": {}},
        "service": {"workers": 2, "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }, workdir=tmp_path).start()
    ws = workers_of(col)
    assert len(ws) == 2
    col.kill()  # SIGKILL: no chance to stop the workers itself
    _gone, alive = psutil.wait_procs(ws, timeout=15)  # the kernel sends them SIGTERM (parent-death signal)
    assert not alive, "orphaned workers keep the ports"
