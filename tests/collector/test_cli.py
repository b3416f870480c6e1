"""The command line and process lifecycle: `components`, SIGTERM / SIGINT exit 0 within shutdown_timeout, a port
already in use is a clear error with exit code 1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, CollectorProcess, free_port, http_get

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, not an install elsewhere


def test_components_lists_every_type() -> None:
    r = subprocess.run([sys.executable, "-m", "collector", "components"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    sections: dict[str, list[str]] = {}
    current = ""
    for line in r.stdout.splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
            sections[current] = []
        elif line.strip():
            sections[current].append(line.strip())
    assert set(sections) == {"receivers", "processors", "exporters", "connectors", "extensions"}
    rows = {row.split()[0]: row for row in sections["exporters"]}
    for t in ("otlp", "otlphttp", "file", "debug"):
        assert "logs, metrics, traces" in rows[t]
    assert any(row.split()[0] == "otlp" for row in sections["receivers"])
    assert any(row.split()[0] == "health_check" for row in sections["extensions"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    hp = free_port()
    cfg = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{hp}"}}}},
           "exporters": {"file": {"path": str(tmp_path / "out.jsonl")}},
           "service": {"shutdown_timeout": "2s",
                       "pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["file"]}}}}
    col = CollectorProcess(cfg, workdir=tmp_path).start()
    assert http_get(f"http://127.0.0.1:{col.health_port}/")[0] == 200
    assert col.proc is not None
    t0 = time.monotonic()
    col.proc.send_signal(sig)
    rc = col.proc.wait(timeout=15)
    col.stop()
    assert rc == 0, col.logs()
    assert time.monotonic() - t0 < 2 + 10  # shutdown_timeout plus a generous margin for a loaded machine
    assert "stopped" in col.logs()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", hp), timeout=1).close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_port_in_use(tmp_path: Path, protocol: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = {"receivers": {"otlp": {"protocols": {protocol: {"endpoint": f"127.0.0.1:{port}"}}}},
               "exporters": {"debug": {}},
               "service": {"telemetry": {"metrics": {"level": "none"}},
                           "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = subprocess.run([sys.executable, "-m", "collector", "run", "--config", str(path)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=30, env=ENV)
    assert r.returncode == 1
    assert f"receiver otlp failed to start: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_invalid_config_run_exits_1_before_opening_ports(tmp_path: Path) -> None:
    hp = free_port()
    cfg = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{hp}"}}}},
           "exporters": {"file/archive": {}},
           "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file/archive"]}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "collector", "run", "--config", str(path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=30, env=ENV)
    assert r.returncode == 1
    assert "exporters::file/archive::path: field required" in r.stderr
