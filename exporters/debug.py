"""Exporter `debug`: prints what passes to stderr (``verbosity: basic | normal | detailed``).

``basic``: one line per batch (signal and item count). ``normal``: plus one line per span (trace id, span id,
name, duration), per metric (name, type, points) or per log record (severity, body, first 120 characters).
``detailed``: plus the whole request as OTLP/JSON. No sending queue by default: it writes synchronously.
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field

from collector.component import CreateSettings, Factory, Kind
from collector.exporterhelper import BaseExporter, ExporterConfig, QueueConfig
from collector.pdata import Batch, Signal, anyvalue_to_python, iter_log_records, iter_spans, to_otlp_json

__all__ = ["DebugExporter", "DebugExporterConfig"]


def _no_queue() -> QueueConfig:
    return QueueConfig(enabled=False)


class DebugExporterConfig(ExporterConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sending_queue: QueueConfig = Field(default_factory=_no_queue)


class DebugExporter(BaseExporter):
    config: DebugExporterConfig

    def __init__(self, settings: CreateSettings, config: DebugExporterConfig) -> None:
        super().__init__(settings, config)

    def lines(self, batch: Batch) -> list[str]:
        v = self.config.verbosity
        n = batch.item_count()
        out = [f"{self.id}: {batch.signal.value}: {n} {batch.signal.item_name}"]
        if v == "basic":
            return out
        req = batch.request
        if batch.signal is Signal.TRACES:
            for _rs, _ss, span in iter_spans(req):
                ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                out.append(f"  span {span.trace_id.hex()} {span.span_id.hex()} {span.name!r} {ms:.1f}ms")
        elif batch.signal is Signal.METRICS:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data") or "empty"
                        pts = len(getattr(m, kind).data_points) if kind != "empty" else 0
                        out.append(f"  metric {m.name} {kind} {pts} points")
        else:
            for _rl, _sl, rec in iter_log_records(req):
                body = anyvalue_to_python(rec.body)
                text = body if isinstance(body, str) else repr(body)
                sev = rec.severity_text or str(rec.severity_number)
                out.append(f"  log {sev} {text[:120]!r}")
        if v == "detailed":
            out.append(to_otlp_json(req))
        return out

    async def send(self, batch: Batch) -> None:
        sys.stderr.write("\n".join(self.lines(batch)) + "\n")
        sys.stderr.flush()


FACTORIES = [
    Factory("debug", Kind.EXPORTER, DebugExporterConfig, DebugExporter, description="print to stderr"),
]
