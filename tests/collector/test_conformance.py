"""The conformance test over the registry (STYLE.md habit 9): every registered factory, whoever wrote it.

For each factory (``registry.all()``, so components added later are covered without editing this file):

* its config (``Factory.example``, or the default config when there is no example) validates, and the
  dumped config validates again to the same value (defaults are themselves valid);
* the component is created; ``shutdown()`` before ``start()`` is safe, and safe twice;
* it is started, fed and shut down **only when that needs no network**. The rule: a string value that looks
  like a remote address (``scheme://...`` or ``host:port``) or a credential key (``api_key``, ``token``,
  ``password``, ``secret``...) marks a component as needing a backend. For receivers and extensions the
  ``endpoint`` keys are listening addresses: they are moved to ``127.0.0.1:<free port>`` first and do not
  count. Components that need a backend are created, validated and shut down (before start, twice), but not
  started: their own tests start them against a real local server.
* fed: processors, connectors and exporters get one small batch of every signal they take; nothing may raise.
  Exporters are shut down with a 3 s deadline (their queue drains within it). ``shutdown()`` is called twice.
The test runs in a temporary working directory, so relative paths (``./data/...``) land there.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from pydantic import BaseModel

from bench.llm_spans import make_request
from collector.component import ComponentID, CreateSettings, Factory, Kind, Registry, registry
from collector.config import CollectorConfig, ServiceConfig
from collector.pdata import Batch, Signal
from collector.pipeline import Host
from tests.helpers import free_port

# a fresh registry: the shipped components, not the test-only ones other test modules register in the
# shared one (which would make the parameter list depend on which tests were collected first)
ALL = [(kind, name, f) for kind, by_type in Registry().all().items() for name, f in sorted(by_type.items())]
IDS = [f"{kind.singular}/{name}" for kind, name, _f in ALL]

_REMOTE = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|[A-Za-z0-9_.\-\[\]]+:\d{2,5})$")
_SECRET_KEYS = re.compile(r"(^key$|api_?key|token|password|secret|credential|webhook|dsn)", re.IGNORECASE)
_ADDRESS_KEYS = re.compile(r"(endpoint|url|uri|host|site|bucket|region|servers?|address)$", re.IGNORECASE)
_PIPELINE_ID = re.compile(r"^(traces|metrics|logs)(/[A-Za-z0-9_.-]+)?$")


def _config(f: Factory) -> BaseModel:
    raw = dict(f.example) if f.example is not None else {}
    return f.config_model.model_validate(raw)


def _localise(value: Any, listening: bool) -> Any:
    """Move listening ``endpoint`` keys to free local ports (receivers, extensions)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if listening and k == "endpoint" and isinstance(v, str) and _REMOTE.match(v):
                out[k] = f"127.0.0.1:{free_port()}"
            else:
                out[k] = _localise(v, listening)
        return out
    if isinstance(value, list):
        return [_localise(v, listening) for v in value]
    return value


def _needs_backend(value: Any, listening: bool, key: str = "") -> bool:
    if isinstance(value, dict):
        return any(_needs_backend(v, listening, str(k)) for k, v in value.items())
    if isinstance(value, list):
        return any(_needs_backend(v, listening, key) for v in value)
    if isinstance(value, str) and value:
        if _SECRET_KEYS.search(key):
            return True
        if listening and key == "endpoint":
            return False  # moved to a free local port by _localise
        if _ADDRESS_KEYS.search(key):
            return True
        # any address, local ones included: nobody listens there in this test
        return bool(_REMOTE.match(value)) and not value.startswith("file://")
    return False


def _pipeline_ids(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_pipeline_ids(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_pipeline_ids(v) for v in value)) if value else set()
    return {value} if isinstance(value, str) and _PIPELINE_ID.match(value) else set()


class Sink:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)


def _batch(signal: Signal) -> Batch:
    if signal is Signal.TRACES:
        return Batch(signal, make_request(3))
    if signal is Signal.METRICS:
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add()
        m.name = "gen_ai.client.token.usage"
        p = m.sum.data_points.add()
        p.as_int, p.time_unix_nano = 42, time.time_ns()
        m.sum.is_monotonic, m.sum.aggregation_temporality = True, 2
        return Batch(signal, req)
    req2 = ExportLogsServiceRequest()
    rec = req2.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value, rec.time_unix_nano, rec.severity_number = "hello", time.time_ns(), 9
    return Batch(signal, req2)


def _host(tmp_path: Path) -> Host:
    host = Host(CollectorConfig(components={k: {} for k in Kind}, service=ServiceConfig()))
    fs = registry.get(Kind.EXTENSION, "file_storage")
    if fs is not None:
        ext = fs.create(CreateSettings(ComponentID("file_storage"), Kind.EXTENSION),
                        fs.config_model.model_validate({"directory": str(tmp_path / "storage")}))
        host.extensions["file_storage"] = ext
    return host


def _create(kind: Kind, name: str, f: Factory, cfg: BaseModel, host: Host, signal: Signal | None,
            sinks: dict[Signal, Sink]) -> Any:
    cid = ComponentID(name, "conformance")
    if kind is Kind.PROCESSOR:
        assert signal is not None
        s = CreateSettings(cid, kind, signal=signal, pipeline=signal.value, next=sinks[signal], host=host)
    elif kind is Kind.EXPORTER:
        s = CreateSettings(cid, kind, signals=f.signals, host=host)
    elif kind is Kind.CONNECTOR:
        # the pipelines a connector's config names (routing tables) exist, each ending in a sink
        named = _pipeline_ids(cfg.model_dump(mode="json"))
        pipes: dict[str, Any] = {f"{sg.value}/out": sk for sg, sk in sinks.items()}
        pipes.update({pid: sinks[Signal(pid.split("/")[0])] for pid in named})
        s = CreateSettings(cid, kind, consumers=dict(sinks), pipelines=pipes, host=host)
    elif kind is Kind.RECEIVER:
        s = CreateSettings(cid, kind, consumers={sg: sinks[sg] for sg in f.signals}, host=host)
    else:
        s = CreateSettings(cid, kind, host=host)
    return f.create(s, cfg)


@pytest.mark.parametrize(("kind", "name", "factory"), ALL, ids=IDS)
def test_config_validates(kind: Kind, name: str, factory: Factory) -> None:
    cfg = _config(factory)
    again = factory.config_model.model_validate(cfg.model_dump())
    assert again == cfg
    assert factory.type == name and factory.kind is kind
    assert factory.description, "every component says what it does (shown by `llm-collector components`)"
    if kind is Kind.CONNECTOR:
        assert factory.out_signals, "a connector emits at least one signal"
    elif kind is not Kind.EXTENSION:
        assert factory.signals


@pytest.mark.parametrize(("kind", "name", "factory"), ALL, ids=IDS)
async def test_lifecycle(kind: Kind, name: str, factory: Factory, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    listening = kind in (Kind.RECEIVER, Kind.EXTENSION)
    raw = _localise(dict(factory.example) if factory.example is not None else {}, listening)
    cfg = factory.config_model.model_validate(raw)
    dumped = _localise(cfg.model_dump(mode="json"), listening)
    cfg = factory.config_model.model_validate(dumped) if listening else cfg
    local = not _needs_backend(dumped, listening)
    host = _host(tmp_path)
    for ext in host.extensions.values():
        await ext.start()
    signals = sorted(factory.signals or [None], key=str)  # type: ignore[list-item]
    all_sinks = {sg: Sink() for sg in Signal}
    if kind is Kind.PROCESSOR:
        comps = [(sg, _create(kind, name, factory, cfg, host, sg, all_sinks)) for sg in signals]
    else:
        comps = [(None, _create(kind, name, factory, cfg, host, None, all_sinks))]

    # shutdown before start is safe, twice; then a fresh instance for the real run
    for _sg, comp in comps:
        await asyncio.wait_for(comp.shutdown(), 10)
        await asyncio.wait_for(comp.shutdown(), 10)
    if not local:
        return
    if kind is Kind.PROCESSOR:
        comps = [(sg, _create(kind, name, factory, cfg, host, sg, all_sinks)) for sg in signals]
    else:
        comps = [(None, _create(kind, name, factory, cfg, host, None, all_sinks))]

    for _sg, comp in comps:
        await asyncio.wait_for(comp.start(), 10)
    try:
        if kind is Kind.PROCESSOR:
            for sg, comp in comps:
                await asyncio.wait_for(comp.consume(_batch(sg)), 10)
        elif kind in (Kind.EXPORTER, Kind.CONNECTOR):
            comp = comps[0][1]
            for sg in sorted(factory.signals, key=str):
                await asyncio.wait_for(comp.consume(_batch(sg)), 10)
    finally:
        host.shutdown_deadline = time.monotonic() + 3.0
        t0 = time.monotonic()
        for _sg, comp in comps:
            await asyncio.wait_for(comp.shutdown(), 10)
            await asyncio.wait_for(comp.shutdown(), 10)
        assert time.monotonic() - t0 < 8
        for ext in host.extensions.values():
            await ext.shutdown()
    if kind is Kind.EXPORTER and hasattr(comps[0][1], "status_info"):
        info = comps[0][1].status_info()
        assert info["queue_size"] == 0, f"{name}: batches left in the queue after a local send: {info}"


def test_the_network_rule_itself() -> None:
    """The rule above starts the core's local components and leaves network clients alone."""
    def needs(kind: Kind, name: str) -> bool:
        f = registry.get(kind, name)
        assert f is not None
        listening = kind in (Kind.RECEIVER, Kind.EXTENSION)
        dumped = _localise(_config(f).model_dump(mode="json"), listening)
        return _needs_backend(dumped, listening)

    assert not needs(Kind.RECEIVER, "otlp")
    assert not needs(Kind.EXPORTER, "file") and not needs(Kind.EXPORTER, "debug")
    assert not needs(Kind.EXTENSION, "health_check") and not needs(Kind.EXTENSION, "file_storage")
    assert needs(Kind.EXPORTER, "otlp") and needs(Kind.EXPORTER, "otlphttp")
    assert _needs_backend({"auth": {"api_key": "x"}}, False)
