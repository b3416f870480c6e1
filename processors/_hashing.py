"""FNV-1a hashing of trace ids, bit-compatible with the OpenTelemetry Collector's samplers.

``probabilistic_sampler`` (hash_seed mode) hashes the 4 little-endian bytes of the seed followed by the trace
id with 32-bit FNV-1a and keeps the item when the low 14 bits are below ``percentage * 0x4000 / 100``.
``tail_sampling``'s probabilistic policy hashes the salt followed by the trace id with 64-bit FNV-1a and
keeps the trace when the hash is at most ``ratio * 2**64``. Both prefixes are folded into the start state once,
so a trace id costs 16 steps. Many ids at once are hashed with numpy when it is installed (about 70 ns per id
instead of 1.3 µs); the pure-Python path gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "HASH_BUCKETS",
    "fnv32a",
    "fnv32a_many",
    "fnv32a_state",
    "fnv64a",
    "fnv64a_many",
    "fnv64a_state",
    "preload",
    "scaled_rate",
    "threshold64",
]

_OFF32, _P32, _M32 = 0x811C9DC5, 0x01000193, 0xFFFFFFFF
_OFF64, _P64, _M64 = 0xCBF29CE484222325, 0x100000001B3, 0xFFFFFFFFFFFFFFFF
HASH_BUCKETS = 0x4000
_NUMPY_MIN = 48  # below this many ids numpy's fixed cost is higher than the Python loop

_np: Any = None
_np_tried = False


def _numpy() -> Any:
    global _np, _np_tried
    if not _np_tried:
        _np_tried = True
        try:
            import numpy

            _np = numpy
        except ImportError:  # pragma: no cover - numpy is a declared dependency
            _np = None
    return _np


def preload() -> None:
    """Import numpy now (components call this in start()), not on the first request."""
    _numpy()


def fnv32a(data: bytes, state: int = _OFF32) -> int:
    h = state
    for b in data:
        h = ((h ^ b) * _P32) & _M32
    return h


def fnv64a(data: bytes, state: int = _OFF64) -> int:
    h = state
    for b in data:
        h = ((h ^ b) * _P64) & _M64
    return h


def fnv32a_state(seed: int) -> int:
    """FNV-1a 32 state after the seed's 4 little-endian bytes (the Collector's ``i32tob``)."""
    return fnv32a((seed & _M32).to_bytes(4, "little"))


def fnv64a_state(salt: str) -> int:
    return fnv64a(salt.encode())


def scaled_rate(percentage: float) -> int:
    """``uint32(percentage * 0x4000 / 100)`` as the Collector computes it."""
    return int(percentage * (HASH_BUCKETS / 100.0))


def threshold64(ratio: float) -> int:
    """``ratio * MaxUint64`` (the Collector uses big.Float for the same exactness)."""
    from decimal import Decimal

    if ratio >= 1.0:
        return _M64
    if ratio <= 0.0:
        return 0
    return int(Decimal(_M64) * Decimal(ratio))


def _ids16(ids: Sequence[bytes]) -> bytes:
    out = b"".join(ids)
    if len(out) != 16 * len(ids):
        out = b"".join(i if len(i) == 16 else i[:16].ljust(16, b"\0") for i in ids)
    return out


def fnv32a_many(ids: Sequence[bytes], state: int) -> list[int]:
    """FNV-1a 32 of each 16-byte id (shorter ids are zero-padded, as an empty pcommon.TraceID is)."""
    np = _numpy() if len(ids) >= _NUMPY_MIN else None
    if np is None:
        return [fnv32a(i if len(i) == 16 else i[:16].ljust(16, b"\0"), state) for i in ids]
    a = np.frombuffer(_ids16(ids), dtype=np.uint8).reshape(-1, 16).astype(np.uint32)
    h = np.full(len(ids), state, dtype=np.uint32)
    p = np.uint32(_P32)
    for col in range(16):
        h ^= a[:, col]
        h *= p
    return h.tolist()  # type: ignore[no-any-return]


def fnv64a_many(ids: Sequence[bytes], state: int) -> list[int]:
    np = _numpy() if len(ids) >= _NUMPY_MIN else None
    if np is None:
        return [fnv64a(i if len(i) == 16 else i[:16].ljust(16, b"\0"), state) for i in ids]
    a = np.frombuffer(_ids16(ids), dtype=np.uint8).reshape(-1, 16).astype(np.uint64)
    h = np.full(len(ids), state, dtype=np.uint64)
    p = np.uint64(_P64)
    for col in range(16):
        h ^= a[:, col]
        h *= p
    return h.tolist()  # type: ignore[no-any-return]
