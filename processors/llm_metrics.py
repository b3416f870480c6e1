"""Connector `llm_metrics` (traces -> metrics): request, error, token, cost and latency metrics of LLM calls.

For every LLM span (as collector/genai recognises one, whatever convention produced it) it aggregates:

- ``llm.requests`` and ``llm.errors`` (sums, ``{request}``), ``llm.tokens`` (sum by ``token.type``: input,
  output, cache_read, cache_write, reasoning), ``llm.cost_usd`` (sum, USD), ``llm.latency_ms`` (histogram),
  with the configured dimensions (default model, provider, tenant, feature, outcome);
- the GenAI semantic-convention metrics ``gen_ai.client.token.usage`` (histogram by ``gen_ai.token.type``) and
  ``gen_ai.client.operation.duration`` (histogram, seconds, ``error.type`` on failures) with the bucket
  boundaries the conventions specify and their attributes (operation, provider, request and response model).

Every ``metrics_flush_interval`` (and at shutdown) it emits one ExportMetricsServiceRequest, one resource per
source ``service.name``, cumulative or delta. Each metric family keeps at most ``cardinality_limit`` series;
further combinations go to one overflow series marked ``otel.metric.overflow = true`` (the SDK's rule).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from typing import Any, Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from pydantic import Field, field_validator

from collector import genai
from collector import telemetry as tm
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.pdata import Batch, Signal, python_to_anyvalue

__all__ = ["DURATION_BUCKETS", "TOKEN_USAGE_BUCKETS", "LLMMetricsConfig", "LLMMetricsConnector"]

TOKEN_USAGE_BUCKETS: list[float] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                       67108864]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
LATENCY_MS_BUCKETS: list[float] = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000, 60000, 120000]

# dimension name -> (attribute key on the metric, how to read it from an LLMCall)
DIMENSIONS: dict[str, tuple[str, str]] = {
    "model": ("model", "model"),
    "request_model": (genai.KEYS["request_model"][0], "request_model"),
    "response_model": (genai.KEYS["response_model"][0], "response_model"),
    "provider": ("provider", "provider"),
    "operation": ("operation", "operation"),
    "tenant": (genai.WRITE["tenant"], "tenant"),
    "feature": (genai.WRITE["feature"], "feature"),
    "team": (genai.WRITE["team"], "team"),
    "user": (genai.WRITE["user"], "user"),
    "outcome": ("outcome", "outcome"),
    "cache_hit": ("cache_hit", "cache_hit"),
}
# the GenAI semantic-convention attribute names of the gen_ai.client.* metrics
_OP, _PROVIDER = genai.KEYS["operation"][0], genai.KEYS["provider"][0]
_REQ_MODEL, _RESP_MODEL, _ERROR_TYPE = (genai.KEYS["request_model"][0], genai.KEYS["response_model"][0],
                                        genai.KEYS["error_type"][0])
_TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")
_CUMULATIVE, _DELTA = 2, 1  # AggregationTemporality enum values
OVERFLOW = "otel.metric.overflow"


class LLMMetricsConfig(StrictModel):
    dimensions: list[str] = Field(default_factory=lambda: ["model", "provider", "tenant", "feature", "outcome"])
    cardinality_limit: int = Field(default=1000, ge=1)
    aggregation_temporality: Literal[
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA", "cumulative", "delta"
    ] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    metrics_flush_interval: Duration = Field(default=60.0, gt=0)
    latency_buckets_ms: list[float] = Field(default_factory=lambda: list(LATENCY_MS_BUCKETS))
    semconv_metrics: bool = True

    @field_validator("latency_buckets_ms")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        if not v or any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("latency_buckets_ms must be a non-empty, strictly increasing list")
        return v

    @field_validator("dimensions")
    @classmethod
    def _dims(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("dimensions must not repeat")
        return v

    @property
    def delta(self) -> bool:
        return self.aggregation_temporality in ("AGGREGATION_TEMPORALITY_DELTA", "delta")


class _Hist:
    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum = 0.0
        self.count = 0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, bounds: list[float], v: float) -> None:
        self.counts[bisect.bisect_left(bounds, v)] += 1
        self.sum += v
        self.count += 1
        self.min = min(self.min, v)
        self.max = max(self.max, v)


class _Series:
    __slots__ = ("cost", "errors", "latency", "requests", "tokens")

    def __init__(self, nb: int) -> None:
        self.requests = 0
        self.errors = 0
        self.tokens = dict.fromkeys(_TOKEN_TYPES, 0)
        self.cost = 0.0
        self.latency = _Hist(nb)


class _SemSeries:
    __slots__ = ("duration", "tokens")

    def __init__(self) -> None:
        self.tokens = {"input": _Hist(len(TOKEN_USAGE_BUCKETS)), "output": _Hist(len(TOKEN_USAGE_BUCKETS))}
        self.duration = _Hist(len(DURATION_BUCKETS))


class LLMMetricsConnector:
    def __init__(self, settings: CreateSettings, config: LLMMetricsConfig) -> None:
        self.settings = settings
        self.config = config
        self.log = settings.logger
        self.out = settings.consumers.get(Signal.METRICS)
        self.dims: list[tuple[str, str | None, str]] = []  # (attribute key, LLMCall field or None, raw key)
        for d in config.dimensions:
            if d in DIMENSIONS:
                key, fieldname = DIMENSIONS[d]
                self.dims.append((key, fieldname, d))
            else:  # any other span / resource attribute key
                self.dims.append((d, None, d))
        self.raw_keys = frozenset(d for k, f, d in self.dims if f is None)
        self.bounds = list(config.latency_buckets_ms)
        self.series: dict[tuple[Any, ...], _Series] = {}
        self.sem: dict[tuple[Any, ...], _SemSeries] = {}
        self.start_ns = time.time_ns()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._rl = tm.RateLimitedLogger(self.log)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.start_ns = time.time_ns()
        self._task = asyncio.create_task(self._run(), name=f"llm_metrics {self.settings.id}")

    async def shutdown(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.metrics_flush_interval)
            except TimeoutError:
                await self.flush()

    # -- aggregation ----------------------------------------------------------------------------------
    async def consume(self, batch: Batch) -> None:
        if batch.signal is not Signal.TRACES:
            return
        self.aggregate(batch.request)

    def aggregate(self, req: Any) -> None:
        limit = self.config.cardinality_limit
        nb = len(self.bounds)
        sem_on = self.config.semconv_metrics
        # through collector/genai's shared per-request index (one pass over each span's keys, unless the
        # processors before this connector made it)
        read_cached = genai.read_cached
        for rs in req.resource_spans:
            service = _service_name(rs.resource.attributes)
            rraw = _raw(rs.resource.attributes, self.raw_keys) if self.raw_keys else {}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    c = read_cached(req, span, rs.resource)
                    if not c.is_llm:
                        continue
                    if self.raw_keys:
                        raw = _raw(span.attributes, self.raw_keys)
                        for k, v in rraw.items():
                            raw.setdefault(k, v)
                    else:
                        raw = {}
                    key = (service,) + tuple(
                        _dim(getattr(c, f) if f is not None else raw.get(d)) for _k, f, d in self.dims)
                    s = self.series.get(key)
                    if s is None:
                        if len(self.series) >= limit:
                            key = (service, OVERFLOW)
                            s = self.series.get(key)
                        if s is None:
                            s = self.series[key] = _Series(nb)
                    s.requests += 1
                    if c.outcome != "success":
                        s.errors += 1
                    tk = s.tokens
                    tk["input"] += c.input_tokens or 0
                    tk["output"] += c.output_tokens or 0
                    tk["cache_read"] += c.cache_read_tokens or 0
                    tk["cache_write"] += c.cache_write_tokens or 0
                    tk["reasoning"] += c.reasoning_tokens or 0
                    s.cost += c.cost or 0.0
                    s.latency.add(self.bounds, c.latency_ms)
                    if sem_on:
                        err = (c.error_type or c.outcome) if c.outcome != "success" else ""
                        skey: tuple[Any, ...] = (service, c.operation or "chat", c.provider or "", c.request_model or "",
                                c.response_model or "", err)
                        sm = self.sem.get(skey)
                        if sm is None:
                            if len(self.sem) >= limit:
                                skey = (service, OVERFLOW)
                                sm = self.sem.get(skey)
                            if sm is None:
                                sm = self.sem[skey] = _SemSeries()
                        if c.input_tokens is not None:
                            sm.tokens["input"].add(TOKEN_USAGE_BUCKETS, c.input_tokens)
                        if c.output_tokens is not None:
                            sm.tokens["output"].add(TOKEN_USAGE_BUCKETS, c.output_tokens)
                        sm.duration.add(DURATION_BUCKETS, c.latency_ms / 1000.0)

    # -- emission -------------------------------------------------------------------------------------
    def build(self, now_ns: int | None = None) -> ExportMetricsServiceRequest | None:
        """The current aggregates as one request (None when there is nothing to report)."""
        if not self.series and not self.sem:
            return None
        now_ns = now_ns or time.time_ns()
        start_ns = self.start_ns
        temporality = _DELTA if self.config.delta else _CUMULATIVE
        req = ExportMetricsServiceRequest()
        services = sorted({k[0] for k in self.series} | {k[0] for k in self.sem})
        for service in services:
            rm = req.resource_metrics.add()
            kv = rm.resource.attributes.add(key="service.name")
            kv.value.string_value = service
            sm = rm.scope_metrics.add()
            sm.scope.name = "llm-collector/llm_metrics"
            sm.scope.version = "0.1.0"
            mine = [(k, s) for k, s in self.series.items() if k[0] == service]
            if mine:
                self._llm_metrics(sm, mine, start_ns, now_ns, temporality)
            sem = [(k, s) for k, s in self.sem.items() if k[0] == service]
            if sem:
                self._sem_metrics(sm, sem, start_ns, now_ns, temporality)
        return req

    def _attrs(self, key: tuple[Any, ...]) -> list[tuple[str, Any]]:
        if len(key) == 2 and key[1] == OVERFLOW:
            return [(OVERFLOW, True)]
        return [(k, v) for (k, _f, _d), v in zip(self.dims, key[1:]) if v is not None]

    def _llm_metrics(self, sm: Any, series: list[tuple[tuple[Any, ...], _Series]], start: int, now: int,
                     temporality: int) -> None:
        req_m = _sum(sm, "llm.requests", "{request}", "LLM calls", temporality)
        err_m = _sum(sm, "llm.errors", "{request}", "LLM calls that failed (error, timeout, rate limited)",
                     temporality)
        tok_m = _sum(sm, "llm.tokens", "{token}", "Tokens by token.type", temporality)
        cost_m = _sum(sm, "llm.cost_usd", "USD", "Cost of LLM calls in US dollars", temporality)
        lat = sm.metrics.add(name="llm.latency_ms", unit="ms", description="Duration of LLM calls")
        lat.histogram.aggregation_temporality = temporality
        for key, s in series:
            attrs = self._attrs(key)
            _point(req_m.sum.data_points.add(), attrs, start, now).as_int = s.requests
            _point(err_m.sum.data_points.add(), attrs, start, now).as_int = s.errors
            for tt, n in s.tokens.items():
                if n:
                    _point(tok_m.sum.data_points.add(), attrs + [("token.type", tt)], start, now).as_int = n
            _point(cost_m.sum.data_points.add(), attrs, start, now).as_double = s.cost
            _hist_point(lat.histogram.data_points.add(), attrs, start, now, s.latency, self.bounds)

    def _sem_metrics(self, sm: Any, series: list[tuple[tuple[Any, ...], _SemSeries]], start: int, now: int,
                     temporality: int) -> None:
        tok = sm.metrics.add(name="gen_ai.client.token.usage", unit="{token}",
                             description="Number of input and output tokens used.")
        tok.histogram.aggregation_temporality = temporality
        dur = sm.metrics.add(name="gen_ai.client.operation.duration", unit="s",
                             description="GenAI operation duration.")
        dur.histogram.aggregation_temporality = temporality
        for key, s in series:
            if len(key) == 2 and key[1] == OVERFLOW:
                attrs: list[tuple[str, Any]] = [(OVERFLOW, True)]
                err = ""
            else:
                _svc, op, provider, req_model, resp_model, err = key
                attrs = [(_OP, op)]
                if provider:
                    attrs.append((_PROVIDER, provider))
                if req_model:
                    attrs.append((_REQ_MODEL, req_model))
                if resp_model:
                    attrs.append((_RESP_MODEL, resp_model))
            for tt, h in s.tokens.items():
                if h.count:
                    _hist_point(tok.histogram.data_points.add(), attrs + [("gen_ai.token.type", tt)], start, now,
                                h, TOKEN_USAGE_BUCKETS)
            if s.duration.count:
                _hist_point(dur.histogram.data_points.add(), attrs + ([(_ERROR_TYPE, err)] if err else []),
                            start, now, s.duration, DURATION_BUCKETS)
        if not tok.histogram.data_points:
            del sm.metrics[len(sm.metrics) - 2]

    async def flush(self) -> None:
        async with self._lock:
            now = time.time_ns()
            req = self.build(now)
            if self.config.delta:
                self.series, self.sem = {}, {}
                self.start_ns = now
            if req is None or self.out is None:
                return
            try:
                await self.out.consume(Batch(Signal.METRICS, req))
            except Exception as e:  # noqa: BLE001 - the timer must survive a refusing pipeline
                self._rl.log(logging.ERROR, "flush", "llm_metrics: could not emit metrics: %s", e)


def _dim(v: Any) -> Any:
    if v is None or v == "":
        return None
    if isinstance(v, (bool, int, float)):
        return v
    return str(v)


def _raw(kvs: Any, keys: frozenset[str]) -> dict[str, Any]:
    return {kv.key: genai.value_of(kv.value) for kv in kvs if kv.key in keys}


def _service_name(kvs: Any) -> str:
    for kv in kvs:
        if kv.key == "service.name":
            return kv.value.string_value or "unknown_service"
    return "unknown_service"


def _sum(sm: Any, name: str, unit: str, desc: str, temporality: int) -> Any:
    m = sm.metrics.add(name=name, unit=unit, description=desc)
    m.sum.aggregation_temporality = temporality
    m.sum.is_monotonic = True
    return m


def _point(dp: Any, attrs: list[tuple[str, Any]], start: int, now: int) -> Any:
    for k, v in attrs:
        kv = dp.attributes.add(key=k)
        python_to_anyvalue(v, kv.value)
    dp.start_time_unix_nano = start
    dp.time_unix_nano = now
    return dp


def _hist_point(dp: Any, attrs: list[tuple[str, Any]], start: int, now: int, h: _Hist,
                bounds: list[float]) -> None:
    _point(dp, attrs, start, now)
    dp.count = h.count
    dp.sum = h.sum
    dp.bucket_counts.extend(h.counts)
    dp.explicit_bounds.extend(float(b) for b in bounds)
    if h.count:
        dp.min = h.min
        dp.max = h.max


FACTORIES = [
    Factory("llm_metrics", Kind.CONNECTOR, LLMMetricsConfig, LLMMetricsConnector,
            signals=frozenset({Signal.TRACES}), out_signals=frozenset({Signal.METRICS}),
            description="LLM request, error, token, cost and latency metrics (and GenAI semconv metrics) from spans"),
]
