"""Shared test helpers: free ports, a collector running as a subprocess, OTLP output readers.

Tests import these (``from tests.helpers import CollectorProcess``); nothing here fakes a protocol.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from collector.pdata import REQUEST_TYPES, Signal, from_otlp_json

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open in {timeout}s")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class CollectorProcess:
    """``llm-collector run`` in a subprocess with a given config (dict or YAML text).

    A ``health_check`` extension and the metrics address are put on free ports unless the config sets them;
    ``start()`` waits until the health check answers 200. ``stop()`` sends SIGTERM, ``kill()`` SIGKILL.
    """

    module = "collector"
    """The module run with ``python -m`` (tests may use a launcher that registers test components)."""

    def __init__(self, config: dict[str, Any] | str, workdir: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        cfg = yaml.safe_load(config) if isinstance(config, str) else json.loads(json.dumps(config))
        self.health_port = free_port()
        self.metrics_port = free_port()
        cfg.setdefault("extensions", {}).setdefault("health_check", {"endpoint": f"127.0.0.1:{self.health_port}"})
        hc = cfg["extensions"]["health_check"] or {}
        self.health_port = int(str(hc.get("endpoint", f"x:{self.health_port}")).rsplit(":", 1)[1])
        svc = cfg.setdefault("service", {})
        exts = svc.setdefault("extensions", [])
        if "health_check" not in exts:
            exts.append("health_check")
        tel = svc.setdefault("telemetry", {}).setdefault("metrics", {})
        tel.setdefault("address", f"127.0.0.1:{self.metrics_port}")
        self.metrics_port = int(str(tel["address"]).rsplit(":", 1)[1])
        self.config = cfg
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmcol-"))
        self.config_path = self.workdir / f"config-{os.getpid()}-{id(self)}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, **(env or {})}
        # run the code of this checkout, whatever an editable install elsewhere points at
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH", "")]))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"collector-{id(self)}.log"

    def start(self, timeout: float = 20.0) -> CollectorProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run", "--config", str(self.config_path)],
            cwd=self.workdir, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                status, _ = http_get(f"http://127.0.0.1:{self.health_port}/", timeout=1)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"collector not healthy after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")[1]

    def metric_value(self, name: str, **labels: str) -> float:
        """Sum of the samples of one metric whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_otlp_jsonl(path: str | Path, signal: Signal) -> list[Any]:
    """The export requests written by the file exporter (one OTLP/JSON request per line)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        if line.strip():
            out.append(from_otlp_json(signal, line))
    return out


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s")


def spans_of(requests: list[Any]) -> Iterator[Any]:
    for req in requests:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                yield from ss.spans


__all__ = [
    "REQUEST_TYPES",
    "ROOT",
    "CollectorProcess",
    "free_port",
    "http_get",
    "read_otlp_jsonl",
    "spans_of",
    "wait_for",
    "wait_port",
]
