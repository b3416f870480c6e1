"""A real ``nats-server -js`` for tests: a free port on 127.0.0.1 and a temporary store directory."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import free_port, wait_port

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists()
                                            else None)
    if found is None:
        raise RuntimeError("nats-server is not installed (scripts/test.sh installs Debian's nats-server)")
    return found


class NatsServer:
    def __init__(self, store: str | Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store = Path(store or tempfile.mkdtemp(prefix="nats-js-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
