"""One function per protocol that maps a backend's answer to the collector's three kinds of failure.

Permanent (never retried), throttled (retryable, with the backend's delay) and retryable. Exporters call
these instead of interpreting status codes themselves (STYLE.md habit 6).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import grpc

from collector.errors import PermanentError, RetryableError

__all__ = ["RETRYABLE_GRPC", "RETRYABLE_HTTP", "from_grpc_error", "from_http_status", "parse_retry_after"]

RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRYABLE_GRPC = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_http_status(status: int, headers: Mapping[str, str] | None = None, body: str = "",
                     backend: str = "backend") -> Exception | None:
    """None for 2xx; RetryableError (with Retry-After) for 408/425/429/5xx; PermanentError otherwise."""
    if 200 <= status < 300:
        return None
    h = {k.lower(): v for k, v in (headers or {}).items()}
    msg = f"{backend} answered HTTP {status}" + (f": {body.strip()[:500]}" if body and body.strip() else "")
    if status in RETRYABLE_HTTP or status >= 500:
        return RetryableError(msg, retry_after=parse_retry_after(h.get("retry-after")))
    return PermanentError(msg)


def from_grpc_error(err: grpc.RpcError, backend: str = "backend") -> Exception:
    """RetryableError for transient codes (RetryInfo honoured; RESOURCE_EXHAUSTED only with RetryInfo, as
    the OTLP spec says), PermanentError for the rest."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    msg = f"{backend} answered gRPC {code.name}: {details}"
    delay = _retry_info(err)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is None:
        return RetryableError(msg)
    if code in RETRYABLE_GRPC:
        return RetryableError(msg, retry_after=delay)
    return PermanentError(msg)


def _retry_info(err: grpc.RpcError) -> float | None:
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        st = rpc_status.from_call(err)
    except Exception:  # noqa: BLE001 - no status details
        return None
    if st is None:
        return None
    for d in st.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None
