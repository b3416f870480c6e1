"""Metrics for Datadog, as plain dicts the exporter turns into datadog-api-client models.

:class:`LLMAggregator` sums LLM calls per tag set over one flush window (requests, errors, tokens, cost as
counts; every latency kept for a distribution, so percentiles are exact in Datadog). :class:`OtlpConverter`
turns OTLP metrics into Datadog series: monotonic sums -> count (cumulative ones turned into deltas),
other sums and gauges -> gauge, histograms -> ``.count`` / ``.sum`` / ``.bucket`` counts (+ ``.min`` /
``.max`` gauges), summaries -> ``.count`` / ``.sum`` counts and ``.quantile`` gauges.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from collector.genai import LLMCall
from collector.pdata import anyvalue_to_python

__all__ = ["COUNT", "GAUGE", "LLMAggregator", "OtlpConverter", "Window", "series_size"]

COUNT = 1  # MetricIntakeType.COUNT
GAUGE = 3  # MetricIntakeType.GAUGE

_COUNTERS = ("requests", "errors", "input_tokens", "output_tokens", "cost")


@dataclass
class Window:
    """What one flush window saw: counters and latencies per tag set."""

    start: int
    interval: float
    counts: dict[tuple[str, ...], dict[str, float]] = field(default_factory=dict)
    latencies: dict[tuple[str, ...], list[float]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not self.counts

    def series(self, namespace: str) -> list[dict[str, Any]]:
        """Count series (v2 intake shape: metric, type, points, tags, interval)."""
        interval = max(1, round(self.interval))
        out = []
        for tags, values in self.counts.items():
            for name in _COUNTERS:
                out.append({"metric": f"{namespace}.{name}", "type": COUNT, "interval": interval,
                            "points": [{"timestamp": self.start, "value": float(values.get(name, 0.0))}],
                            "tags": list(tags)})
        return out

    def distributions(self, namespace: str) -> list[dict[str, Any]]:
        """Distribution series (v1 distribution points shape: metric, points [[ts, [values]]], tags)."""
        return [{"metric": f"{namespace}.latency_ms", "points": [[float(self.start), list(vals)]],
                 "tags": list(tags)} for tags, vals in self.latencies.items() if vals]


class LLMAggregator:
    """Per-window sums of LLM calls, keyed by tag set. ``drain()`` hands over the window and starts a new one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._window = Window(int(time.time()), interval)

    def add(self, call: LLMCall, tags: tuple[str, ...]) -> None:
        w = self._window
        c = w.counts.get(tags)
        if c is None:
            c = w.counts[tags] = dict.fromkeys(_COUNTERS, 0.0)
            w.latencies[tags] = []
        c["requests"] += 1
        if call.outcome != "success":
            c["errors"] += 1
        c["input_tokens"] += call.input_tokens or 0
        c["output_tokens"] += call.output_tokens or 0
        c["cost"] += call.cost or 0.0
        w.latencies[tags].append(round(call.latency_ms, 3))

    def drain(self) -> Window:
        w = self._window
        self._window = Window(int(time.time()), self.interval)
        return w


def series_size(s: dict[str, Any]) -> int:
    """A cheap upper estimate of a series' JSON size."""
    return 96 + len(s["metric"]) + sum(len(t) + 4 for t in s.get("tags", ())) + 48 * len(s["points"]) + sum(
        12 * len(p[1]) for p in s["points"] if isinstance(p, list))


def _value(dp: Any) -> float:
    kind = dp.WhichOneof("value")
    return float(getattr(dp, kind)) if kind else 0.0


class OtlpConverter:
    """OTLP metrics -> Datadog series dicts. Holds the last value of every cumulative series to compute
    deltas (bounded; on overflow the state starts afresh and a few points are skipped)."""

    MAX_STATE = 200_000

    def __init__(self, base_tags: tuple[str, ...] = ()) -> None:
        self.base_tags = base_tags
        self.started_ns = time.time_ns()
        self._state: OrderedDict[tuple[Any, ...], tuple[int, float, int]] = OrderedDict()

    def _delta(self, key: tuple[Any, ...], start: int, t: int, value: float) -> float | None:
        prev = self._state.get(key)
        self._state[key] = (start, value, t)
        self._state.move_to_end(key)
        if len(self._state) > self.MAX_STATE:
            self._state.popitem(last=False)
        if prev is None:
            # first point of a series: it is a delta only if the series began while we were running
            return value if start and start >= self.started_ns else None
        pstart, pval, pt = prev
        if t <= pt:
            self._state[key] = prev
            return None  # a repeated or out-of-order point
        if start != pstart or value < pval:
            return value  # the series was reset
        return value - pval

    def _tags(self, resource_tags: list[str], attrs: Any) -> list[str]:
        tags = list(resource_tags)
        for kv in attrs:
            v = anyvalue_to_python(kv.value)
            tags.append(f"{kv.key}:{v}" if v not in (None, "") else kv.key)
        tags.extend(self.base_tags)
        return tags

    @staticmethod
    def _resource(attrs: Any) -> tuple[list[str], str | None]:
        tags: list[str] = []
        host = None
        for kv in attrs:
            v = anyvalue_to_python(kv.value)
            if kv.key == "service.name" and v:
                tags.append(f"service:{v}")
            elif kv.key in ("deployment.environment", "deployment.environment.name") and v:
                tags.append(f"env:{v}")
            elif kv.key == "service.version" and v:
                tags.append(f"version:{v}")
            elif kv.key == "host.name" and v:
                host = str(v)
        return tags, host

    def convert(self, request: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rm in request.resource_metrics:
            rtags, host = self._resource(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        getattr(self, f"_{kind}")(m, rtags, host, out)
        return out

    def _emit(self, out: list[dict[str, Any]], name: str, typ: int, t: int, value: float, tags: list[str],
              host: str | None, unit: str = "", interval: int | None = None) -> None:
        s: dict[str, Any] = {"metric": name, "type": typ, "points": [{"timestamp": t // 1_000_000_000,
                                                                       "value": value}], "tags": tags}
        if host:
            s["resources"] = [{"name": host, "type": "host"}]
        if unit:
            s["unit"] = unit
        if interval:
            s["interval"] = interval
        out.append(s)

    def _count(self, out: list[dict[str, Any]], name: str, dp: Any, cumulative: bool, value: float,
               tags: list[str], host: str | None, suffix_key: tuple[Any, ...] = ()) -> None:
        if cumulative:
            d = self._delta((name, host, tuple(tags)) + suffix_key, dp.start_time_unix_nano, dp.time_unix_nano,
                            value)
            if d is None:
                return
            value = d
        self._emit(out, name, COUNT, dp.time_unix_nano, value, tags, host)

    def _gauge(self, m: Any, rtags: list[str], host: str | None, out: list[dict[str, Any]]) -> None:
        for dp in m.gauge.data_points:
            self._emit(out, m.name, GAUGE, dp.time_unix_nano, _value(dp), self._tags(rtags, dp.attributes), host,
                       m.unit)

    def _sum(self, m: Any, rtags: list[str], host: str | None, out: list[dict[str, Any]]) -> None:
        cumulative = m.sum.aggregation_temporality == 2
        for dp in m.sum.data_points:
            tags = self._tags(rtags, dp.attributes)
            if m.sum.is_monotonic:
                self._count(out, m.name, dp, cumulative, _value(dp), tags, host)
            else:
                self._emit(out, m.name, GAUGE, dp.time_unix_nano, _value(dp), tags, host, m.unit)

    def _histogram(self, m: Any, rtags: list[str], host: str | None, out: list[dict[str, Any]]) -> None:
        cumulative = m.histogram.aggregation_temporality == 2
        for dp in m.histogram.data_points:
            tags = self._tags(rtags, dp.attributes)
            self._count(out, f"{m.name}.count", dp, cumulative, float(dp.count), tags, host)
            if dp.HasField("sum"):
                self._count(out, f"{m.name}.sum", dp, cumulative, dp.sum, tags, host)
            bounds = list(dp.explicit_bounds)
            for i, n in enumerate(dp.bucket_counts):
                lo = "-inf" if i == 0 else repr(bounds[i - 1])
                hi = repr(bounds[i]) if i < len(bounds) else "inf"
                btags = tags + [f"lower_bound:{lo}", f"upper_bound:{hi}"]
                self._count(out, f"{m.name}.bucket", dp, cumulative, float(n), btags, host)
            if not cumulative:
                if dp.HasField("min"):
                    self._emit(out, f"{m.name}.min", GAUGE, dp.time_unix_nano, dp.min, tags, host, m.unit)
                if dp.HasField("max"):
                    self._emit(out, f"{m.name}.max", GAUGE, dp.time_unix_nano, dp.max, tags, host, m.unit)

    def _exponential_histogram(self, m: Any, rtags: list[str], host: str | None,
                               out: list[dict[str, Any]]) -> None:
        cumulative = m.exponential_histogram.aggregation_temporality == 2
        for dp in m.exponential_histogram.data_points:
            tags = self._tags(rtags, dp.attributes)
            self._count(out, f"{m.name}.count", dp, cumulative, float(dp.count), tags, host)
            if dp.HasField("sum"):
                self._count(out, f"{m.name}.sum", dp, cumulative, dp.sum, tags, host)

    def _summary(self, m: Any, rtags: list[str], host: str | None, out: list[dict[str, Any]]) -> None:
        for dp in m.summary.data_points:
            tags = self._tags(rtags, dp.attributes)
            self._count(out, f"{m.name}.count", dp, True, float(dp.count), tags, host)
            self._count(out, f"{m.name}.sum", dp, True, dp.sum, tags, host)
            for q in dp.quantile_values:
                self._emit(out, f"{m.name}.quantile", GAUGE, dp.time_unix_nano, q.value,
                           tags + [f"quantile:{q.quantile:g}"], host, m.unit)
