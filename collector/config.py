"""Configuration: YAML files in the OpenTelemetry Collector's shape, validated into typed models.

``load(paths)`` reads and merges the files (maps merge, lists replace; later files win), substitutes
``${env:VAR}``, ``${VAR}`` and ``${env:VAR:-default}`` (``$$`` is a literal ``$``), then checks every
component config against its factory's pydantic model and every pipeline reference. All problems are
collected, each with its YAML path (``exporters::file/archive::path: field required``), and raised together
as :class:`~collector.errors.ConfigError`. Validation does no I/O beyond reading the files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from collector.component import ComponentID, Factory, Kind, registry
from collector.errors import ConfigError
from collector.pdata import Signal

__all__ = [
    "CollectorConfig",
    "Duration",
    "PipelineConfig",
    "ServiceConfig",
    "StrictModel",
    "format_validation_error",
    "load",
    "load_files",
    "merge",
    "parse_duration",
    "substitute_env",
]

log = logging.getLogger(__name__)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'200ms', '5s', '1m30s', '24h' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s or 200ms")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like 5s or 200ms")
    text = value.strip()
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d)", text)
    if parts and re.fullmatch(r"((\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d)\s*)+", text):
        return sum(float(n) * _UNITS[u] for n, u in parts)
    m = _DURATION_RE.match(text)
    if m and m.group(2) is None:
        return float(m.group(1))
    raise ValueError(f"invalid duration {value!r} (expected e.g. 5s, 200ms, 1m30s)")


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A duration in seconds, written in YAML as ``5s``, ``200ms``, ``1h`` or a bare number of seconds."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True,
                              coerce_numbers_to_str=True)


# --- env substitution -----------------------------------------------------------------------------------
_ENV_RE = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, path: str = "", warnings: list[str] | None = None) -> Any:
    """Substitute env references in every string of a parsed YAML tree.

    A string that is exactly one reference takes the variable's YAML type (``${env:PORT}`` -> int),
    as the Collector does; references inside longer strings are pasted as text.
    """
    if isinstance(value, dict):
        return {k: substitute_env(v, f"{path}::{k}" if path else str(k), warnings) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{path}::{i}", warnings) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None or (got == "" and default is not None):
            if default is not None:
                return default
            if warnings is not None:
                warnings.append(f"{path}: environment variable {name} is not set; using an empty value")
            return ""
        return got

    whole = _ENV_RE.fullmatch(value)
    out = _ENV_RE.sub(repl, value)
    if whole and whole.group(0) != "$$":
        try:
            typed = yaml.safe_load(out) if out else None
        except yaml.YAMLError:
            return out
        # only when the text is the value's plain spelling: "0123" (YAML 1.1 octal), "1:30" (sexagesimal),
        # "yes" stay strings, so a secret made of digits is never silently changed
        if isinstance(typed, bool) and out.strip().lower() in ("true", "false"):
            return typed
        if isinstance(typed, (int, float)) and not isinstance(typed, bool) and str(typed) == out.strip():
            return typed
        return out
    return out


def merge(base: Any, over: Any) -> Any:
    """Maps merge recursively, anything else (lists included) is replaced by the later value."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return over


def load_files(paths: Iterable[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in paths:
        try:
            with open(p, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        except OSError as e:
            raise ConfigError([f"{p}: cannot read config: {e.strerror}"]) from e
        except yaml.YAMLError as e:
            raise ConfigError([f"{p}: invalid YAML: {e}"]) from e
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError([f"{p}: the top level must be a map"])
        merged = merge(merged, doc)
    return merged


# --- models of the service section ------------------------------------------------------------------------
class PipelineConfig(StrictModel):
    receivers: list[str] = Field(default_factory=list)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(default_factory=list)


class MetricsTelemetry(StrictModel):
    address: str = "localhost:8888"
    level: str = Field(default="normal", pattern="^(none|basic|normal|detailed)$")


class LogsTelemetry(StrictModel):
    level: str = Field(default="info", pattern="^(?i)(debug|info|warn|warning|error)$")
    encoding: str = Field(default="console", pattern="^(console|json)$")


class TelemetryConfig(StrictModel):
    metrics: MetricsTelemetry = Field(default_factory=MetricsTelemetry)
    logs: LogsTelemetry = Field(default_factory=LogsTelemetry)


class ServiceConfig(StrictModel):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    shutdown_timeout: Duration = 30.0
    workers: int = Field(default=1, ge=1, le=256)


@dataclass
class ComponentConfig:
    id: ComponentID
    kind: Kind
    factory: Factory
    config: Any


@dataclass
class CollectorConfig:
    """The validated configuration: typed component configs and the service section."""

    components: dict[Kind, dict[ComponentID, ComponentConfig]]
    service: ServiceConfig
    raw: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def get(self, kind: Kind, cid: ComponentID) -> ComponentConfig:
        return self.components[kind][cid]

    def pipelines(self) -> dict[str, tuple[Signal, PipelineConfig]]:
        return {pid: (Signal(pid.split("/", 1)[0]), p) for pid, p in self.service.pipelines.items()}


def format_validation_error(prefix: str, err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = "::".join(str(x) for x in e["loc"] if x not in ("function-after", "function-before"))
        path = f"{prefix}::{loc}" if loc else prefix
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        msg = msg[:1].lower() + msg[1:]
        out.append(f"{path}: {msg}")
    return out


_TOP_KEYS = ("receivers", "processors", "exporters", "connectors", "extensions", "service")


def load(paths: Iterable[str]) -> CollectorConfig:
    """Read, merge, substitute and validate; raises ConfigError with every problem at once."""
    return validate(load_files(paths))


def validate(doc: dict[str, Any]) -> CollectorConfig:
    warnings: list[str] = []
    doc = substitute_env(doc, "", warnings)
    errors: list[str] = []
    for k in doc:
        if k not in _TOP_KEYS:
            errors.append(f"{k}: unknown top-level key (valid: {', '.join(_TOP_KEYS)})")

    components: dict[Kind, dict[ComponentID, ComponentConfig]] = {k: {} for k in Kind}
    for kind in Kind:
        section = doc.get(kind.value) or {}
        if not isinstance(section, dict):
            errors.append(f"{kind.value}: must be a map of component ids to configs")
            continue
        for key, body in section.items():
            path = f"{kind.value}::{key}"
            try:
                cid = ComponentID.parse(key)
            except ValueError as e:
                errors.append(f"{path}: {e}")
                continue
            factory = registry.get(kind, cid.type)
            if factory is None:
                valid = ", ".join(registry.types(kind)) or "none"
                errors.append(f'{path}: unknown type "{cid.type}" for id "{cid}" (valid: {valid})')
                continue
            if body is None:
                body = {}
            if not isinstance(body, dict):
                errors.append(f"{path}: must be a map")
                continue
            try:
                cfg = factory.config_model.model_validate(body)
            except ValidationError as e:
                errors.extend(format_validation_error(path, e))
                continue
            components[kind][cid] = ComponentConfig(cid, kind, factory, cfg)

    service_doc = doc.get("service") or {}
    service = ServiceConfig()
    service_doc_bad_pipelines = False
    if not isinstance(service_doc, dict):
        errors.append("service: must be a map")
    else:
        try:
            service = ServiceConfig.model_validate(service_doc)
        except ValidationError as e:
            errors.extend(format_validation_error("service", e))
            # keep checking the keys that are valid, so that every error is reported at once
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            partial = {k: v for k, v in service_doc.items() if k not in bad and k in ServiceConfig.model_fields}
            try:
                service = ServiceConfig.model_validate(partial)
            except ValidationError:
                service = ServiceConfig()
            if "pipelines" in bad:
                service_doc_bad_pipelines = True

    errors.extend(_check_service(service, components, doc, pipelines_invalid=service_doc_bad_pipelines))
    if errors:
        raise ConfigError(errors)
    return CollectorConfig(components=components, service=service, raw=doc, warnings=warnings)


def _configured(doc: dict[str, Any], kind: Kind, cid: str) -> bool:
    section = doc.get(kind.value) or {}
    return isinstance(section, dict) and cid in section


def _check_service(
    service: ServiceConfig, comps: dict[Kind, dict[ComponentID, ComponentConfig]], doc: dict[str, Any],
    pipelines_invalid: bool = False,
) -> list[str]:
    errors: list[str] = []
    for ext in service.extensions:
        if not _configured(doc, Kind.EXTENSION, ext):
            errors.append(f'service::extensions: references extension "{ext}" which is not configured')
    if not service.pipelines and not pipelines_invalid:
        errors.append("service::pipelines: at least one pipeline is required")
    conn_as_exporter: dict[str, set[Signal]] = {}
    conn_as_receiver: dict[str, set[Signal]] = {}
    for pid, p in service.pipelines.items():
        path = f"service::pipelines::{pid}"
        sig_name = pid.split("/", 1)[0]
        try:
            signal = Signal(sig_name)
        except ValueError:
            errors.append(f"{path}: unknown signal {sig_name!r} (valid: traces, metrics, logs)")
            continue
        if not p.receivers:
            errors.append(f"{path}::receivers: at least one receiver is required")
        if not p.exporters:
            errors.append(f"{path}::exporters: at least one exporter is required")
        for role, names, kind in (
            ("receiver", p.receivers, Kind.RECEIVER),
            ("processor", p.processors, Kind.PROCESSOR),
            ("exporter", p.exporters, Kind.EXPORTER),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    errors.append(f'{path}::{kind.value}: {role} "{name}" is listed twice')
                seen.add(name)
                if kind is not Kind.PROCESSOR and _configured(doc, Kind.CONNECTOR, name):
                    (conn_as_receiver if kind is Kind.RECEIVER else conn_as_exporter).setdefault(
                        name, set()
                    ).add(signal)
                    continue
                if not _configured(doc, kind, name):
                    errors.append(f'{path}: references {role} "{name}" which is not configured')
                    continue
                try:
                    cc = comps[kind].get(ComponentID.parse(name))
                except ValueError:
                    continue
                if cc is not None and signal not in cc.factory.signals:
                    errors.append(
                        f'{path}: {role} "{name}" does not support {signal.value} '
                        f"(supports: {', '.join(sorted(s.value for s in cc.factory.signals))})"
                    )
    for name in sorted(set(conn_as_exporter) | set(conn_as_receiver)):
        try:
            cc = comps[Kind.CONNECTOR].get(ComponentID.parse(name))
        except ValueError:
            continue
        if cc is None:
            continue
        if name not in conn_as_receiver:
            errors.append(f'connectors::{name}: used as an exporter but in no pipeline as a receiver')
        if name not in conn_as_exporter:
            errors.append(f'connectors::{name}: used as a receiver but in no pipeline as an exporter')
        for s in conn_as_exporter.get(name, set()) - cc.factory.signals:
            errors.append(f'connectors::{name}: cannot consume {s.value}')
        for s in conn_as_receiver.get(name, set()) - cc.factory.out_signals:
            errors.append(f'connectors::{name}: cannot emit {s.value}')
        # a connector config may check the pipelines it feeds (e.g. routing's table names)
        check = getattr(cc.config, "check_output_pipelines", None)
        if check is not None:
            outs = [pid for pid, p in service.pipelines.items() if name in p.receivers]
            errors.extend(check(f"connectors::{name}", outs))
    return errors
