"""Exporter `file`: OTLP/JSON lines, one export request per line, with size-based rotation and gzip."""

from __future__ import annotations

import asyncio
import gzip
import os
from typing import Literal

from pydantic import Field

from collector.component import CreateSettings, Factory, Kind
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.config import StrictModel
from collector.pdata import Batch, to_otlp_json

__all__ = ["FileExporterConfig", "FileExporter"]


class RotationConfig(StrictModel):
    max_megabytes: int = Field(default=100, ge=1)
    max_backups: int = Field(default=100, ge=0)


class FileExporterConfig(ExporterConfig):
    path: str
    rotation: RotationConfig | None = None
    compression: Literal["", "none", "gzip"] = ""
    flush_interval: str | None = None


class FileExporter(BaseExporter):
    config: FileExporterConfig

    def __init__(self, settings: CreateSettings, config: FileExporterConfig) -> None:
        super().__init__(settings, config)
        self._lock = asyncio.Lock()
        self._fh = None
        self._size = 0

    async def open(self) -> None:
        d = os.path.dirname(self.config.path)
        if d:
            os.makedirs(d, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._fh = open(self.config.path, "ab")
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        rot = self.config.rotation
        assert rot is not None and self._fh is not None
        self._fh.close()
        base = self.config.path
        for i in range(rot.max_backups, 0, -1):
            src = f"{base}.{i}" if i > 1 else base
            dst = f"{base}.{i}" if i > 1 else f"{base}.1"
            if i > 1:
                src, dst = f"{base}.{i - 1}", f"{base}.{i}"
            if os.path.exists(src):
                os.replace(src, dst)
        if rot.max_backups == 0:
            os.remove(base)
        self._open()

    def _write(self, data: bytes) -> None:
        assert self._fh is not None
        rot = self.config.rotation
        if rot and self._size and self._size + len(data) > rot.max_megabytes * 1024 * 1024:
            self._rotate()
        self._fh.write(data)
        self._fh.flush()
        self._size += len(data)

    async def send(self, batch: Batch) -> None:
        line = (to_otlp_json(batch.request) + "\n").encode()
        if self.config.compression == "gzip":
            line = gzip.compress(line, compresslevel=1)
        async with self._lock:
            self._write(line)

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


FACTORIES = [
    Factory("file", Kind.EXPORTER, FileExporterConfig, FileExporter, description="OTLP/JSON lines to a file",
            example={"path": "./data/example.jsonl"}),
]
