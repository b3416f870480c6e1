"""End to end: the OpenTelemetry SDK sends LiteLLM-shaped spans through a running collector to the
`datadog` and `langfuse` exporters (local intakes that check the vendors' schemas); token counts and costs
arrive as sent, in Datadog logs and metrics and in Langfuse generations. The examples validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langfuse import LangfuseOtelSpanAttributes as A
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from collector.pdata import attrs_to_dict
from tests.exporters.intake import DD_KEY, LF_PUBLIC, LF_SECRET, DatadogIntake, LangfuseIntake
from tests.helpers import ROOT, CollectorProcess, free_port, wait_for

PROMPT = "Summarise the ticket of jane.doe@example.com"
CALLS = [  # model, provider, input tokens, output tokens, cost, failed
    ("gpt-4o", "openai", 1200, 300, 0.006, False),
    ("gpt-4o", "openai", 800, 120, 0.0032, False),
    ("gpt-4o-mini", "openai", 5000, 1000, 0.00135, False),
    ("claude-3-5-sonnet", "anthropic", 2000, 500, 0.0135, False),
    ("claude-3-5-sonnet", "anthropic", 300, 0, 0.0009, True),
]


def _config(grpc_port: int, dd: DatadogIntake, lf: LangfuseIntake, **dd_over: Any) -> dict[str, Any]:
    retry = {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "10s"}
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "exporters": {
            "datadog": {"api": {"key": "${env:DD_API_KEY}", **dd_over.pop("api", {})},
                        "logs": {"endpoint": dd.url}, "metrics": {"endpoint": dd.url, "flush_interval": "300ms"},
                        "tags": ["env:e2e"], "retry_on_failure": retry, **dd_over},
            "langfuse": {"host": lf.url, "environment": "e2e", "retry_on_failure": retry},
        },
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["datadog", "langfuse"]}}},
    }


def _send(grpc_port: int) -> dict[int, tuple[Any, ...]]:
    """One LiteLLM proxy request per call: a server span with a litellm_request child. Returns the calls by
    span id."""
    tp = TracerProvider(resource=Resource.create({"service.name": "litellm-proxy"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
    tracer = tp.get_tracer("litellm")
    sent: dict[int, tuple[Any, ...]] = {}
    for i, (model, provider, tin, tout, cost, failed) in enumerate(CALLS):
        with tracer.start_as_current_span("Received Proxy Server Request"):
            with tracer.start_as_current_span("litellm_request") as sp:
                sp.set_attributes({
                    "gen_ai.system": provider, "gen_ai.request.model": model, "gen_ai.response.model": model,
                    "gen_ai.usage.prompt_tokens": tin, "gen_ai.usage.completion_tokens": tout,
                    "gen_ai.usage.total_tokens": tin + tout, "gen_ai.usage.cost": cost,
                    "llm.is_streaming": False, "metadata.user_api_key_team_id": "team-a",
                    "metadata.user_api_key_user_id": f"user-{i}", "metadata.feature": "support",
                    "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": PROMPT,
                    "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "done",
                    "http.response.status_code": 529 if failed else 200,
                })
                if failed:
                    sp.set_status(Status(StatusCode.ERROR, "Overloaded"))
                sent[sp.get_span_context().span_id] = (model, provider, tin, tout, cost, failed)
    tp.shutdown()
    return sent


def test_llm_spans_reach_datadog_and_langfuse(tmp_path: Path) -> None:
    grpc_port = free_port()
    env = {"DD_API_KEY": DD_KEY, "LANGFUSE_PUBLIC_KEY": LF_PUBLIC, "LANGFUSE_SECRET_KEY": LF_SECRET}
    with DatadogIntake() as dd, LangfuseIntake() as lf:
        with CollectorProcess(_config(grpc_port, dd, lf), workdir=tmp_path, env=env) as col:
            sent = _send(grpc_port)
            logs = wait_for(lambda: len(dd.logs()) >= len(CALLS) and dd.logs(), what="Datadog logs")
            wait_for(lambda: sum(p["value"] for s in dd.series() if s["metric"] == "llm.requests"
                                 for p in s["points"]) == len(CALLS), what="llm.requests")
            gens = wait_for(lambda: len(lf.spans()) == 2 * len(CALLS) and lf.spans(), what="Langfuse spans")
            assert col.metric_value("otelcol_exporter_sent_spans_total", exporter="langfuse") == 2 * len(CALLS)
        assert dd.problems == [] and lf.problems == []
        assert dd.validations == 1

        # Datadog logs: one per LLM call, numbers as sent
        assert len(logs) == len(CALLS)
        for e in logs:
            model, provider, tin, tout, cost, failed = sent[int(e["otel.span_id"], 16)]
            assert (e["model"], e["provider"], e["input_tokens"], e["output_tokens"]) == (model, provider, tin, tout)
            assert e["cost"] == pytest.approx(cost)
            assert e["status"] == ("error" if failed else "info") and e["tenant"] == "team-a"
            assert e["dd.span_id"] == str(int(e["otel.span_id"], 16))
        assert PROMPT not in json.dumps(logs)  # include_content is false by default

        # Datadog metrics: sums equal what was sent
        def total(name: str) -> float:
            return sum(p["value"] for s in dd.series() if s["metric"] == f"llm.{name}" for p in s["points"])

        assert total("input_tokens") == sum(c[2] for c in CALLS)
        assert total("output_tokens") == sum(c[3] for c in CALLS)
        assert total("cost") == pytest.approx(sum(c[4] for c in CALLS))
        assert total("errors") == 1
        lat = [v for d in dd.distributions() if d["metric"] == "llm.latency_ms" for p in d["points"] for v in p[1]]
        assert len(lat) == len(CALLS)

        # Langfuse: generations with the same numbers, ids are the span ids
        found = 0
        for _rs, sp in gens:
            a = attrs_to_dict(sp.attributes)
            sid = int.from_bytes(sp.span_id, "big")
            if sid not in sent:
                assert a[A.OBSERVATION_TYPE] == "span" and a[A.TRACE_NAME] == "Received Proxy Server Request"
                continue
            found += 1
            model, _provider, tin, tout, cost, failed = sent[sid]
            assert a[A.OBSERVATION_TYPE] == "generation" and a[A.OBSERVATION_MODEL] == model
            assert json.loads(a[A.OBSERVATION_USAGE_DETAILS]) == {"input": tin, "output": tout, "total": tin + tout}
            assert json.loads(a[A.OBSERVATION_COST_DETAILS])["total"] == pytest.approx(cost)
            assert (a.get(A.OBSERVATION_LEVEL) == "ERROR") is failed
        assert found == len(CALLS)


def test_invalid_key_refuses_to_start_when_asked(tmp_path: Path) -> None:
    with DatadogIntake(key="the-real-key") as dd, LangfuseIntake() as lf:
        env = {"DD_API_KEY": DD_KEY, "LANGFUSE_PUBLIC_KEY": LF_PUBLIC, "LANGFUSE_SECRET_KEY": LF_SECRET}
        col = CollectorProcess(_config(free_port(), dd, lf, api={"fail_on_invalid_key": True}),
                               workdir=tmp_path, env=env)
        with pytest.raises(RuntimeError, match="exited with 1"):
            col.start()
        assert "the Datadog API key is invalid" in col.logs() and DD_KEY not in col.logs()


@pytest.mark.parametrize("name", ["datadog.yaml", "langfuse.yaml"])
def test_examples_validate(name: str) -> None:
    env = {**os.environ, "DD_API_KEY": "k", "LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk",
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(ROOT / "examples" / name)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout
    env.pop("DD_API_KEY"), env.pop("LANGFUSE_PUBLIC_KEY"), env.pop("LANGFUSE_SECRET_KEY")
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(ROOT / "examples" / name)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "key is empty" in r.stderr
