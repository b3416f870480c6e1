"""What is left of a batch after a failed attempt, so that a retry sends only the rest.

An exporter that turns one batch into several requests keeps the requests not yet accepted when an attempt
fails (an error, a timeout, a cancellation). The next attempt at the same batch, be it the same object or the
same bytes read back from a persistent queue, resumes from there: nothing accepted is sent twice and whatever
the exporter counted while converting (Datadog's LLM metrics) is counted once. Lookups cost nothing while no
attempt has failed; after one, a batch is recognised by a hash of its serialised bytes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from collector.errors import PermanentError
from collector.pdata import Batch

T = TypeVar("T")

__all__ = ["Resume"]


def fingerprint(batch: Batch) -> bytes:
    raw = batch.to_bytes()
    return batch.signal.value.encode() + len(raw).to_bytes(8, "big") + hashlib.blake2b(raw, digest_size=16).digest()


class Resume:
    """Requests left per batch, bounded (the oldest entries go first)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._left: OrderedDict[bytes, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._left)

    def lookup(self, batch: Batch) -> tuple[bytes | None, Any]:
        """(fingerprint or None, what was left of this batch or None)."""
        if not self._left:
            return None, None
        fp = fingerprint(batch)
        return fp, self._left.get(fp)

    def keep(self, batch: Batch, fp: bytes | None, left: Any) -> None:
        fp = fp or fingerprint(batch)
        self._left[fp] = left
        self._left.move_to_end(fp)
        while len(self._left) > self.capacity:
            self._left.popitem(last=False)

    def forget(self, fp: bytes | None) -> None:
        if fp is not None:
            self._left.pop(fp, None)

    async def attempt(self, batch: Batch, convert: Callable[[], T], drain: Callable[[T], Awaitable[None]],
                      backend: str) -> None:
        """One send attempt: convert the batch (or take what a failed attempt left), then drain the
        requests. A conversion failure is permanent; a retryable failure, timeout or cancellation keeps what
        is left for the next attempt; a permanent failure forgets it."""
        fp, left = self.lookup(batch)
        if left is None:
            try:
                left = convert()
            except Exception as e:
                raise PermanentError(f"cannot convert the batch for {backend}: {e}") from e
        try:
            await drain(left)
        except PermanentError:
            self.forget(fp)
            raise
        except BaseException:  # retryable, timed out or cancelled: the next attempt sends only what is left
            if left:
                self.keep(batch, fp, left)
            raise
        self.forget(fp)
