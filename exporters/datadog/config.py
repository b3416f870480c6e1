"""Config model of the `datadog` exporter (key names follow the Collector's Datadog exporter)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from collector.config import Duration, StrictModel
from collector.exporterhelper import ExporterConfig

__all__ = ["SITES", "ApiConfig", "DatadogExporterConfig", "LogsConfig", "MetricsConfig"]

# The sites datadog-api-client knows (its server variable ``site``).
SITES = (
    "datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu", "ap1.datadoghq.com",
    "ap2.datadoghq.com", "uk1.datadoghq.com", "ddog-gov.com", "us2.ddog-gov.com",
)


def _endpoint(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid endpoint {value!r} (expected e.g. https://http-intake.logs.datadoghq.com)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"endpoint {value!r} must be a scheme and host only; the API paths are added")
    return f"{parts.scheme}://{parts.netloc}"


class ApiConfig(StrictModel):
    key: SecretStr
    site: str = "datadoghq.com"
    fail_on_invalid_key: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("the Datadog API key is empty (set it, e.g. key: ${env:DD_API_KEY})")
        return SecretStr(v.get_secret_value().strip())

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        if v not in SITES:
            raise ValueError(f"unknown Datadog site {v!r} (valid: {', '.join(SITES)})")
        return v


class LogsConfig(StrictModel):
    endpoint: str | None = None
    all_spans: bool = False

    _check = field_validator("endpoint")(classmethod(lambda cls, v: _endpoint(v)))


class MetricsConfig(StrictModel):
    endpoint: str | None = None
    flush_interval: Duration = Field(default=10.0, gt=0)
    namespace: str = Field(default="llm", pattern=r"^[A-Za-z][A-Za-z0-9_.]*$")
    enabled: bool = True

    _check = field_validator("endpoint")(classmethod(lambda cls, v: _endpoint(v)))


class DatadogExporterConfig(ExporterConfig):
    api: ApiConfig
    logs: LogsConfig = Field(default_factory=LogsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tags: list[str] = Field(default_factory=list)
    service: str | None = None
    source: str = "llm-collector"
    hostname: str | None = None
    include_content: bool = False
    timeout: Duration = 15.0

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            if not isinstance(t, str) or not t.strip():
                raise ValueError("tags must be non-empty strings like env:prod")
        return [t.strip() for t in v]
