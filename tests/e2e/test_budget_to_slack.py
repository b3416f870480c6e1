"""End to end: LLM spans with costs push one tenant past its budget through a running collector with
cost -> budget -> llm_alerts -> slack: exactly one Slack message per threshold, naming the tenant and the
amount. Also: examples/production.yaml (all four backends) is accepted by `llm-collector validate`.

Both need the processors (cost, budget, memory_limiter, redaction), the llm_alerts connector and the
datadog / langfuse exporters, which are built on other branches: they pass once everything is merged.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.exporters.test_slack import SlackServer, all_text, wait_until
from tests.helpers import ROOT, CollectorProcess, free_port


async def test_budget_crossings_post_one_message_per_threshold(tmp_path: Path) -> None:
    slack = await SlackServer().start()
    grpc_port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "processors": {
            "cost": {},
            "budget": {"key": "tenant.id", "window": "daily", "default_limit_usd": 1000,
                       "limits": {"acme": 1.0}, "thresholds": [0.8, 1.0]},
        },
        "connectors": {"llm_alerts": {}},
        "exporters": {"slack": {"webhook_url": slack.webhook(), "summary_interval": "300ms",
                                "retry_on_failure": {"initial_interval": "50ms"}}},
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["cost", "budget"], "exporters": ["llm_alerts"]},
            "logs/alerts": {"receivers": ["llm_alerts"], "exporters": ["slack"]},
        }},
    }
    col = CollectorProcess(cfg, workdir=tmp_path)
    await asyncio.to_thread(col.start)
    try:
        def send() -> None:
            tp = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
            tp.add_span_processor(SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)))
            tracer = tp.get_tracer("litellm")
            for i in range(8):  # 0.30 USD each for acme: 0.8 crossed at the 3rd call, 1.0 at the 4th
                for tenant in ("acme", "globex"):
                    with tracer.start_as_current_span("litellm_request") as span:
                        span.set_attribute("gen_ai.system", "openai")
                        span.set_attribute("gen_ai.request.model", "gpt-4o")
                        span.set_attribute("gen_ai.usage.input_tokens", 1000)
                        span.set_attribute("gen_ai.usage.output_tokens", 200)
                        span.set_attribute("gen_ai.usage.cost", 0.30)
                        span.set_attribute("tenant.id", tenant)
            tp.shutdown()
        await asyncio.to_thread(send)
        await wait_until(lambda: len(slack.messages) >= 2, timeout=15)
        await asyncio.sleep(1.0)  # nothing more may come
    finally:
        await asyncio.to_thread(col.stop)
        await slack.stop()
    assert slack.invalid == []
    assert len(slack.messages) == 2, json.dumps(slack.messages)[:2000]
    for m in slack.messages:
        text = all_text(m)
        assert "acme" in text and "globex" not in text and "$" in text
    assert "$0.80" in all_text(slack.messages[0]) and "$1.00" in all_text(slack.messages[1])


def test_production_example_validates() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x",
           "DD_API_KEY": "0" * 32, "LANGFUSE_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_SECRET_KEY": "sk-lf-x",
           "LLM_COLLECTOR_HASH_KEY": "k" * 32}
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config",
                        str(ROOT / "examples/production.yaml")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
