"""Our own telemetry: Prometheus metrics with the OpenTelemetry Collector's names, and logging set-up.

Metric names follow the Collector (``otelcol_receiver_accepted_spans``, ``otelcol_exporter_sent_log_records``,
...; prometheus-client adds the ``_total`` suffix to counters as the Collector's Prometheus exporter does),
so existing Collector dashboards work. Everything lives in one ``REGISTRY``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.pdata import Signal

__all__ = [
    "REGISTRY",
    "RateLimitedLogger",
    "exporter_dropped",
    "exporter_enqueue_failed",
    "exporter_queue_capacity",
    "exporter_queue_size",
    "exporter_rejected",
    "exporter_send_failed",
    "exporter_sent",
    "processor_incoming",
    "processor_outgoing",
    "receiver_accepted",
    "receiver_refused",
    "serve_metrics",
    "setup_logging",
]

disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)


def _per_signal(kind: str, what: str, doc: str, labels: list[str]) -> dict[Signal, Counter]:
    return {
        s: Counter(f"otelcol_{kind}_{what}_{s.item_name}", doc.format(items=s.item_name.replace("_", " ")),
                   labels, registry=REGISTRY)
        for s in Signal
    }


receiver_accepted = _per_signal(
    "receiver", "accepted", "Number of {items} successfully pushed into the pipeline.", ["receiver", "transport"]
)
receiver_refused = _per_signal(
    "receiver", "refused", "Number of {items} that could not be pushed into the pipeline.", ["receiver", "transport"]
)
exporter_sent = _per_signal("exporter", "sent", "Number of {items} successfully sent to destination.", ["exporter"])
exporter_send_failed = _per_signal(
    "exporter", "send_failed", "Number of {items} in failed attempts to send to destination.", ["exporter"]
)
exporter_enqueue_failed = _per_signal(
    "exporter", "enqueue_failed", "Number of {items} failed to be added to the sending queue.", ["exporter"]
)
exporter_dropped = Counter(
    "otelcol_exporter_dropped_items",
    "Items removed from an exporter's queue without being sent, by reason.",
    ["exporter", "data_type", "reason"],
    registry=REGISTRY,
)
exporter_rejected = Counter(
    "otelcol_exporter_rejected_items",
    "Items a backend rejected in a partial success answer (OTLP partial_success).",
    ["exporter", "data_type"],
    registry=REGISTRY,
)
exporter_queue_size = Gauge(
    "otelcol_exporter_queue_size", "Current size of the retry queue (in batches or items)", ["exporter", "data_type"],
    registry=REGISTRY,
)
exporter_queue_capacity = Gauge(
    "otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue", ["exporter", "data_type"],
    registry=REGISTRY,
)
processor_incoming = Counter(
    "otelcol_processor_incoming_items", "Number of items passed to the processor.",
    ["processor", "pipeline", "otel_signal"], registry=REGISTRY,
)
processor_outgoing = Counter(
    "otelcol_processor_outgoing_items", "Number of items emitted from the processor.",
    ["processor", "pipeline", "otel_signal"], registry=REGISTRY,
)


class _ProcessCollector(Collector):
    """``otelcol_process_*``: uptime, CPU seconds, RSS, and the Python heap (as the Go runtime's stand-in)."""

    def __init__(self) -> None:
        self._proc = psutil.Process(os.getpid())
        self._start = time.time()

    def collect(self) -> Iterable[Metric]:
        cpu = self._proc.cpu_times()
        mem = self._proc.memory_info()
        yield CounterMetricFamily("otelcol_process_uptime", "Uptime of the process (seconds)",
                                  value=time.time() - self._start)
        yield CounterMetricFamily("otelcol_process_cpu_seconds", "Total CPU user and system time in seconds",
                                  value=cpu.user + cpu.system)
        yield GaugeMetricFamily("otelcol_process_memory_rss", "Total physical memory (resident set size) [bytes]",
                                value=mem.rss)
        yield GaugeMetricFamily("otelcol_process_memory_vms", "Virtual memory size [bytes]", value=mem.vms)


REGISTRY.register(_ProcessCollector())


def serve_metrics(address: str) -> Any:
    """Serve REGISTRY in Prometheus text format at http://address/metrics; returns the server (shutdown())."""
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
    return server


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in getattr(record, "fields", {}).items():
            out[k] = v
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "info", encoding: str = "console") -> None:
    lvl = {"warn": "WARNING"}.get(level.lower(), level.upper())
    handler = logging.StreamHandler(sys.stderr)
    if encoding == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in ("aiohttp.access", "botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RateLimitedLogger:
    """Logs at most one message per ``interval`` seconds per key; counts what it held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            msg = msg + f" ({held} similar messages suppressed)"
        self._log.log(level, msg, *args)
