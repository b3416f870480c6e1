"""Span attribute sets shaped like what LiteLLM, OpenLLMetry (Traceloop) and OpenInference emit, and helpers
to build OTLP batches from them (in-process) for the proc-a processor tests."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.pdata import Batch, Signal, python_to_anyvalue

LITELLM = {
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "llm.is_streaming": "False",
    "gen_ai.usage.prompt_tokens": 1200,
    "gen_ai.usage.completion_tokens": 300,
    "gen_ai.usage.total_tokens": 1500,
    "metadata.user_api_key_team_id": "team-acme",
    "metadata.user_api_key_user_id": "user-42",
    "metadata.user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": "Hi, I'm Jane (jane.doe@example.com), card 4111 1111 1111 1111, call +1 415 555 0100",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": "Sure Jane, I will email jane.doe@example.com about order ORD-415-555-0123.",
}

OPENLLMETRY = {
    "gen_ai.system": "Anthropic",
    "llm.request.type": "chat",
    "gen_ai.request.model": "claude-sonnet-4-20250514",
    "gen_ai.usage.prompt_tokens": 10000,
    "gen_ai.usage.completion_tokens": 2000,
    "gen_ai.usage.cache_read_input_tokens": 6000,
    "gen_ai.usage.cache_creation_input_tokens": 1000,
    "llm.usage.total_tokens": 12000,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "You are a support bot. Never reveal sk-proj-abcdefghijklmnopqrstuvwxyz123456.",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "My SSN is 123-45-6789 and my IBAN DE89 3704 0044 0532 0130 00.",
    "gen_ai.completion.0.content": "Noted.",
    "traceloop.entity.input": json.dumps({"messages": [{"role": "user", "content": "ping from 10.1.2.3\nbob@corp.io"}]}),
}

OPENINFERENCE = {
    "openinference.span.kind": "LLM",
    "llm.provider": "google",
    "llm.model_name": "gemini-2.5-flash",
    "llm.token_count.prompt": 4000,
    "llm.token_count.completion": 1500,
    "llm.token_count.prompt_details.cache_read": 1000,
    "llm.token_count.completion_details.reasoning": 500,
    "user.id": "u-77",
    "session.id": "s-1",
    "input.value": json.dumps([{"role": "user", "content": "Mail alice@example.org, token "
                                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"}]),
    "output.value": "Done, 1234 5678 9012 3456 is not a card (Luhn fails).",
    "llm.input_messages.0.message.role": "user",
    "llm.input_messages.0.message.content": "AWS key AKIAIOSFODNN7EXAMPLE please",
}


def batch_of(spans: list[tuple[str, dict[str, Any]]], resource: dict[str, Any] | None = None,
             metadata: dict[str, str] | None = None, end_ns: int = 1_764_374_400_000_000_000) -> Batch:
    """One request, one resource, one span per (name, attributes)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {"service.name": "app"}).items():
        kv = rs.resource.attributes.add()
        kv.key = k
        python_to_anyvalue(v, kv.value)
    ss = rs.scope_spans.add()
    for i, (name, attrs) in enumerate(spans):
        sp = ss.spans.add()
        sp.name = name
        sp.trace_id = (i + 1).to_bytes(16, "big")
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.start_time_unix_nano = end_ns - 1_000_000_000
        sp.end_time_unix_nano = end_ns
        for k, v in attrs.items():
            kv = sp.attributes.add()
            kv.key = k
            python_to_anyvalue(v, kv.value)
    return Batch(Signal.TRACES, req, metadata=metadata or {})


def attrs_of(span: Any) -> dict[str, Any]:
    from collector.pdata import attrs_to_dict
    return attrs_to_dict(span.attributes)
