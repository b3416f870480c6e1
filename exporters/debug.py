"""Exporter `debug`: prints what passes to stderr (``verbosity: basic | normal | detailed``)."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field

from collector.component import CreateSettings, Factory, Kind
from collector.exporterhelper import BaseExporter, ExporterConfig, QueueConfig
from collector.pdata import Batch, Signal, iter_spans, to_otlp_json

__all__ = ["DebugExporterConfig", "DebugExporter"]


def _no_queue() -> QueueConfig:
    return QueueConfig(enabled=False)


class DebugExporterConfig(ExporterConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sending_queue: QueueConfig = Field(default_factory=_no_queue)


class DebugExporter(BaseExporter):
    config: DebugExporterConfig

    def __init__(self, settings: CreateSettings, config: DebugExporterConfig) -> None:
        super().__init__(settings, config)

    async def send(self, batch: Batch) -> None:
        v = self.config.verbosity
        n = batch.item_count()
        lines = [f"{self.id}: {batch.signal.value}: {n} {batch.signal.item_name}"]
        if v == "normal" and batch.signal is Signal.TRACES:
            for _rs, _ss, span in iter_spans(batch.request):
                lines.append(f"  {span.trace_id.hex()} {span.span_id.hex()} {span.name}")
        elif v == "detailed":
            lines.append(to_otlp_json(batch.request))
        sys.stderr.write("\n".join(lines) + "\n")


FACTORIES = [
    Factory("debug", Kind.EXPORTER, DebugExporterConfig, DebugExporter, description="print to stderr"),
]
