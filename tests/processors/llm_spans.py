"""Spans shaped like the ones LiteLLM, OpenLLMetry (Traceloop) and OpenInference emit, for the processor tests.

``sdk_*`` functions record spans with the OpenTelemetry SDK (for tests through a running collector);
``pb_request`` builds an ExportTraceServiceRequest directly (for fast in-process unit tests).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.pdata import Batch, Signal, python_to_anyvalue

LITELLM = {
    "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.prompt_tokens": 120, "gen_ai.usage.completion_tokens": 40, "llm.is_streaming": "False",
    "metadata.user_api_key_team_id": "acme", "metadata.user_api_key_user_id": "u-1",
    "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hello there",
    "gen_ai.completion.0.content": "hi", "metadata.feature": "chat",
}
OPENLLMETRY = {
    "gen_ai.system": "Anthropic", "llm.request.type": "chat", "gen_ai.request.model": "claude-3-5-sonnet",
    "gen_ai.response.model": "claude-3-5-sonnet-20241022", "gen_ai.usage.input_tokens": 300,
    "gen_ai.usage.output_tokens": 80, "llm.usage.total_tokens": 380, "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": "summarise this", "gen_ai.completion.0.content": "done",
    "tenant.id": "globex", "feature": "summarise",
}
OPENINFERENCE = {
    "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
    "llm.token_count.prompt": 50, "llm.token_count.completion": 10, "llm.token_count.total": 60,
    "input.value": '{"messages":[{"role":"user","content":"hi"}]}', "output.value": "hello",
    "tenant.id": "initech", "feature": "search",
}
SHAPES = {"litellm": LITELLM, "openllmetry": OPENLLMETRY, "openinference": OPENINFERENCE}


def sdk_provider(endpoint: str, service: str = "llm-app") -> tuple[Any, Any]:
    """(TracerProvider, tracer) exporting over OTLP/gRPC to ``endpoint``; ``tp.force_flush()`` returns once
    the collector acknowledged every span."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                             max_export_batch_size=256, schedule_delay_millis=50))
    return tp, tp.get_tracer("llm-tests")


def sdk_llm_span(tracer: Any, shape: str, *, error: bool = False, extra: dict[str, Any] | None = None,
                 name: str | None = None, duration_ms: float = 0.0) -> tuple[bytes, bytes]:
    """Record one LLM span of the given shape; returns (trace_id, span_id) as bytes."""
    import time

    from opentelemetry.trace import Status, StatusCode

    attrs = dict(SHAPES[shape])
    attrs.update(extra or {})
    start = time.time_ns()
    span = tracer.start_span(name or f"chat {attrs.get('gen_ai.request.model', 'llm')}", attributes=attrs,
                             start_time=start)
    if error:
        span.set_status(Status(StatusCode.ERROR, "upstream 500"))
        span.set_attribute("error.type", "InternalServerError")
    ctx = span.get_span_context()
    span.end(end_time=start + int(duration_ms * 1e6) if duration_ms else None)
    return ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big")


def pb_request(spans: Iterable[dict[str, Any]], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    """A request with one resource and scope; each span dict has trace_id, span_id and optional name,
    attributes, status (0/1/2), start, end (ns)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {"service.name": "llm-app"}).items():
        kv = rs.resource.attributes.add()
        kv.key = k
        python_to_anyvalue(v, kv.value)
    ss = rs.scope_spans.add()
    ss.scope.name = "llm-tests"
    for d in spans:
        s = ss.spans.add()
        s.trace_id = d["trace_id"]
        s.span_id = d.get("span_id") or os.urandom(8)
        s.name = d.get("name", "chat")
        s.kind = d.get("kind", 3)
        s.start_time_unix_nano = d.get("start", 1_700_000_000_000_000_000)
        s.end_time_unix_nano = d.get("end", s.start_time_unix_nano + 500_000_000)
        s.status.code = d.get("status", 0)
        for k, v in (d.get("attributes") or {}).items():
            kv = s.attributes.add()
            kv.key = k
            python_to_anyvalue(v, kv.value)
    return req


def pb_batch(spans: Iterable[dict[str, Any]], **kw: Any) -> Batch:
    return Batch(Signal.TRACES, pb_request(spans, **kw))


def trace_ids(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.getrandbits(128).to_bytes(16, "big") for _ in range(n)]


class Sink:
    """A consumer that keeps what it gets (the in-process stand-in for the next pipeline stage)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    def spans(self) -> list[Any]:
        return [s for b in self.batches for rs in b.request.resource_spans for ss in rs.scope_spans
                for s in ss.spans]

    def items(self) -> int:
        return sum(b.item_count() for b in self.batches)
