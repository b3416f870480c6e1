"""Processor `probabilistic_sampler`: keeps a fixed share of traces (and logs), consistently by trace id.

The decision is the OpenTelemetry Collector's ``hash_seed`` mode, bit for bit: 32-bit FNV-1a over the seed's
four little-endian bytes and the trace id, kept when the low 14 bits are below
``sampling_percentage * 0x4000 / 100``. Every span of a trace, in any batch, on any collector with the same
``hash_seed``, gets the same decision, and it matches a Go Collector configured the same way. Log records are
sampled by their trace id, or with ``attribute_source: record`` by the value of ``from_attribute``; a record
with neither is dropped when ``fail_closed`` (the default), as the Collector does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal, anyvalue_to_python
from collector.processorhelper import SimpleProcessor
from processors._hashing import fnv32a, fnv32a_many, fnv32a_state, preload, scaled_rate

__all__ = ["ProbabilisticSampler", "ProbabilisticSamplerConfig", "keep_mask"]


class ProbabilisticSamplerConfig(StrictModel):
    sampling_percentage: float = Field(default=0.0, ge=0.0)
    hash_seed: int = Field(default=0, ge=0, le=0xFFFFFFFF)
    mode: Literal["", "hash_seed"] = ""
    attribute_source: Literal["traceID", "record"] = "traceID"
    from_attribute: str = ""
    fail_closed: bool = True

    @model_validator(mode="after")
    def _check(self) -> ProbabilisticSamplerConfig:
        if self.attribute_source == "record" and not self.from_attribute:
            raise ValueError("from_attribute is required when attribute_source is record")
        return self


def keep_mask(trace_ids: list[bytes], state: int, rate: int) -> list[bool]:
    """The Collector's decision for each trace id (``rate`` from :func:`scaled_rate`)."""
    return [(h & 0x3FFF) < rate for h in fnv32a_many(trace_ids, state)]


class ProbabilisticSampler(SimpleProcessor):
    config: ProbabilisticSamplerConfig

    def __init__(self, settings: CreateSettings, config: ProbabilisticSamplerConfig) -> None:
        super().__init__(settings, config)
        self._state = fnv32a_state(config.hash_seed)
        self._rate = scaled_rate(config.sampling_percentage)
        self._all = config.sampling_percentage >= 100.0
        self.mutates = not self._all

    async def start(self) -> None:
        preload()

    def process(self, batch: Batch) -> Batch | None:
        if self._all:
            return batch
        if self._rate == 0:
            return None
        if batch.signal is Signal.TRACES:
            self._traces(batch.request)
        elif batch.signal is Signal.LOGS:
            self._logs(batch.request)
        return batch

    def _traces(self, req: Any) -> None:
        state, rate = self._state, self._rate
        for rs in reversed(req.resource_spans):
            for j in range(len(rs.scope_spans) - 1, -1, -1):
                spans = rs.scope_spans[j].spans
                if not spans:
                    continue
                mask = keep_mask([s.trace_id for s in spans], state, rate)
                _apply(spans, mask)
                if not spans:
                    del rs.scope_spans[j]
        _prune(req.resource_spans, "scope_spans")

    def _logs(self, req: Any) -> None:
        state, rate = self._state, self._rate
        by_record = self.config.attribute_source == "record"
        key = self.config.from_attribute
        fail_closed = self.config.fail_closed
        for rl in req.resource_logs:
            for j in range(len(rl.scope_logs) - 1, -1, -1):
                recs = rl.scope_logs[j].log_records
                if not recs:
                    continue
                if by_record:
                    mask = [self._record_decision(r, key, fail_closed) for r in recs]
                else:
                    tids = [r.trace_id for r in recs]
                    mask = keep_mask(tids, state, rate)
                    for i, t in enumerate(tids):
                        if not t:
                            mask[i] = not fail_closed
                _apply(recs, mask)
                if not recs:
                    del rl.scope_logs[j]
        _prune(req.resource_logs, "scope_logs")

    def _record_decision(self, rec: Any, key: str, fail_closed: bool) -> bool:
        for kv in rec.attributes:
            if kv.key == key:
                v = anyvalue_to_python(kv.value)
                data = v if isinstance(v, bytes) else str(v).encode()
                return (fnv32a(data, self._state) & 0x3FFF) < self._rate
        return not fail_closed


def _apply(items: Any, mask: list[bool]) -> None:
    """Delete the items whose mask entry is False (in place, from the end)."""
    kept = sum(mask)
    if kept == len(mask):
        return
    if kept == 0:
        del items[:]
        return
    for i in range(len(mask) - 1, -1, -1):
        if not mask[i]:
            del items[i]


def _prune(resources: Any, scopes_field: str) -> None:
    for i in range(len(resources) - 1, -1, -1):
        if not getattr(resources[i], scopes_field):
            del resources[i]


FACTORIES = [
    Factory("probabilistic_sampler", Kind.PROCESSOR, ProbabilisticSamplerConfig, ProbabilisticSampler,
            frozenset({Signal.TRACES, Signal.LOGS}),
            description="keeps a share of traces and logs, consistently by trace id (Collector-compatible)",
            example={"sampling_percentage": 10}),
]
