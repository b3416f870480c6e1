"""Helpers for processors. A simple processor is a function of a batch (habit 8 of STYLE.md).

Subclass :class:`SimpleProcessor` and implement ``process(batch) -> Batch | None`` (sync). Returning None
(or a batch with no items) drops it. The helper forwards to the next consumer, counts items in and out,
and marks the batch modified (dropping cached bytes) unless the class sets ``mutates = False``.
"""

from __future__ import annotations

from typing import Any

from collector import telemetry as tm
from collector.component import Consumer, CreateSettings
from collector.pdata import Batch

__all__ = ["SimpleProcessor"]


class SimpleProcessor:
    mutates: bool = True

    def __init__(self, settings: CreateSettings, config: Any) -> None:
        assert settings.next is not None, "a processor needs a next consumer"
        self.settings = settings
        self.config = config
        self.next: Consumer = settings.next
        self.log = settings.logger
        sig = settings.signal.value if settings.signal else ""
        pid = settings.pipeline or ""
        self._in = tm.processor_incoming.labels(str(settings.id), pid, sig)
        self._out = tm.processor_outgoing.labels(str(settings.id), pid, sig)

    def process(self, batch: Batch) -> Batch | None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def consume(self, batch: Batch) -> None:
        self._in.inc(batch.item_count())
        out = self.process(batch)
        if out is None:
            return
        if self.mutates:
            out.modified()
        n = out.item_count()
        if n == 0:
            return
        self._out.inc(n)
        await self.next.consume(out)

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None
