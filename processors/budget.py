"""Processor `budget`: spend per key (tenant, team...) and window, with threshold crossings on the span.

Adds up ``gen_ai.usage.cost`` (as read by :mod:`collector.genai`) per value of ``key`` and per UTC day or month
(by span end time). The span that crosses a threshold gets ``llm.budget.crossed`` (the threshold),
``llm.budget.key_name``, ``llm.budget.key``, ``llm.budget.spent_usd`` and ``llm.budget.limit_usd``; the span that
reaches the limit and every later one of that key in the window get ``llm.budget.exceeded = true``. The
``llm_alerts`` connector turns crossings into alerts. With ``storage: file_storage[/name]`` the sums and the
thresholds already fired are kept in SQLite, so they survive a restart and no threshold fires twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sqlite3
import time
from typing import Any, Literal

from pydantic import Field, field_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal, anyvalue_to_python
from collector.processorhelper import SimpleProcessor
from collector.telemetry import RateLimitedLogger

__all__ = ["BudgetConfig", "BudgetProcessor", "window_of"]

_B = genai.BUDGET


class BudgetConfig(StrictModel):
    key: str = "tenant.id"
    window: Literal["daily", "monthly"] = "daily"
    default_limit_usd: float | None = Field(default=None, gt=0)
    limits: dict[str, float] = Field(default_factory=dict)
    thresholds: list[float] = Field(default_factory=lambda: [0.8, 1.0], min_length=1)
    storage: str | None = None

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        for t in v:
            if not 0 < t <= 10:
                raise ValueError(f"threshold {t} must be a fraction of the limit in (0, 10]")
        return sorted(set(v))

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if x <= 0:
                raise ValueError(f"limit for {k!r} must be > 0")
        return v


def window_of(end_ns: int, window: str) -> str:
    """The UTC window a span belongs to: ``2026-11-29`` (daily) or ``2026-11`` (monthly)."""
    t = dt.datetime.fromtimestamp((end_ns or time.time_ns()) / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%d" if window == "daily" else "%Y-%m")


class _State:
    __slots__ = ("fired", "spent")

    def __init__(self, spent: float = 0.0, fired: set[float] | None = None) -> None:
        self.spent = spent
        self.fired: set[float] = fired or set()


class BudgetProcessor(SimpleProcessor):
    def __init__(self, settings: CreateSettings, config: BudgetConfig) -> None:
        super().__init__(settings, config)
        self.state: dict[tuple[str, str], _State] = {}
        self.db: sqlite3.Connection | None = None
        self.path: str | None = None
        self._dirty: set[tuple[str, str]] = set()
        self._wins: dict[int, str] = {}  # UTC day number -> window name
        self._latest = ""  # the latest window seen
        self._rl = RateLimitedLogger(self.log)
        genai.want(config.key, *genai.KEYS["cost"], *_B.values())

    async def start(self) -> None:
        if self.config.storage is None:
            return
        if self.settings.host is None:
            raise RuntimeError("budget storage needs the collector host")
        ext = self.settings.host.extension(self.config.storage)
        self.path = ext.path_for("processor", str(self.settings.id))
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        assert self.path is not None
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS budget (key TEXT NOT NULL, win TEXT NOT NULL, spent REAL NOT NULL,"
                   " fired TEXT NOT NULL, PRIMARY KEY (key, win))")
        for key, win, spent, fired in db.execute("SELECT key, win, spent, fired FROM budget"):
            self.state[(key, win)] = _State(float(spent), set(json.loads(fired)))
            self._latest = max(self._latest, win)
        self.db = db

    async def shutdown(self) -> None:
        if self.db is not None:
            self._flush()
            self.db.close()
            self.db = None

    def _flush(self) -> None:
        if self.db is None or not self._dirty:
            self._dirty.clear()
            return
        rows = [(k, w, self.state[(k, w)].spent, json.dumps(sorted(self.state[(k, w)].fired)))
                for k, w in self._dirty]
        self._dirty.clear()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO budget (key, win, spent, fired) VALUES (?, ?, ?, ?) "
                                "ON CONFLICT (key, win) DO UPDATE SET spent = excluded.spent, fired = excluded.fired",
                                rows)

    def _prune(self, latest: str) -> None:
        """A new window started: forget windows older than the one before it (late spans of the previous
        window still count there)."""
        prev = self._latest
        self._latest = latest
        if not prev:
            return
        old = [k for k in self.state if k[1] < prev]
        for k in old:
            del self.state[k]
            self._dirty.discard(k)
        if old and self.db is not None:
            with self.db:
                self.db.execute("DELETE FROM budget WHERE win < ?", (prev,))

    def _key_of(self, values: dict[str, Any], resource: Any) -> str | None:
        """The span's value of the budget key (its own attribute, else its resource's)."""
        key = self.config.key
        v = values.get(key)
        if v is not None and v != "":
            return str(v)
        for kv in resource.attributes:
            if kv.key == key:
                v = anyvalue_to_python(kv.value)
                return None if v is None or v == "" else str(v)
        return None

    def process(self, batch: Batch) -> Batch | None:
        # on the serialised request (collector/wire.py), like cost before it: no parse, no serialise
        cfg = self.config
        limits = cfg.limits
        default = cfg.default_limit_usd
        thresholds = cfg.thresholds
        key_name = cfg.key
        tw = batch.wire()
        values = genai.wire_values(tw)
        put = genai.wire_put
        wins = self._wins
        changed = False
        _tids, _codes, starts, ends = tw.span_fields()  # span times, read from the bytes
        for r, (_others, scopes) in enumerate(tw.resources):
            resource = tw.resource(r)
            for _sc, first, n in scopes:
                for i in range(first, first + n):
                    try:
                        v = values[i]
                        key = self._key_of(v, resource)
                        if key is None:
                            continue
                        end = ends[i] or starts[i] or time.time_ns()
                        day = end // 86_400_000_000_000
                        win = wins.get(day)
                        if win is None:
                            if len(wins) > 1000:
                                wins.clear()
                            win = wins[day] = window_of(end, cfg.window)
                            if win > self._latest:
                                self._prune(win)
                        st = self.state.get((key, win))
                        if st is None:
                            st = self.state[(key, win)] = _State()
                        cost = genai.as_number(genai.vfield(v, "cost"))
                        if cost is not None and cost > 0:
                            st.spent += cost
                            self._dirty.add((key, win))
                        limit = limits.get(key, default)
                        if limit is None:
                            continue
                        crossed = [t for t in thresholds if t not in st.fired and st.spent >= t * limit]
                        if crossed:
                            st.fired.update(crossed)
                            self._dirty.add((key, win))
                            put(tw, i, _B["crossed"], float(crossed[-1]))
                            put(tw, i, _B["key_name"], key_name)
                            put(tw, i, _B["key"], key)
                            put(tw, i, _B["spent_usd"], round(st.spent, 10))
                            put(tw, i, _B["limit_usd"], float(limit))
                            changed = True
                        if st.spent >= limit:
                            put(tw, i, _B["exceeded"], True)
                            changed = True

                    except Exception as exc:  # noqa: BLE001 - one bad span must not fail the batch
                        self._rl.log(logging.WARNING, "span", "budget: span left unchanged: %r", exc)
        self._flush()
        if changed:
            batch.wire_changed()
        return batch


def _create(settings: CreateSettings, config: BudgetConfig) -> BudgetProcessor:
    return BudgetProcessor(settings, config)


FACTORIES = [
    Factory("budget", Kind.PROCESSOR, BudgetConfig, _create, frozenset({Signal.TRACES}),
            description="spend per tenant (or other key) and UTC day / month, threshold crossings on spans"),
]
