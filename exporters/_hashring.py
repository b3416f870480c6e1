"""A consistent-hash ring with virtual nodes, used by the ``loadbalancing`` exporter.

Each backend is placed on a 64-bit ring at ``vnodes`` points (hash of ``"endpoint#i"``); a key goes to the
first backend point at or after the key's hash. Adding or removing one backend of N moves about 1/N of the
keys, and only those keys. :meth:`HashRing.lookup` can skip backends (down ones): their keys go to the next
live backend on the ring, every other key stays where it was.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Collection, Iterable

__all__ = ["HashRing", "key_hash"]


def key_hash(data: bytes) -> int:
    """A stable 64-bit hash (the first 8 bytes of blake2b), the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, members: Iterable[str] = (), vnodes: int = 150) -> None:
        self.vnodes = vnodes
        self._members: set[str] = set()
        self._points: list[int] = []
        self._owners: list[str] = []
        for m in members:
            self._members.add(m)
        self._rebuild()

    @property
    def members(self) -> frozenset[str]:
        return frozenset(self._members)

    def _rebuild(self) -> None:
        pts: list[tuple[int, str]] = []
        for m in sorted(self._members):
            for i in range(self.vnodes):
                pts.append((key_hash(f"{m}#{i}".encode()), m))
        pts.sort()
        self._points = [p for p, _ in pts]
        self._owners = [o for _, o in pts]

    def set_members(self, members: Iterable[str]) -> None:
        new = set(members)
        if new != self._members:
            self._members = new
            self._rebuild()

    def add(self, member: str) -> None:
        self.set_members(self._members | {member})

    def remove(self, member: str) -> None:
        self.set_members(self._members - {member})

    def lookup(self, key: bytes, skip: Collection[str] = ()) -> str | None:
        """The member owning ``key``; members in ``skip`` are passed over. None when no member is left."""
        if not self._points:
            return None
        h = key_hash(key)
        n = len(self._points)
        i = bisect.bisect_left(self._points, h)
        if not skip:
            return self._owners[i % n]
        if len(skip) >= len(self._members) and self._members <= set(skip):
            return None
        for j in range(n):
            owner = self._owners[(i + j) % n]
            if owner not in skip:
                return owner
        return None
