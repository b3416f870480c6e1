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
from operator import itemgetter
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.pdata import anyvalue_to_python, python_to_anyvalue, set_attr
from collector.wire import encode_attribute, iter_fields, read_varint, varint

__all__ = [
    "BUDGET",
    "CONTENT_EVENT_NAMES",
    "KEYS",
    "REDACTION",
    "WRITE",
    "LLMCall",
    "as_bool",
    "as_number",
    "content_keys",
    "defer_wire_values",
    "delete_key",
    "field",
    "fields",
    "forget",
    "index",
    "indexes",
    "is_content_event",
    "is_content_event_attr",
    "is_content_key",
    "is_indexed",
    "is_llm_span",
    "put",
    "read",
    "read_cached",
    "remember",
    "remember_values",
    "set_value",
    "span_indexer",
    "span_values",
    "stored_values",
    "value_of",
    "values_complete",
    "vfield",
]

# Where each field is read from, first match wins. The first name is the one we write ourselves.
KEYS: dict[str, tuple[str, ...]] = {
    "operation": ("gen_ai.operation.name", "llm.request.type", "openinference.span.kind"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "litellm.provider",
                 "metadata.custom_llm_provider", "llm.vendor", "custom_llm_provider"),
    "request_model": ("gen_ai.request.model", "llm.model_name", "llm.request.model", "litellm.model",
                      "metadata.model_group"),
    "response_model": ("gen_ai.response.model", "llm.response.model", "litellm.response_model"),
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
             "gen_ai.cost", "response_cost", "llm.usage.cost"),
    "tenant": ("tenant.id", "tenant_id", "metadata.user_api_key_team_id", "metadata.tenant_id",
               "metadata.user_api_key_org_id"),
    "feature": ("feature", "llm.feature", "metadata.feature"),
    "team": ("team", "metadata.user_api_key_team_alias"),
    "user": ("user.id", "enduser.id", "metadata.user_api_key_user_id", "gen_ai.user.id", "llm.user",
             "metadata.user_api_key_end_user_id", "metadata.end_user_id"),
    "session": ("session.id", "gen_ai.conversation.id", "metadata.session_id", "llm.session_id"),
    "status_code": ("http.response.status_code", "http.status_code", "llm.response.status_code"),
    "error_type": ("error.type", "exception.type", "llm.error.type"),
    "cache_hit": ("gen_ai.cache.hit", "llm.cache_hit", "metadata.cache_hit", "cache_hit"),
    "guardrail": ("llm.guardrail.triggered", "metadata.guardrail_status", "guardrail_status",
                  "litellm.guardrail_status", "metadata.guardrail_information", "guardrail_information",
                  "litellm.guardrail_information", "masked_entity_count"),
    "routing": ("llm.routing.strategy", "metadata.routing_strategy", "gen_ai.routing"),
    "no_log": ("llm.no_log", "metadata.no-log", "no-log", "no_log"),
    "budget_exceeded": ("llm.budget.exceeded",),
    "budget_crossed": ("llm.budget.crossed",),
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

# Attributes the budget and redaction processors write (read by llm_alerts and exporters).
BUDGET = {
    "crossed": "llm.budget.crossed",
    "key_name": "llm.budget.key_name",
    "key": "llm.budget.key",
    "spent_usd": "llm.budget.spent_usd",
    "limit_usd": "llm.budget.limit_usd",
    "exceeded": "llm.budget.exceeded",
}
REDACTION = {"count": "redaction.masked.count", "kinds": "redaction.masked.kinds"}

# Every key :func:`index` keeps: the names read (KEYS) and the names written (WRITE, BUDGET, REDACTION), so
# that the index also says whether a written key already exists.
_INDEXED: frozenset[str] = frozenset(_FIELD_OF) | frozenset(WRITE.values()) | frozenset(BUDGET.values()) \
    | frozenset(REDACTION.values())

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
    "gen_ai.content.completion", "gen_ai.evaluation.result", "gen_ai.prompt",
    "gen_ai.completion",
})


def is_content_key(key: str) -> bool:
    """Does this attribute key carry prompt / completion / instruction / tool content?"""
    if key in _CONTENT_EXACT:
        return True
    if key.startswith(_CONTENT_PREFIXES):
        return _NOT_CONTENT_SUFFIX.search(key) is None
    return False


def is_content_event(name: str) -> bool:
    """Events (span events, or log records by event name) whose attributes / body carry content: the GenAI
    ``gen_ai.<role>.message`` and ``gen_ai.choice`` events, and the older ``gen_ai.content.*`` ones."""
    return name in CONTENT_EVENT_NAMES or (name.startswith("gen_ai.") and name.endswith(".message"))


# In a content event, the attributes that describe rather than carry content.
_EVENT_STRUCTURAL = frozenset({
    "gen_ai.system", "gen_ai.provider.name", "role", "index", "finish_reason", "id", "type", "name",
    "tool_call_id", "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.response.model", "event.name",
    "gen_ai.event.name", "gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
})


def is_content_event_attr(key: str) -> bool:
    """Within a content event, does this attribute carry content (``content``, ``message``, ``tool_calls``,
    ``gen_ai.event.content``...) rather than describe it (``role``, ``index``, ``gen_ai.system``)?"""
    return key not in _EVENT_STRUCTURAL


def is_indexed(key: str) -> bool:
    """Is ``key`` one that :func:`index` keeps (so an index tells whether a span has it)?"""
    return key in _INDEXED


def content_keys(attributes: Any) -> list[KeyValue]:
    """The content-bearing KeyValues of a repeated attribute field."""
    return [kv for kv in attributes if is_content_key(kv.key)]


# --- reading -----------------------------------------------------------------------------------------------
def index(*attribute_lists: Any) -> dict[str, KeyValue]:
    """One pass over the keys: the KeyValues whose key this module knows. Earlier lists win (span over
    resource), so pass ``span.attributes, resource.attributes``."""
    idx: dict[str, KeyValue] = {}
    fo = _INDEXED
    for attrs in attribute_lists:
        for kv in attrs:
            k = kv.key
            if k in fo and k not in idx:
                idx[k] = kv
    return idx


value_of = anyvalue_to_python
"""The Python value of an ``AnyValue`` (arrays as lists, kvlists as dicts)."""


def _first(idx: dict[str, KeyValue], field: str) -> Any:
    for name in KEYS[field]:
        kv = idx.get(name)
        if kv is not None:
            val = value_of(kv.value)
            if val is not None and val != "":
                return val
    return None


def as_number(v: Any) -> float | None:
    """A number from an attribute value (int, float or numeric string); None for anything else, bools too."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def as_bool(v: Any) -> bool:
    """A flag from an attribute value: a bool, a number (not 0) or ``true`` / ``1`` / ``yes``."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if isinstance(v, (int, float)):
        return v != 0
    return False


def _int(v: Any) -> int | None:
    n = as_number(v)
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


_GUARDRAIL_WORDS = frozenset({"guardrail_intervened", "intervened", "blocked", "triggered", "flagged", "true",
                              "1", "yes", "denied", "rejected"})


def _guardrail(v: Any) -> bool:
    """LiteLLM's guardrail fields: a status word, a count of masked entities, or the JSON list of
    ``guardrail_information`` entries (``guardrail_status: guardrail_intervened``). ``success`` is a pass."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v > 0
    if isinstance(v, str):
        s = v.strip().lower()
        if s[:1] in ("[", "{"):
            return "intervened" in s or '"blocked"' in s
        return s in _GUARDRAIL_WORDS
    if isinstance(v, dict):
        return any(_guardrail(x) for k, x in v.items() if k in ("guardrail_status", "status", "masked_entity_count"))
    if isinstance(v, list):
        return any(_guardrail(x) for x in v)
    return False


_RANK: dict[str, tuple[str, int]] = {}
for _field, _names in KEYS.items():
    for _i, _n in enumerate(_names):
        _RANK.setdefault(_n, (_field, _i))


def _best(own: dict[str, KeyValue], res: dict[str, KeyValue] | None) -> tuple[dict[str, Any], bool]:
    """Field -> value of the highest-priority non-empty name; span attributes win over resource ones.
    Also whether any guardrail field says triggered."""
    best: dict[str, tuple[int, Any]] = {}
    guard = False
    rk = _RANK
    for offset, d in ((0, own), (1000, res)):
        if not d:
            continue
        for name, kv in d.items():
            fr = rk.get(name)
            if fr is None:
                continue
            field, rank = fr
            rank += offset
            if field == "guardrail":
                if not guard:
                    guard = _guardrail(value_of(kv.value))
                continue
            cur = best.get(field)
            if cur is not None and cur[0] <= rank:
                continue
            val = value_of(kv.value)
            if val is None or val == "":
                continue
            best[field] = (rank, val)
    return {f: rv[1] for f, rv in best.items()}, guard


def _call(span: Any, own: dict[str, KeyValue], res: dict[str, KeyValue] | None) -> LLMCall:
    b, guard = _best(own, res)
    g = b.get
    c = LLMCall()
    op = g("operation")
    c.operation = _OP_FROM_KIND.get(op, op) if isinstance(op, str) else None
    c.provider = _str(g("provider"))
    c.request_model = _str(g("request_model"))
    c.response_model = _str(g("response_model"))
    c.input_tokens = _int(g("input_tokens"))
    c.output_tokens = _int(g("output_tokens"))
    if c.input_tokens is None and c.output_tokens is not None:
        total = _int(g("total_tokens"))
        if total is not None:
            c.input_tokens = max(0, total - c.output_tokens)
    c.cache_read_tokens = _int(g("cache_read_tokens"))
    c.cache_write_tokens = _int(g("cache_write_tokens"))
    c.reasoning_tokens = _int(g("reasoning_tokens"))
    c.cost = as_number(g("cost"))
    c.tenant = _str(g("tenant"))
    c.feature = _str(g("feature"))
    c.team = _str(g("team"))
    c.user = _str(g("user"))
    c.session = _str(g("session"))
    c.status_code = _int(g("status_code"))
    c.error_type = _str(g("error_type"))
    c.outcome = outcome_of(span, c.status_code, c.error_type)
    c.cache_hit = _truthy(g("cache_hit"))
    c.guardrail_triggered = guard
    c.routing = _str(g("routing"))
    c.no_log = _truthy(g("no_log"))
    c.budget_exceeded = _truthy(g("budget_exceeded"))
    if span.end_time_unix_nano and span.start_time_unix_nano:
        c.latency_ms = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    c.is_llm = bool(
        c.request_model or c.response_model or c.input_tokens is not None or c.output_tokens is not None
        or (c.operation in _LLM_OPERATIONS)
    )
    return c


def read(span: Any, resource_attributes: Any = (), idx: dict[str, KeyValue] | None = None) -> LLMCall:
    """Everything this module knows about a span (span attributes win over resource attributes).

    With ``idx`` (from :func:`index`) the attributes are not walked again."""
    if idx is not None:
        return _call(span, idx, None)
    own = index(span.attributes)
    res = index(resource_attributes) if resource_attributes else None
    return _call(span, own, res)


def field(own: dict[str, KeyValue], res: dict[str, KeyValue] | None, name: str) -> Any:
    """The value of one field (``"request_model"``, ``"tenant"``...) from indexes, without reading others."""
    for d in (own, res):
        if not d:
            continue
        for key in KEYS[name]:
            kv = d.get(key)
            if kv is not None:
                v = value_of(kv.value)
                if v is not None and v != "":
                    return v
    return None


# --- the shared pass --------------------------------------------------------------------------------------
# Processors of one pipeline see the same request object one after the other. The first one that walks a
# span's attributes (redaction does anyway) leaves the index here, and the next ones (cost, enrich, budget,
# sampling...) look keys up in it instead of walking the attributes again. Writers keep it exact through
# :func:`set_value` / :func:`delete_key`; a processor that changes attributes in other ways calls :func:`forget`.
_CACHE: dict[int, tuple[Any, dict[int, tuple[Any, dict[str, KeyValue]]]]] = {}
_CACHE_MAX = 8


def _per_request(cache: dict[int, tuple[Any, dict[int, Any]]], request: Any) -> dict[int, Any]:
    """``request``'s entry of a per-request cache keyed by id (the request kept, so the id stays its own);
    the oldest entry goes when the cache holds ``_CACHE_MAX``."""
    rid = id(request)
    got = cache.get(rid)
    if got is not None and got[0] is request:
        return got[1]
    if len(cache) >= _CACHE_MAX:
        del cache[next(iter(cache))]
    d: dict[int, Any] = {}
    cache[rid] = (request, d)
    return d


def _entry(request: Any) -> dict[int, tuple[Any, dict[str, KeyValue]]]:
    return _per_request(_CACHE, request)


def indexes(request: Any, span: Any, resource: Any = None) -> tuple[dict[str, KeyValue], dict[str, KeyValue]]:
    """(span index, resource index) for a span of ``request``: from the shared cache, or built (one pass
    over the keys) and cached. ``resource`` is the span's ``Resource`` message (``rs.resource``)."""
    e = _entry(request)
    got = e.get(id(span))
    if got is not None and got[0] is span:
        own = got[1]
    else:
        own = index(span.attributes)
        e[id(span)] = (span, own)
    if resource is None:
        return own, {}
    got = e.get(id(resource))
    if got is not None and got[0] is resource:
        return own, got[1]
    res = index(resource.attributes)
    e[id(resource)] = (resource, res)
    return own, res


def span_indexer(request: Any) -> Any:
    """A function ``span -> span index`` for the spans of ``request``, through the shared cache: the cheap
    form of :func:`indexes` for a processor's loop over one request (no resource index)."""
    e = _entry(request)
    get = e.get

    def own_index(span: Any) -> dict[str, KeyValue]:
        got = get(id(span))
        if got is not None and got[0] is span:
            return got[1]
        idx = index(span.attributes)
        e[id(span)] = (span, idx)
        return idx

    return own_index


def remember(request: Any, item: Any, idx: dict[str, KeyValue]) -> None:
    """Store an index built by a processor's own walk over ``item.attributes`` (span or resource)."""
    _entry(request)[id(item)] = (item, idx)


def forget(request: Any) -> None:
    """Drop the shared indexes of a request (after changes not made through :func:`set_value`)."""
    _CACHE.pop(id(request), None)
    _VCACHE.pop(id(request), None)
    _PENDING.pop(id(request), None)


def read_cached(request: Any, span: Any, resource: Any = None) -> LLMCall:
    """:func:`read` through the shared indexes."""
    own, res = indexes(request, span, resource)
    return _call(span, own, res)


def set_value(attributes: Any, idx: dict[str, KeyValue] | None, key: str, value: Any, request: Any = None,
              span: Any = None) -> None:
    """Upsert ``key`` in a repeated KeyValue field, keeping ``idx`` (its index) exact. For keys this module
    indexes the index says whether the key exists, so no walk is needed. With ``request`` and ``span`` the
    span's cached values (:func:`span_values`) are kept exact too."""
    if request is not None and key in _INDEXED:
        vals = stored_values(request, span)
        if vals is not None:
            vals[key] = value
    if idx is not None and key in _INDEXED:
        kv = idx.get(key)
        if kv is None:
            kv = attributes.add()
            kv.key = key
            idx[key] = kv
        python_to_anyvalue(value, kv.value)
        return
    set_attr(attributes, key, value)


def delete_key(attributes: Any, idx: dict[str, KeyValue] | None, key: str) -> bool:
    """Remove ``key`` from a repeated KeyValue field (and from ``idx``); True if it was there."""
    for i, kv in enumerate(attributes):
        if kv.key == key:
            del attributes[i]
            if idx is not None:
                idx.pop(key, None)
            return True
    return False


def is_llm_span(span: Any, resource_attributes: Any = ()) -> bool:
    return read(span, resource_attributes).is_llm


# --- values from the wire --------------------------------------------------------------------------------
# Walking a span's attributes in Python costs ~0.2-1 µs per attribute with the upb backend, so the processors
# after redaction read the indexed keys from the serialised request instead: one Hyperscan scan for the
# encodings of every indexed key (``\x0a <len> key \x12``), then the value that follows each hit is decoded
# in place. The result, per span, is a dict of Python values of the indexed keys (span attributes only).
# Writers keep it exact with :func:`put`. Without Hyperscan the values come from a walk.
import os
import struct as _struct
from bisect import bisect_right as _bisect_right

_hs: Any
try:  # pragma: no cover - depends on the platform
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None
from collector import wire as _wire  # its ``_wirec``: the native walk, None where it was not built

_KEY_LIST: tuple[str, ...] = tuple(sorted(_INDEXED))
_unpack_d = _struct.Struct("<d").unpack_from
_KEY_DB: Any = None
_VCACHE: dict[int, tuple[Any, dict[int, tuple[Any, dict[str, Any]]]]] = {}
WIRE_VALUES = os.environ.get("LLM_COLLECTOR_WIRE_VALUES", "1") != "0"


def key_patterns(keys: tuple[str, ...] = _KEY_LIST) -> list[bytes]:
    """Hyperscan expressions for the wire encoding of each key as a span attribute, id = position in
    ``keys``."""
    out = []
    for k in keys:
        kb = k.encode()
        if len(kb) >= 0x80:
            raise ValueError(f"attribute key too long for the wire path: {k[:40]}...")
        esc = b"".join(b"\\x%02x" % c for c in kb)
        # one of the span's own attributes (Span field 9: tag 0x4a, then the KeyValue's length in 1 or 2
        # bytes), checked by Hyperscan rather than in Python per hit (event / link / kvlist keys do not match)
        out.append(b"\\x4a[\\x80-\\xff]?[\\x00-\\x7f]\\x0a\\x%02x" % len(kb) + esc + b"\\x12")
    return out


def _keys_db(keys: tuple[str, ...]) -> Any:
    """One Hyperscan database of :func:`key_patterns` of ``keys``."""
    pats = key_patterns(keys)
    db = _hs.Database()
    db.compile(expressions=pats, ids=list(range(len(pats))), elements=len(pats), flags=[0] * len(pats))
    return db


def _scan_hits(db: Any, data: bytes) -> list[int]:
    """Every match of a :func:`_keys_db` in ``data``, each as ``end offset << 10 | key id``, sorted."""
    hits: list[int] = []
    add = hits.append
    db.scan(data, match_event_handler=lambda i, _f, t, _fl, _c: add(t << 10 | i))
    hits.sort()
    return hits


def _key_db() -> Any:
    global _KEY_DB
    if _KEY_DB is None and _hs is not None:
        _KEY_DB = _keys_db(_KEY_LIST)
    return _KEY_DB


_varint = read_varint


def wire_fields(b: bytes, i: int, end: int) -> list[tuple[int, int, int]]:
    """(field number, value start, value end) of the length-delimited fields of one serialised message."""
    native = _wire._wirec
    if native is not None:
        try:
            return native.length_fields(b, i, end)
        except ValueError:  # malformed, or a group (which the native walk does not take): the Python walk says
            pass
    return [(f, vs, ve) for f, s, vs, ve in iter_fields(b, i, end) if b[s] & 7 == 2]


def wire_layout(data: bytes) -> list[tuple[tuple[int, int] | None, list[tuple[int, int]]]] | None:
    """Byte ranges in a serialised trace or logs export request: per resource_spans / resource_logs, the
    range of its resource and of each span / log record, in message order. None if the bytes are not
    such a request."""
    try:
        out: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]] = []
        for f, s, e in wire_fields(data, 0, len(data)):
            if f != 1:
                continue
            res: tuple[int, int] | None = None
            items: list[tuple[int, int]] = []
            for f2, s2, e2 in wire_fields(data, s, e):
                if f2 == 1:
                    res = (s2, e2)
                elif f2 == 2:
                    for f3, s3, e3 in wire_fields(data, s2, e2):
                        if f3 == 2:
                            items.append((s3, e3))
            out.append((res, items))
        return out
    except (IndexError, ValueError):
        return None


def _decode_value(b: bytes, i: int) -> Any:
    """The Python value of the AnyValue whose length prefix starts at ``b[i]``."""
    ln, i = _varint(b, i)
    if ln == 0:
        return None
    end = i + ln
    tag = b[i]
    if tag == 0x0A:
        n, j = _varint(b, i + 1)
        if j + n == end:
            return b[j:end].decode("utf-8", "replace")
    elif tag == 0x18:
        v, j = _varint(b, i + 1)
        if j == end:
            return v - (1 << 64) if v >= 1 << 63 else v
    elif tag == 0x21:
        if ln == 9:
            return _struct.unpack_from("<d", b, i + 1)[0]
    elif tag == 0x10:
        v, j = _varint(b, i + 1)
        if j == end:
            return bool(v)
    # another kind, or more than one field (the last one counts, as in a parse)
    av = AnyValue()
    av.ParseFromString(b[i:end])
    return value_of(av)


_KID_BITS = 10  # a hit is packed in one int: end offset << _KID_BITS | key id (no tuple per hit)
_KID_MASK = (1 << _KID_BITS) - 1
assert len(_KEY_LIST) <= _KID_MASK + 1


def key_hits(data: bytes) -> list[int] | None:
    """Every indexed-key encoding in ``data``, each as ``end offset << 10 | key id``, sorted; None without
    Hyperscan."""
    db = _key_db()
    return None if db is None else _scan_hits(db, data)


def store_wire_values(request: Any, data: bytes, hits: list[int],
                      layout: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]],
                      skip: set[int] | frozenset[int] = frozenset(),
                      overrides: dict[int, Any] | None = None) -> None:
    """Decode the values of the key ``hits`` (:func:`key_hits`) in ``data`` (the serialised form of
    ``request``, spans laid out as ``layout``) and cache them per span. Spans whose id is in ``skip`` are
    left alone."""
    e = _ventry(request)
    keys = _KEY_LIST
    starts: list[int] = []
    ends: list[int] = []
    for _res, items in layout:
        for s, t in items:
            starts.append(s)
            ends.append(t)
    per: list[dict[str, Any]] = [{} for _ in starts]
    # hits are in offset order: a span found for one hit serves the next ones until past its end
    cur_end = -1
    d: dict[str, Any] = {}
    for h in hits:
        t = h >> 10
        if t > cur_end:
            j = _bisect_right(starts, t) - 1
            if j < 0 or t > ends[j]:
                continue
            cur_end = ends[j]
            d = per[j]
        kid = h & 1023
        # inline fast paths: an AnyValue of < 128 bytes holding a short string, a small int or a double
        ln = data[t]
        if 2 < ln < 0x80:
            tag = data[t + 1]
            if tag == 0x0A:
                n = data[t + 2]
                if n < 0x80:
                    d[keys[kid]] = data[t + 3:t + 3 + n].decode("utf-8", "replace")
                    continue
            elif tag == 0x21 and ln == 9:
                d[keys[kid]] = _unpack_d(data, t + 2)[0]
                continue
            elif tag == 0x18:
                b0 = data[t + 2]
                if b0 < 0x80:
                    d[keys[kid]] = b0
                    continue
                b1 = data[t + 3]
                if b1 < 0x80:
                    d[keys[kid]] = (b0 & 0x7F) | (b1 << 7)
                    continue
        try:
            d[keys[kid]] = _decode_value(data, t)
        except (IndexError, ValueError, _struct.error):
            continue
    k = 0
    for rs, (_res, items) in zip(request.resource_spans, layout):
        n_items = len(items)
        if sum(len(ss.spans) for ss in rs.scope_spans) != n_items:
            k += n_items
            continue  # bytes and message disagree: these spans are walked on demand
        for ss in rs.scope_spans:
            if not skip and not overrides:
                for span, vals in zip(ss.spans, per[k:k + len(ss.spans)]):
                    e[id(span)] = (span, vals)
                k += len(ss.spans)
                continue
            for span in ss.spans:
                sid = id(span)
                if sid not in skip:
                    vals = per[k]
                    if overrides:
                        ov = overrides.get(sid)
                        if type(ov) is tuple:  # (span, changes): the span kept alive, so its id is its own
                            ov = ov[1] if ov[0] is span else None
                        if ov:
                            for key, val in ov.items():
                                if val is None:
                                    vals.pop(key, None)
                                else:
                                    vals[key] = val
                    e[sid] = (span, vals)
                k += 1
    e[-1] = (None, {})


_PENDING: dict[int, tuple[Any, bytes, list[int] | None, Any, set[int], dict[int, Any]]] = {}


def defer_wire_values(request: Any, data: bytes, hits: list[int] | None,
                      layout: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]], skip: set[int],
                      overrides: dict[int, Any] | None = None) -> None:
    """Keep the serialised form of ``request`` as it was before a processor changed the spans in ``skip``
    (whose values it stored), for :func:`span_values` to scan (unless ``hits`` are given) and decode only if
    a later processor asks. ``overrides``: per span id, values changed since (None: key deleted), or
    ``(span, values)``, which keeps the span's wrapper (and so its id) alive until the values are stored."""
    if len(_PENDING) >= _CACHE_MAX:
        del _PENDING[next(iter(_PENDING))]
    _PENDING[id(request)] = (request, data, hits, layout, skip, overrides or {})


def _ventry(request: Any) -> dict[int, tuple[Any, dict[str, Any]]]:
    return _per_request(_VCACHE, request)


def values_from_index(idx: dict[str, KeyValue]) -> dict[str, Any]:
    return {k: value_of(kv.value) for k, kv in idx.items()}


def remember_values(request: Any, span: Any, values: dict[str, Any]) -> None:
    """Store the values of one span (e.g. after a processor walked and changed it)."""
    _ventry(request)[id(span)] = (span, values)


def stored_values(request: Any, span: Any) -> dict[str, Any] | None:
    """The values stored for a span, if any (no wire pass, no walk)."""
    got = _VCACHE.get(id(request))
    if got is None or got[0] is not request:
        return None
    v = got[1].get(id(span))
    return v[1] if v is not None and v[0] is span else None


def values_complete(request: Any) -> None:
    """Say that every span of ``request`` has its values stored (no wire pass needed)."""
    _ventry(request)[-1] = (None, {})


def span_values(batch: Any) -> Any:
    """A function ``span -> {indexed key: Python value}`` for the spans of a trace batch. Built for the
    whole request at the first call (one scan of the serialised request), cached for later processors."""
    req = batch.request
    e = _ventry(req)
    pending = _PENDING.pop(id(req), None)
    if pending is not None and pending[0] is req and -1 not in e:
        hits = pending[2] if pending[2] is not None else key_hits(pending[1])
        if hits is not None:
            store_wire_values(req, pending[1], hits, pending[3], pending[4], pending[5])
    elif -1 not in e and WIRE_VALUES and _hs is not None and len(req.resource_spans):
        data = batch.to_bytes()
        hits = key_hits(data)
        layout = wire_layout(data)
        if hits is not None and layout is not None:
            store_wire_values(req, data, hits, layout)
    e[-1] = (None, {})  # the wire pass is done for this request
    get = e.get

    def values(span: Any) -> dict[str, Any]:
        got = get(id(span))
        if got is not None and got[0] is span:
            return got[1]
        vals = values_from_index(index(span.attributes))
        e[id(span)] = (span, vals)
        return vals

    return values


def vfield(values: dict[str, Any], name: str) -> Any:
    """One field (``"request_model"``, ``"tenant"``...) from a values dict: the first non-empty name."""
    for key in KEYS[name]:
        v = values.get(key)
        if v is not None and v != "":
            return v
    return None


def fields(values: dict[str, Any], ranks: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    """Every field of a values dict in one pass: field -> value of its highest-priority non-empty name.
    ``ranks`` (from :func:`ranks_of`): look only at the names of the fields a caller needs."""
    out: dict[str, Any] = {}
    rank: dict[str, int] = {}
    rk = _RANK if ranks is None else ranks
    for name, v in values.items():
        fr = rk.get(name)
        if fr is None or v is None or v == "":
            continue
        f, r = fr
        cur = rank.get(f)
        if cur is None or r < cur:
            rank[f] = r
            out[f] = v
    return out


_NO_VALUE = (None,)
_EMPTY_VALUES = frozenset({None, ""})


def _tuple_getter(items: tuple[Any, ...]) -> Any:
    """``itemgetter(*items)``, giving a tuple for one item too (an itemgetter of one item gives it alone)."""
    if len(items) == 1:
        item = items[0]
        return lambda c: (c[item],)
    return itemgetter(*items)


class FieldReader:
    """:func:`fields` for one set of ``ranks``, as a tuple of the fields ``order`` names (None where absent),
    faster on the spans of one producer: spans with the same keys (in the same order) share a plan of which
    key gives which field, made once, and no dict is made per span."""

    __slots__ = ("order", "ranks", "rows")

    def __init__(self, ranks: dict[str, tuple[str, int]], order: tuple[str, ...]) -> None:
        self.ranks = ranks
        self.order = order
        self.rows: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def _best(self, shape: tuple[str, ...]) -> dict[str, str]:
        """Field -> the key of ``shape`` that gives it (the highest-priority one)."""
        best: dict[str, tuple[int, str]] = {}
        for name in shape:
            fr = self.ranks.get(name)
            if fr is not None and (fr[0] not in best or fr[1] < best[fr[0]][0]):
                best[fr[0]] = (fr[1], name)
        return {f: name for f, (_r, name) in best.items()}

    def row(self, values: dict[str, Any]) -> tuple[Any, ...]:
        """The fields of ``order`` as a tuple (None where absent): :func:`fields` without a dict per span."""
        shape = tuple(values)
        plan = self.rows.get(shape)
        if plan is None:
            best = self._best(shape)
            names = tuple(best[f] for f in self.order if f in best)
            # the present keys' values in one call, then (None appended) put in ``order`` in another
            pos = [names.index(best[f]) if f in best else -1 for f in self.order]
            plan = (_tuple_getter(names) if names else None, _tuple_getter(tuple(pos)))
            if len(self.rows) < 256:
                self.rows[shape] = plan
        get, arrange = plan
        got = get(values) if get is not None else ()
        try:
            clean = _EMPTY_VALUES.isdisjoint(got)
        except TypeError:  # an unhashable value (a list, a map)
            clean = None not in got and "" not in got
        if not clean:  # an empty value: the next name of its field counts, as in fields()
            f = fields(values, self.ranks)
            return tuple(f.get(n) for n in self.order)
        return arrange(got + _NO_VALUE)  # type: ignore[no-any-return]


def ranks_of(*field_names: str) -> dict[str, tuple[str, int]]:
    """The attribute names of some fields with their (field, priority), for :func:`fields`."""
    return {n: fr for n, fr in _RANK.items() if fr[0] in field_names}


__all__ += ["FieldReader", "ranks_of"]


def put(attributes: Any, values: dict[str, Any], key: str, value: Any, request: Any = None,
        span: Any = None) -> None:
    """Upsert an indexed ``key`` and keep ``values`` exact: a new key is appended without a walk. With
    ``request`` and ``span``, a KeyValue index cached for the span is kept exact too."""
    if key in values:
        for kv in attributes:
            if kv.key == key:
                break
        else:
            kv = attributes.add()
            kv.key = key
    else:
        kv = attributes.add()
        kv.key = key
        if request is not None:
            ent = _CACHE.get(id(request))
            if ent is not None and ent[0] is request:
                got = ent[1].get(id(span))
                if got is not None and got[0] is span:
                    got[1][key] = kv
    if type(value) is float:
        kv.value.double_value = value
    else:
        python_to_anyvalue(value, kv.value)
    values[key] = value


_DOUBLE_HEAD: dict[str, bytes] = {}


def double_head(key: str) -> bytes:
    """The encoding of a span attribute ``key`` = <double> up to the 8 value bytes (Span field 9)."""
    head = _DOUBLE_HEAD.get(key)
    if head is None:
        kb = key.encode()
        kv = b"\x0a" + varint(len(kb)) + kb + b"\x12\x09\x21"
        head = b"\x4a" + varint(len(kv) + 8) + kv
        if len(_DOUBLE_HEAD) < 1000:
            _DOUBLE_HEAD[key] = head
    return head


_pack_d = _struct.Struct("<d").pack


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


# --- values of a TraceWire (collector/wire.py) --------------------------------------------------------------
# The wire path of the processors: the keys they read or write are declared up front (:func:`want`), and the
# native walk (collector/_wirec.c) reads just those from every span; without it, one Hyperscan scan of the
# serialised request finds them (a scan for every known key costs twice as much, most of it in Python
# callbacks for keys nobody reads). Per span, the values of the wanted keys it has; where one of them is in
# the bytes is found when a processor replaces it (to cut it out).
_WANTED: set[str] = set()
_WANTED_LIST: tuple[str, ...] = ()
_WANTED_DB: Any = None


def want(*keys: str) -> None:
    """Declare attribute keys a processor reads or writes through :func:`wire_values` / :func:`wire_put`."""
    global _WANTED_DB, _WANTED_LIST
    new = [k for k in keys if k not in _WANTED]
    if new:
        _WANTED.update(new)
        _WANTED_LIST = tuple(sorted(_WANTED))
        _WANTED_DB = None


def want_fields(*fields: str) -> None:
    """:func:`want` the names of some fields (``"request_model"``...) and the names we write for them."""
    keys: list[str] = []
    for f in fields:
        keys.extend(KEYS[f])
        if f in WRITE:
            keys.append(WRITE[f])
    want(*keys)


def wanted(key: str) -> bool:
    return key in _WANTED


def _wanted_db() -> Any:
    global _WANTED_DB
    if _WANTED_DB is None and _hs is not None and _WANTED_LIST:
        _WANTED_DB = _keys_db(_WANTED_LIST)
    return _WANTED_DB


def _walk_values(body: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """Values and ranges (relative to ``body``) of the wanted keys of one serialised span, by a walk over
    its fields: the path without Hyperscan, and where a writer needs to know where an attribute is."""
    vals: dict[str, Any] = {}
    rng: dict[str, tuple[int, int]] = {}
    for f, s, vs, ve in iter_fields(body, 0, len(body)):
        if f != 9 or body[s] != 0x4A:
            continue
        kv = KeyValue()
        kv.ParseFromString(body[vs:ve])
        if kv.key in _WANTED:
            vals[kv.key] = value_of(kv.value)
            rng[kv.key] = (s, ve)
    return vals, rng


def wire_values(tw: Any) -> list[dict[str, Any]]:
    """Per span of ``tw`` (a :class:`collector.wire.TraceWire`), ``{wanted key: Python value}`` of the span's
    own attributes; every wanted key the span has is listed (writers rely on it). Computed once per TraceWire
    (the native walk of every span, or one Hyperscan scan of the request for the wanted keys) and kept exact
    by :func:`wire_put`.

    A limit of the Hyperscan path only, shared with any reading of protobuf bytes that does not parse
    everything: the encoding of an attribute quoted inside a string value (a prompt holding protobuf bytes)
    reads as an attribute of the span too."""
    if tw.values is not None:
        return tw.values  # type: ignore[no-any-return]
    data = tw.data
    spans = tw.spans
    native = _wire._wirec
    if native is not None and WIRE_VALUES:  # a full walk of every span, in C
        tw.values = native.span_values(data, spans, _WANTED_LIST, _decode_value)
        return tw.values  # type: ignore[no-any-return]
    n = len(spans)
    per: list[dict[str, Any]] = [{} for _ in range(n)]
    tw.values = per
    if not n:
        return per
    if _hs is None or not WIRE_VALUES or not _WANTED_LIST:
        if _WANTED_LIST:
            for j, (_o, s, e) in enumerate(spans):
                per[j] = _walk_values(data[s:e])[0]
        return per
    keys = _WANTED_LIST
    j = 0
    _o, s, e = spans[0]
    d = per[0]
    unpack_d = _unpack_d
    for h in _scan_hits(_wanted_db(), data):
        t = h >> 10  # the AnyValue's length prefix
        while t > e and j + 1 < n:
            j += 1
            _o, s, e = spans[j]
            d = per[j]
        if t < s or t >= e:
            continue
        ln = data[t]
        if ln < 0x80:
            vs = t + 1
        elif data[t + 1] < 0x80:
            ln = (ln & 0x7F) | (data[t + 1] << 7)
            vs = t + 2
        else:
            continue
        if vs + ln > e:
            continue
        tag = data[vs]
        if tag == 0x0A:
            m = data[vs + 1]
            if m < 0x80 and m + 2 == ln:
                d[keys[h & 1023]] = data[vs + 2:vs + 2 + m].decode("utf-8", "replace")
                continue
        elif tag == 0x18:
            b0 = data[vs + 1]
            if b0 < 0x80:
                d[keys[h & 1023]] = b0
                continue
            b1 = data[vs + 2]
            if b1 < 0x80:
                d[keys[h & 1023]] = (b0 & 0x7F) | (b1 << 7)
                continue
        elif tag == 0x21 and ln == 9:
            d[keys[h & 1023]] = unpack_d(data, vs + 1)[0]
            continue
        try:
            d[keys[h & 1023]] = _decode_value(data, t)
        except (IndexError, ValueError, _struct.error):
            continue
    return per


def _own_range(tw: Any, i: int, key: str) -> tuple[int, int] | None:
    """Where span ``i``'s own attribute ``key`` is in ``tw.data`` (a walk over the span: writers that
    replace an attribute the span came with need it, which is rare)."""
    rg = tw.ranges.get(i) if tw.ranges is not None else None
    if rg is None:
        _o, s, e = tw.spans[i]
        rel = _walk_values(tw.data[s:e])[1]
        rg = {k: (a + s, b + s) for k, (a, b) in rel.items()}
        if tw.ranges is None:
            tw.ranges = {}
        tw.ranges[i] = rg
    return rg.pop(key, None)  # type: ignore[no-any-return]


def wire_put(tw: Any, i: int, key: str, value: Any) -> None:
    """Upsert the wanted attribute ``key`` of span ``i`` of ``tw`` (values from :func:`wire_values`, which
    stay exact). The caller then says ``batch.wire_changed()``."""
    vals = tw.values[i]
    ex = tw.extra.get(i)
    if key in vals and (ex is None or key not in ex):  # one of the span's own attributes: cut it out
        rg = _own_range(tw, i, key)
        if rg is not None:
            tw.cut_range(i, rg[0], rg[1])
    tw.append_attribute(i, key, double_head(key) + _pack_d(value) if type(value) is float
                        else encode_attribute(key, value))
    vals[key] = value


def wire_append(tw: Any, i: int, encoded: dict[str, bytes], values: dict[str, Any]) -> bool:
    """Append attributes to span ``i`` of ``tw`` in one step (``encoded``: key -> encoding, ``values``: key ->
    Python value, the same keys), when the span has none of them yet (neither its own nor appended); False,
    with nothing done, when it has one (then :func:`wire_put` them one by one). The hot path of the writers:
    no upsert per attribute, and ``encoded`` becomes the span's appended attributes as it is."""
    extra = tw.extra
    if i in extra:
        return False
    vals = tw.values[i]
    if not vals.keys().isdisjoint(encoded):
        return False
    extra[i] = encoded
    vals.update(values)
    return True


__all__ += ["double_head", "want", "want_fields", "wanted", "wire_append", "wire_put", "wire_values"]
