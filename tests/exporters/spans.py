"""OTLP requests shaped like LiteLLM's spans, built directly as protobuf for exporter tests."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.pdata import set_attr

PROMPT = "What is the capital of France? My card is 4111 1111 1111 1111"
ANSWER = "Paris."


def llm_span(ss: Any, trace_id: bytes, parent: bytes = b"", *, model: str = "gpt-4o", provider: str = "openai",
             input_tokens: int = 1000, output_tokens: int = 523, cost: float | None = 0.02,
             latency_ms: float = 842.0, status_code: int = 200, error: str | None = None,
             tenant: str = "acme", feature: str = "chat", user: str = "u-1", session: str = "s-1",
             content: bool = True, end_ns: int | None = None) -> Any:
    sp = ss.spans.add()
    sp.trace_id = trace_id
    sp.span_id = os.urandom(8)
    sp.parent_span_id = parent
    sp.name = "litellm_request"
    sp.kind = 3
    end = end_ns or time.time_ns()
    sp.end_time_unix_nano = end
    sp.start_time_unix_nano = end - int(latency_ms * 1e6)
    a = sp.attributes
    set_attr(a, "gen_ai.system", provider)
    set_attr(a, "gen_ai.request.model", model)
    set_attr(a, "gen_ai.response.model", model)
    set_attr(a, "gen_ai.usage.prompt_tokens", input_tokens)
    set_attr(a, "gen_ai.usage.completion_tokens", output_tokens)
    set_attr(a, "gen_ai.usage.total_tokens", input_tokens + output_tokens)
    set_attr(a, "llm.is_streaming", False)
    set_attr(a, "gen_ai.request.temperature", 0.2)
    set_attr(a, "gen_ai.request.max_tokens", 512)
    if cost is not None:
        set_attr(a, "gen_ai.usage.cost", cost)
    set_attr(a, "metadata.user_api_key_team_id", tenant)
    set_attr(a, "metadata.feature", feature)
    set_attr(a, "metadata.user_api_key_user_id", user)
    set_attr(a, "metadata.session_id", session)
    set_attr(a, "http.response.status_code", status_code)
    if content:
        set_attr(a, "gen_ai.prompt.0.role", "user")
        set_attr(a, "gen_ai.prompt.0.content", PROMPT)
        set_attr(a, "gen_ai.completion.0.role", "assistant")
        set_attr(a, "gen_ai.completion.0.content", ANSWER)
    if error:
        sp.status.code = 2
        sp.status.message = error
        set_attr(a, "error.type", "APIError")
    return sp


def plain_span(ss: Any, trace_id: bytes, name: str = "Received Proxy Server Request", parent: bytes = b"",
               latency_ms: float = 900.0) -> Any:
    sp = ss.spans.add()
    sp.trace_id = trace_id
    sp.span_id = os.urandom(8)
    sp.parent_span_id = parent
    sp.name = name
    end = time.time_ns()
    sp.end_time_unix_nano = end
    sp.start_time_unix_nano = end - int(latency_ms * 1e6)
    set_attr(sp.attributes, "http.method", "POST")
    return sp


def request(n_llm: int = 1, *, root: bool = True, service: str = "litellm-proxy", **kw: Any) -> Any:
    """One trace: a proxy root span and ``n_llm`` LLM calls under it."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    set_attr(rs.resource.attributes, "service.name", service)
    set_attr(rs.resource.attributes, "host.name", "gw-1")
    ss = rs.scope_spans.add()
    ss.scope.name = "litellm"
    tid = os.urandom(16)
    parent = b""
    if root:
        parent = plain_span(ss, tid).span_id
    for _ in range(n_llm):
        llm_span(ss, tid, parent, **kw)
    return req
