"""Connector `llm_alerts` (traces -> logs): turns what a human should see into alert log records.

- Budget crossings: a span on which the ``budget`` processor set ``llm.budget.crossed`` (with ``key_name``,
  ``key``, ``spent_usd``, ``limit_usd``) gives one record. Always on (``budget: false`` turns it off).
- ``error_rate: {window, threshold, min_requests, group_by}``: the share of failed LLM calls (outcome not
  success) over a sliding window, per group, when at least ``min_requests`` calls were seen.
- ``latency_p95: {window, threshold_ms, min_requests, group_by}``: the 95th percentile of LLM call durations.
- ``guardrail: true``: a record per span whose guardrail fired (``llm.guardrail.triggered`` or LiteLLM's
  guardrail fields, as collector/genai reads them).

Windows use span end times. A window alert fires at most once per group and window (windows aligned to
multiples of ``window`` since the epoch). Every record has a one-line body and the attributes ``alert.key``
(stable: kind, key value, threshold, window start, so a Slack exporter can deduplicate repeats without merging
the 80% and the 100% alerts), ``alert.kind``, ``alert.severity`` (warning, critical), ``alert.value``,
``alert.threshold``, ``alert.window``, and the grouping attribute with its value (for budgets
``<llm.budget.key_name>`` = ``<llm.budget.key>``, e.g. ``tenant.id = acme``).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
from typing import Any, Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from pydantic import Field

from collector import genai
from collector import telemetry as tm
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.pdata import Batch, Signal, python_to_anyvalue
from processors._presence import KeyFinder

__all__ = ["LLMAlertsConfig", "LLMAlertsConnector"]

# Attribute names the `budget` processor writes.
BUDGET: dict[str, str] = dict(genai.BUDGET)

# group_by names that are collector/genai fields -> (attribute key on the record, LLMCall attribute)
GROUP_FIELDS: dict[str, tuple[str, str]] = {
    "tenant": (genai.WRITE["tenant"], "tenant"),
    "feature": (genai.WRITE["feature"], "feature"),
    "team": (genai.WRITE["team"], "team"),
    "user": (genai.WRITE["user"], "user"),
    "model": (genai.KEYS["request_model"][0], "request_model"),
    "provider": (genai.KEYS["provider"][0], "provider"),
    "operation": (genai.KEYS["operation"][0], "operation"),
}
_WARN, _ERROR = 13, 17  # SeverityNumber WARN, ERROR


class ErrorRateCfg(StrictModel):
    window: Duration = Field(default=300.0, gt=0)
    threshold: float = Field(ge=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    group_by: list[str] = Field(default_factory=list)


class LatencyP95Cfg(StrictModel):
    window: Duration = Field(default=600.0, gt=0)
    threshold_ms: float = Field(gt=0)
    min_requests: int = Field(default=20, ge=1)
    group_by: list[str] = Field(default_factory=list)


class LLMAlertsConfig(StrictModel):
    budget: bool = True
    budget_window: Literal["daily", "monthly"] = "daily"
    error_rate: ErrorRateCfg | None = None
    latency_p95: LatencyP95Cfg | None = None
    guardrail: bool = False
    max_samples_per_group: int = Field(default=10000, ge=100)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt_window(seconds: float) -> str:
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{seconds:g}s"


class _Window:
    """Per group: error-rate buckets (per second) and latency samples of the last ``window`` seconds."""

    __slots__ = ("buckets", "err", "lat", "latest", "n")

    def __init__(self) -> None:
        self.buckets: collections.deque[list[int]] = collections.deque()  # [second, n, errors]
        self.n = 0
        self.err = 0
        self.lat: collections.deque[tuple[int, float]] = collections.deque()  # (end ns, ms)
        self.latest = 0


class LLMAlertsConnector:
    def __init__(self, settings: CreateSettings, config: LLMAlertsConfig) -> None:
        self.settings = settings
        self.config = config
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        self.out = settings.consumers.get(Signal.LOGS)
        self.err_state: dict[tuple[Any, ...], _Window] = {}
        self.lat_state: dict[tuple[Any, ...], _Window] = {}
        self.fired: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._budget_keys = tuple(BUDGET[k] for k in ("crossed", "key_name", "key", "spent_usd", "limit_usd"))
        self._guard_names = genai.KEYS["guardrail"]
        self._budget_finder = KeyFinder(self._budget_keys[:1])
        self._guard_finder = KeyFinder(self._guard_names)
        self._need_calls = config.error_rate is not None or config.latency_p95 is not None
        raw: set[str] = set()
        for c in (config.error_rate, config.latency_p95):
            if c is not None:
                raw |= {g for g in c.group_by if g not in GROUP_FIELDS}
        self._raw_group_keys = frozenset(raw)

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    # -- input ----------------------------------------------------------------------------------------
    async def consume(self, batch: Batch) -> None:
        if batch.signal is not Signal.TRACES:
            return
        req = self.evaluate(batch)
        if req is None or self.out is None:
            return
        try:
            await self.out.consume(Batch(Signal.LOGS, req, metadata=batch.metadata))
        except Exception as e:  # noqa: BLE001 - alerts must not make the traces pipeline refuse data
            self._rl.log(logging.ERROR, "emit", "llm_alerts: could not emit %d alert records: %s",
                         sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs), e)

    def evaluate(self, batch: Batch) -> ExportLogsServiceRequest | None:
        """The alert records a request gives rise to (None when none)."""
        cfg = self.config
        req = batch.request
        # collector/genai's shared per-request pass (span_values) when the request was changed upstream (the
        # processors before this connector made it); otherwise a search of the request's bytes
        shared = not batch.has_bytes and all(genai.is_indexed(k) for k in self._budget_keys)
        values = genai.span_values(batch) if shared and cfg.budget else None
        budget_hits: set[tuple[int, int]] | None = None
        if shared:
            want_budget, want_guard = cfg.budget, cfg.guardrail
        else:
            raw = batch.to_bytes()
            budget_hits = self._budget_finder.items(raw) if cfg.budget else set()
            want_budget = bool(budget_hits)
            want_guard = cfg.guardrail and bool(self._guard_finder.hits(raw))
        if not (want_budget or want_guard or self._need_calls):
            return None
        read_cached = genai.read_cached if shared else None
        out = ExportLogsServiceRequest()
        touched_err: dict[tuple[Any, ...], tuple[list[tuple[str, Any]], Any]] = {}
        touched_lat: dict[tuple[Any, ...], tuple[list[tuple[str, Any]], Any]] = {}
        ordinal = -1
        for rs in req.resource_spans:
            records: list[Any] = []
            ridx = genai.index(rs.resource.attributes) if (self._need_calls or want_guard) and \
                read_cached is None else {}
            rraw = ({kv.key: genai.value_of(kv.value) for kv in rs.resource.attributes
                     if kv.key in self._raw_group_keys} if self._raw_group_keys else {})
            for ss in rs.scope_spans:
                ordinal += 1
                for i, span in enumerate(ss.spans):
                    if want_budget and (budget_hits is None or (ordinal, i) in budget_hits):
                        rec = self._budget(span, values(span) if values is not None else None)
                        if rec is not None:
                            records.append(rec)
                    if not (self._need_calls or want_guard):
                        continue
                    if read_cached is not None:
                        c = read_cached(req, span, rs.resource)
                    else:
                        idx = genai.index(span.attributes)
                        for k, v in ridx.items():
                            idx.setdefault(k, v)
                        c = genai.read(span, idx=idx)
                    if want_guard and c.guardrail_triggered:
                        records.append(self._guardrail(span, c))
                    if not self._need_calls or not c.is_llm:
                        continue
                    end = span.end_time_unix_nano or span.start_time_unix_nano
                    if cfg.error_rate is not None:
                        g = self._group(cfg.error_rate.group_by, c, span, rraw)
                        w = self.err_state.get(g[0])
                        if w is None:
                            w = self.err_state[g[0]] = _Window()
                        self._add_err(w, end, c.outcome != "success", cfg.error_rate.window)
                        touched_err[g[0]] = (g[1], rs)
                    if cfg.latency_p95 is not None:
                        g = self._group(cfg.latency_p95.group_by, c, span, rraw)
                        w = self.lat_state.get(g[0])
                        if w is None:
                            w = self.lat_state[g[0]] = _Window()
                        self._add_lat(w, end, c.latency_ms, cfg.latency_p95.window)
                        touched_lat[g[0]] = (g[1], rs)
            if records:
                self._append(out, rs, records)
        for key, (attrs, rs) in touched_err.items():
            rec = self._check_error_rate(self.err_state[key], attrs)
            if rec is not None:
                self._append(out, rs, [rec])
        for key, (attrs, rs) in touched_lat.items():
            rec = self._check_latency(self.lat_state[key], attrs)
            if rec is not None:
                self._append(out, rs, [rec])
        return out if out.resource_logs else None

    # -- budget ---------------------------------------------------------------------------------------
    def _budget(self, span: Any, pyvals: dict[str, Any] | None) -> Any | None:
        """The alert of a budget crossing on ``span`` (values from collector/genai's shared pass, or read off
        the span), unless already sent."""
        kc, kn, kk, ks, kl = self._budget_keys
        vals: dict[str, Any] = {}
        if pyvals is not None:
            if kc not in pyvals:
                return None
            vals = {k: pyvals[k] for k in self._budget_keys if k in pyvals}
        else:
            for kv in span.attributes:
                if kv.key in (kc, kn, kk, ks, kl):
                    vals[kv.key] = genai.value_of(kv.value)
        crossed = _num(vals.get(kc))
        if crossed is None:
            return None
        key_name = str(vals.get(kn) or "key")
        key = str(vals.get(kk) or "")
        spent = _num(vals.get(ks)) or 0.0
        limit = _num(vals.get(kl)) or 0.0
        end = span.end_time_unix_nano or span.start_time_unix_nano
        day = dt.datetime.fromtimestamp(end / 1e9, dt.UTC)
        window = day.strftime("%Y-%m-%d") if self.config.budget_window == "daily" else day.strftime("%Y-%m")
        akey = f"budget:{key_name}={key}:{crossed:g}:{window}"
        if not self._first(akey):
            return None
        critical = crossed >= 1.0
        body = (f"Budget {'exceeded' if critical else 'warning'}: {key_name}={key} reached {crossed:.0%} of its "
                f"{self.config.budget_window} budget (${spent:,.2f} of ${limit:,.2f})")
        attrs: list[tuple[str, Any]] = [
            ("alert.key", akey), ("alert.kind", "budget"), ("alert.severity", "critical" if critical else "warning"),
            ("alert.value", float(spent)), ("alert.threshold", float(crossed * limit)), ("alert.window", window),
            (key_name, key), (kc, float(crossed)), (kn, key_name), (kk, key), (ks, float(spent)),
            (kl, float(limit)),
        ]
        return _record(body, attrs, _ERROR if critical else _WARN, end, span)

    # -- guardrail ------------------------------------------------------------------------------------
    def _guardrail(self, span: Any, c: Any) -> Any:
        end = span.end_time_unix_nano or span.start_time_unix_nano
        who = [(GROUP_FIELDS[f][0], getattr(c, GROUP_FIELDS[f][1])) for f in ("tenant", "feature")
               if getattr(c, GROUP_FIELDS[f][1])]
        label = ", ".join(f"{k}={v}" for k, v in who) or "unknown caller"
        akey = f"guardrail:{label}:{span.trace_id.hex()}:{span.span_id.hex()}"
        body = f"Guardrail triggered on {c.model or 'an LLM call'} for {label} ({span.name})"
        attrs: list[tuple[str, Any]] = [
            ("alert.key", akey), ("alert.kind", "guardrail"), ("alert.severity", "warning"),
            ("alert.value", 1.0), ("alert.threshold", 1.0), ("alert.window", _iso(end)),
        ] + who
        return _record(body, attrs, _WARN, end, span)

    # -- windows --------------------------------------------------------------------------------------
    def _group(self, group_by: list[str], c: Any, span: Any, rraw: dict[str, Any]
               ) -> tuple[tuple[Any, ...], list[tuple[str, Any]]]:
        attrs: list[tuple[str, Any]] = []
        for g in group_by:
            if g in GROUP_FIELDS:
                key, f = GROUP_FIELDS[g]
                v = getattr(c, f)
            else:
                key = g
                v = next((genai.value_of(kv.value) for kv in span.attributes if kv.key == g), rraw.get(g))
            attrs.append((key, "" if v is None else v if isinstance(v, (int, float, bool)) else str(v)))
        return tuple(v for _k, v in attrs), attrs

    def _add_err(self, w: _Window, end_ns: int, failed: bool, window: float) -> None:
        sec = end_ns // 1_000_000_000
        if w.buckets and w.buckets[-1][0] == sec:
            b = w.buckets[-1]
        else:
            b = [sec, 0, 0]
            if w.buckets and sec < w.buckets[-1][0]:  # out of order: find or insert its bucket
                for x in w.buckets:
                    if x[0] == sec:
                        b = x
                        break
                else:
                    w.buckets.append(b)
                    w.buckets = collections.deque(sorted(w.buckets))
            else:
                w.buckets.append(b)
        b[1] += 1
        b[2] += int(failed)
        w.n += 1
        w.err += int(failed)
        w.latest = max(w.latest, end_ns)
        horizon = w.latest // 1_000_000_000 - int(window)
        while w.buckets and w.buckets[0][0] <= horizon:
            _s, n, e = w.buckets.popleft()
            w.n -= n
            w.err -= e

    def _add_lat(self, w: _Window, end_ns: int, ms: float, window: float) -> None:
        w.lat.append((end_ns, ms))
        w.latest = max(w.latest, end_ns)
        horizon = w.latest - int(window * 1e9)
        while w.lat and w.lat[0][0] <= horizon:
            w.lat.popleft()
        while len(w.lat) > self.config.max_samples_per_group:
            w.lat.popleft()

    def _window_bounds(self, latest_ns: int, window: float) -> tuple[int, str]:
        wns = int(window * 1e9)
        start = latest_ns // wns * wns
        return start, f"{_iso(start)}/{_iso(start + wns)}"

    def _check_error_rate(self, w: _Window, attrs: list[tuple[str, Any]]) -> Any | None:
        cfg = self.config.error_rate
        assert cfg is not None
        if w.n < cfg.min_requests:
            return None
        rate = w.err / w.n
        if rate <= cfg.threshold:
            return None
        start, window = self._window_bounds(w.latest, cfg.window)
        label = ", ".join(f"{k}={v}" for k, v in attrs) or "all"
        akey = f"error_rate:{label}:{cfg.threshold:g}:{_iso(start)}"
        if not self._first(akey):
            return None
        body = (f"Error rate {rate:.1%} ({w.err} of {w.n} LLM calls) over the last {_fmt_window(cfg.window)} "
                f"for {label}, above {cfg.threshold:.1%}")
        rec_attrs: list[tuple[str, Any]] = [
            ("alert.key", akey), ("alert.kind", "error_rate"), ("alert.severity", "critical"),
            ("alert.value", float(rate)), ("alert.threshold", float(cfg.threshold)), ("alert.window", window),
            ("alert.requests", w.n), ("alert.errors", w.err),
        ] + attrs
        return _record(body, rec_attrs, _ERROR, w.latest, None)

    def _check_latency(self, w: _Window, attrs: list[tuple[str, Any]]) -> Any | None:
        cfg = self.config.latency_p95
        assert cfg is not None
        n = len(w.lat)
        if n < cfg.min_requests:
            return None
        values = sorted(ms for _t, ms in w.lat)
        p95 = values[max(0, math.ceil(0.95 * n) - 1)]
        if p95 <= cfg.threshold_ms:
            return None
        start, window = self._window_bounds(w.latest, cfg.window)
        label = ", ".join(f"{k}={v}" for k, v in attrs) or "all"
        akey = f"latency_p95:{label}:{cfg.threshold_ms:g}:{_iso(start)}"
        if not self._first(akey):
            return None
        body = (f"p95 latency {p95:,.0f} ms over the last {_fmt_window(cfg.window)} for {label} ({n} LLM calls), "
                f"above {cfg.threshold_ms:,.0f} ms")
        rec_attrs: list[tuple[str, Any]] = [
            ("alert.key", akey), ("alert.kind", "latency_p95"), ("alert.severity", "warning"),
            ("alert.value", float(p95)), ("alert.threshold", float(cfg.threshold_ms)), ("alert.window", window),
            ("alert.requests", n),
        ] + attrs
        return _record(body, rec_attrs, _WARN, w.latest, None)

    # -- helpers --------------------------------------------------------------------------------------
    def _first(self, akey: str) -> bool:
        """True the first time an alert key is seen (bounded memory)."""
        if akey in self.fired:
            return False
        self.fired[akey] = None
        while len(self.fired) > 100_000:
            self.fired.popitem(last=False)
        return True

    @staticmethod
    def _append(out: ExportLogsServiceRequest, rs: Any, records: list[Any]) -> None:
        for rl in out.resource_logs:
            if rl.resource == rs.resource:
                sl = rl.scope_logs[0]
                break
        else:
            rl = out.resource_logs.add()
            rl.resource.CopyFrom(rs.resource)
            sl = rl.scope_logs.add()
            sl.scope.name = "llm-collector/llm_alerts"
        sl.log_records.extend(records)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _record(body: str, attrs: list[tuple[str, Any]], severity: int, time_ns: int, span: Any) -> Any:
    import time

    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    rec = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time.time_ns(),
                    severity_number=severity,  # type: ignore[arg-type]
                    severity_text="ERROR" if severity >= _ERROR else "WARN")
    rec.body.string_value = body
    for k, v in attrs:
        kv = rec.attributes.add(key=k)
        python_to_anyvalue(v, kv.value)
    kv = rec.attributes.add(key="event.name")
    kv.value.string_value = "llm.alert"
    if span is not None:
        rec.trace_id = span.trace_id
        rec.span_id = span.span_id
    return rec


FACTORIES = [
    Factory("llm_alerts", Kind.CONNECTOR, LLMAlertsConfig, LLMAlertsConnector,
            signals=frozenset({Signal.TRACES}), out_signals=frozenset({Signal.LOGS}),
            description="alert log records: budget crossings, error-rate and p95-latency bursts, guardrails"),
]
