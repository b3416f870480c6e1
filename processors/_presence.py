"""Which spans (or log records) of a serialised request contain a given attribute key, without Python work
per attribute.

Reading the keys of every attribute of every span costs about 200 ns per attribute here (15-25 attributes a
span). A processor that needs one or two keys (``llm.budget.exceeded``, ``llm.no_log``) instead looks for the
key's bytes in the request's serialised form (a C-speed search) and, only when found, maps each hit to the
item whose bytes contain it by walking the length-prefixed wire format down to the items (a few byte reads
per item). A hit may be a false positive (the key's text inside a value); the caller then reads that item's
attributes, so the answer stays exact. Traces and logs requests share the layout: field 1 of the request is
the resource list, field 2 of a resource its scope list, field 2 of a scope its item list.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from collector.wire import iter_fields

__all__ = ["KeyFinder", "item_offsets", "items_containing"]

_hs: Any
try:  # optional: one multi-pattern pass at several GB/s instead of one bytes search per key
    import hyperscan as _hs
except ImportError:  # pragma: no cover - depends on the platform
    _hs = None


def _fields(buf: bytes, start: int, end: int, want: int) -> list[tuple[int, int]]:
    """(start, end) of each length-delimited occurrence of field ``want`` in buf[start:end]."""
    return [(vs, ve) for f, s, vs, ve in iter_fields(buf, start, end) if f == want and buf[s] & 7 == 2]


def item_offsets(raw: bytes) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Start and end offsets of every item in request order, and for each item (scope ordinal, index)."""
    starts: list[int] = []
    ends: list[int] = []
    where: list[tuple[int, int]] = []
    ordinal = 0
    for rs, re_ in _fields(raw, 0, len(raw), 1):
        for ss, se in _fields(raw, rs, re_, 2):
            for i, (a, b) in enumerate(_fields(raw, ss, se, 2)):
                starts.append(a)
                ends.append(b)
                where.append((ordinal, i))
            ordinal += 1
    return starts, ends, where


def _hits(raw: bytes, needles: list[bytes]) -> list[int]:
    hits: list[int] = []
    for n in needles:
        pos = raw.find(n)
        while pos >= 0:
            hits.append(pos)
            pos = raw.find(n, pos + 1)
    return hits


def _minimal(keys: Iterable[str]) -> list[bytes]:
    """The keys as bytes, without those that contain another key (finding the shorter finds both)."""
    ks = sorted({k.encode() for k in keys if k}, key=len)
    out: list[bytes] = []
    for k in ks:
        if not any(o in k for o in out):
            out.append(k)
    return out


class KeyFinder:
    """Finds a fixed set of attribute keys in serialised requests (compiled once per component)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.needles = _minimal(keys)
        self._db = None
        if _hs is not None and self.needles:
            try:
                import re

                db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
                db.compile(expressions=[re.escape(n) for n in self.needles], ids=list(range(len(self.needles))),
                           elements=len(self.needles), flags=[0] * len(self.needles))
                self._db = db
            except Exception:  # noqa: BLE001 - fall back to bytes searches
                self._db = None

    def hits(self, raw: bytes) -> list[int]:
        """Offsets inside ``raw`` where a key occurs (end offsets with hyperscan, start offsets without)."""
        if not self.needles:
            return []
        if self._db is None:
            return _hits(raw, self.needles)
        found: list[int] = []

        def on(_id: int, _frm: int, to: int, _flags: int, _ctx: object) -> None:
            found.append(to - 1)

        self._db.scan(raw, match_event_handler=on)
        return found

    def items(self, raw: bytes) -> set[tuple[int, int]]:
        """(scope ordinal, item index) of every item whose bytes contain one of the keys."""
        return _items_at(raw, self.hits(raw))


def items_containing(raw: bytes, keys: Iterable[str]) -> set[tuple[int, int]]:
    """(scope ordinal, item index) of every item whose bytes contain one of ``keys``."""
    return _items_at(raw, _hits(raw, _minimal(keys)))


def _items_at(raw: bytes, hits: list[int]) -> set[tuple[int, int]]:
    if not hits:
        return set()
    starts, ends, where = item_offsets(raw)
    out: set[tuple[int, int]] = set()
    for h in hits:
        j = bisect.bisect_right(starts, h) - 1
        if j >= 0 and h < ends[j]:
            out.add(where[j])
    return out
