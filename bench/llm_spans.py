"""Realistic LLM spans for benchmarks: GenAI attributes and 0.5-2 KB of prompt/response content per span."""

from __future__ import annotations

import os
import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = ["make_request"]

_WORDS = ["the", "model", "answered", "with", "a", "summary", "of", "the", "quarterly", "report", "including", "revenue", "growth", "churn", "and", "the", "customer", "feedback", "about", "latency", "pricing", "support", "tickets", "onboarding", "flows", "retrieval", "augmented", "generation", "embedding", "vector", "store", "chunk", "overlap", "temperature", "top_p", "system", "prompt", "assistant", "user", "tool", "call", "function", "json", "schema", "refusal", "safety", "policy", "translation", "french", "german", "spanish", "code", "review", "python", "rust", "sql", "query"]
_MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet"),
           ("aws.bedrock", "meta.llama3-70b")]


def _text(rng: random.Random, n_bytes: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_bytes:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def _kv(span: Span, key: str, value: object) -> None:
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = str(value)


def make_request(n_spans: int = 500, seed: int = 0) -> ExportTraceServiceRequest:
    """One export request of ``n_spans`` LLM chat spans (one service, one scope)."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", "chat-api"), ("service.version", "1.4.2"), ("deployment.environment", "prod")):
        a = rs.resource.attributes.add()
        a.key = k
        a.value.string_value = v
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    ss.scope.version = "0.40.0"
    now = 1_760_000_000_000_000_000
    for i in range(n_spans):
        provider, model = rng.choice(_MODELS)
        sp = ss.spans.add()
        sp.trace_id = os.urandom(16)
        sp.span_id = os.urandom(8)
        sp.parent_span_id = os.urandom(8)
        sp.name = f"chat {model}"
        sp.kind = Span.SPAN_KIND_CLIENT
        sp.start_time_unix_nano = now + i * 1_000_000
        sp.end_time_unix_nano = sp.start_time_unix_nano + rng.randint(200, 9000) * 1_000_000
        sp.status.code = Status.STATUS_CODE_OK
        in_tok, out_tok = rng.randint(50, 4000), rng.randint(10, 1500)
        _kv(sp, "gen_ai.operation.name", "chat")
        _kv(sp, "gen_ai.system", provider)
        _kv(sp, "gen_ai.request.model", model)
        _kv(sp, "gen_ai.response.model", model + "-2024-08-06")
        _kv(sp, "gen_ai.request.temperature", 0.7)
        _kv(sp, "gen_ai.request.max_tokens", 2048)
        _kv(sp, "gen_ai.usage.input_tokens", in_tok)
        _kv(sp, "gen_ai.usage.output_tokens", out_tok)
        _kv(sp, "gen_ai.response.finish_reasons", "stop")
        _kv(sp, "gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):016x}")
        _kv(sp, "user.id", f"user-{rng.randint(1, 5000)}")
        _kv(sp, "tenant.id", f"tenant-{rng.randint(1, 40)}")
        total = rng.randint(500, 2000)
        split = rng.randint(total // 4, total * 3 // 4)
        _kv(sp, "gen_ai.prompt.0.role", "user")
        _kv(sp, "gen_ai.prompt.0.content", _text(rng, split))
        _kv(sp, "gen_ai.completion.0.role", "assistant")
        _kv(sp, "gen_ai.completion.0.content", _text(rng, total - split))
    return req
