"""Extension `file_storage`: a directory where components keep state on disk (persistent queues, tail
sampling buffers, budget sums). Each component gets its own file via :meth:`FileStorage.path_for`.

Exporters whose ``sending_queue.storage`` names this extension share one SQLite database in WAL mode
(:meth:`FileStorage.queue_store`), one logical queue per exporter, with requests of 32 KiB and more in
files of their own (``exporter_sending_queues.sqlite-blobs/``); ``fsync: true`` makes every commit
durable against power loss (``synchronous=FULL``), the default survives a process crash (``NORMAL``)."""

from __future__ import annotations

import os
import re

from pydantic import Field

from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.queue import SqliteStore

__all__ = ["FileStorage", "FileStorageConfig"]


class FileStorageConfig(StrictModel):
    directory: str = "./data/storage"
    fsync: bool = False
    create_directory: bool = True
    timeout: Duration = 1.0
    compaction_interval: Duration = Field(default=300.0)


class FileStorage:
    def __init__(self, settings: CreateSettings, config: FileStorageConfig) -> None:
        self.id = str(settings.id)
        self.config = config
        self.directory = config.directory
        worker = os.environ.get("LLM_COLLECTOR_WORKER")  # service.workers > 1: each worker has its own files
        if worker:
            self.directory = os.path.join(config.directory, f"worker-{worker}")
        self.fsync = config.fsync
        self._store: SqliteStore | None = None

    def queue_store(self) -> SqliteStore:
        """The shared database of the exporters' persistent queues (opened on first use)."""
        if self._store is None:
            store = SqliteStore(self.path_for("exporter", "sending_queues"), fsync=self.fsync,
                                timeout=self.config.timeout, compaction_interval=self.config.compaction_interval)
            store.open()
            self._store = store
        return self._store

    def path_for(self, kind: str, component_id: str, name: str = "") -> str:
        """A file path unique to one component (e.g. ``exporter_otlp_backend.sqlite``)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kind}_{component_id}" + (f"_{name}" if name else ""))
        return os.path.join(self.directory, safe + ".sqlite")

    async def start(self) -> None:
        if self.config.create_directory:
            os.makedirs(self.directory, exist_ok=True)
        elif not os.path.isdir(self.config.directory):
            raise RuntimeError(f"file_storage directory {self.config.directory} does not exist")
        else:
            os.makedirs(self.directory, exist_ok=True)

    async def shutdown(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()


FACTORIES = [
    Factory("file_storage", Kind.EXTENSION, FileStorageConfig, FileStorage, frozenset(),
            description="a directory for persistent queues and component state"),
]
