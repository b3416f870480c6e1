"""The one module that knows the LLM semantic conventions.

Reads a span's attributes once (:func:`index`) and answers, from whichever convention the producer used,
what an LLM call was: operation, provider, models, token counts, cost, tenant / feature / user / session,
outcome, and which attributes and events carry content (prompts, completions, system instructions, tool
arguments). Conventions covered: OpenTelemetry GenAI (current and deprecated names), OpenInference,
OpenLLMetry (Traceloop) and LiteLLM. Nobody else hard-codes these attribute names.

Hot-path rules: one pass over the attribute keys per span (:func:`index` keeps only the keys this module
knows, without converting values), lookups by key afterwards, values converted only when asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "LLMCall",
    "index",
    "read",
    "is_llm_span",
    "is_content_key",
    "is_content_event",
    "content_keys",
    "CONTENT_EVENT_NAMES",
    "KEYS",
    "WRITE",
    "value_of",
]

# Where each field is read from, first match wins. The first name is the one we write ourselves.
KEYS: dict[str, tuple[str, ...]] = {
    "operation": ("gen_ai.operation.name", "llm.request.type", "openinference.span.kind"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "litellm.provider",
                 "metadata.custom_llm_provider"),
    "request_model": ("gen_ai.request.model", "llm.model_name", "llm.request.model", "litellm.model",
                      "metadata.model_group"),
    "response_model": ("gen_ai.response.model", "llm.response.model"),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
                     "llm.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
                      "llm.usage.completion_tokens"),
    "total_tokens": ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total"),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                          "llm.token_count.prompt_details.cache_read", "gen_ai.usage.cached_tokens",
                          "llm.usage.cache_read_input_tokens"),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
                           "llm.token_count.prompt_details.cache_write", "llm.usage.cache_creation_input_tokens"),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                         "llm.token_count.completion_details.reasoning", "llm.usage.reasoning_tokens"),
    "cost": ("gen_ai.usage.cost", "llm.cost.total", "litellm.response_cost", "metadata.response_cost",
             "gen_ai.cost"),
    "tenant": ("tenant.id", "tenant_id", "metadata.user_api_key_team_id", "metadata.tenant_id"),
    "feature": ("feature", "llm.feature", "metadata.feature"),
    "team": ("team", "metadata.user_api_key_team_alias"),
    "user": ("user.id", "enduser.id", "metadata.user_api_key_user_id", "gen_ai.user.id", "llm.user"),
    "session": ("session.id", "gen_ai.conversation.id", "metadata.session_id", "llm.session_id"),
    "status_code": ("http.response.status_code", "http.status_code", "llm.response.status_code"),
    "error_type": ("error.type", "exception.type", "llm.error.type"),
    "cache_hit": ("gen_ai.cache.hit", "llm.cache_hit", "metadata.cache_hit", "cache_hit"),
    "guardrail": ("llm.guardrail.triggered", "metadata.guardrail_status", "guardrail_status",
                  "litellm.guardrail_status"),
    "routing": ("llm.routing.strategy", "metadata.routing_strategy", "gen_ai.routing"),
    "no_log": ("llm.no_log", "metadata.no-log", "no-log", "no_log"),
    "budget_exceeded": ("llm.budget.exceeded",),
    "finish_reason": ("gen_ai.response.finish_reasons", "llm.response.finish_reason"),
    "response_id": ("gen_ai.response.id",),
}

# The names this collector writes (cost, enrich, budget, redaction processors).
WRITE = {
    "cost": "gen_ai.usage.cost",
    "cost_input": "llm.cost.input",
    "cost_output": "llm.cost.output",
    "cost_cache_read": "llm.cost.cache_read",
    "cost_cache_write": "llm.cost.cache_write",
    "cost_reasoning": "llm.cost.reasoning",
    "cost_unknown_model": "llm.cost.unknown_model",
    "tenant": "tenant.id",
    "feature": "feature",
    "team": "team",
    "user": "user.id",
    "guardrail": "llm.guardrail.triggered",
    "budget_exceeded": "llm.budget.exceeded",
}

_FIELD_OF: dict[str, str] = {}
for _field, _names in KEYS.items():
    for _n in _names:
        _FIELD_OF.setdefault(_n, _field)

# --- content -----------------------------------------------------------------------------------------------
_CONTENT_EXACT = frozenset({
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.tool.definitions",
    "gen_ai.prompt", "gen_ai.completion",
    "input.value", "output.value", "llm.prompts", "llm.input_messages", "llm.output_messages",
    "tool.parameters", "llm.tools", "llm.prompt_template.variables",
    "traceloop.entity.input", "traceloop.entity.output",
    "metadata.messages", "metadata.response", "litellm.messages", "litellm.response",
    "gen_ai.content.prompt", "gen_ai.content.completion", "message", "content",
})
_CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.",
                     "llm.prompts.", "llm.tools.", "gen_ai.input.messages.", "gen_ai.output.messages.")
# Within an indexed prefix, structural keys that are not content.
_NOT_CONTENT_SUFFIX = re.compile(r"\.(role|finish_reason|index|id|type|name|tool_call_id)$")

CONTENT_EVENT_NAMES = frozenset({
    "gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message",
    "gen_ai.choice", "gen_ai.client.inference.operation.details", "gen_ai.content.prompt",
    "gen_ai.content.completion", "gen_ai.evaluation.result",
})


def is_content_key(key: str) -> bool:
    """Does this attribute key carry prompt / completion / instruction / tool content?"""
    if key in _CONTENT_EXACT:
        return True
    if key.startswith(_CONTENT_PREFIXES):
        return _NOT_CONTENT_SUFFIX.search(key) is None
    return False


def is_content_event(name: str) -> bool:
    return name in CONTENT_EVENT_NAMES


def content_keys(attributes: Any) -> list[KeyValue]:
    """The content-bearing KeyValues of a repeated attribute field."""
    return [kv for kv in attributes if is_content_key(kv.key)]


# --- reading -----------------------------------------------------------------------------------------------
def index(*attribute_lists: Any) -> dict[str, KeyValue]:
    """One pass over the keys: the KeyValues whose key this module knows. Earlier lists win (span over
    resource), so pass ``span.attributes, resource.attributes``."""
    idx: dict[str, KeyValue] = {}
    fo = _FIELD_OF
    for attrs in attribute_lists:
        for kv in attrs:
            k = kv.key
            if k in fo and k not in idx:
                idx[k] = kv
    return idx


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _first(idx: dict[str, KeyValue], field: str) -> Any:
    for name in KEYS[field]:
        kv = idx.get(name)
        if kv is not None:
            val = value_of(kv.value)
            if val is not None and val != "":
                return val
    return None


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    n = _num(v)
    return None if n is None else int(n)


def _truthy(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "guardrail_intervened", "blocked", "intervened",
                                     "triggered", "failed", "failure")
    if isinstance(v, (int, float)):
        return v != 0
    return False


_OP_FROM_KIND = {"LLM": "chat", "EMBEDDING": "embeddings", "TOOL": "execute_tool", "AGENT": "invoke_agent",
                 "completion": "text_completion", "chat": "chat", "embedding": "embeddings"}
_LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion"})


@dataclass(slots=True)
class LLMCall:
    """What one span says about an LLM call. Missing values are None."""

    operation: str | None = None
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost: float | None = None
    tenant: str | None = None
    feature: str | None = None
    team: str | None = None
    user: str | None = None
    session: str | None = None
    outcome: str = "success"
    status_code: int | None = None
    error_type: str | None = None
    cache_hit: bool = False
    guardrail_triggered: bool = False
    routing: str | None = None
    no_log: bool = False
    budget_exceeded: bool = False
    latency_ms: float = 0.0
    is_llm: bool = False

    @property
    def model(self) -> str | None:
        return self.response_model or self.request_model

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def outcome_of(span: Any, status_code: int | None, error_type: str | None) -> str:
    et = (error_type or "").lower()
    if status_code == 429 or "ratelimit" in et.replace("_", "") or "rate_limit" in et:
        return "rate_limited"
    if "timeout" in et or status_code in (408, 504):
        return "timeout"
    if span.status.code == 2 or et or (status_code is not None and status_code >= 400):  # STATUS_CODE_ERROR
        if "timeout" in span.status.message.lower():
            return "timeout"
        return "error"
    return "success"


def read(span: Any, resource_attributes: Any = (), idx: dict[str, KeyValue] | None = None) -> LLMCall:
    """Everything this module knows about a span (span attributes win over resource attributes)."""
    if idx is None:
        idx = index(span.attributes, resource_attributes)
    c = LLMCall()
    op = _first(idx, "operation")
    c.operation = _OP_FROM_KIND.get(op, op) if isinstance(op, str) else None
    c.provider = _str(_first(idx, "provider"))
    c.request_model = _str(_first(idx, "request_model"))
    c.response_model = _str(_first(idx, "response_model"))
    c.input_tokens = _int(_first(idx, "input_tokens"))
    c.output_tokens = _int(_first(idx, "output_tokens"))
    if c.input_tokens is None and c.output_tokens is not None:
        total = _int(_first(idx, "total_tokens"))
        if total is not None:
            c.input_tokens = max(0, total - c.output_tokens)
    c.cache_read_tokens = _int(_first(idx, "cache_read_tokens"))
    c.cache_write_tokens = _int(_first(idx, "cache_write_tokens"))
    c.reasoning_tokens = _int(_first(idx, "reasoning_tokens"))
    c.cost = _num(_first(idx, "cost"))
    c.tenant = _str(_first(idx, "tenant"))
    c.feature = _str(_first(idx, "feature"))
    c.team = _str(_first(idx, "team"))
    c.user = _str(_first(idx, "user"))
    c.session = _str(_first(idx, "session"))
    c.status_code = _int(_first(idx, "status_code"))
    c.error_type = _str(_first(idx, "error_type"))
    c.outcome = outcome_of(span, c.status_code, c.error_type)
    c.cache_hit = _truthy(_first(idx, "cache_hit"))
    c.guardrail_triggered = _truthy(_first(idx, "guardrail"))
    c.routing = _str(_first(idx, "routing"))
    c.no_log = _truthy(_first(idx, "no_log"))
    c.budget_exceeded = _truthy(_first(idx, "budget_exceeded"))
    if span.end_time_unix_nano and span.start_time_unix_nano:
        c.latency_ms = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    c.is_llm = bool(
        c.request_model or c.response_model or c.input_tokens is not None or c.output_tokens is not None
        or (c.operation in _LLM_OPERATIONS)
    )
    return c


def is_llm_span(span: Any, resource_attributes: Any = ()) -> bool:
    return read(span, resource_attributes).is_llm


# --- content direction (added for exporters that show prompts and completions separately) ------------------
_INPUT_EXACT = frozenset({
    "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.prompt", "gen_ai.content.prompt",
    "gen_ai.tool.call.arguments", "gen_ai.tool.definitions", "input.value", "llm.prompts",
    "llm.input_messages", "llm.tools", "llm.prompt_template.variables", "tool.parameters",
    "traceloop.entity.input", "metadata.messages", "litellm.messages",
})
_OUTPUT_EXACT = frozenset({
    "gen_ai.output.messages", "gen_ai.completion", "gen_ai.content.completion", "gen_ai.tool.call.result",
    "output.value", "llm.output_messages", "traceloop.entity.output", "metadata.response", "litellm.response",
})
_INPUT_PREFIXES = ("gen_ai.prompt.", "llm.input_messages.", "llm.prompts.", "gen_ai.input.messages.", "llm.tools.")
_OUTPUT_PREFIXES = ("gen_ai.completion.", "llm.output_messages.", "gen_ai.output.messages.")


def content_direction(key: str) -> str | None:
    """``"input"`` (prompt side), ``"output"`` (completion side) or None, for an attribute key of the
    content conventions. Structural keys of indexed messages (``gen_ai.prompt.0.role``) have a direction too,
    so that messages can be put back together; :func:`is_content_key` says which keys carry content."""
    if key in _INPUT_EXACT or key.startswith(_INPUT_PREFIXES):
        return "input"
    if key in _OUTPUT_EXACT or key.startswith(_OUTPUT_PREFIXES):
        return "output"
    return None


__all__ += ["content_direction"]


# --- request parameters (added for exporters that show them, e.g. Langfuse's model parameters) -------------
_PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "temperature": ("gen_ai.request.temperature", "llm.request.temperature", "llm.temperature"),
    "top_p": ("gen_ai.request.top_p", "llm.request.top_p", "llm.top_p"),
    "top_k": ("gen_ai.request.top_k", "llm.top_k"),
    "max_tokens": ("gen_ai.request.max_tokens", "llm.request.max_tokens", "llm.max_tokens"),
    "frequency_penalty": ("gen_ai.request.frequency_penalty", "llm.frequency_penalty"),
    "presence_penalty": ("gen_ai.request.presence_penalty", "llm.presence_penalty"),
    "seed": ("gen_ai.request.seed",),
    "stop": ("gen_ai.request.stop_sequences", "llm.chat.stop_sequences"),
    "stream": ("llm.is_streaming", "gen_ai.request.stream"),
}
_PARAM_OF = {name: param for param, names in _PARAM_KEYS.items() for name in names}


def model_parameters(*attribute_lists: Any) -> dict[str, Any]:
    """The request parameters of an LLM call (temperature, top_p, max_tokens, ...), by their short names;
    OpenInference's ``llm.invocation_parameters`` (a JSON object) fills in what the others do not say."""
    out: dict[str, Any] = {}
    invocation: Any = None
    for attrs in attribute_lists:
        for kv in attrs:
            param = _PARAM_OF.get(kv.key)
            if param is not None and param not in out:
                v = value_of(kv.value)
                if v is not None and v != "":
                    out[param] = v
            elif kv.key == "llm.invocation_parameters" and invocation is None:
                invocation = value_of(kv.value)
    if isinstance(invocation, str):
        import json

        try:
            invocation = json.loads(invocation)
        except ValueError:
            invocation = None
    if isinstance(invocation, dict):
        for k, v in invocation.items():
            if isinstance(v, (str, int, float, bool)) and k not in out:
                out[k] = v
    return out


__all__ += ["model_parameters"]
