"""What the `otlp` (gRPC) and `otlphttp` exporters share: the Collector's `tls` and `compression` keys and the
handling of OTLP partial success answers."""

from __future__ import annotations

import logging
import ssl
from typing import Any, Literal

from pydantic import Field, model_validator

from collector import telemetry as tm
from collector.config import StrictModel
from collector.pdata import Signal

__all__ = ["Compression", "TlsConfig", "read_file", "report_partial_success", "ssl_context"]

Compression = Literal["gzip", "none", ""]


class TlsConfig(StrictModel):
    """The Collector's client TLS settings. ``insecure: true`` means plaintext (no TLS at all)."""

    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        return self


def read_file(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client SSL context from the settings (system CAs unless ``ca_file``)."""
    ctx = ssl.create_default_context(cafile=tls.ca_file) if tls.ca_file else ssl.create_default_context()
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_REJECTED_FIELD = {Signal.TRACES: "rejected_spans", Signal.METRICS: "rejected_data_points",
                   Signal.LOGS: "rejected_log_records"}


def report_partial_success(exporter_id: str, signal: Signal, response: Any, rl: tm.RateLimitedLogger) -> int:
    """Log and count the items a backend rejected in an otherwise successful answer; returns that number.

    As in the Collector, a partial success is not retried (the backend said the rejected items are bad)."""
    if not response.HasField("partial_success"):
        return 0
    ps = response.partial_success
    n = int(getattr(ps, _REJECTED_FIELD[signal]))
    if n or ps.error_message:
        tm.exporter_rejected.labels(exporter_id, signal.value).inc(n)
        rl.log(logging.WARNING, "partial", "partial success: the backend rejected %d %s: %s",
               n, signal.item_name, ps.error_message or "(no message)")
    return n


def level_field(default: int, lo: int, hi: int, doc: str) -> Any:
    return Field(default=default, ge=lo, le=hi, description=doc)
