"""Exporter `file`: OTLP/JSON lines, one export request per line, with size-based rotation and gzip.

Rotation (``rotation: {max_megabytes, max_backups}``): before a write would take the file past
``max_megabytes``, ``path`` is renamed ``path.1`` (``path.1`` becomes ``path.2``, ...); at most
``max_backups`` old files are kept (0: none). With ``compression: gzip`` every request is one gzip member
appended to the file, so the file is a valid multi-member gzip stream (``zcat``, ``gzip.open`` read it whole)
and rotation counts compressed bytes. ``flush_interval: 0`` (the default) flushes after every request.
"""

from __future__ import annotations

import asyncio
import os
from typing import IO, Literal

from pydantic import Field

from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.pdata import Batch, to_otlp_json

__all__ = ["FileExporter", "FileExporterConfig", "RotationConfig"]


class RotationConfig(StrictModel):
    max_megabytes: int = Field(default=100, ge=1)
    max_backups: int = Field(default=100, ge=0)


class FileExporterConfig(ExporterConfig):
    path: str = Field(min_length=1)
    rotation: RotationConfig | None = None
    compression: Literal["", "none", "gzip"] = ""
    compression_level: int = Field(default=1, ge=0, le=3)
    flush_interval: Duration = 0.0


class FileExporter(BaseExporter):
    config: FileExporterConfig

    def __init__(self, settings: CreateSettings, config: FileExporterConfig) -> None:
        super().__init__(settings, config)
        self._lock = asyncio.Lock()
        self._fh: IO[bytes] | None = None
        self._size = 0
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        d = os.path.dirname(self.config.path)
        if d:
            os.makedirs(d, exist_ok=True)
        self._open()
        if self.config.flush_interval > 0:
            self._flusher = asyncio.create_task(self._flush_loop())

    def _open(self) -> None:
        self._fh = open(self.config.path, "ab")
        self._size = self._fh.tell()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if self._dirty and self._fh is not None:
                self._fh.flush()
                self._dirty = False

    def _rotate(self) -> None:
        rot = self.config.rotation
        assert rot is not None and self._fh is not None
        self._fh.close()
        base = self.config.path
        if rot.max_backups == 0:
            os.remove(base)
        else:
            for i in range(rot.max_backups - 1, 0, -1):
                if os.path.exists(f"{base}.{i}"):
                    os.replace(f"{base}.{i}", f"{base}.{i + 1}")
            os.replace(base, f"{base}.1")
        self._open()

    def _write(self, data: bytes) -> None:
        assert self._fh is not None
        rot = self.config.rotation
        if rot and self._size and self._size + len(data) > rot.max_megabytes * 1024 * 1024:
            self._rotate()
            assert self._fh is not None
        self._fh.write(data)
        self._size += len(data)
        if self.config.flush_interval > 0:
            self._dirty = True
        else:
            self._fh.flush()

    async def send(self, batch: Batch) -> None:
        line = (to_otlp_json(batch.request) + "\n").encode()
        if self.config.compression == "gzip":
            from isal import igzip

            line = igzip.compress(line, self.config.compression_level)
        async with self._lock:
            if self._fh is None:
                raise RuntimeError(f"file exporter {self.id} is not started")
            self._write(line)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


FACTORIES = [
    Factory("file", Kind.EXPORTER, FileExporterConfig, FileExporter, description="OTLP/JSON lines to a file",
            example={"path": "./data/example.jsonl"}),
]
