"""``service.workers: N``: N worker processes share the OTLP ports (SO_REUSEPORT), under one supervisor.

The supervisor (the process ``llm-collector run`` started) starts worker ``i`` as
``python -m collector.workers --worker i --config ...`` with ``LLM_COLLECTOR_WORKER=i`` in its environment:

- every receiver binds its ports with SO_REUSEPORT, so the kernel spreads connections over the workers;
- ``file_storage`` puts worker ``i``'s files in ``<directory>/worker-<i>``, so each worker has its own queues,
  and a worker restarted with the same index picks up the queue its predecessor left (``${env:LLM_COLLECTOR_WORKER}``
  can also be used in the config, e.g. in a file exporter's path);
- the worker's health check and metrics move to private ports on 127.0.0.1; the supervisor serves the configured
  health endpoint (200 when every worker answers 200; ``/status`` has each worker's status) and the configured
  metrics address (every worker's metrics with a ``worker`` label, plus ``otelcol_supervisor_*``).

A worker that dies is restarted (with a growing delay if it keeps dying at once). SIGTERM or SIGINT to the
supervisor stops every worker gracefully (each drains as a single collector does) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from typing import Any

import yaml

from collector.component import ComponentID, Kind
from collector.config import CollectorConfig

__all__ = ["WORKER_ENV", "Supervisor", "supervise"]

WORKER_ENV = "LLM_COLLECTOR_WORKER"
log = logging.getLogger("llm_collector.supervisor")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


class _Worker:
    def __init__(self, index: int, health_port: int | None, metrics_port: int | None, override: str) -> None:
        self.index = index
        self.health_port = health_port
        self.metrics_port = metrics_port
        self.override = override
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at = 0.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if the supervisor dies without stopping it (e.g. SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


class Supervisor:
    def __init__(self, config_paths: list[str], cfg: CollectorConfig) -> None:
        self.config_paths = list(config_paths)
        self.cfg = cfg
        self.n = cfg.service.workers
        self.stopping = asyncio.Event()
        self._tmp = tempfile.mkdtemp(prefix="llm-collector-workers-")
        self._runners: list[Any] = []
        tel = cfg.service.telemetry.metrics
        self.metrics_address = tel.address if tel.level != "none" and tel.address else None
        self.health: list[tuple[str, str]] = []  # (endpoint, path) of every enabled health_check
        for ext in cfg.service.extensions:
            cid = ComponentID.parse(ext)
            if cid.type == "health_check":
                c = cfg.get(Kind.EXTENSION, cid).config
                self.health.append((c.endpoint, c.path))
        self.workers = [self._make_worker(i) for i in range(self.n)]

    def _make_worker(self, i: int) -> _Worker:
        hp = _free_port() if self.health else None
        mp = _free_port() if self.metrics_address else None
        over: dict[str, Any] = {"service": {"workers": 1}}
        if mp is not None:
            over["service"]["telemetry"] = {"metrics": {"address": f"127.0.0.1:{mp}"}}
        for ext in self.cfg.service.extensions:
            if ComponentID.parse(ext).type == "health_check":
                over.setdefault("extensions", {})[ext] = {"endpoint": f"127.0.0.1:{hp}"}
        path = os.path.join(self._tmp, f"worker-{i}.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(over, fh)
        return _Worker(i, hp, mp, path)

    # -- workers ------------------------------------------------------------------------------------------
    async def _spawn(self, w: _Worker) -> asyncio.subprocess.Process:
        args = [sys.executable, "-m", "collector.workers", "--worker", str(w.index)]
        for p in [*self.config_paths, w.override]:
            args += ["--config", p]
        env = {**os.environ, WORKER_ENV: str(w.index)}
        w.started_at = time.monotonic()
        proc = await asyncio.create_subprocess_exec(*args, env=env, preexec_fn=_die_with_parent)
        w.proc = proc
        log.info("worker %d started (pid %d)", w.index, proc.pid)
        return proc

    async def _keep(self, w: _Worker) -> None:
        delay = 0.2
        while not self.stopping.is_set():
            proc = await self._spawn(w)
            rc = await proc.wait()
            if self.stopping.is_set():
                break
            w.restarts += 1
            ran = time.monotonic() - w.started_at
            delay = 0.2 if ran > 10 else min(delay * 2, 10.0)
            log.warning("worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                        w.index, proc.pid, rc, ran, delay)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _stop_workers(self) -> None:
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in live:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not live:
            return
        timeout = self.cfg.service.shutdown_timeout + 10.0
        _done, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in live], timeout=timeout)
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                log.warning("worker %d did not stop in %.0fs; killing it", w.index, timeout)
                w.proc.kill()
        if pending:
            await asyncio.wait(pending, timeout=5)

    # -- what the supervisor serves ------------------------------------------------------------------------
    async def _get(self, session: Any, port: int | None, path: str) -> tuple[int, str]:
        if port is None:
            return 0, ""
        try:
            async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                return r.status, await r.text()
        except Exception as e:  # noqa: BLE001 - a worker being restarted
            return 0, str(e)

    async def _health(self, path: str) -> Any:
        import aiohttp
        from aiohttp import web

        async def handle(_req: Any) -> Any:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                got = await asyncio.gather(*(self._get(s, w.health_port, path) for w in self.workers))
            ok = all(st == 200 for st, _ in got) and not self.stopping.is_set()
            body = {"status": "Server available" if ok else "Server not available",
                    "workers": {str(w.index): st for w, (st, _) in zip(self.workers, got)}}
            return web.json_response(body, status=200 if ok else 503)

        async def status(_req: Any) -> Any:
            status_path = path.rstrip("/") + "/status"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
                got = await asyncio.gather(*(self._get(s, w.health_port, status_path) for w in self.workers))
            out: dict[str, Any] = {}
            for w, (st, text) in zip(self.workers, got):
                try:
                    out[str(w.index)] = json.loads(text) if st == 200 else {"error": text or f"HTTP {st}"}
                except ValueError:
                    out[str(w.index)] = {"error": text}
                out[str(w.index)]["restarts"] = w.restarts
            healthy = all(v.get("healthy") for v in out.values())
            return web.json_response({"healthy": healthy, "workers": out})

        return handle, status

    async def _metrics(self, _req: Any) -> Any:
        import aiohttp
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            got = await asyncio.gather(*(self._get(s, w.metrics_port, "/metrics") for w in self.workers))
        body = merge_metrics([(str(w.index), text if st == 200 else "") for w, (st, text) in zip(self.workers, got)],
                             self._own_metrics())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _own_metrics(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        restarts = CounterMetricFamily("otelcol_supervisor_worker_restarts",
                                       "Times a worker process was restarted after it exited", labels=["worker"])
        up = GaugeMetricFamily("otelcol_supervisor_worker_up", "1 when the worker process is running",
                               labels=["worker"])
        for w in self.workers:
            restarts.add_metric([str(w.index)], w.restarts)
            up.add_metric([str(w.index)], 1 if w.proc is not None and w.proc.returncode is None else 0)
        return [restarts, up]

    async def _serve(self) -> None:
        from aiohttp import web

        sites: dict[str, Any] = {}
        for endpoint, path in self.health:
            app = sites.setdefault(endpoint, web.Application())
            handle, status = await self._health(path)
            app.router.add_get(path, handle)
            if path.rstrip("/") + "/status" != path:
                app.router.add_get(path.rstrip("/") + "/status", status)
        if self.metrics_address:
            app = sites.setdefault(self.metrics_address, web.Application())
            app.router.add_get("/metrics", self._metrics)
        for endpoint, app in sites.items():
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            host, port = _split(endpoint)
            await web.TCPSite(runner, host, port).start()
            self._runners.append(runner)

    # -- main ----------------------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stopping.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self._serve()
        except OSError as e:
            log.error("failed to start: %s", e)
            await self._cleanup()
            return 1
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        log.info("supervising %d workers", self.n)
        await self.stopping.wait()
        log.info("stopping %d workers", self.n)
        await self._stop_workers()
        await asyncio.gather(*keepers, return_exceptions=True)
        await self._cleanup()
        log.info("stopped")
        return 0

    async def _cleanup(self) -> None:
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()
        for w in self.workers:
            try:
                os.remove(w.override)
            except OSError:
                pass
        try:
            os.rmdir(self._tmp)
        except OSError:
            pass


def merge_metrics(per_worker: list[tuple[str, str]], extra: list[Any] = ()) -> bytes:  # type: ignore[assignment]
    """Prometheus text of several workers -> one exposition, each sample with a ``worker`` label."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, Metric] = {}
    for worker, text in per_worker:
        if not text:
            continue
        for fam in text_string_to_metric_families(text):
            out = families.get(fam.name)
            if out is None:
                out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                out.samples.append(Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar))

    class _Merged:
        def collect(self) -> list[Any]:
            return [*families.values(), *extra]

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Merged())
    return generate_latest(reg)


def supervise(config_paths: list[str], cfg: CollectorConfig) -> int:
    """Run ``cfg.service.workers`` workers under a supervisor until SIGTERM/SIGINT; returns the exit code."""
    return asyncio.run(Supervisor(config_paths, cfg).run())


# -- the worker process --------------------------------------------------------------------------------------
async def _run_worker(cfg: CollectorConfig) -> int:
    from collector.service import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    svc = Service(cfg)
    svc.graph.host.reuse_port = True  # receivers bind with SO_REUSEPORT (receivers/otlp.py)
    try:
        await svc.start()
    except Exception as e:  # noqa: BLE001
        log.error("worker failed to start: %s", e)
        await svc.shutdown()
        return 1
    log.info("worker %s started (pid %d)", os.environ.get(WORKER_ENV, "?"), os.getpid())
    await stop.wait()
    grace = cfg.service.shutdown_timeout + 10.0

    def _overdue() -> None:  # a component that does not finish shutting down must not keep the port
        log.error("worker shutdown took over %.0fs; exiting now", grace)
        os._exit(1)

    loop.call_later(grace, _overdue)
    await svc.shutdown()
    return 0


def worker_main(argv: list[str] | None = None) -> int:
    from collector.cli import _load
    from collector.telemetry import setup_logging

    p = argparse.ArgumentParser(prog="python -m collector.workers")
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--config", action="append", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault(WORKER_ENV, str(args.worker))
    cfg = _load(args.config)
    if cfg is None:
        return 1
    t = cfg.service.telemetry.logs
    setup_logging(t.level, t.encoding)
    return asyncio.run(_run_worker(cfg))


if __name__ == "__main__":
    raise SystemExit(worker_main())
