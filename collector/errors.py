"""The exception tree of the collector.

Exporters raise :class:`PermanentError` (never retried: counted, logged, dead-lettered) or
:class:`RetryableError` (retried with backoff; ``retry_after`` is the backend's throttle delay).
Consumers raise :class:`RefusedError` when they cannot take a batch right now (queue full, memory limit):
receivers turn it into the protocol's retryable answer so that the client retries.
"""

from __future__ import annotations

__all__ = [
    "CollectorError",
    "ConfigError",
    "PermanentError",
    "RefusedError",
    "RetryableError",
]


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """The configuration is invalid. ``errors`` holds every problem, each prefixed with its YAML path."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class PermanentError(CollectorError):
    """The backend rejected the data for good (bad data, bad credentials): do not retry."""


class RetryableError(CollectorError):
    """A transient failure; ``retry_after`` (seconds) is the least delay the backend asked for, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RefusedError(CollectorError):
    """A consumer cannot accept data now (queue full, memory limit). The client should retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
