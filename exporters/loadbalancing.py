"""Exporter `loadbalancing`: routes spans, log records and metrics to a set of OTLP backends (a gateway tier)
by trace id, service or attributes, with consistent hashing, as the Collector's ``loadbalancingexporter``.

Each request is split by routing key; each part goes to the backend that owns the key on a hash ring with
virtual nodes, so adding or removing one of N backends moves only ~1/N of the keys. Every backend has its own
delivery queue and retry (a sub-exporter built on the shared delivery helper, configured by
``protocol.otlp``), so a slow backend does not hold up the others. A backend that fails
``rebalance.failure_threshold`` times in a row is marked down: its keys (and what waits in its queue) go to the
next backend on the ring until a probe finds it reachable again. Backends come from ``resolver.static``
(a fixed list) or ``resolver.dns`` (re-resolved every ``interval``; a headless Service in Kubernetes).

The backends are spoken to in OTLP/gRPC with the ``otlp`` exporter's client (``protocol.otlp`` takes that
exporter's keys, without ``endpoint``); requests are forwarded as serialised protobuf (no re-encoding when a
request is not split).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from collector import telemetry as tm
from collector.component import ComponentID, CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import RefusedError, RetryableError
from collector.exporterhelper import BaseExporter
from collector.pdata import REQUEST_TYPES, Batch, Signal, get_attr
from exporters._hashring import HashRing
from exporters.otlp import OtlpExporter, OtlpExporterConfig

__all__ = ["LoadBalancingConfig", "LoadBalancingExporter", "routing_keys", "split_batch"]

# (resource list, scope list, item list) field names per signal
_FIELDS = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}
DEFAULT_PORT = 4317


# --- config -------------------------------------------------------------------------------------------------
class OtlpProtocolConfig(OtlpExporterConfig):
    """The ``otlp`` exporter's settings for every backend; the endpoint comes from the resolver."""

    endpoint: str = ""

    @field_validator("endpoint")
    @classmethod
    def _no_endpoint(cls, v: str) -> str:
        if v:
            raise ValueError("the endpoint of each backend comes from the resolver; remove it")
        return v


class ProtocolConfig(StrictModel):
    otlp: OtlpProtocolConfig = Field(default_factory=OtlpProtocolConfig)


class StaticResolverConfig(StrictModel):
    hostnames: list[str] = Field(min_length=1)


class DnsResolverConfig(StrictModel):
    hostname: str = Field(min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    interval: Duration = 5.0
    timeout: Duration = 1.0


class ResolverConfig(StrictModel):
    static: StaticResolverConfig | None = None
    dns: DnsResolverConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ResolverConfig:
        if (self.static is None) == (self.dns is None):
            raise ValueError("exactly one of static or dns must be configured")
        return self


class RebalanceConfig(StrictModel):
    failure_threshold: int = Field(default=3, ge=1)
    probe_interval: Duration = 1.0


class LoadBalancingConfig(StrictModel):
    routing_key: Literal["traceID", "service", "attributes"] = "traceID"
    routing_attributes: list[str] = Field(default_factory=list)
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    resolver: ResolverConfig
    rebalance: RebalanceConfig = Field(default_factory=RebalanceConfig)
    virtual_nodes: int = Field(default=150, ge=1, le=10000)

    @model_validator(mode="after")
    def _attributes_need_names(self) -> LoadBalancingConfig:
        if self.routing_key == "attributes" and not self.routing_attributes:
            raise ValueError("routing_key attributes needs routing_attributes")
        return self

    @field_validator("routing_attributes")
    @classmethod
    def _no_empty(cls, v: list[str]) -> list[str]:
        if any(not a for a in v):
            raise ValueError("routing attribute names must not be empty")
        return v


def normalize_endpoint(hostname: str) -> str:
    """``host`` -> ``host:4317``; ``host:port`` and ``[v6]:port`` kept."""
    h = hostname.strip()
    if h.startswith("["):
        return h if "]:" in h else f"{h}:{DEFAULT_PORT}"
    if h.count(":") == 1:
        return h
    if ":" in h:  # bare IPv6
        return f"[{h}]:{DEFAULT_PORT}"
    return f"{h}:{DEFAULT_PORT}"


# --- routing ------------------------------------------------------------------------------------------------
def routing_keys(signal: Signal, routing_key: str, attributes: list[str]) -> Callable[[Any, Any, Any], bytes]:
    """A function (resource, scope, item) -> the routing key bytes of one span / log record / metric."""
    if routing_key == "traceID" and signal is not Signal.METRICS:
        def by_trace(_res: Any, _scope: Any, item: Any) -> bytes:
            tid = item.trace_id
            return tid if tid else os.urandom(16)  # no trace id (some logs): spread them
        return by_trace
    if routing_key in ("traceID", "service"):
        def by_service(res: Any, _scope: Any, _item: Any) -> bytes:
            v = get_attr(res.resource.attributes, "service.name")
            return b"" if v is None else str(v).encode()
        return by_service

    def by_attributes(res: Any, scope: Any, item: Any) -> bytes:
        parts = []
        for name in attributes:
            if name == "span.name" and signal is Signal.TRACES:
                parts.append(item.name)
                continue
            v = None
            if signal is not Signal.METRICS:
                v = get_attr(item.attributes, name)
            if v is None:
                v = get_attr(scope.scope.attributes, name)
            if v is None:
                v = get_attr(res.resource.attributes, name)
            parts.append("" if v is None else str(v))
        return "\x00".join(parts).encode()
    return by_attributes


def split_batch(batch: Batch, owner_of: Callable[[Any, Any, Any], str | None]) -> dict[str, Batch]:
    """Split a batch by owner (``owner_of(resource, scope, item)``). A batch with one owner is returned as is
    (its bytes reused); items whose owner is None are left out."""
    rf, sf, itf = _FIELDS[batch.signal]
    req = batch.request
    owners: list[str | None] = []
    for res in getattr(req, rf):
        for scope in getattr(res, sf):
            for item in getattr(scope, itf):
                owners.append(owner_of(res, scope, item))
    distinct = set(owners)
    if not owners:
        return {}
    if len(distinct) == 1:
        only = owners[0]
        return {} if only is None else {only: batch}
    out: dict[str, Any] = {}
    i = 0
    for res in getattr(req, rf):
        res_out: dict[str, Any] = {}
        for scope in getattr(res, sf):
            scope_out: dict[str, Any] = {}
            for item in getattr(scope, itf):
                owner = owners[i]
                i += 1
                if owner is None:
                    continue
                s = scope_out.get(owner)
                if s is None:
                    r = res_out.get(owner)
                    if r is None:
                        o = out.get(owner)
                        if o is None:
                            o = out[owner] = REQUEST_TYPES[batch.signal]()
                        r = res_out[owner] = getattr(o, rf).add()
                        r.resource.CopyFrom(res.resource)
                        r.schema_url = res.schema_url
                    s = scope_out[owner] = getattr(r, sf).add()
                    s.scope.CopyFrom(scope.scope)
                    s.schema_url = scope.schema_url
                getattr(s, itf).add().CopyFrom(item)
    return {o: Batch(batch.signal, r, metadata=batch.metadata, received_ns=batch.received_ns)
            for o, r in out.items()}


# --- one backend --------------------------------------------------------------------------------------------
class _Backend(BaseExporter):
    """The delivery queue of one backend, sending with the ``otlp`` exporter's client. Sends nothing to a
    backend marked down: what its queue holds is handed back to the balancer, which routes it to the key's
    next live backend."""

    config: OtlpProtocolConfig

    def __init__(self, settings: CreateSettings, config: OtlpProtocolConfig, lb: LoadBalancingExporter,
                 endpoint: str) -> None:
        super().__init__(settings, config)
        self.lb = lb
        self.endpoint = endpoint
        # the client only: this backend's queue and retry are the ones around it
        client_cfg = OtlpExporterConfig.model_validate({
            **config.model_dump(exclude={"endpoint", "sending_queue", "retry_on_failure"}),
            "endpoint": endpoint, "sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False},
        })
        self._client = OtlpExporter(settings, client_cfg)

    async def open(self) -> None:
        await self._client.open()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, batch: Batch) -> None:
        if not self.lb.is_live(self.endpoint):
            await self.lb.reroute(batch, self.endpoint)
            return
        try:
            await self._client.send(batch)
        except (TimeoutError, RetryableError, OSError):
            if self.lb.report_failure(self.endpoint):
                await self.lb.reroute(batch, self.endpoint)
                return
            raise
        self.lb.report_success(self.endpoint)


# --- the balancer -------------------------------------------------------------------------------------------
class LoadBalancingExporter:
    def __init__(self, settings: CreateSettings, config: LoadBalancingConfig) -> None:
        self.settings = settings
        self.config = config
        self.id = str(settings.id)
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        self.ring = HashRing(vnodes=config.virtual_nodes)
        self.backends: dict[str, _Backend] = {}
        self.down: set[str] = set()
        self._failures: dict[str, int] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resolver: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._keyfns = {s: routing_keys(s, config.routing_key, config.routing_attributes) for s in Signal}

    # -- channels ---------------------------------------------------------------------------------------
    @staticmethod
    async def reachable(endpoint: str, timeout: float) -> bool:
        """Does the backend accept TCP connections? (TLS-agnostic: the send path checks the rest.)"""
        host, _, port = endpoint.rpartition(":")
        try:
            _r, w = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout=timeout)
        except (TimeoutError, OSError, ValueError):
            return False
        w.close()
        try:
            await w.wait_closed()
        except OSError:
            pass
        return True

    # -- membership ---------------------------------------------------------------------------------------
    def is_live(self, endpoint: str) -> bool:
        return endpoint in self.backends and endpoint not in self.down and endpoint in self.ring.members

    async def set_backends(self, endpoints: set[str]) -> None:
        """Make the ring hold exactly ``endpoints``: start new backends, retire gone ones (their queues are
        handed over to the remaining backends, then they stop)."""
        current = set(self.ring.members)
        if endpoints == current:
            return
        added, removed = endpoints - current, current - endpoints
        for ep in sorted(added):
            old = self.backends.get(ep)
            if old is None or old._closed:
                b = _Backend(self._sub_settings(ep), self.config.protocol.otlp, self, ep)
                await b.start()
                self.backends[ep] = b
        self.ring.set_members(endpoints)
        for ep in removed:
            self.down.discard(ep)
            self._failures.pop(ep, None)
            probe = self._probes.pop(ep, None)
            if probe is not None:
                probe.cancel()
            gone = self.backends.pop(ep, None)
            if gone is not None:
                self._spawn(self._retire(gone))
        self.log.info("backends: %s (added %s, removed %s)", ", ".join(sorted(endpoints)) or "none",
                      ", ".join(sorted(added)) or "none", ", ".join(sorted(removed)) or "none")

    async def _retire(self, b: _Backend) -> None:
        try:
            await b.shutdown()
        except Exception:
            self.log.exception("backend %s failed to shut down", b.endpoint)

    def _sub_settings(self, endpoint: str) -> CreateSettings:
        sid = self.settings.id
        name = f"{sid.name}/{endpoint}" if sid.name else endpoint
        return CreateSettings(id=ComponentID(sid.type, name), kind=Kind.EXPORTER, signals=self.settings.signals,
                              host=self.settings.host)

    def report_failure(self, endpoint: str) -> bool:
        """Count a failed send; returns True when the backend is (now) down."""
        if endpoint in self.down:
            return True
        n = self._failures.get(endpoint, 0) + 1
        self._failures[endpoint] = n
        if n < self.config.rebalance.failure_threshold or endpoint not in self.ring.members:
            return False
        if len(self.down) + 1 >= len(self.ring.members):
            # the last live backend: keep its keys (and retry) rather than route them nowhere
            return False
        self.down.add(endpoint)
        self.log.warning("backend %s is down after %d failures; its keys go to the next backends", endpoint, n)
        self._probes[endpoint] = asyncio.create_task(self._probe(endpoint))
        return True

    def report_success(self, endpoint: str) -> None:
        self._failures[endpoint] = 0

    async def _probe(self, endpoint: str) -> None:
        interval = self.config.rebalance.probe_interval
        while endpoint in self.down and not self._closed:
            await asyncio.sleep(interval)
            if not await self.reachable(endpoint, max(interval, 0.5)):
                continue
            self.down.discard(endpoint)
            self._failures[endpoint] = 0
            self.log.info("backend %s is reachable again; its keys come back to it", endpoint)
        self._probes.pop(endpoint, None)

    # -- data path ----------------------------------------------------------------------------------------
    def _owner_fn(self, signal: Signal) -> Callable[[Any, Any, Any], str | None]:
        keyfn = self._keyfns[signal]
        ring, down = self.ring, frozenset(self.down)
        cache: dict[bytes, str | None] = {}

        def owner(res: Any, scope: Any, item: Any) -> str | None:
            k = keyfn(res, scope, item)
            o = cache.get(k, "")
            if o == "":
                o = cache[k] = ring.lookup(k, down)
            return o
        return owner

    async def _dispatch(self, batch: Batch) -> None:
        parts = split_batch(batch, self._owner_fn(batch.signal))
        if not parts:
            if batch.item_count():
                raise RefusedError(f"exporter {self.id}: no backend available")
            return
        if len(parts) == 1:
            ((ep, b),) = parts.items()
            await self.backends[ep].consume(b)
            return
        results = await asyncio.gather(*(self.backends[ep].consume(b) for ep, b in parts.items()),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def consume(self, batch: Batch) -> None:
        if self._closed:
            raise RefusedError(f"exporter {self.id} is shutting down")
        await self._dispatch(batch)

    async def reroute(self, batch: Batch, from_endpoint: str) -> None:
        """Hand a batch held by a down or retired backend to the live backends that now own its keys."""
        live = [ep for ep in self.ring.members if self.is_live(ep) and ep != from_endpoint]
        if not live:
            raise RetryableError(f"backend {from_endpoint} is down and no other backend is available")
        try:
            await self._dispatch(batch)
        except RefusedError as e:
            raise RetryableError(f"rerouting from {from_endpoint}: {e}", retry_after=e.retry_after) from None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def _resolve_dns(self) -> set[str] | None:
        dns = self.config.resolver.dns
        assert dns is not None
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(dns.hostname, dns.port, type=socket.SOCK_STREAM), timeout=dns.timeout or None)
        except (TimeoutError, OSError) as e:
            self._rl.log(logging.WARNING, "dns", "cannot resolve %s: %s; keeping %d backends",
                         dns.hostname, e, len(self.ring.members))
            return None
        out = set()
        for family, _t, _p, _c, addr in infos:
            ip = addr[0]
            out.add(f"[{ip}]:{dns.port}" if family == socket.AF_INET6 else f"{ip}:{dns.port}")
        return out

    async def _dns_loop(self) -> None:
        dns = self.config.resolver.dns
        assert dns is not None
        while not self._closed:
            await asyncio.sleep(dns.interval)
            found = await self._resolve_dns()
            if found is not None and found:
                await self.set_backends(found)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        r = self.config.resolver
        if r.static is not None:
            await self.set_backends({normalize_endpoint(h) for h in r.static.hostnames})
        else:
            found = await self._resolve_dns()
            if found:
                await self.set_backends(found)
            self._resolver = asyncio.create_task(self._dns_loop())

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for t in [self._resolver, *self._probes.values()]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*[b.shutdown() for b in self.backends.values()], *self._tasks,
                             return_exceptions=True)

    def status_info(self) -> dict[str, Any]:
        backends = {ep: {**b.status_info(), "down": ep in self.down} for ep, b in sorted(self.backends.items())}
        return {
            "status": "retrying" if self.down else "active",
            "last_error": next((v["last_error"] for v in backends.values() if v["last_error"]), None),
            "last_error_time": None,
            "queue_size": sum(v["queue_size"] for v in backends.values()),
            "queue_capacity": sum(v["queue_capacity"] for v in backends.values()),
            "backends": backends,
            "time": time.time(),
        }


FACTORIES = [
    Factory("loadbalancing", Kind.EXPORTER, LoadBalancingConfig, LoadBalancingExporter,
            description="route by trace id / service / attributes to OTLP backends (consistent hashing)",
            example={"resolver": {"static": {"hostnames": ["localhost:4317"]}},
                     "protocol": {"otlp": {"tls": {"insecure": True}}}}),
]
