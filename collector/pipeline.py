"""The pipelines graph: builds every component from a validated config and wires them together.

receivers -> processors (a fresh instance per pipeline) -> fan-out -> exporters (one instance shared by every
pipeline that names it). Connectors are exporters of one pipeline and receivers of others. Start order:
extensions, exporters, connectors, processors, receivers; shutdown in reverse (STYLE.md, lifecycle).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from collector.component import ComponentID, Consumer, CreateSettings, Kind
from collector.config import CollectorConfig
from collector.errors import ConfigError
from collector.pdata import Batch, Signal

__all__ = ["Fanout", "Graph", "Host", "ReleaseAfterExport"]

log = logging.getLogger(__name__)


class Fanout:
    """Sends one batch to several consumers concurrently; raises the first error after all have run.

    With ``copy=True`` (fan-out to pipelines, whose processors may change the batch) every consumer but the
    last gets its own copy. Fan-out to exporters does not copy: after it, a batch is read-only.
    """

    def __init__(self, consumers: Sequence[Consumer], copy: bool = False) -> None:
        self.consumers = list(consumers)
        self.copy = copy

    async def consume(self, batch: Batch) -> None:
        cs = self.consumers
        if len(cs) == 1:
            await cs[0].consume(batch)
            return
        batches = [batch.copy() for _ in cs[:-1]] + [batch] if self.copy else [batch] * len(cs)
        results = await asyncio.gather(*(c.consume(b) for c, b in zip(cs, batches)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r


def fanout(consumers: Sequence[Consumer], copy: bool = False) -> Consumer:
    return consumers[0] if len(consumers) == 1 else Fanout(consumers, copy)


class ReleaseAfterExport:
    """The end of a pipeline whose outputs are all exporters: once every exporter has taken the batch (queued
    or sent it), the batch is read-only, so its parsed form is dropped while the bytes wait in the queues
    (``Batch.release_request``: ~1.7 MB less per queued 1 MB request). An exporter that needs the parsed
    request parses it again on first use (once per batch, shared by the exporters)."""

    def __init__(self, inner: Consumer) -> None:
        self.inner = inner

    async def consume(self, batch: Batch) -> None:
        try:
            await self.inner.consume(batch)
        finally:
            batch.release_request()


class Host:
    """What components may ask of the running collector: extensions, other components' status."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.extensions: dict[str, Any] = {}
        self.exporters: dict[str, Any] = {}
        self.shutdown_deadline: float | None = None
        self.started = False
        self.failed: list[str] = []
        self.reuse_port = False  # set by collector/workers.py: receivers bind with SO_REUSEPORT

    def extension(self, cid: str) -> Any:
        ext = self.extensions.get(cid)
        if ext is None:
            raise ConfigError([f'extension "{cid}" is not configured or not enabled in service::extensions'])
        return ext


class Graph:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.host = Host(config)
        self.extensions: list[tuple[str, Any]] = []
        self.exporters: dict[str, Any] = {}
        self.connectors: dict[str, Consumer] = {}
        self.processors: list[tuple[str, Any]] = []
        self.receivers: dict[str, Any] = {}
        self._entries: dict[str, Consumer] = {}
        self._building: set[str] = set()
        self._conn_in: dict[str, Consumer] = {}
        self._build()

    # -- building ---------------------------------------------------------------------------------------
    def _settings(self, kind: Kind, cid: str, **kw: Any) -> CreateSettings:
        return CreateSettings(id=ComponentID.parse(cid), kind=kind, host=self.host, **kw)

    def _is_connector(self, name: str) -> bool:
        return ComponentID.parse(name) in self.config.components[Kind.CONNECTOR]

    def _build(self) -> None:
        cfg = self.config
        for ext in cfg.service.extensions:
            cc = cfg.get(Kind.EXTENSION, ComponentID.parse(ext))
            comp = cc.factory.create(self._settings(Kind.EXTENSION, ext), cc.config)
            self.extensions.append((ext, comp))
            self.host.extensions[ext] = comp
            self.host.extensions.setdefault(cc.id.type, comp)
        pipelines = cfg.pipelines()
        # exporters: one instance per id, told which signals it serves
        exp_signals: dict[str, set[Signal]] = {}
        for _pid, (sig, p) in pipelines.items():
            for e in p.exporters:
                if not self._is_connector(e):
                    exp_signals.setdefault(e, set()).add(sig)
        for e, sigs in exp_signals.items():
            cc = cfg.get(Kind.EXPORTER, ComponentID.parse(e))
            s = self._settings(Kind.EXPORTER, e, signals=frozenset(sigs))
            comp = cc.factory.create(s, cc.config)
            self.exporters[e] = comp
            self.host.exporters[e] = comp
        for pid in pipelines:
            self._entry(pid)
        # receivers: per signal, the fan-out over the pipelines that list them
        rec_pipes: dict[str, dict[Signal, list[str]]] = {}
        for pid, (sig, p) in pipelines.items():
            for r in p.receivers:
                if not self._is_connector(r):
                    rec_pipes.setdefault(r, {}).setdefault(sig, []).append(pid)
        for r, by_sig in rec_pipes.items():
            cc = cfg.get(Kind.RECEIVER, ComponentID.parse(r))
            consumers = {sg: fanout([self._entries[p] for p in pids], copy=True) for sg, pids in by_sig.items()}
            self.receivers[r] = cc.factory.create(self._settings(Kind.RECEIVER, r, consumers=consumers), cc.config)

    def _entry(self, pid: str) -> Consumer:
        """The first consumer of a pipeline (its first processor, or the fan-out to its exporters)."""
        if pid in self._entries:
            return self._entries[pid]
        if pid in self._building:
            raise ConfigError([f"service::pipelines::{pid}: pipelines form a cycle through connectors"])
        self._building.add(pid)
        sig, p = self.config.pipelines()[pid]
        outs: list[Consumer] = []
        for e in p.exporters:
            outs.append(self._connector(e) if self._is_connector(e) else self.exporters[e])
        nxt = fanout(outs)
        if not any(self._is_connector(e) for e in p.exporters):
            # connectors may pass the same batch on to processors that keep references into it
            nxt = ReleaseAfterExport(nxt)
        for name in reversed(p.processors):
            cc = self.config.get(Kind.PROCESSOR, ComponentID.parse(name))
            s = self._settings(Kind.PROCESSOR, name, signal=sig, pipeline=pid, next=nxt)
            comp: Consumer = cc.factory.create(s, cc.config)
            self.processors.append((f"{pid}/{name}", comp))
            nxt = comp
        self._building.discard(pid)
        self._entries[pid] = nxt
        return nxt

    def _connector(self, name: str) -> Consumer:
        if name in self.connectors:
            return self.connectors[name]
        pipelines = self.config.pipelines()
        out_pids = [pid for pid, (_s, p) in pipelines.items() if name in p.receivers]
        by_sig: dict[Signal, list[Consumer]] = {}
        per_pipe: dict[str, Consumer] = {}
        for pid in out_pids:
            entry = self._entry(pid)
            per_pipe[pid] = entry
            by_sig.setdefault(pipelines[pid][0], []).append(entry)
        consumers = {sg: fanout(cs, copy=True) for sg, cs in by_sig.items()}
        cc = self.config.get(Kind.CONNECTOR, ComponentID.parse(name))
        comp: Consumer = cc.factory.create(
            self._settings(Kind.CONNECTOR, name, consumers=consumers, pipelines=per_pipe), cc.config
        )
        self.connectors[name] = comp
        return comp

    # -- lifecycle --------------------------------------------------------------------------------------
    def _ordered(self) -> list[tuple[str, str, Any]]:
        out: list[tuple[str, str, Any]] = [("extension", n, c) for n, c in self.extensions]
        out += [("exporter", n, c) for n, c in self.exporters.items()]
        out += [("connector", n, c) for n, c in self.connectors.items()]
        # processors were appended last-to-first per pipeline: start them downstream first
        out += [("processor", n, c) for n, c in self.processors]
        out += [("receiver", n, c) for n, c in self.receivers.items()]
        return out

    async def start(self) -> None:
        for kind, name, comp in self._ordered():
            try:
                await comp.start()
            except Exception as e:
                self.host.failed.append(f"{kind} {name}: {e}")
                raise RuntimeError(f"{kind} {name} failed to start: {e}") from e
        self.host.started = True

    async def shutdown(self, timeout: float) -> None:
        self.host.shutdown_deadline = time.monotonic() + timeout
        self.host.started = False
        for kind, name, comp in reversed(self._ordered()):
            try:
                await comp.shutdown()
            except Exception:
                log.exception("%s %s failed to shut down", kind, name)
