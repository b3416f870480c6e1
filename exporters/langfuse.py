"""Exporter `langfuse`: traces to Langfuse's OpenTelemetry endpoint, LLM calls as generations.

Sends OTLP http/protobuf to ``<host>/api/public/otel/v1/traces`` with basic auth (public and secret key) and
``x-langfuse-ingestion-version: 4``. Each span is copied into a NEW request (a batch is read-only after the
fan-out) and given the attributes the langfuse package itself writes, by the names of its
``LangfuseOtelSpanAttributes``, so the mapping follows the SDK: LLM calls (as :mod:`collector.genai` reads
them) become generations with model, usage and cost details, input and output (unless
``include_content: false``), user, session, tags, metadata and level; other spans become spans; a root span
names its trace. Span ids are kept, so they are the observation ids and a retried batch updates instead of
duplicating. Requests stay under ``max_request_size``; a 413 splits a request in two.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
import re
from collections import deque
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration
from collector.errors import PermanentError, RetryableError
from collector.exporterhelper import BaseExporter, ExporterConfig
from collector.pdata import Batch, Signal, anyvalue_to_python, python_to_anyvalue
from collector.protocol_errors import from_http_status
from exporters._resume import Resume

__all__ = ["LangfuseExporter", "LangfuseExporterConfig", "attribute_names", "build_requests"]

OTEL_PATH = "/api/public/otel/v1/traces"
DEFAULT_HOST = "https://cloud.langfuse.com"
TRUNCATION_MARKER = "...[truncated by llm-collector]"
_ENV_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


def _env_host() -> str:
    return os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST") or DEFAULT_HOST


class LangfuseExporterConfig(ExporterConfig):
    public_key: str = Field(default_factory=lambda: os.environ.get("LANGFUSE_PUBLIC_KEY", ""))
    secret_key: SecretStr = Field(default_factory=lambda: SecretStr(os.environ.get("LANGFUSE_SECRET_KEY", "")))
    host: str = Field(default_factory=_env_host)
    environment: str | None = None
    release: str | None = None
    include_content: bool = True
    tags: list[str] = Field(default_factory=list)
    max_request_size: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    compression: Literal["gzip", "none"] = "gzip"
    timeout: Duration = 10.0

    @field_validator("public_key")
    @classmethod
    def _public(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the Langfuse public key is empty (set public_key or LANGFUSE_PUBLIC_KEY)")
        return v.strip()

    @field_validator("secret_key")
    @classmethod
    def _secret(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("the Langfuse secret key is empty (set secret_key or LANGFUSE_SECRET_KEY)")
        return SecretStr(v.get_secret_value().strip())

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", v):
            raise ValueError(f"invalid host {v!r} (expected e.g. https://cloud.langfuse.com)")
        return v

    @field_validator("environment")
    @classmethod
    def _environment(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_RE.match(v):
            raise ValueError("environment must be lowercase letters, digits, '-' or '_', at most 40 characters, "
                             "and must not start with 'langfuse'")
        return v


def attribute_names() -> Any:
    """The langfuse package's ``LangfuseOtelSpanAttributes`` (imported lazily: the package is slow to load)."""
    try:
        from langfuse import LangfuseOtelSpanAttributes
    except ImportError:  # older releases kept it only in the private module
        from langfuse._client.attributes import LangfuseOtelSpanAttributes
    return LangfuseOtelSpanAttributes


# --- mapping -----------------------------------------------------------------------------------------------
_INDEXED = re.compile(r"^(.*?)\.(\d+)\.(.+)$")


def _gather(attributes: Any, direction: str) -> Any:
    """The prompt or completion side of a span's content: one attribute as is, indexed messages
    (``gen_ai.prompt.0.role`` / ``.content``) put back together as a list."""
    whole: dict[str, Any] = {}
    indexed: dict[str, dict[int, dict[str, Any]]] = {}
    for kv in attributes:
        if genai.content_direction(kv.key) != direction:
            continue
        m = _INDEXED.match(kv.key)
        if m:
            field = m.group(3)
            field = field.removeprefix("message.")
            indexed.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[field] = anyvalue_to_python(kv.value)
        else:
            whole[kv.key] = anyvalue_to_python(kv.value)
    parts: dict[str, Any] = dict(whole)
    for prefix, msgs in indexed.items():
        parts[prefix] = [msgs[i] for i in sorted(msgs)]
    if not parts:
        return None
    if len(parts) == 1:
        return next(iter(parts.values()))
    return parts


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _meta(value: Any) -> str:
    """Metadata values are JSON-encoded, strings included (what the v5 SDK sends)."""
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


class _Attrs:
    """Upserts into a span's attributes; adding a key it does not have yet costs no scan."""

    __slots__ = ("attrs", "keys")

    def __init__(self, attrs: Any) -> None:
        self.attrs = attrs
        self.keys = {kv.key for kv in attrs}

    def set(self, key: str, value: Any) -> None:
        if key in self.keys:
            for kv in self.attrs:
                if kv.key == key:
                    python_to_anyvalue(value, kv.value)
                    return
        kv = self.attrs.add()
        kv.key = key
        if isinstance(value, str):
            kv.value.string_value = value
        else:
            python_to_anyvalue(value, kv.value)
        self.keys.add(key)


def _set(attrs: Any, key: str, value: Any) -> None:
    _Attrs(attrs).set(key, value)


class _Mapper:
    def __init__(self, cfg: LangfuseExporterConfig, names: Any) -> None:
        self.cfg = cfg
        self.A = names

    def span(self, src: Any, dst: Any, resource_attrs: Any) -> None:
        A = self.A
        cfg = self.cfg
        dst.CopyFrom(src)
        call = genai.read(src, resource_attrs)
        content = cfg.include_content and not call.no_log
        if not content:
            kept = [kv for kv in dst.attributes if not genai.is_content_key(kv.key)]
            del dst.attributes[:]
            dst.attributes.extend(kept)
            events = [ev for ev in dst.events if not genai.is_content_event(ev.name)]
            del dst.events[:]
            dst.events.extend(events)
        a = _Attrs(dst.attributes)
        put = a.set
        failed = src.status.code == 2 or call.outcome != "success"
        if call.is_llm:
            put(A.OBSERVATION_TYPE, "generation")
            if call.model:
                put(A.OBSERVATION_MODEL, call.model)
            params = genai.model_parameters(src.attributes)
            if params:
                put(A.OBSERVATION_MODEL_PARAMETERS, json.dumps(params, default=str))
            usage: dict[str, int] = {}
            if call.input_tokens is not None:
                usage["input"] = call.input_tokens
            if call.output_tokens is not None:
                usage["output"] = call.output_tokens
            if usage:
                usage["total"] = call.total_tokens
            if call.cache_read_tokens:
                usage["input_cache_read"] = call.cache_read_tokens
            if call.cache_write_tokens:
                usage["input_cache_creation"] = call.cache_write_tokens
            if call.reasoning_tokens:
                usage["output_reasoning"] = call.reasoning_tokens
            if usage:
                put(A.OBSERVATION_USAGE_DETAILS, json.dumps(usage))
            if call.cost is not None:
                put(A.OBSERVATION_COST_DETAILS, json.dumps({"total": call.cost}))
            if content:
                inp = _gather(src.attributes, "input")
                out = _gather(src.attributes, "output")
                if inp is not None:
                    put(A.OBSERVATION_INPUT, _json(inp))
                if out is not None:
                    put(A.OBSERVATION_OUTPUT, _json(out))
        else:
            put(A.OBSERVATION_TYPE, "span")
        if failed:
            put(A.OBSERVATION_LEVEL, "ERROR")
            msg = src.status.message or call.error_type or (
                f"HTTP {call.status_code}" if call.status_code else call.outcome)
            put(A.OBSERVATION_STATUS_MESSAGE, msg)
        if call.user:
            put(A.TRACE_USER_ID, call.user)
        if call.session:
            put(A.TRACE_SESSION_ID, call.session)
        tags = list(cfg.tags)
        if call.is_llm and call.provider:
            tags.append(f"provider:{call.provider}")
        if call.feature:
            tags.append(f"feature:{call.feature}")
        if call.tenant:
            tags.append(f"tenant:{call.tenant}")
        if tags:
            put(A.TRACE_TAGS, tags)
        for name, value in (("tenant", call.tenant), ("feature", call.feature)):
            if value is not None:
                put(f"{A.OBSERVATION_METADATA}.{name}", _meta(value))
                put(f"{A.TRACE_METADATA}.{name}", _meta(value))
        if not src.parent_span_id:
            put(A.TRACE_NAME, src.name)

    def resource(self, src: Any, dst: Any) -> None:
        dst.CopyFrom(src)
        if self.cfg.environment:
            _set(dst.attributes, self.A.ENVIRONMENT, self.cfg.environment)
        if self.cfg.release:
            _set(dst.attributes, self.A.RELEASE, self.cfg.release)


def _shrink(span: Any, names: Any, limit: int) -> None:
    """Cut the input, output and content strings of a span that alone is over the request limit, longest
    first, each ending with :data:`TRUNCATION_MARKER`."""
    cands = [kv for kv in span.attributes
             if (kv.key in (names.OBSERVATION_INPUT, names.OBSERVATION_OUTPUT) or genai.is_content_key(kv.key))
             and kv.value.WhichOneof("value") == "string_value" and len(kv.value.string_value) > 1024]
    cands.sort(key=lambda kv: len(kv.value.string_value), reverse=True)
    for kv in cands:
        over = span.ByteSize() - limit
        if over <= 0:
            return
        data = kv.value.string_value.encode()
        keep = max(256, len(data) - over - len(TRUNCATION_MARKER))
        kv.value.string_value = data[:keep].decode(errors="ignore") + TRUNCATION_MARKER


def build_requests(request: Any, cfg: LangfuseExporterConfig, names: Any) -> list[Any]:
    """The OTLP requests to send for one batch: mapped copies, each at most ``cfg.max_request_size`` bytes
    (a span that alone is over gets its input and output cut, with a marker)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    mapper = _Mapper(cfg, names)
    limit = cfg.max_request_size
    out: list[Any] = []
    cur = ExportTraceServiceRequest()
    size = count = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            cur_ss = None
            for span in ss.spans:
                dst = Span()
                mapper.span(span, dst, rs.resource.attributes)
                n = dst.ByteSize() + 8
                if n > limit - 4096:
                    _shrink(dst, names, limit - 8192)
                    n = dst.ByteSize() + 8
                if count and size + n > limit:
                    out.append(cur)
                    cur = ExportTraceServiceRequest()
                    size = count = 0
                    cur_ss = None
                if cur_ss is None:
                    cur_rs = cur.resource_spans.add()
                    mapper.resource(rs.resource, cur_rs.resource)
                    cur_rs.schema_url = rs.schema_url
                    cur_ss = cur_rs.scope_spans.add()
                    cur_ss.scope.CopyFrom(ss.scope)
                    cur_ss.schema_url = ss.schema_url
                    size += cur_rs.resource.ByteSize() + cur_ss.scope.ByteSize() + 32
                cur_ss.spans.append(dst)
                size += n
                count += 1
    if count:
        out.append(cur)
    return out


def split_request(req: Any) -> list[Any]:
    """Two requests with half of the spans each (for a 413)."""
    spans = [(i, j, sp) for i, rs in enumerate(req.resource_spans) for j, ss in enumerate(rs.scope_spans)
             for sp in ss.spans]
    half = len(spans) // 2
    halves = []
    for part in (spans[:half], spans[half:]):
        r = type(req)()
        where: dict[tuple[int, int], Any] = {}
        for i, j, sp in part:
            ss = where.get((i, j))
            if ss is None:
                rs = r.resource_spans.add()
                rs.resource.CopyFrom(req.resource_spans[i].resource)
                rs.schema_url = req.resource_spans[i].schema_url
                ss = rs.scope_spans.add()
                ss.scope.CopyFrom(req.resource_spans[i].scope_spans[j].scope)
                where[(i, j)] = ss
            ss.spans.add().CopyFrom(sp)
        halves.append(r)
    return halves


def _span_count(req: Any) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


# --- the exporter -------------------------------------------------------------------------------------------
class LangfuseExporter(BaseExporter):
    config: LangfuseExporterConfig

    def __init__(self, settings: CreateSettings, config: LangfuseExporterConfig) -> None:
        super().__init__(settings, config)
        self.url = config.host + OTEL_PATH
        token = base64.b64encode(
            f"{config.public_key}:{config.secret_key.get_secret_value()}".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-protobuf",
            "x-langfuse-ingestion-version": "4",
            "x-langfuse-public-key": config.public_key,
            "x-langfuse-sdk-name": "llm-collector",
        }
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._session: Any = None
        self._names: Any = None
        self._resume = Resume(max(64, 4 * config.sending_queue.num_consumers))

    async def open(self) -> None:
        import aiohttp

        self._names = attribute_names()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout or None))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _compress(self, body: bytes) -> bytes:
        if self.config.compression != "gzip":
            return body
        try:
            from isal import igzip

            return igzip.compress(body, compresslevel=1)
        except ImportError:  # pragma: no cover - isal is a dependency
            return gzip.compress(body, compresslevel=1)

    async def send(self, batch: Batch) -> None:
        if batch.signal is not Signal.TRACES:
            raise PermanentError(f"langfuse takes traces only, not {batch.signal.value}")
        await self._resume.attempt(
            batch, lambda: deque(build_requests(batch.request, self.config, self._names)), self._drain, "Langfuse")

    async def _drain(self, reqs: deque[Any]) -> None:
        while reqs:
            await self._post(reqs)

    async def _post(self, reqs: deque[Any]) -> None:
        import aiohttp

        req = reqs[0]
        body = self._compress(req.SerializeToString())
        try:
            async with self._session.post(self.url, data=body, headers=self._headers) as resp:
                status = resp.status
                text = await resp.read()
                headers = dict(resp.headers)
        except (aiohttp.ClientError, OSError) as e:
            raise RetryableError(f"cannot reach Langfuse at {self.config.host}: {e or type(e).__name__}") from e
        if 200 <= status < 300:
            reqs.popleft()
            self._partial(text)
            return
        message = text.decode(errors="replace")[:500]
        if status == 413:
            n = _span_count(req)
            if n > 1:
                reqs.popleft()
                a, b = split_request(req)
                reqs.appendleft(b)
                reqs.appendleft(a)
                self.log.info("Langfuse answered 413: splitting %d spans into two requests", n)
                return
            reqs.popleft()
            raise PermanentError(f"Langfuse rejected a single span as too large (HTTP 413): {message}")
        if status in (401, 403):
            raise PermanentError(
                f"Langfuse rejected the credentials (HTTP {status}: {message.strip() or 'unauthorized'}); "
                f"check public_key, secret_key and host ({self.config.host})")
        err = from_http_status(status, headers, message, backend="Langfuse")
        raise err if err is not None else RetryableError(f"Langfuse answered HTTP {status}")

    def _partial(self, body: bytes) -> None:
        if not body:
            return
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        resp = ExportTraceServiceResponse()
        try:
            resp.ParseFromString(body)
        except Exception:  # noqa: BLE001 - a JSON or empty answer is fine
            return
        ps = resp.partial_success
        if ps.rejected_spans:
            self._rl.log(logging.WARNING, "partial", "Langfuse rejected %d spans: %s", ps.rejected_spans,
                         ps.error_message)


FACTORIES = [
    Factory("langfuse", Kind.EXPORTER, LangfuseExporterConfig, LangfuseExporter,
            signals=frozenset({Signal.TRACES}),
            description="traces to Langfuse (LLM calls as generations) over OTLP/HTTP",
            # a loopback host: a test that starts the example never reaches out to Langfuse
            example={"public_key": "pk-lf-example", "secret_key": "sk-lf-example", "host": "http://127.0.0.1:9"}),
]
