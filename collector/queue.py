"""Exporters' sending queues: in memory, or persistent on SQLite in a ``file_storage`` directory.

A :class:`SendingQueue` holds one exporter's requests until they are sent. With a :class:`SqliteStore`
behind it (``sending_queue.storage``) ``put`` returns only once the request is committed to disk, so what a
receiver acknowledged survives ``kill -9``; an entry leaves the database only when the exporter ``ack``\\s
it (sent, dead-lettered, too old, or pushed out by the disk budget).

Batching happens here, at read time (``sending_queue.batch``): ``get`` takes several stored requests of the
same signal and client metadata and the exporter sends them as one; they are acknowledged together after
the send. No batch in the making lives outside the durable queue. Merging costs nothing: OTLP export
requests have one repeated top-level field, so concatenated serialisations parse as the merged request.

:class:`SqliteStore` is one database per ``file_storage`` extension, shared by every exporter using it (one
logical queue each). A request fanned out to several exporters is written once as a blob that their
entries reference (refcounted). Blobs of at least 32 KiB are files of their own next to the database (see
``_EXTERNAL_MIN``); the database holds their rows only. All SQLite work runs on one dedicated thread; the operations that arrive
during one event-loop iteration, and all that pile up while a transaction commits, go into the next single
transaction (group commit), so concurrent requests share one commit.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import os
import queue as _stdqueue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector import telemetry as tm
from collector.pdata import Batch, Signal

if TYPE_CHECKING:  # pragma: no cover
    from collector.exporterhelper import QueueConfig

__all__ = ["Entry", "QueueFullError", "SendingQueue", "SqliteStore", "split_batch"]

log = logging.getLogger(__name__)

_CACHE_BYTES = 64 * 1024 * 1024
"""Per queue: bytes of stored requests also kept in memory so that sending does not read them back."""

_EXTERNAL_MIN = 32 * 1024
"""Requests at least this large are stored in a file of their own next to the database (the row holds only
the metadata): SQLite spreads a large blob over hundreds of pages, writes them twice (WAL, then checkpoint),
and must walk them again to free them, which costs ~10x more CPU than writing and unlinking a file."""


class QueueFullError(Exception):
    """The queue has no room (and ``block_on_overflow`` is off)."""


@dataclass(eq=False)
class Entry:
    """One stored export request."""

    id: int
    signal: Signal
    items: int
    nbytes: int
    created: float
    """Wall-clock time it was received (survives restarts; for ``max_age``)."""
    arrived: float
    """Monotonic time it entered this process's queue (for ``batch.flush_timeout``)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    batch: Batch | None = None
    blob: int = 0
    raw: bytes | None = None

    def group_key(self) -> tuple[Any, ...]:
        return (self.signal, tuple(sorted(self.metadata.items())))


# --- SQLite store -----------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs(
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    refs INTEGER NOT NULL,
    ext INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    blob INTEGER NOT NULL,
    signal TEXT NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created REAL NOT NULL,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS entries_by_queue ON entries(queue, id);
"""


@dataclass(eq=False)
class _Op:
    kind: str
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


class SqliteStore:
    """One SQLite database (WAL) holding the logical queues of every exporter that uses one file_storage."""

    def __init__(self, path: str, fsync: bool = False, timeout: float = 1.0,
                 compaction_interval: float = 300.0) -> None:
        self.path = path
        self.blob_dir = path + "-blobs"
        """Requests of at least ``_EXTERNAL_MIN`` bytes: one file each, named by blob id."""
        self.fsync = fsync
        self.timeout = timeout
        self.compaction_interval = compaction_interval
        self._last_compaction = time.monotonic()
        self._q: _stdqueue.SimpleQueue[list[_Op] | None] = _stdqueue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._buf: list[_Op] = []
        # thread-side state: ids are handed out here (so a group is inserted with executemany), and the
        # blobs written recently by this process, to share one between the queues of a fan-out
        self._next_entry = 1
        self._next_blob = 1
        self._recent: collections.OrderedDict[int, tuple[bytes, int]] = collections.OrderedDict()
        self._recent_bytes = 0
        self._live: dict[int, int] = {}
        self._written: list[int] = []
        """Blob files written by the current transaction (removed again if it rolls back)."""
        self._unlink: list[int] = []
        """Blob files whose rows the current transaction deletes (removed once it has committed)."""
        self._lock = threading.Lock()
        self.commits = 0
        """Transactions committed (group commit: usually far fewer than operations)."""
        self.operations = 0

    # -- lifecycle (called on the event loop) --------------------------------------------------------------
    def open(self) -> None:
        if self._thread is not None:
            return
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        ready: _stdqueue.SimpleQueue[BaseException | None] = _stdqueue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sqlite-queue", daemon=True)
        self._thread.start()
        err = ready.get()
        if err is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"cannot open queue database {self.path}: {err}") from err

    def close(self) -> None:
        if self._thread is None:
            return
        self._flush()
        self._q.put(None)
        self._thread.join(timeout=30)
        self._thread = None

    @property
    def is_open(self) -> bool:
        return self._thread is not None

    # -- operations --------------------------------------------------------------------------------------
    def _submit(self, kind: str, *args: Any) -> asyncio.Future[Any]:
        if self._thread is None:
            raise RuntimeError(f"queue database {self.path} is closed")
        loop = asyncio.get_running_loop()
        op = _Op(kind, args, loop, loop.create_future())
        if not self._buf:
            # hand over at the end of this loop iteration: every put made by one fan-out lands in one group
            loop.call_soon(self._flush)
        self._buf.append(op)
        return op.future

    def _flush(self) -> None:
        if self._buf:
            ops, self._buf = self._buf, []
            self._q.put(ops)

    async def enqueue(self, queue: str, raw: bytes, signal: Signal, items: int, created: float,
                      metadata: Mapping[str, str]) -> tuple[int, int]:
        """Commit one request to ``queue``; returns (entry id, blob id). The same ``raw`` object enqueued by
        several queues (one fan-out) is stored once."""
        eid, blob = await self._submit("enqueue", queue, raw, signal.value, items, created,
                                       json.dumps(dict(metadata)) if metadata else None)
        return int(eid), int(blob)

    async def ack(self, entries: Sequence[tuple[int, int]]) -> None:
        """Delete entries, given as (entry id, blob id); a blob goes with its last entry."""
        if entries:
            await self._submit("ack", list(entries))

    async def load(self, queue: str) -> list[tuple[int, int, str, int, int, float, str | None]]:
        """(id, blob, signal, items, bytes, created, metadata) of every entry of ``queue``, oldest first."""
        return list(await self._submit("load", queue))

    async def read(self, ids: Sequence[int]) -> dict[int, bytes]:
        return dict(await self._submit("read", list(ids)))

    async def stats(self) -> dict[str, int]:
        return dict(await self._submit("stats"))

    # -- the thread --------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=max(0.0, self.timeout))
        # one process owns the file: a second collector on the same directory fails at start instead of
        # sending the same entries twice (workers get a directory each)
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # effective when the file is created
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.executescript(_SCHEMA)
        if "ext" not in {r[1] for r in conn.execute("PRAGMA table_info(blobs)")}:  # a database of 0.1
            conn.execute("ALTER TABLE blobs ADD COLUMN ext INTEGER NOT NULL DEFAULT 0")
        os.makedirs(self.blob_dir, exist_ok=True)
        # files without a row: written by a transaction that never committed, or deleted rows whose files
        # were not yet removed when the process died
        keep = {str(r[0]) for r in conn.execute("SELECT id FROM blobs WHERE ext = 1")}
        for name in os.listdir(self.blob_dir):
            if name not in keep:
                try:
                    os.unlink(os.path.join(self.blob_dir, name))
                except OSError as e:
                    log.warning("queue database %s: cannot remove stale blob file %s: %s", self.path, name, e)
        self._next_entry = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM entries").fetchone()[0]
        self._next_blob = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM blobs").fetchone()[0]
        return conn

    def _run(self, ready: _stdqueue.SimpleQueue[BaseException | None]) -> None:
        try:
            conn = self._connect()
        except BaseException as e:  # noqa: BLE001 - reported to open()
            ready.put(e)
            return
        ready.put(None)
        try:
            while True:
                ops = self._q.get()
                if ops is None:
                    break
                stop = False
                while True:  # take everything that piled up while the last transaction committed
                    try:
                        more = self._q.get_nowait()
                    except _stdqueue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    ops.extend(more)
                self._transaction(conn, ops)
                if self.compaction_interval and time.monotonic() - self._last_compaction > self.compaction_interval:
                    self._last_compaction = time.monotonic()
                    try:  # give the pages of sent data back to the file system
                        conn.execute("PRAGMA incremental_vacuum")
                    except sqlite3.Error as e:
                        log.warning("queue database %s: incremental vacuum failed: %s", self.path, e)
                if stop:
                    break
        finally:
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            conn.close()

    def _transaction(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        self._written.clear()
        self._unlink.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
            enq = [op for op in ops if op.kind == "enqueue"]
            if enq:
                self._enqueue_many(conn, enq)
            for op in ops:
                if op.kind == "enqueue":
                    continue
                try:
                    op.result = getattr(self, "_op_" + op.kind)(conn, *op.args)
                except Exception as e:  # noqa: BLE001 - reported to that operation's caller
                    op.error = e
            if self._written and self.fsync:
                _fsync_dir(self.blob_dir)  # the new files' names, before the rows that point at them
            conn.execute("COMMIT")
            self.commits += 1
            self.operations += len(ops)
            for b in self._unlink:
                self._remove_file(b)
        except Exception as e:  # noqa: BLE001 - the thread must survive; every caller gets the error
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for b in self._written:
                self._remove_file(b)
            self._recent.clear()
            self._recent_bytes = 0
            self._live.clear()
            for op in ops:
                op.error = e
        by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
        for op in ops:
            by_loop.setdefault(op.loop, []).append(op)
        for loop, lops in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, lops)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    def _enqueue_many(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        new_blobs: dict[int, list[Any]] = {}
        more_refs: collections.Counter[int] = collections.Counter()
        rows = []
        for op in ops:
            queue, raw, signal, items, created, metadata = op.args
            key = id(raw)
            hit = self._recent.get(key)
            if hit is not None and hit[0] is raw and hit[1] in self._live:
                blob = hit[1]
                self._live[blob] += 1
                if blob in new_blobs:
                    new_blobs[blob][2] += 1
                else:
                    more_refs[blob] += 1
            else:
                blob = self._next_blob
                self._next_blob += 1
                if len(raw) >= _EXTERNAL_MIN:
                    self._written.append(blob)
                    self._write_file(blob, raw)
                    new_blobs[blob] = [blob, b"", 1, 1]
                else:
                    new_blobs[blob] = [blob, raw, 1, 0]
                prev = self._recent.pop(key, None)
                if prev is not None:
                    self._recent_bytes -= len(prev[0])
                self._recent[key] = (raw, blob)
                self._recent_bytes += len(raw)
                self._live[blob] = 1
            eid = self._next_entry
            self._next_entry += 1
            rows.append((eid, queue, blob, signal, items, len(raw), created, metadata))
            op.result = (eid, blob)
        if new_blobs:
            conn.executemany("INSERT INTO blobs(id, data, refs, ext) VALUES (?, ?, ?, ?)", list(new_blobs.values()))
        if more_refs:
            conn.executemany("UPDATE blobs SET refs = refs + ? WHERE id = ?", [(n, b) for b, n in more_refs.items()])
        conn.executemany("INSERT INTO entries(id, queue, blob, signal, items, bytes, created, metadata) "
                         "VALUES (?,?,?,?,?,?,?,?)", rows)
        # remember recent blobs (a fan-out's puts may straddle two groups), within bounds
        while self._recent and (len(self._recent) > 256 or self._recent_bytes > 16 * 1024 * 1024):
            old, b = self._recent.popitem(last=False)[1]
            self._recent_bytes -= len(old)
            self._live.pop(b, None)

    def _op_ack(self, conn: sqlite3.Connection, entries: list[tuple[int, int]]) -> None:
        conn.executemany("DELETE FROM entries WHERE id = ?", [(e,) for e, _b in entries])
        counts = collections.Counter(b for _e, b in entries)
        for b, n in counts.items():
            # the last references go: delete the row outright (an UPDATE would rewrite an inline blob)
            gone = conn.execute("DELETE FROM blobs WHERE id = ? AND refs <= ? RETURNING ext", (b, n)).fetchall()
            if not gone:
                conn.execute("UPDATE blobs SET refs = refs - ? WHERE id = ?", (n, b))
            elif gone[0][0]:
                self._unlink.append(b)
        for b, n in counts.items():
            left = self._live.get(b)
            if left is not None:
                if left - n <= 0:
                    del self._live[b]
                else:
                    self._live[b] = left - n

    def _op_load(self, conn: sqlite3.Connection, queue: str) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT id, blob, signal, items, bytes, created, metadata FROM entries WHERE queue = ? ORDER BY id",
            (queue,)).fetchall()

    def _op_read(self, conn: sqlite3.Connection, ids: list[int]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            for eid, blob, data, ext in conn.execute(
                    f"SELECT e.id, b.id, b.data, b.ext FROM entries e JOIN blobs b ON b.id = e.blob "
                    f"WHERE e.id IN ({marks})", chunk):
                if not ext:
                    out.append((eid, data))
                    continue
                try:
                    out.append((eid, self._read_file(blob)))
                except FileNotFoundError:  # removed behind our back: the queue drops the entry
                    log.error("queue database %s: blob file %s of entry %d is missing", self.path, blob, eid)
        return out

    def _op_stats(self, conn: sqlite3.Connection) -> list[tuple[str, int]]:
        b = conn.execute("SELECT count(*), coalesce(sum(length(data)), 0), coalesce(sum(refs), 0) FROM blobs").fetchone()
        e = conn.execute("SELECT count(*) FROM entries").fetchone()
        files = os.listdir(self.blob_dir)
        nbytes = b[1] + sum(os.path.getsize(os.path.join(self.blob_dir, f)) for f in files)
        return [("blobs", b[0]), ("blob_bytes", nbytes), ("blob_refs", b[2]), ("entries", e[0]),
                ("blob_files", len(files))]

    # -- blob files --------------------------------------------------------------------------------------
    def _file(self, blob: int) -> str:
        return os.path.join(self.blob_dir, str(blob))

    def _write_file(self, blob: int, raw: bytes) -> None:
        fd = os.open(self._file(blob), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _read_file(self, blob: int) -> bytes:
        with open(self._file(blob), "rb") as fh:
            return fh.read()

    def _remove_file(self, blob: int) -> None:
        try:
            os.unlink(self._file(blob))
        except FileNotFoundError:
            pass
        except OSError as e:  # removed at the next start
            log.warning("queue database %s: cannot remove blob file %s: %s", self.path, blob, e)


_LAYOUT = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
}


def _weight(signal: Signal, item: Any) -> int:
    if signal is not Signal.METRICS:
        return 1
    kind = item.WhichOneof("data")
    return len(getattr(item, kind).data_points) if kind else 0


def split_batch(batch: Batch, max_items: int) -> list[Batch]:
    """Split a request into requests of at most ``max_items`` items (a metric is not split across its data
    points), keeping each item's resource and scope."""
    res_f, scope_f, item_f = _LAYOUT[batch.signal]
    req_type = type(batch.request)
    out: list[Batch] = []
    cur = req_type()
    n = 0

    def flush() -> None:
        nonlocal cur, n
        if n:
            out.append(Batch(batch.signal, cur, metadata=batch.metadata, received_ns=batch.received_ns))
        cur, n = req_type(), 0

    for rs in getattr(batch.request, res_f):
        for ss in getattr(rs, scope_f):
            target = None
            for item in getattr(ss, item_f):
                w = _weight(batch.signal, item)
                if n and n + w > max_items:
                    flush()
                    target = None
                if target is None:
                    new_rs = getattr(cur, res_f).add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                    target = getattr(new_rs, scope_f).add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                getattr(target, item_f).add().CopyFrom(item)
                n += w
    flush()
    return out or [batch]


def _resolve(ops: list[_Op]) -> None:
    for op in ops:
        if op.future.done():
            continue
        if op.error is not None:
            op.future.set_exception(op.error)
        else:
            op.future.set_result(op.result)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(seq: list[int], n: int) -> list[list[int]]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


# --- the queue ----------------------------------------------------------------------------------------------
DropHandler = Callable[[Batch, str, Sequence[Entry]], None]


class SendingQueue:
    """One exporter's queue: bounded (``queue_size`` by ``sizer``), in memory or on a :class:`SqliteStore`.

    Entries handed out by :meth:`get` stay counted (and stored) until :meth:`ack`; :meth:`release` puts them
    back (shutdown with a send still failing). ``on_drop(batch, reason, entries)`` is called for every entry
    the queue itself removes unsent (``max_age``, ``queue_disk_full``), before it is acknowledged.
    """

    def __init__(self, name: str, config: QueueConfig, store: SqliteStore | None = None,
                 on_drop: DropHandler | None = None, signals: Sequence[Signal] = ()) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.on_drop = on_drop
        self.signals = list(signals)
        self.capacity = config.queue_size
        self.items_sizer = config.sizer == "items"
        self._pending: collections.OrderedDict[int, Entry] = collections.OrderedDict()
        self._inflight: dict[int, Entry] = {}
        self._used = 0
        self._used_by_signal: collections.Counter[Signal] = collections.Counter()
        self._bytes = 0
        self._cached = 0
        self._budget = config.max_size_mib * 1024 * 1024
        self._ids = itertools.count(1)
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._get_lock = asyncio.Lock()
        self._draining = False
        self._closed = False
        self._gauges: dict[Signal, Any] = {}

    @property
    def persistent(self) -> bool:
        return self.store is not None

    def _cost(self, items: int) -> int:
        return items if self.items_sizer else 1

    def size(self) -> int:
        """Current size in the sizer's unit (requests or items), in-flight entries included."""
        return self._used

    def in_flight(self) -> int:
        return len(self._inflight)

    def __len__(self) -> int:
        return len(self._pending) + len(self._inflight)

    def qsize(self) -> int:
        """Requests waiting to be sent (not those being sent), as ``asyncio.Queue.qsize``."""
        return len(self._pending)

    def empty(self) -> bool:
        """No request waiting to be sent, as ``asyncio.Queue.empty``."""
        return not self._pending

    def _gauge(self, signals: Any = None) -> None:
        for s in signals if signals is not None else self.signals:
            g = self._gauges.get(s)
            if g is None:
                g = self._gauges[s] = tm.exporter_queue_size.labels(self.name, s.value)
            g.set(self._used_by_signal[s])

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def open(self) -> None:
        for s in self.signals:
            tm.exporter_queue_capacity.labels(self.name, s.value).set(self.capacity)
        if self.store is not None:
            rows = await self.store.load(self.name)
            now = time.monotonic()
            for eid, blob, sig, items, nbytes, created, md in rows:
                try:
                    signal = Signal(sig)
                except ValueError:
                    continue
                e = Entry(eid, signal, items, nbytes, created, now, json.loads(md) if md else {}, blob=blob)
                self._add(e)
            if rows:
                log.info("exporter %s: %d requests (%d bytes) restored from the persistent queue",
                         self.name, len(rows), self._bytes)
            if self._used > self.capacity:
                log.warning("exporter %s: persistent queue holds %d, over its capacity %d; new data is refused "
                            "until it drains", self.name, self._used, self.capacity)
        self._gauge()

    def start_draining(self) -> None:
        """Shutdown: ``get`` no longer waits for a batch to fill and returns None once the queue is empty."""
        self._draining = True
        self._data.set()

    async def close(self) -> None:
        self._closed = True
        self._data.set()
        self._space.set()

    # -- writing -----------------------------------------------------------------------------------------
    def _add(self, e: Entry) -> None:
        self._pending[e.id] = e
        cost = self._cost(e.items)
        self._used += cost
        self._used_by_signal[e.signal] += cost
        self._bytes += e.nbytes
        if e.raw is not None:
            self._cached += len(e.raw)

    def _remove(self, e: Entry) -> None:
        cost = self._cost(e.items)
        self._used -= cost
        self._used_by_signal[e.signal] -= cost
        self._bytes -= e.nbytes
        if e.raw is not None:
            self._cached -= len(e.raw)
            e.raw = None
        e.batch = None

    async def put(self, batch: Batch) -> None:
        """Store one request; returns once it is durable (persistent queue). Raises QueueFullError."""
        if self._closed:
            raise QueueFullError(f"sending queue of {self.name} is closed")
        items = batch.item_count()
        cost = self._cost(items)
        while self._used > 0 and self._used + cost > self.capacity:
            if not self.config.block_on_overflow:
                raise QueueFullError(f"sending queue of exporter {self.name} is full "
                                     f"({self._used}/{self.capacity} {self.config.sizer})")
            self._space.clear()
            await self._space.wait()
            if self._closed:
                raise QueueFullError(f"sending queue of {self.name} is closed")
        if self.store is None:
            self._store_in_memory(batch)
        else:
            # the commit goes on even if the caller is cancelled (client gone): what is written is adopted
            await asyncio.shield(self._store_on_disk(batch, items, cost))

    def _parts(self, batch: Batch, items: int) -> list[Batch]:
        bcfg = self.config.batch
        if bcfg is not None and bcfg.max_size and bcfg.sizer == "items" and items > bcfg.max_size:
            return split_batch(batch, bcfg.max_size)
        return [batch]

    def _store_in_memory(self, batch: Batch) -> None:
        for p in self._parts(batch, batch.item_count()):
            self._add(Entry(next(self._ids), p.signal, p.item_count(), 0, p.received_ns / 1e9, time.monotonic(),
                            p.metadata, batch=p))
        self._gauge((batch.signal,))
        self._data.set()

    async def _store_on_disk(self, batch: Batch, items: int, cost: int) -> None:
        assert self.store is not None
        # reserve the room before awaiting the commit so concurrent puts cannot overshoot
        self._used += cost
        self._used_by_signal[batch.signal] += cost
        try:
            parts = self._parts(batch, items)
            raws = [p.to_bytes() for p in parts]
            need = sum(len(r) for r in raws)
            if self._bytes + need > self._budget:
                await self._make_room(need)
            created = batch.received_ns / 1e9
            ids = await asyncio.gather(*(
                self.store.enqueue(self.name, r, p.signal, p.item_count(), created, p.metadata)
                for p, r in zip(parts, raws)))
        finally:
            self._used -= cost
            self._used_by_signal[batch.signal] -= cost
        for p, r, (eid, blob) in zip(parts, raws, ids):
            keep = r if self._cached + len(r) <= _CACHE_BYTES else None
            self._add(Entry(eid, p.signal, p.item_count(), len(r), created, time.monotonic(), p.metadata,
                            raw=keep, blob=blob))
        self._gauge((batch.signal,))
        self._data.set()

    async def _make_room(self, need: int) -> None:
        """Disk budget full: push the oldest entries (not being sent) out, each dead-lettered."""
        victims: list[Entry] = []
        freed = 0
        for e in self._pending.values():
            if self._bytes - freed + need <= self._budget:
                break
            victims.append(e)
            freed += e.nbytes
        if victims:
            log.warning("exporter %s: persistent queue over max_size_mib; dropping the %d oldest requests",
                        self.name, len(victims))
            await self._drop(victims, "queue_disk_full")

    async def _drop(self, entries: list[Entry], reason: str) -> None:
        for e in entries:
            self._pending.pop(e.id, None)
            self._inflight[e.id] = e
        if self.on_drop is not None:
            await self._load_data(entries)
            for e in entries:
                self.on_drop(self._batch_of([e]), reason, [e])
        await self.ack(entries)

    # -- reading -----------------------------------------------------------------------------------------
    async def get(self) -> list[Entry] | None:
        """The next entries to send as one batch (same signal and metadata; ``sending_queue.batch`` sizes);
        None once the queue is closed, or draining and empty."""
        bcfg = self.config.batch
        async with self._get_lock:
            while True:
                if self._closed:
                    return None
                if not self._pending:
                    if self._draining:
                        return None
                    self._data.clear()
                    await self._data.wait()
                    continue
                expired = self._expired()
                if expired:
                    await self._drop(expired, "max_age")
                    continue
                group, size = self._select()
                if bcfg is not None and bcfg.min_size and size < bcfg.min_size and not self._draining:
                    wait = group[0].arrived + bcfg.flush_timeout - time.monotonic()
                    if wait > 0:
                        self._data.clear()
                        try:
                            await asyncio.wait_for(self._data.wait(), wait)
                        except TimeoutError:
                            pass
                        if not self._closed:
                            group, size = self._select()
                        else:
                            return None
                for e in group:
                    del self._pending[e.id]
                    self._inflight[e.id] = e
                try:
                    await self._load_data(group)
                except BaseException:
                    self.release(group)
                    raise
                lost = [e for e in group if e.batch is None and e.raw is None]
                if lost:  # its blob file was deleted by someone else: say so once, never retry it
                    group = [e for e in group if e.batch is not None or e.raw is not None]
                    await self._drop(lost, "storage_lost")
                    if not group:
                        continue
                return group

    def _expired(self) -> list[Entry]:
        max_age = self.config.max_age
        if not max_age:
            return []
        limit = time.time() - max_age
        out = []
        for e in self._pending.values():
            if e.created >= limit:
                break  # oldest first: the rest are younger
            out.append(e)
        return out

    def _select(self) -> tuple[list[Entry], int]:
        bcfg = self.config.batch
        it = iter(self._pending.values())
        first = next(it)
        group = [first]
        if bcfg is None:
            return group, self._batch_size(first)
        key = first.group_key()
        size = self._batch_size(first)
        for e in it:
            if e.group_key() != key:
                continue
            s = self._batch_size(e)
            if bcfg.max_size and size + s > bcfg.max_size:
                break
            group.append(e)
            size += s
        return group, size

    def _batch_size(self, e: Entry) -> int:
        bcfg = self.config.batch
        sizer = bcfg.sizer if bcfg is not None else "items"
        if sizer == "items":
            return e.items
        if sizer == "bytes":
            return e.nbytes or (len(e.batch.to_bytes()) if e.batch is not None else 0)
        return 1

    async def _load_data(self, entries: Sequence[Entry]) -> None:
        missing = [e.id for e in entries if e.batch is None and e.raw is None]
        if missing and self.store is not None:
            data = await self.store.read(missing)
            for e in entries:
                if e.id in data:
                    e.raw = data[e.id]
                    self._cached += len(e.raw)

    def batch_of(self, entries: Sequence[Entry]) -> Batch:
        return self._batch_of(entries)

    @staticmethod
    def _batch_of(entries: Sequence[Entry]) -> Batch:
        first = entries[0]
        if len(entries) == 1 and first.batch is not None:
            return first.batch
        if len(entries) == 1:
            return Batch(first.signal, raw=first.raw or b"", metadata=first.metadata,
                         received_ns=int(first.created * 1e9))
        raw = b"".join(e.batch.to_bytes() if e.batch is not None else (e.raw or b"") for e in entries)
        return Batch(first.signal, raw=raw, metadata=first.metadata, received_ns=int(first.created * 1e9))

    # -- completion ----------------------------------------------------------------------------------------
    async def ack(self, entries: Sequence[Entry]) -> None:
        """The entries are done (sent or dropped): remove them for good."""
        for e in entries:
            self._inflight.pop(e.id, None)
            self._pending.pop(e.id, None)
        try:
            if self.store is not None and self.store.is_open:
                await self.store.ack([(e.id, e.blob) for e in entries])
        finally:
            for e in entries:
                self._remove(e)
            self._gauge({e.signal for e in entries})
            self._space.set()

    def release(self, entries: Sequence[Entry]) -> None:
        """Not sent after all (shutdown): back to the head of the queue, still stored."""
        back = [e for e in entries if self._inflight.pop(e.id, None) is not None]
        if not back:
            return
        rest = list(self._pending.values())
        self._pending = collections.OrderedDict((e.id, e) for e in back + rest)
        self._data.set()

    def remaining(self) -> list[Entry]:
        return list(self._inflight.values()) + list(self._pending.values())

    async def drop_all(self, reason: str) -> None:
        """Drop every entry left (in-memory queue at shutdown): each is handed to ``on_drop`` first."""
        left = self.remaining()
        if left:
            self._inflight.clear()
            for e in left:
                self._pending.pop(e.id, None)
                self._inflight[e.id] = e
            if self.on_drop is not None:
                for e in left:
                    self.on_drop(self._batch_of([e]), reason, [e])
            await self.ack(left)

