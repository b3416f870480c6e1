"""Exporter `otlphttp`: OTLP over HTTP (aiohttp), protobuf or JSON, with the Collector's keys.

URLs: ``endpoint`` + ``/v1/traces`` (``/v1/metrics``, ``/v1/logs``), or ``traces_endpoint`` (...) used as is.
With ``encoding: proto`` an unmodified batch is sent as the bytes it came in as. ``compression: gzip`` uses
isal's igzip at ``compression_level`` (0-3, default 1): about 1.5 ms per MB of LLM spans, where zlib's default
level costs about 25 ms. Answers are mapped by :func:`collector.protocol_errors.from_http_status`
(Retry-After honoured); a partial success is logged and counted in ``otelcol_exporter_rejected_items``.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from pydantic import Field, model_validator

from collector.component import CreateSettings, Factory, Kind
from collector.errors import ConfigError, RetryableError
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.pdata import RESPONSE_TYPES, Batch, Signal, to_otlp_json
from collector.protocol_errors import from_http_status
from exporters._otlp_common import Compression, TlsConfig, report_partial_success, ssl_context

__all__ = ["OtlpHttpExporter", "OtlpHttpExporterConfig"]

_USER_AGENT = "llm-collector-otlphttp"


class OtlpHttpExporterConfig(ExporterConfig):
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    compression: Compression = "gzip"
    compression_level: int = Field(default=1, ge=0, le=3)
    encoding: Literal["proto", "json"] = "proto"
    tls: TlsConfig = Field(default_factory=TlsConfig)

    @model_validator(mode="after")
    def _some_endpoint(self) -> OtlpHttpExporterConfig:
        if not (self.endpoint or self.traces_endpoint or self.metrics_endpoint or self.logs_endpoint):
            raise ValueError("endpoint is required (or traces_endpoint / metrics_endpoint / logs_endpoint)")
        for url in (self.endpoint, self.traces_endpoint, self.metrics_endpoint, self.logs_endpoint):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must start with http:// or https://")
        return self

    def url_for(self, signal: Signal) -> str | None:
        override = getattr(self, f"{signal.value}_endpoint")
        if override:
            return str(override)
        if self.endpoint:
            return self.endpoint.rstrip("/") + f"/v1/{signal.value}"
        return None


class OtlpHttpExporter(BaseExporter):
    config: OtlpHttpExporterConfig

    def __init__(self, settings: CreateSettings, config: OtlpHttpExporterConfig) -> None:
        super().__init__(settings, config)
        self.urls: dict[Signal, str] = {}
        for sig in settings.signals or frozenset(Signal):
            url = config.url_for(sig)
            if url is None:
                raise ConfigError([f"exporters::{settings.id}::{sig.value}_endpoint: required for the "
                                   f"{sig.value} pipeline when endpoint is not set"])
            self.urls[sig] = url
        ctype = "application/x-protobuf" if config.encoding == "proto" else "application/json"
        self._headers = {"User-Agent": _USER_AGENT, **config.headers, "Content-Type": ctype}
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._session: Any = None
        self._ssl: ssl.SSLContext | bool | None = None

    async def open(self) -> None:
        import aiohttp

        tls = self.config.tls
        needs_tls = any(u.startswith("https://") for u in self.urls.values())
        self._ssl = ssl_context(tls) if needs_tls and not tls.insecure else None
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False,
                                         limit=max(10, self.config.sending_queue.num_consumers))
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)

    def _body(self, batch: Batch) -> bytes:
        data = batch.to_bytes() if self.config.encoding == "proto" else to_otlp_json(batch.request).encode()
        if self.config.compression == "gzip":
            from isal import igzip

            data = igzip.compress(data, self.config.compression_level)
        return data

    async def send(self, batch: Batch) -> None:
        import aiohttp

        if self._session is None:
            raise RetryableError(f"exporter {self.id} is not started")
        url = self.urls[batch.signal]
        kw: dict[str, Any] = {}
        if self.config.tls.server_name_override and url.startswith("https://"):
            kw["server_hostname"] = self.config.tls.server_name_override
        try:
            async with self._session.post(url, data=self._body(batch), headers=self._headers,
                                          timeout=aiohttp.ClientTimeout(total=self.config.timeout or None),
                                          **kw) as resp:
                body = await resp.read()
                status, headers, ctype = resp.status, dict(resp.headers), resp.content_type
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise RetryableError(f"cannot reach {url}: {type(e).__name__}: {e}") from None
        err = from_http_status(status, headers, _error_text(body, ctype), backend=url)
        if err is not None:
            raise err
        if body:
            report_partial_success(self.id, batch.signal, _parse_response(batch.signal, body, ctype), self._rl)

    async def close(self) -> None:
        if self._session is not None:
            s, self._session = self._session, None
            await s.close()


def _parse_response(signal: Signal, body: bytes, ctype: str) -> Any:
    resp = RESPONSE_TYPES[signal]()
    try:
        if ctype == "application/json":
            json_format.Parse(body, resp, ignore_unknown_fields=True)
        else:
            resp.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError):
        return RESPONSE_TYPES[signal]()
    return resp


def _error_text(body: bytes, ctype: str) -> str:
    """The message of a google.rpc.Status error body (protobuf or JSON), else the body as text."""
    if not body:
        return ""
    st = status_pb2.Status()
    try:
        if ctype == "application/x-protobuf":
            st.ParseFromString(body)
            return st.message or ""
        if ctype == "application/json":
            json_format.Parse(body, st, ignore_unknown_fields=True)
            return st.message or body.decode("utf-8", "replace")
    except (DecodeError, json_format.ParseError, ValueError):
        pass
    return body[:500].decode("utf-8", "replace")


def _create(settings: CreateSettings, config: OtlpHttpExporterConfig) -> OtlpHttpExporter:
    return OtlpHttpExporter(settings, config)


FACTORIES = [
    Factory("otlphttp", Kind.EXPORTER, OtlpHttpExporterConfig, _create, stability="stable",
            description="OTLP over HTTP (protobuf or JSON) to another collector or backend",
            example={"endpoint": "http://127.0.0.1:4318"}),
]
