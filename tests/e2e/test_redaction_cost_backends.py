"""End to end, issue 5's check: the OpenTelemetry SDK sends LiteLLM-shaped spans (no cost on them, PII and a
secret in the prompt) through a running collector with redaction -> cost in front of the datadog and langfuse
exporters. In Datadog logs and metrics and in Langfuse generations, token counts equal what was sent, costs
equal the hand-computed price-table figures, and no redacted value appears anywhere either backend received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langfuse import LangfuseOtelSpanAttributes as A
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.pdata import attrs_to_dict
from tests.exporters.intake import DD_KEY, LF_PUBLIC, LF_SECRET, DatadogIntake, LangfuseIntake
from tests.helpers import CollectorProcess, free_port, wait_for

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"  # Luhn-valid
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0"
PROMPT = f"Refund the order of {EMAIL}, card {CARD}; our key is {SECRET}"
# model, input tokens, output tokens, hand-computed USD from the built-in table (per million tokens):
# gpt-4o 2.50 in / 10.00 out; gpt-4o-mini 0.15 / 0.60; claude-sonnet-4 3.00 / 15.00
CALLS = [
    ("gpt-4o", "openai", 1200, 300, 1200 * 2.5e-6 + 300 * 10e-6),
    ("gpt-4o-mini", "openai", 5000, 1000, 5000 * 0.15e-6 + 1000 * 0.6e-6),
    ("claude-sonnet-4", "anthropic", 2000, 500, 2000 * 3e-6 + 500 * 15e-6),
]


def _config(grpc_port: int, dd: DatadogIntake, lf: LangfuseIntake) -> dict[str, Any]:
    retry = {"initial_interval": "50ms", "max_interval": "200ms"}
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "processors": {"redaction": {"content": "redact"}, "cost": {}},
        "exporters": {
            "datadog": {"api": {"key": "${env:DD_API_KEY}"}, "include_content": True,
                        "logs": {"endpoint": dd.url}, "metrics": {"endpoint": dd.url, "flush_interval": "300ms"},
                        "retry_on_failure": retry},
            "langfuse": {"host": lf.url, "include_content": True, "retry_on_failure": retry},
        },
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["redaction", "cost"],
                                             "exporters": ["datadog", "langfuse"]}}},
    }


def _send(grpc_port: int) -> dict[int, tuple[Any, ...]]:
    tp = TracerProvider(resource=Resource.create({"service.name": "litellm-proxy"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
    tracer = tp.get_tracer("litellm")
    sent: dict[int, tuple[Any, ...]] = {}
    for i, (model, provider, tin, tout, cost) in enumerate(CALLS):
        with tracer.start_as_current_span("litellm_request") as sp:
            sp.set_attributes({
                "gen_ai.system": provider, "gen_ai.request.model": model, "gen_ai.response.model": model,
                "gen_ai.usage.prompt_tokens": tin, "gen_ai.usage.completion_tokens": tout,
                "metadata.user_api_key_team_id": "team-a", "metadata.user_api_key_user_id": f"user-{i}",
                "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": PROMPT,
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": f"Mailed {EMAIL}",
                "http.response.status_code": 200,
            })
            sent[sp.get_span_context().span_id] = (model, provider, tin, tout, cost)
    tp.shutdown()
    return sent


def test_redacted_and_priced_in_datadog_and_langfuse(tmp_path: Path) -> None:
    grpc_port = free_port()
    env = {"DD_API_KEY": DD_KEY, "LANGFUSE_PUBLIC_KEY": LF_PUBLIC, "LANGFUSE_SECRET_KEY": LF_SECRET}
    with DatadogIntake() as dd, LangfuseIntake() as lf:
        with CollectorProcess(_config(grpc_port, dd, lf), workdir=tmp_path, env=env):
            sent = _send(grpc_port)
            logs = wait_for(lambda: len(dd.logs()) >= len(CALLS) and dd.logs(), what="Datadog logs")
            wait_for(lambda: sum(p["value"] for s in dd.series() if s["metric"] == "llm.requests"
                                 for p in s["points"]) == len(CALLS), what="llm.requests")
            spans = wait_for(lambda: len(lf.spans()) == len(CALLS) and lf.spans(), what="Langfuse spans")
        assert dd.problems == [] and lf.problems == []

        for e in logs:
            model, _provider, tin, tout, cost = sent[int(e["otel.span_id"], 16)]
            assert (e["model"], e["input_tokens"], e["output_tokens"]) == (model, tin, tout)
            assert e["cost"] == pytest.approx(cost, rel=1e-9)

        def total(name: str) -> float:
            return sum(p["value"] for s in dd.series() if s["metric"] == f"llm.{name}" for p in s["points"])

        assert total("cost") == pytest.approx(sum(c[4] for c in CALLS), rel=1e-9)
        assert total("input_tokens") == sum(c[2] for c in CALLS)

        for _rs, sp in spans:
            a = attrs_to_dict(sp.attributes)
            model, _provider, tin, tout, cost = sent[int.from_bytes(sp.span_id, "big")]
            assert a[A.OBSERVATION_TYPE] == "generation" and a[A.OBSERVATION_MODEL] == model
            assert json.loads(a[A.OBSERVATION_COST_DETAILS])["total"] == pytest.approx(cost, rel=1e-9)
            assert json.loads(a[A.OBSERVATION_USAGE_DETAILS])["input"] == tin
            assert "<EMAIL>" in a[A.OBSERVATION_INPUT]  # content is included, redacted

        everything = json.dumps(logs) + json.dumps(dd.series(), default=str) + "".join(
            str(attrs_to_dict(sp.attributes)) + str(attrs_to_dict(rs.resource.attributes)) for rs, sp in spans)
        for secret in (EMAIL, CARD, CARD.replace(" ", ""), SECRET):
            assert secret not in everything
