"""Processor `memory_limiter`: refuses data while the process uses too much memory, so clients back off.

Keys as in the OpenTelemetry Collector: ``check_interval``, ``limit_mib`` / ``spike_limit_mib`` or
``limit_percentage`` / ``spike_limit_percentage`` (of the machine's or the cgroup's memory). The soft limit
is ``limit - spike`` (spike defaults to 20% of the limit). Memory (the process's resident set) is measured
every ``check_interval``; above the soft limit every batch is refused with
:class:`~collector.errors.RefusedError`, which the receiver answers with RESOURCE_EXHAUSTED + RetryInfo /
HTTP 429 + Retry-After, so the SDK retries and nothing already accepted is dropped. Above the hard limit a
garbage collection is forced as well. Put it first in a pipeline.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import psutil
from pydantic import Field, model_validator

from collector import telemetry as tm
from collector.component import Consumer, CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import RefusedError
from collector.pdata import Batch

__all__ = ["MemoryLimiter", "MemoryLimiterConfig"]

_MIB = 1024 * 1024


class MemoryLimiterConfig(StrictModel):
    check_interval: Duration = 1.0
    limit_mib: int = Field(default=0, ge=0)
    spike_limit_mib: int = Field(default=0, ge=0)
    limit_percentage: int = Field(default=0, ge=0, le=100)
    spike_limit_percentage: int = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> MemoryLimiterConfig:
        if self.check_interval <= 0:
            raise ValueError("check_interval must be greater than zero")
        if self.limit_mib and self.limit_percentage:
            raise ValueError("set limit_mib or limit_percentage, not both")
        if not self.limit_mib and not self.limit_percentage:
            raise ValueError("one of limit_mib or limit_percentage is required")
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError("spike_limit_mib must be smaller than limit_mib")
        if self.limit_percentage and self.spike_limit_percentage >= self.limit_percentage:
            raise ValueError("spike_limit_percentage must be smaller than limit_percentage")
        return self


def total_memory() -> int:
    """The cgroup's memory limit if there is one, else the machine's memory (bytes)."""
    total = int(psutil.virtual_memory().total)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                v = fh.read().strip()
        except OSError:
            continue
        if v.isdigit() and 0 < int(v) < total:
            return int(v)
    return total


class MemoryLimiter:
    def __init__(self, settings: CreateSettings, config: MemoryLimiterConfig) -> None:
        assert settings.next is not None, "a processor needs a next consumer"
        self.settings = settings
        self.config = config
        self.next: Consumer = settings.next
        self.log = settings.logger
        self._rl = tm.RateLimitedLogger(self.log)
        c = config
        if c.limit_mib:
            self.hard = c.limit_mib * _MIB
            self.spike = (c.spike_limit_mib * _MIB) if c.spike_limit_mib else self.hard // 5
        else:
            tot = total_memory()
            self.hard = tot * c.limit_percentage // 100
            self.spike = (tot * c.spike_limit_percentage // 100) if c.spike_limit_percentage else self.hard // 5
        self.soft = self.hard - self.spike
        self._proc = psutil.Process(os.getpid())
        self.refusing = False
        self.usage = 0
        self._task: asyncio.Task[None] | None = None
        sig = settings.signal.value if settings.signal else ""
        pid = settings.pipeline or ""
        self._in = tm.processor_incoming.labels(str(settings.id), pid, sig)
        self._out = tm.processor_outgoing.labels(str(settings.id), pid, sig)

    def check(self) -> None:
        """Measure now and update the refusing state."""
        self.usage = int(self._proc.memory_info().rss)
        if self.usage > self.hard:
            gc.collect()
            self.usage = int(self._proc.memory_info().rss)
        was = self.refusing
        self.refusing = self.usage > self.soft
        if self.refusing and not was:
            self.log.warning("memory usage %d MiB over the soft limit %d MiB: refusing data",
                             self.usage // _MIB, self.soft // _MIB)
        elif was and not self.refusing:
            self.log.info("memory usage %d MiB back under the soft limit: accepting data", self.usage // _MIB)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                self.check()
            except psutil.Error as e:  # pragma: no cover - /proc unreadable
                self._rl.log(logging.ERROR, "psutil", "cannot measure memory: %s", e)

    async def consume(self, batch: Batch) -> None:
        n = batch.item_count()
        self._in.inc(n)
        if self.refusing:
            raise RefusedError(
                f"memory usage {self.usage // _MIB} MiB is over the memory_limiter soft limit "
                f"{self.soft // _MIB} MiB", retry_after=max(1.0, self.config.check_interval))
        self._out.inc(n)
        await self.next.consume(batch)

    async def start(self) -> None:
        if self._task is None:
            self.check()
            self._task = asyncio.create_task(self._loop())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


FACTORIES = [
    Factory("memory_limiter", Kind.PROCESSOR, MemoryLimiterConfig, MemoryLimiter,
            description="refuse data (retryably) while memory is over a limit",
            example={"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20}),
]
