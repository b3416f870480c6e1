"""Whole-process tests: spans shaped like LiteLLM, OpenLLMetry and OpenInference, sent with the OpenTelemetry
SDK through a running collector with redaction → cost → enrich → attributes → resource → budget, read back from
the file exporter; the budget's sums survive a restart with file_storage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.pdata import Signal, attrs_to_dict
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for
from tests.processors.shapes import LITELLM, OPENINFERENCE, OPENLLMETRY


def _config(tmp: Path, port: int) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}", "include_metadata": True}}}},
        "processors": {
            "redaction": {"summary": "info", "hash_key": "${env:LLM_COLLECTOR_HASH_KEY}",
                          "hash_keys": ["metadata.user_api_key_user_id"]},
            "cost": {},
            "enrich": {"feature": {"sources": ["context:x-feature", "resource:service.name"]}},
            "attributes": {"actions": [{"key": "env", "action": "insert", "value": "test"}]},
            "resource": {"actions": [{"key": "tenant.header", "action": "upsert", "from_context": "x-tenant-id"}]},
            "budget": {"default_limit_usd": 0.055, "storage": "file_storage"},
        },
        "exporters": {"file": {"path": str(tmp / "out.jsonl")}},
        "extensions": {"file_storage": {"directory": str(tmp / "state")}},
        "service": {"extensions": ["file_storage"], "pipelines": {"traces": {
            "receivers": ["otlp"], "processors": ["redaction", "cost", "enrich", "attributes", "resource", "budget"],
            "exporters": ["file"]}}},
    }


def _send(port: int, spans: list[tuple[str, dict[str, Any]]]) -> None:
    exp = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
                           headers=(("x-tenant-id", "acme"), ("x-feature", "support")))
    tp = TracerProvider(resource=Resource.create({"service.name": "llm-app"}))
    tp.add_span_processor(SimpleSpanProcessor(exp))
    tracer = tp.get_tracer("test")
    for name, attrs in spans:
        with tracer.start_as_current_span(name, attributes=attrs):
            pass
    tp.shutdown()


def _out(tmp: Path, n: int) -> list[dict[str, Any]]:
    got = wait_for(lambda: (s := list(spans_of(read_otlp_jsonl(tmp / "out.jsonl", Signal.TRACES)))) and
                   len(s) >= n and s, what=f"{n} spans in out.jsonl")
    return [attrs_to_dict(s.attributes) for s in got]


def test_llm_chain_end_to_end_with_budget_restart(tmp_path: Path) -> None:
    port = free_port()
    env = {"LLM_COLLECTOR_HASH_KEY": "e2e-key"}
    # the three shapes cost 0.006 + 0.04455 + 0.00468 = 0.05523; limit 0.055: 80% crossed on the 2nd, 100% on the 3rd
    with CollectorProcess(_config(tmp_path, port), workdir=tmp_path, env=env):
        _send(port, [("litellm", dict(LITELLM, **{"tenant.id": "acme"})),
                     ("openllmetry", dict(OPENLLMETRY, **{"tenant.id": "acme"})),
                     ("openinference", dict(OPENINFERENCE, **{"tenant.id": "acme"}))])
        a = _out(tmp_path, 3)
    lit, oll, oi = a
    blob = json.dumps(a)
    for secret in ("jane.doe@example.com", "4111 1111 1111 1111", "123-45-6789", "AKIAIOSFODNN7EXAMPLE",
                   "sk-proj-abcdef", "alice@example.org", "bob@corp.io", "user-42"):
        assert secret not in blob, secret
    assert "ORD-415-555-0123" in lit["gen_ai.completion.0.content"]  # near miss untouched
    assert lit["redaction.masked.count"] >= 4
    json.loads(oi["input.value"])
    assert math.isclose(lit["gen_ai.usage.cost"], 0.006)
    assert math.isclose(oll["gen_ai.usage.cost"], 0.04455)
    assert math.isclose(oi["gen_ai.usage.cost"], 0.00468)
    assert all(x["tenant.id"] == "acme" and x["feature"] == "support" and x["env"] == "test" for x in a)
    assert oi["user.id"] == "u-77"
    assert oll["llm.budget.crossed"] == 0.8 and oll["llm.budget.key"] == "acme"
    assert oi["llm.budget.crossed"] == 1.0 and oi["llm.budget.exceeded"] is True
    assert math.isclose(oi["llm.budget.spent_usd"], 0.05523)
    res = read_otlp_jsonl(tmp_path / "out.jsonl", Signal.TRACES)[0].resource_spans[0].resource
    assert attrs_to_dict(res.attributes)["tenant.header"] == "acme"
    assert "host.name" in attrs_to_dict(res.attributes)

    # restart: the sums and fired thresholds come back from file_storage
    (tmp_path / "out.jsonl").unlink()
    with CollectorProcess(_config(tmp_path, port), workdir=tmp_path, env=env):
        _send(port, [("litellm", dict(LITELLM, **{"tenant.id": "acme"}))])
        (again,) = _out(tmp_path, 1)
    assert "llm.budget.crossed" not in again and again["llm.budget.exceeded"] is True


def test_redaction_of_logs_end_to_end(tmp_path: Path) -> None:
    import logging

    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {"redaction": {"summary": "info", "hash_key": "k", "hash_keys": ["user.id"]}},
        "exporters": {"file": {"path": str(tmp_path / "logs.jsonl")}},
        "service": {"pipelines": {"logs": {"receivers": ["otlp"], "processors": ["redaction"],
                                           "exporters": ["file"]}}},
    }
    with CollectorProcess(cfg, workdir=tmp_path):
        lp = LoggerProvider(resource=Resource.create({"service.name": "gw", "owner": "ops@corp.io"}))
        lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"127.0.0.1:{port}",
                                                                             insecure=True)))
        logger = logging.getLogger("proc-a-e2e")
        logger.propagate = False
        handler = LoggingHandler(logger_provider=lp)
        logger.addHandler(handler)
        try:
            logger.warning("call failed for card 4111-1111-1111-1111 (order ORD-415-555-0123)",
                           extra={"user.id": "u-1", "note": "key AKIAIOSFODNN7EXAMPLE"})
        finally:
            logger.removeHandler(handler)
            lp.shutdown()
        reqs = wait_for(lambda: read_otlp_jsonl(tmp_path / "logs.jsonl", Signal.LOGS), what="a log record")
    rl = reqs[0].resource_logs[0]
    rec = rl.scope_logs[0].log_records[0]
    assert rec.body.string_value == "call failed for card <CREDIT_CARD> (order ORD-415-555-0123)"
    a = attrs_to_dict(rec.attributes)
    assert a["note"] == "key <SECRET>" and len(a["user.id"]) == 64
    assert a["redaction.masked.count"] == 3
    assert attrs_to_dict(rl.resource.attributes)["owner"] == "<EMAIL>"
