"""Connector `routing`: sends data to different pipelines by an attribute or a client metadata value.

``{attribute: tenant.id | from_context: metadata.x-team, table: [{value, pipelines}], default_pipelines}``.
With ``attribute``, each resource is routed by its resource attribute; for spans and log records whose
resource lacks it, by the item's own attribute (LiteLLM and most SDKs put ``tenant.id`` on the span), so one
request may be split into several, one per destination pipeline. With ``from_context`` the whole request goes
by the client's metadata (the receiver's ``include_metadata: true``). Data that matches no row goes to
``default_pipelines`` (dropped, and counted, when there are none). A request that goes to one pipeline only
is forwarded as is, without a copy.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter
from pydantic import Field, model_validator

from collector import genai
from collector import telemetry as tm
from collector.component import Consumer, CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.errors import ConfigError
from collector.pdata import REQUEST_TYPES, Batch, Signal

__all__ = ["RoutingConfig", "RoutingConnector"]

unrouted = Counter("llm_collector_routing_unrouted_items", "Items that matched no route and had no default.",
                   ["connector", "otel_signal"], registry=tm.REGISTRY)

_LAYOUT = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", None),
}


class Route(StrictModel):
    value: str
    pipelines: list[str] = Field(min_length=1)


class RoutingConfig(StrictModel):
    attribute: str | None = None
    from_context: str | None = None
    table: list[Route] = Field(min_length=1)
    default_pipelines: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> RoutingConfig:
        if (self.attribute is None) == (self.from_context is None):
            raise ValueError("set exactly one of attribute or from_context")
        return self

    def check_output_pipelines(self, path: str, outputs: list[str]) -> list[str]:
        """Every pipeline named must list this connector as a receiver (called by config validation)."""
        errors = []
        for i, r in enumerate(self.table):
            for p in r.pipelines:
                if p not in outputs:
                    errors.append(f"{path}::table::{i}::pipelines: pipeline {p!r} does not list the connector "
                                  f"as a receiver")
        for p in self.default_pipelines:
            if p not in outputs:
                errors.append(f"{path}::default_pipelines: pipeline {p!r} does not list the connector as a receiver")
        return errors


class RoutingConnector:
    def __init__(self, settings: CreateSettings, config: RoutingConfig) -> None:
        self.settings = settings
        self.config = config
        self.log = settings.logger
        known = dict(settings.pipelines)
        errors = config.check_output_pipelines(f"connectors::{settings.id}", list(known))
        if errors:
            raise ConfigError(errors)
        # per signal: a pipeline only gets data of its own signal (traces routed to traces/* pipelines)
        sig_of = {p: p.split("/", 1)[0] for p in known}
        self.tables: dict[Signal, dict[str, tuple[str, ...]]] = {}
        self.defaults: dict[Signal, tuple[str, ...]] = {}
        for sg in Signal:
            t: dict[str, tuple[str, ...]] = {}
            for r in config.table:  # first row wins, as the Collector's match_once
                mine = tuple(p for p in r.pipelines if sig_of.get(p) == sg.value)
                if mine:  # a row naming only other signals' pipelines leaves this signal to the default
                    t.setdefault(r.value, mine)
            self.tables[sg] = t
            self.defaults[sg] = tuple(p for p in config.default_pipelines if sig_of.get(p) == sg.value)
        self.pipelines: dict[str, Consumer] = known
        ctx = config.from_context or ""
        self.ctx_key = ctx.removeprefix("metadata.").lower()
        self.attr = config.attribute

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _dest(self, value: Any, signal: Signal) -> tuple[str, ...]:
        if value is None:
            return self.defaults[signal]
        if isinstance(value, bool):
            value = "true" if value else "false"
        return self.tables[signal].get(str(value), self.defaults[signal])

    async def consume(self, batch: Batch) -> None:
        if self.attr is None:
            md = batch.metadata
            v = md.get(self.ctx_key)
            if v is None:
                v = next((x for k, x in md.items() if k.lower() == self.ctx_key), None)
            await self._send_whole(batch, self._dest(v, batch.signal))
            return
        parts = self._split(batch)
        if len(parts) == 1:
            dest, _ = next(iter(parts.items()))
            await self._send_whole(batch, dest)
            return
        # one request per pipeline, with the parts routed to it
        per_pipe: dict[str, list[tuple[Any, Any, list[Any] | None]]] = {}
        for dest, items in parts.items():
            if not dest:
                self._count_unrouted(batch.signal, items)
                continue
            for p in dest:
                per_pipe.setdefault(p, []).extend(items)
        sends = [self.pipelines[p].consume(self._build(batch, items)) for p, items in per_pipe.items()]
        await _gather(sends)

    async def _send_whole(self, batch: Batch, dest: tuple[str, ...]) -> None:
        if not dest:
            unrouted.labels(str(self.settings.id), batch.signal.value).inc(batch.item_count())
            return
        if len(dest) == 1:
            await self.pipelines[dest[0]].consume(batch)
            return
        batches = [batch.copy() for _ in dest[:-1]] + [batch]
        await _gather([self.pipelines[p].consume(b) for p, b in zip(dest, batches)])

    def _split(self, batch: Batch) -> dict[tuple[str, ...], list[tuple[Any, Any, list[Any] | None]]]:
        """Destination -> parts; a part is (resource message, scope message or None, items or None);
        None means 'all of it'."""
        res_f, scope_f, items_f = _LAYOUT[batch.signal]
        key = self.attr
        sig = batch.signal
        parts: dict[tuple[str, ...], list[tuple[Any, Any, list[Any] | None]]] = {}
        for res in getattr(batch.request, res_f):
            v = _attr(res.resource.attributes, key)
            if v is not None or items_f is None:
                parts.setdefault(self._dest(v, sig), []).append((res, None, None))
                continue
            for sc in getattr(res, scope_f):
                by: dict[tuple[str, ...], list[Any]] = {}
                for it in getattr(sc, items_f):
                    by.setdefault(self._dest(_attr(it.attributes, key), sig), []).append(it)
                for dest, its in by.items():
                    parts.setdefault(dest, []).append((res, sc, its))
        return parts

    def _build(self, batch: Batch, parts: list[tuple[Any, Any, list[Any] | None]]) -> Batch:
        res_f, scope_f, items_f = _LAYOUT[batch.signal]
        req = REQUEST_TYPES[batch.signal]()
        out = getattr(req, res_f)
        last_src: Any = None
        cur: Any = None
        for res, sc, items in parts:
            if sc is None:
                out.add().CopyFrom(res)
                last_src = None
                continue
            if res is not last_src:
                cur = out.add()
                cur.resource.CopyFrom(res.resource)
                cur.schema_url = res.schema_url
                last_src = res
            nsc = getattr(cur, scope_f).add()
            nsc.scope.CopyFrom(sc.scope)
            nsc.schema_url = sc.schema_url
            dst = getattr(nsc, items_f)  # type: ignore[arg-type]
            for it in items or ():
                dst.add().CopyFrom(it)
        return Batch(batch.signal, req, metadata=batch.metadata, received_ns=batch.received_ns)

    def _count_unrouted(self, signal: Signal, parts: list[tuple[Any, Any, list[Any] | None]]) -> None:
        n = 0
        _res_f, scope_f, items_f = _LAYOUT[signal]
        for res, _sc, items in parts:
            if items is not None:
                n += len(items)
            elif items_f is not None:
                n += sum(len(getattr(s, items_f)) for s in getattr(res, scope_f))
            else:
                n += 1
        unrouted.labels(str(self.settings.id), signal.value).inc(n)


def _attr(kvs: Any, key: str | None) -> Any:
    for kv in kvs:
        if kv.key == key:
            v = genai.value_of(kv.value)
            return None if v == "" else v
    return None


async def _gather(coros: list[Any]) -> None:
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


FACTORIES = [
    Factory("routing", Kind.CONNECTOR, RoutingConfig, RoutingConnector,
            signals=frozenset(Signal), out_signals=frozenset(Signal),
            description="routes data to pipelines by a resource/span attribute or client metadata",
            example={"attribute": "tenant.id", "table": [{"value": "acme", "pipelines": ["traces/acme"]}]}),
]
