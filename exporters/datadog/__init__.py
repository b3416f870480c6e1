"""Exporter `datadog`: LLM-ops logs and metrics (and OTel logs and metrics) to Datadog.

In a traces pipeline every LLM call becomes a Datadog log (and, with ``logs.all_spans``, every span) and
feeds per-window metrics under ``metrics.namespace``; in a logs pipeline OTel log records become Datadog
logs; in a metrics pipeline OTel metrics become Datadog series. See docs/datadog-langfuse.md.
"""

from __future__ import annotations

from typing import Any

from collector.component import CreateSettings, Factory, Kind

from .config import DatadogExporterConfig

__all__ = ["FACTORIES", "DatadogExporterConfig"]


def _create(settings: CreateSettings, config: DatadogExporterConfig) -> Any:
    from .exporter import DatadogExporter

    return DatadogExporter(settings, config)


FACTORIES = [
    Factory("datadog", Kind.EXPORTER, DatadogExporterConfig, _create,
            description="LLM-ops logs and metrics, OTel logs and metrics to Datadog",
            # loopback endpoints: a test that starts the example never reaches out to Datadog
            example={"api": {"key": "0123456789abcdef0123456789abcdef"},
                     "logs": {"endpoint": "http://127.0.0.1:9"}, "metrics": {"endpoint": "http://127.0.0.1:9"}}),
]
