"""OTLP spans and log records -> Datadog log entries (plain dicts in the HTTP logs intake's shape).

One entry per LLM call of a traces batch (per span with ``logs.all_spans``), one per log record of a logs
batch. LLM fields are read through :mod:`collector.genai` only. Entries are measured as the client
serialises them (``json.dumps`` defaults) so that batches respect the intake's limits: at most
:data:`MAX_ENTRIES` entries and :data:`MAX_PAYLOAD` bytes per request, entries over :data:`MAX_ENTRY` bytes
truncated with :data:`TRUNCATION_MARKER`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from collector import genai
from collector.pdata import anyvalue_to_python

__all__ = [
    "MAX_ENTRIES",
    "MAX_ENTRY",
    "MAX_PAYLOAD",
    "TRUNCATION_MARKER",
    "LogSettings",
    "chunk_entries",
    "dd_id",
    "entry_size",
    "fit_entry",
    "llm_tags",
    "log_record_entry",
    "resource_tags",
    "severity_status",
    "span_entry",
]

MAX_ENTRIES = 1000
MAX_PAYLOAD = 5_000_000
MAX_ENTRY = 1_000_000
TRUNCATION_MARKER = "...[truncated by llm-collector]"
_RESERVED = frozenset({"message", "status", "service", "ddsource", "ddtags", "hostname", "timestamp"})
_TAG_BAD = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class LogSettings:
    """What the conversion needs from the exporter's config."""

    source: str = "llm-collector"
    service: str | None = None
    hostname: str | None = None
    tags: tuple[str, ...] = ()
    include_content: bool = False
    all_spans: bool = False


def dd_id(raw: bytes) -> str:
    """An OTel trace or span id in Datadog's form: the lower 64 bits as an unsigned decimal."""
    if not raw:
        return ""
    return str(int.from_bytes(raw[-8:], "big"))


def _tag(key: str, value: Any) -> str:
    v = "true" if value is True else "false" if value is False else str(value)
    return f"{key}:{_TAG_BAD.sub('_', v.strip())[:200]}"


def llm_tags(call: genai.LLMCall) -> tuple[str, ...]:
    """The tags of an LLM call's log entry and metrics (configured tags are added by the caller)."""
    tags = [
        _tag("model", call.model or "unknown"),
        _tag("provider", call.provider or "unknown"),
        _tag("status_code", call.status_code if call.status_code is not None else "none"),
        _tag("error", call.outcome != "success"),
        _tag("cache", "hit" if call.cache_hit else "miss"),
        _tag("guardrail", "triggered" if call.guardrail_triggered else "none"),
    ]
    if call.routing:
        tags.append(_tag("routing", call.routing))
    return tuple(tags)


def _status_text(call: genai.LLMCall) -> str:
    if call.status_code is not None:
        return str(call.status_code)
    return "ok" if call.outcome == "success" else call.outcome


def llm_message(call: genai.LLMCall) -> str:
    """``[openai] gpt-4o status=200 latency=842ms tokens=1523 cost=$0.0200``"""
    parts = [f"[{call.provider or 'unknown'}] {call.model or 'unknown'}",
             f"status={_status_text(call)}", f"latency={call.latency_ms:.0f}ms"]
    if call.input_tokens is not None or call.output_tokens is not None:
        parts.append(f"tokens={call.total_tokens}")
    if call.cost is not None:
        parts.append(f"cost=${call.cost:.4f}")
    if call.outcome != "success" and call.error_type:
        parts.append(f"error={call.error_type}")
    return " ".join(parts)


def _resource_str(resource_attrs: Any, key: str) -> str | None:
    for kv in resource_attrs:
        if kv.key == key:
            v = anyvalue_to_python(kv.value)
            return None if v in (None, "") else str(v)
    return None


def _base(s: LogSettings, resource_attrs: Any, tags: Iterable[str]) -> dict[str, Any]:
    e: dict[str, Any] = {"ddsource": s.source}
    service = s.service or _resource_str(resource_attrs, "service.name")
    if service:
        e["service"] = service
    host = s.hostname or _resource_str(resource_attrs, "host.name")
    if host:
        e["hostname"] = host
    e["ddtags"] = ",".join([*tags, *s.tags, *resource_tags(resource_attrs)])
    return e


def resource_tags(resource_attrs: Any) -> tuple[str, ...]:
    """Tags every log and LLM metric of a resource gets: ``env`` from ``deployment.environment(.name)``."""
    env = _resource_str(resource_attrs, "deployment.environment.name") or _resource_str(
        resource_attrs, "deployment.environment")
    return (_tag("env", env),) if env else ()


def _ids(e: dict[str, Any], trace_id: bytes, span_id: bytes) -> None:
    if trace_id:
        e["dd.trace_id"] = dd_id(trace_id)
        e["otel.trace_id"] = trace_id.hex()
    if span_id:
        e["dd.span_id"] = dd_id(span_id)
        e["otel.span_id"] = span_id.hex()


def _content(attributes: Any) -> dict[str, Any]:
    return {kv.key: anyvalue_to_python(kv.value) for kv in attributes if genai.is_content_key(kv.key)}


def span_entry(span: Any, resource_attrs: Any, call: genai.LLMCall, s: LogSettings) -> dict[str, Any] | None:
    """The log entry of one span: LLM calls always, other spans only with ``all_spans``."""
    if call.is_llm:
        e = _base(s, resource_attrs, llm_tags(call))
        e["message"] = llm_message(call)
        e["status"] = "info" if call.outcome == "success" else "error"
        e.update({
            "model": call.model, "provider": call.provider, "latency_ms": round(call.latency_ms, 3),
            "input_tokens": call.input_tokens, "output_tokens": call.output_tokens, "cost": call.cost,
            "cache_hit": call.cache_hit, "guardrail_triggered": call.guardrail_triggered,
            "tenant": call.tenant, "feature": call.feature, "outcome": call.outcome,
            "status_code": call.status_code, "error_type": call.error_type, "operation": call.operation,
            "routing": call.routing, "usr.id": call.user, "session_id": call.session,
            "cache_read_tokens": call.cache_read_tokens, "reasoning_tokens": call.reasoning_tokens,
        })
        for k in [k for k, v in e.items() if v is None]:
            del e[k]
    elif s.all_spans:
        failed = span.status.code == 2
        e = _base(s, resource_attrs, (_tag("error", failed),))
        e["message"] = f"[span] {span.name} status={'error' if failed else 'ok'} latency={call.latency_ms:.0f}ms"
        e["status"] = "error" if failed else "info"
        e["latency_ms"] = round(call.latency_ms, 3)
        if failed and span.status.message:
            e["error.message"] = span.status.message
    else:
        return None
    e["span_name"] = span.name
    _ids(e, span.trace_id, span.span_id)
    if span.end_time_unix_nano:
        e["timestamp"] = span.end_time_unix_nano // 1_000_000
    if s.include_content and not call.no_log:
        content = _content(span.attributes)
        for ev in span.events:
            if genai.is_content_event(ev.name):
                content[f"event.{ev.name}"] = {kv.key: anyvalue_to_python(kv.value) for kv in ev.attributes}
        if content:
            e["content"] = content
    return e


_SEVERITY = ((4, "trace"), (8, "debug"), (12, "info"), (16, "warn"), (20, "error"), (24, "fatal"))


def severity_status(number: int, text: str) -> str:
    """Datadog status of an OTel severity (as the Datadog Collector exporter maps it)."""
    if number:
        for upper, name in _SEVERITY:
            if number <= upper:
                return name
        return "fatal"
    return text.lower() if text else "info"


def log_record_entry(rec: Any, resource_attrs: Any, s: LogSettings) -> dict[str, Any]:
    """The Datadog log entry of one OTel log record. Content-bearing attributes and the bodies of content
    events (prompts, completions) are left out unless ``include_content``."""
    e: dict[str, Any] = {}
    event_name = getattr(rec, "event_name", "") or ""
    for attrs in (resource_attrs, rec.attributes):
        for kv in attrs:
            if kv.key == "event.name" and not event_name:
                event_name = kv.value.string_value
            if not s.include_content and genai.is_content_key(kv.key):
                continue
            key = f"otel.attr.{kv.key}" if kv.key in _RESERVED else kv.key
            e[key] = anyvalue_to_python(kv.value)
    e.update(_base(s, resource_attrs, ()))
    body = anyvalue_to_python(rec.body)
    if not s.include_content and genai.is_content_event(event_name):
        body = f"[content of {event_name} omitted]"
    if isinstance(body, str):
        e["message"] = body
    elif body is None:
        e["message"] = event_name or ""
    else:
        e["message"] = json.dumps(body, default=str)
    e["status"] = severity_status(rec.severity_number, rec.severity_text)
    if rec.severity_text:
        e["otel.severity_text"] = rec.severity_text
    if rec.severity_number:
        e["otel.severity_number"] = rec.severity_number
    ts = rec.time_unix_nano or rec.observed_time_unix_nano
    if ts:
        e["timestamp"] = ts // 1_000_000
    _ids(e, rec.trace_id, rec.span_id)
    return e


def entry_size(e: dict[str, Any]) -> int:
    """Bytes of the entry as the client serialises it (``json.dumps`` defaults, ASCII)."""
    return len(json.dumps(e, default=str))


def _strings(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, path + (i,))


def _set(obj: Any, path: tuple[Any, ...], value: str) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def fit_entry(e: dict[str, Any], limit: int = MAX_ENTRY) -> tuple[dict[str, Any], int]:
    """(entry, size): entries over ``limit`` bytes get their longest strings cut, each ending with
    :data:`TRUNCATION_MARKER`, and ``llm_collector.truncated: true``."""
    size = entry_size(e)
    if size <= limit:
        return e, size
    e["llm_collector.truncated"] = True
    for _ in range(64):
        size = entry_size(e)
        if size <= limit:
            break
        candidates = sorted(_strings(e), key=lambda ps: len(json.dumps(ps[1])), reverse=True)
        if not candidates:
            break
        path, text = candidates[0]
        if not path:
            break
        first = len(json.dumps(text))
        second = len(json.dumps(candidates[1][1])) if len(candidates) > 1 else 0
        need = size - limit + len(TRUNCATION_MARKER) + 16
        # cut the longest string, but not below the next one while several share the excess
        reduce = need if first - need >= second else max(first - second, (need + 1) // 2)
        ratio = max(1.0, (first - 2) / max(1, len(text)))  # escapes cost up to 6 bytes a character
        keep = max(0, len(text) - int(reduce / ratio) - len(TRUNCATION_MARKER) - 1)
        _set(e, path, text[:keep] + TRUNCATION_MARKER)
    return e, entry_size(e)


def chunk_entries(sized: list[tuple[dict[str, Any], int]], max_entries: int = MAX_ENTRIES,
                  max_bytes: int = MAX_PAYLOAD) -> list[list[dict[str, Any]]]:
    """Split (entry, size) pairs into requests of at most ``max_entries`` entries and ``max_bytes`` bytes of
    JSON array (``[`` + entries joined by ``, `` + ``]``)."""
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    cur_bytes = 2
    for e, size in sized:
        add = size + (2 if cur else 0)
        if cur and (len(cur) >= max_entries or cur_bytes + add > max_bytes):
            out.append(cur)
            cur, cur_bytes, add = [], 2, size
        cur.append(e)
        cur_bytes += add
    if cur:
        out.append(cur)
    return out
