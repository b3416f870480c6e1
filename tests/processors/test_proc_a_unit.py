"""Fast unit tests of genai, redaction, cost, attributes, resource, enrich and budget: process() on batches."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from collector import genai
from collector.component import ComponentID, CreateSettings, Kind
from collector.config import validate
from collector.errors import ConfigError
from collector.extensions.file_storage import FileStorage, FileStorageConfig
from collector.pdata import Batch, Signal
from processors.attributes import AttributesConfig, AttributesProcessor, ResourceProcessor
from processors.budget import BudgetConfig, BudgetProcessor
from processors.cost import CostConfig, CostProcessor, PriceTable, normalise_model
from processors.enrich import EnrichConfig, EnrichProcessor
from processors.redaction import RedactionConfig, RedactionProcessor, Redactor, _Stats
from tests.processors.shapes import LITELLM, OPENINFERENCE, OPENLLMETRY, attrs_of, batch_of


class Sink:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)


class Host:
    """The one host method processors use: extension lookup (real FileStorage objects)."""

    def __init__(self, **exts: Any) -> None:
        self.exts = exts

    def extension(self, cid: str) -> Any:
        if cid not in self.exts:
            raise ConfigError([f'extension "{cid}" is not configured'])
        return self.exts[cid]


def make(cls: Any, cfg: Any, name: str = "p", host: Any = None) -> Any:
    s = CreateSettings(id=ComponentID.parse(name), kind=Kind.PROCESSOR, signal=Signal.TRACES, pipeline="traces",
                       next=Sink(), host=host)
    return cls(s, cfg)


# --- genai -------------------------------------------------------------------------------------------------
def test_genai_reads_all_three_shapes() -> None:
    b = batch_of([("litellm", LITELLM), ("openllmetry", OPENLLMETRY), ("oi", OPENINFERENCE)])
    spans = list(b.request.resource_spans[0].scope_spans[0].spans)
    c = genai.read(spans[0])
    assert (c.provider, c.request_model, c.response_model, c.input_tokens, c.output_tokens) == \
        ("openai", "gpt-4o", "gpt-4o-2024-08-06", 1200, 300)
    assert (c.tenant, c.user) == ("team-acme", "user-42")
    c = genai.read(spans[1])
    assert (c.cache_read_tokens, c.cache_write_tokens, c.operation) == (6000, 1000, "chat")
    c = genai.read(spans[2])
    assert (c.provider, c.request_model, c.reasoning_tokens, c.cache_read_tokens, c.user, c.session) == \
        ("google", "gemini-2.5-flash", 500, 1000, "u-77", "s-1")
    assert c.operation == "chat" and c.is_llm
    assert genai.is_content_key("gen_ai.prompt.0.content") and not genai.is_content_key("gen_ai.prompt.0.role")
    assert genai.is_content_key("llm.input_messages.0.message.content")
    assert genai.is_content_event("gen_ai.user.message") and genai.is_content_event("gen_ai.choice")
    assert genai.is_content_event("gen_ai.developer.message") and not genai.is_content_event("exception")


def test_genai_guardrail_and_deprecated_names() -> None:
    b = batch_of([
        ("g1", {"metadata.guardrail_information": json.dumps([{"guardrail_name": "pii", "guardrail_status":
                                                                "guardrail_intervened"}])}),
        ("g2", {"guardrail_status": "success", "gen_ai.usage.input_tokens": 5, "gen_ai.usage.prompt_tokens": 9}),
        ("g3", {"masked_entity_count": 2, "gen_ai.provider.name": "aws.bedrock", "gen_ai.system": "x"}),
    ])
    s = list(b.request.resource_spans[0].scope_spans[0].spans)
    assert genai.read(s[0]).guardrail_triggered is True
    c = genai.read(s[1])
    assert c.guardrail_triggered is False and c.input_tokens == 5  # current name wins over deprecated
    c = genai.read(s[2])
    assert c.guardrail_triggered is True and c.provider == "aws.bedrock"


def test_genai_shared_index_and_set_value() -> None:
    b = batch_of([("x", LITELLM)])
    req = b.request
    span = req.resource_spans[0].scope_spans[0].spans[0]
    own, _ = genai.indexes(req, span)
    assert genai.indexes(req, span)[0] is own  # cached: no second walk
    n = len(span.attributes)
    genai.set_value(span.attributes, own, "gen_ai.usage.cost", 0.5)
    genai.set_value(span.attributes, own, "gen_ai.usage.cost", 0.25)
    assert len(span.attributes) == n + 1 and genai.read(span).cost == 0.25
    assert genai.read_cached(req, span).cost == 0.25
    genai.forget(req)
    assert genai.indexes(req, span)[0] is not own


# --- redaction ---------------------------------------------------------------------------------------------
POSITIVES = [
    ("email", "contact jane.doe+x@example.co.uk today"),
    ("email", "bob@corp.io"),
    ("credit_card", "card 4111 1111 1111 1111 exp 12/29"),
    ("credit_card", "card 5500-0000-0000-0004."),
    ("credit_card", "amex 378282246310005"),
    ("phone", "call +1 415 555 0100 now"),
    ("phone", "call (415) 555-0123"),
    ("phone", "tel 415.555.0123"),
    ("phone", "UK +44 20 7946 0958"),
    ("ip", "from 192.168.10.20."),
    ("ip", "v6 2001:db8::8a2e:370:7334 seen"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432"),
    ("us_ssn", "SSN 123-45-6789"),
    ("secret", "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"),
    ("secret", "sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEF-_0123"),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE"),
    ("secret", "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("secret", "slack xoxb-123456789012-abcdefghijkl"),
    ("secret", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("secret", "Authorization: Bearer abcdef0123456789abcdef"),
    ("secret", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"),
]
SECRET_TEXT = {
    "email": ["jane.doe+x@example.co.uk", "bob@corp.io"],
    "credit_card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "phone": ["415 555 0100", "555-0123", "415.555.0123", "7946 0958"],
    "ip": ["192.168.10.20", "2001:db8::8a2e:370:7334"],
    "iban": ["DE89 3704", "GB82WEST12345698765432"],
    "us_ssn": ["123-45-6789"],
    "secret": ["Abcdefghijklmnopqrstuvwxyz0123456789", "api03-abcdefghij", "AKIAIOSFODNN7EXAMPLE",
               "ghp_abcdefghij", "xoxb-1234567", "eyJhbGciOiJIUzI1NiJ9", "abcdef0123456789abcdef", "MIIEowIBAAKCAQEA"],
}
NEAR_MISSES = [
    "card-like 1234 5678 9012 3456 fails Luhn",
    "order ORD-415-555-0123 shipped",
    "order #4155550123 shipped",
    "version v1.2.3.4 released on 2025-11-05 at 12:30:45",
    "token count 1234567 and ratio 0.75",
    "the sk- prefix alone, and AKIA alone",
    "email me at the @ sign, or at foo@bar",
    "SKU WID-2231, invoice 2024-001234",
    "ssn-like 000-12-3456 is invalid",
]


@pytest.mark.parametrize("use_hs", [True, False])
def test_redaction_corpus(use_hs: bool) -> None:
    r = Redactor(RedactionConfig(use_hyperscan=use_hs))
    for kind, text in POSITIVES:
        st = _Stats()
        out = r.redact_text(text, st)
        assert f"<{kind.upper()}>" in out, (kind, text, out)
        for secret in SECRET_TEXT[kind]:
            if secret in text:
                assert secret not in out, (text, out)
    for text in NEAR_MISSES:
        st = _Stats()
        assert r.redact_text(text, st) == text
        assert st.count == 0


def test_redaction_json_content_stays_valid() -> None:
    r = Redactor(RedactionConfig())
    msgs = [{"role": "user", "content": "mail\nbob@example.com or call (415) 555-0123"},
            {"role": "assistant", "content": "ok", "tool_calls": [{"arguments": "{\"card\": \"4111111111111111\"}"}]}]
    st = _Stats()
    out = r.redact_text(json.dumps(msgs), st)
    parsed = json.loads(out)
    assert parsed[0]["content"] == "mail\n<EMAIL> or call <PHONE>"
    assert "4111111111111111" not in out and "<CREDIT_CARD>" in parsed[1]["tool_calls"][0]["arguments"]
    assert st.count == 3


def test_redaction_processor_spans_content_modes_and_summary() -> None:
    cfg = RedactionConfig(summary="info", hash_key="k3y", hash_keys=["metadata.user_api_key_user_id", "user.id"],
                          patterns=[{"name": "order_id", "regex": r"ORD-\d{3}-\d{3}-\d{4}"}])
    p = make(RedactionProcessor, cfg)
    b = batch_of([("litellm", LITELLM), ("openllmetry", OPENLLMETRY), ("oi", OPENINFERENCE)])
    p.process(b)
    spans = list(b.request.resource_spans[0].scope_spans[0].spans)
    a = attrs_of(spans[0])
    assert "jane.doe@example.com" not in json.dumps(a) and "<EMAIL>" in a["gen_ai.prompt.0.content"]
    assert "<CREDIT_CARD>" in a["gen_ai.prompt.0.content"] and "<PHONE>" in a["gen_ai.prompt.0.content"]
    assert "<ORDER_ID>" in a["gen_ai.completion.0.content"]
    import hashlib
    import hmac
    assert a["metadata.user_api_key_user_id"] == hmac.new(b"k3y", b"user-42", hashlib.sha256).hexdigest()
    assert a["redaction.masked.count"] >= 5
    assert set(a["redaction.masked.kinds"].split(",")) >= {"email", "credit_card", "phone", "order_id", "hash"}
    assert a["gen_ai.request.model"] == "gpt-4o"
    b2 = attrs_of(spans[1])
    assert "<SECRET>" in b2["gen_ai.prompt.0.content"] and "<US_SSN>" in b2["gen_ai.prompt.1.content"]
    assert "<IBAN>" in b2["gen_ai.prompt.1.content"]
    inner = json.loads(b2["traceloop.entity.input"])
    assert inner["messages"][0]["content"] == "ping from <IP>\n<EMAIL>"
    c = attrs_of(spans[2])
    assert json.loads(c["input.value"])[0]["content"].startswith("Mail <EMAIL>, token <SECRET>")
    assert c["output.value"] == OPENINFERENCE["output.value"]  # Luhn-invalid: untouched
    assert c["user.id"] == hmac.new(b"k3y", b"u-77", hashlib.sha256).hexdigest()
    assert "<SECRET>" in c["llm.input_messages.0.message.content"]


@pytest.mark.parametrize("mode", ["drop", "hash", "keep"])
def test_redaction_content_modes(mode: str) -> None:
    p = make(RedactionProcessor, RedactionConfig(content=mode, hash_key="k"))
    b = batch_of([("litellm", LITELLM)])
    span = b.request.resource_spans[0].scope_spans[0].spans[0]
    ev = span.events.add()
    ev.name = "gen_ai.user.message"
    kv = ev.attributes.add()
    kv.key = "content"
    kv.value.string_value = "hello bob@example.com"
    p.process(b)
    a = attrs_of(span)
    if mode == "drop":
        assert "gen_ai.prompt.0.content" not in a and a["gen_ai.prompt.0.role"] == "user" and len(span.events) == 0
    elif mode == "hash":
        assert len(a["gen_ai.prompt.0.content"]) == 64 and "@" not in a["gen_ai.prompt.0.content"]
        assert len(span.events[0].attributes[0].value.string_value) == 64
    else:
        assert a["gen_ai.prompt.0.content"] == LITELLM["gen_ai.prompt.0.content"]
        assert span.events[0].attributes[0].value.string_value == "hello bob@example.com"
    assert a["gen_ai.request.model"] == "gpt-4o"


def test_redaction_collector_keys() -> None:
    cfg = RedactionConfig(allow_all_keys=False, allowed_keys=["gen_ai.request.model", "note", "token"],
                          ignored_keys=["raw"], blocked_key_patterns=["^tok"], blocked_values=[r"ACME-\d+"],
                          allowed_values=[r".*@example\.com"], summary="debug")
    p = make(RedactionProcessor, cfg)
    b = batch_of([("x", {"gen_ai.request.model": "gpt-4o", "note": "ACME-12 by a@example.com and b@corp.io",
                         "token": "abc", "raw": "c@corp.io", "other": "gone"})])
    p.process(b)
    a = attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])
    assert "other" not in a and a["raw"] == "c@corp.io" and a["token"] == "****"
    assert a["note"] == "**** by a@example.com and <EMAIL>"
    assert a["redaction.redacted.keys"] == "other"


def test_redaction_logs_and_resource() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "owner", "ops@corp.io"
    rec = rl.scope_logs.add().log_records.add()
    rec.body.string_value = "user 123-45-6789 failed"
    rec2 = rl.scope_logs[0].log_records.add()
    rec2.event_name = "gen_ai.user.message"
    c = rec2.body.kvlist_value.values.add()
    c.key, c.value.string_value = "content", "hi bob@example.com"
    p = make(RedactionProcessor, RedactionConfig(content="redact"))
    p.process(Batch(Signal.LOGS, req))
    assert rl.resource.attributes[0].value.string_value == "<EMAIL>"
    assert rec.body.string_value == "user <US_SSN> failed"
    assert rec2.body.kvlist_value.values[0].value.string_value == "hi <EMAIL>"


def test_redaction_config_errors_name_paths() -> None:
    doc = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"redaction": {"hash_keys": ["user.id"]},
                       "redaction/b": {"patterns": [{"name": "x", "regex": "a(b"}], "blocked_values": ["[z"]},
                       "cost": {"prices": {"m": {"input": -1, "output": 1}}},
                       "budget": {"window": "weekly"}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"],
                                             "processors": ["redaction", "redaction/b", "cost", "budget"]}}},
    }
    with pytest.raises(ConfigError) as ei:
        validate(doc)
    errs = "\n".join(ei.value.errors)
    assert "processors::redaction::hash_keys: hash_keys needs hash_key" in errs
    assert "processors::redaction/b::patterns::0::regex: invalid regular expression 'a(b'" in errs
    assert "processors::redaction/b::blocked_values::0: invalid regular expression" in errs
    assert "processors::cost::prices::m::input" in errs
    assert "processors::budget::window" in errs


# --- cost --------------------------------------------------------------------------------------------------
def test_cost_hand_computed() -> None:
    p = make(CostProcessor, CostConfig())
    bedrock = {"gen_ai.system": "aws.bedrock", "gen_ai.request.model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
               "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    b = batch_of([("litellm", LITELLM), ("openllmetry", OPENLLMETRY), ("oi", OPENINFERENCE), ("bedrock", bedrock)])
    p.process(b)
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    # gpt-4o: 1200 in * 2.50 + 300 out * 10.00 per 1M
    assert math.isclose(s[0]["gen_ai.usage.cost"], 1200 * 2.5e-6 + 300 * 10e-6)
    # claude-sonnet-4: 10000 in of which 6000 cache read, 1000 cache write; 2000 out
    assert math.isclose(s[1]["gen_ai.usage.cost"], 3000 * 3e-6 + 6000 * 0.3e-6 + 1000 * 3.75e-6 + 2000 * 15e-6)
    assert math.isclose(s[1]["llm.cost.cache_read"], 0.0018) and math.isclose(s[1]["llm.cost.cache_write"], 0.00375)
    # gemini-2.5-flash: 4000 in (1000 cached), 1500 out (500 reasoning, at the output price)
    assert math.isclose(s[2]["gen_ai.usage.cost"], 3000 * 0.3e-6 + 1000 * 0.03e-6 + 1000 * 2.5e-6 + 500 * 2.5e-6)
    assert math.isclose(s[2]["llm.cost.reasoning"], 500 * 2.5e-6)
    assert math.isclose(s[3]["gen_ai.usage.cost"], 1000 * 0.8e-6 + 100 * 4e-6)


def test_cost_overrides_unknown_and_existing(tmp_path: Any) -> None:
    litellm_file = tmp_path / "prices.json"
    litellm_file.write_text(json.dumps({
        "sample_spec": {"input_cost_per_token": 0},
        "my-model": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                     "cache_read_input_token_cost": 1e-7, "output_cost_per_reasoning_token": 4e-6}}))
    cfg = CostConfig(prices={"o3-mini": {"input": 1.0, "output": 4.0}}, prices_file=str(litellm_file))
    p = make(CostProcessor, cfg, "cost/x")
    import asyncio
    asyncio.run(p.start())
    b = batch_of([
        ("o3", {"gen_ai.request.model": "openai/o3-mini-2025-01-31", "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 2000, "gen_ai.usage.reasoning_tokens": 1500,
                "gen_ai.usage.cache_read.input_tokens": 400}),
        ("mine", {"gen_ai.request.model": "my-model", "gen_ai.usage.input_tokens": 100,
                  "gen_ai.usage.output_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 50,
                  "gen_ai.usage.reasoning.output_tokens": 5}),
        ("unknown", {"gen_ai.request.model": "gpt-99-ultra", "gen_ai.usage.input_tokens": 1}),
        ("has cost", {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1, "litellm.response_cost": 0.7}),
    ])
    p.process(b)
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    # missing cache / reasoning prices fall back to input / output
    assert math.isclose(s[0]["gen_ai.usage.cost"], 600 * 1e-6 + 400 * 1e-6 + 500 * 4e-6 + 1500 * 4e-6)
    assert math.isclose(s[1]["gen_ai.usage.cost"], 50 * 1e-6 + 50 * 1e-7 + 5 * 2e-6 + 5 * 4e-6)
    assert s[2]["llm.cost.unknown_model"] is True and "gen_ai.usage.cost" not in s[2]
    assert s[3]["gen_ai.usage.cost"] == 0.7
    from collector.telemetry import REGISTRY
    assert REGISTRY.get_sample_value("llm_cost_unknown_model_spans_total",
                                     {"processor": "cost/x", "model": "gpt-99-ultra"}) == 1.0
    p2 = make(CostProcessor, CostConfig(override=True))
    b = batch_of([("has cost", {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
                                "gen_ai.usage.cost": 9.0})])
    p2.process(b)
    assert math.isclose(attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])["gen_ai.usage.cost"], 0.0025)


def test_model_normalisation() -> None:
    t = PriceTable()
    for name, want in [("bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
                       ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
                       ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
                       ("vertex_ai/gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"),
                       ("azure/gpt-35-turbo-0125", "gpt-3.5-turbo"), ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
                       ("mistral/mistral-large-2411", "mistral-large"), ("eu.mistral.mistral-large-2402-v1:0",
                                                                         "mistral-large"),
                       ("publishers/google/models/gemini-2.0-flash-001", "gemini-2.0-flash"),
                       ("text-embedding-004", "text-embedding-004")]:
        got = t.lookup(name)
        assert got is not None and got[1] == want, (name, got, normalise_model(name))
    assert t.lookup("gpt-4o-mini")[1] == "gpt-4o-mini"  # type: ignore[index]
    assert t.lookup("llama-unknown-70b") is None
    assert t.prices_taken


# --- attributes / resource / enrich ------------------------------------------------------------------------
def test_attributes_actions() -> None:
    cfg = AttributesConfig.model_validate({"actions": [
        {"key": "tenant.id", "action": "insert", "from_context": "metadata.x-tenant-id"},
        {"key": "env", "action": "upsert", "value": "prod"},
        {"key": "gen_ai.request.model", "action": "update", "value": "renamed"},
        {"key": "copy", "action": "insert", "from_attribute": "session.id"},
        {"key": "session.id", "action": "hash"},
        {"key": "llm.token_count.prompt", "action": "convert", "converted_type": "string"},
        {"key": "url", "action": "extract", "pattern": r"^https://(?P<host>[^/]+)/(?P<path>.*)$"},
        {"pattern": "^llm\\.input_messages\\.", "action": "delete"},
    ]})
    p = make(AttributesProcessor, cfg)
    attrs = dict(OPENINFERENCE, url="https://api.example.com/v1/chat")
    b = batch_of([("oi", attrs)], metadata={"x-tenant-id": "acme"})
    p.process(b)
    a = attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])
    assert a["tenant.id"] == "acme" and a["env"] == "prod" and a["copy"] == "s-1"
    assert "gen_ai.request.model" not in a and a["session.id"] != "s-1" and len(a["session.id"]) == 64
    assert a["llm.token_count.prompt"] == "4000" and a["host"] == "api.example.com" and a["path"] == "v1/chat"
    assert not any(k.startswith("llm.input_messages.") for k in a)
    r = make(ResourceProcessor, AttributesConfig.model_validate(
        {"actions": [{"key": "deployment.environment", "action": "insert", "value": "staging"}]}))
    r.process(b)
    assert attrs_of(b.request.resource_spans[0].resource)["deployment.environment"] == "staging"
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        AttributesConfig.model_validate({"actions": [{"key": "x", "action": "insert"}]})


def test_enrich_fallback_order_and_k8s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_POD_NAME", "gw-0")
    monkeypatch.setenv("K8S_NAMESPACE_NAME", "llm")
    monkeypatch.setenv("K8S_NODE_NAME", "node-a")
    cfg = EnrichConfig.model_validate({"feature": {"sources": ["attribute:app.feature", "resource:service.name"],
                                                   "default": "unknown"}})
    p = make(EnrichProcessor, cfg)
    b = batch_of([("litellm", LITELLM), ("oi", OPENINFERENCE)], metadata={"x-tenant-id": "from-header"},
                 resource={"service.name": "support-bot"})
    p.process(b)
    rs = b.request.resource_spans[0]
    a0, a1 = (attrs_of(s) for s in rs.scope_spans[0].spans)
    assert a0["tenant.id"] == "from-header" and a1["tenant.id"] == "from-header"
    assert a0["user.id"] == "user-42" and a1["user.id"] == "u-77"
    assert a0["feature"] == "support-bot"
    r = attrs_of(rs.resource)
    assert (r["k8s.pod.name"], r["k8s.namespace.name"], r["k8s.node.name"]) == ("gw-0", "llm", "node-a")
    assert r["host.name"]
    b = batch_of([("litellm", LITELLM)])
    p.process(b)
    assert attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])["tenant.id"] == "team-acme"


# --- budget ------------------------------------------------------------------------------------------------
def _cost_spans(costs: list[float], tenant: str = "acme") -> Batch:
    return batch_of([(f"c{i}", {"tenant.id": tenant, "gen_ai.usage.cost": c}) for i, c in enumerate(costs)])


async def test_budget_thresholds_once_and_survive_restart(tmp_path: Any) -> None:
    fs = FileStorage(CreateSettings(id=ComponentID("file_storage"), kind=Kind.EXTENSION),
                     FileStorageConfig(directory=str(tmp_path)))
    await fs.start()
    host = Host(file_storage=fs)
    cfg = BudgetConfig(default_limit_usd=0.01, limits={"big": 100.0}, storage="file_storage")
    p = make(BudgetProcessor, cfg, "budget", host)
    await p.start()
    b = _cost_spans([0.005, 0.004, 0.002, 0.001])
    p.process(b)
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    assert "llm.budget.crossed" not in s[0]
    assert s[1]["llm.budget.crossed"] == 0.8 and s[1]["llm.budget.key_name"] == "tenant.id"
    assert s[1]["llm.budget.key"] == "acme" and math.isclose(s[1]["llm.budget.spent_usd"], 0.009)
    assert s[1]["llm.budget.limit_usd"] == 0.01 and "llm.budget.exceeded" not in s[1]
    assert s[2]["llm.budget.crossed"] == 1.0 and s[2]["llm.budget.exceeded"] is True
    assert "llm.budget.crossed" not in s[3] and s[3]["llm.budget.exceeded"] is True
    b = _cost_spans([50.0], tenant="big")
    p.process(b)
    assert "llm.budget.crossed" not in attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])
    await p.shutdown()
    p2 = make(BudgetProcessor, cfg, "budget", host)
    await p2.start()
    b = _cost_spans([0.001, 0.0])
    p2.process(b)
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    assert all("llm.budget.crossed" not in x and x["llm.budget.exceeded"] is True for x in s)
    b = _cost_spans([30.0], tenant="big")
    p2.process(b)
    assert attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])["llm.budget.crossed"] == 0.8
    await p2.shutdown()


def test_budget_windows_by_end_time_utc() -> None:
    from processors.budget import window_of
    assert window_of(1_764_374_400_000_000_000, "daily") == "2025-11-29"
    assert window_of(1_764_374_400_000_000_000, "monthly") == "2025-11"
    p = make(BudgetProcessor, BudgetConfig(default_limit_usd=1.0, thresholds=[0.5]))
    day1 = batch_of([("a", {"tenant.id": "t", "gen_ai.usage.cost": 0.6})], end_ns=1_764_374_400_000_000_000)
    day2 = batch_of([("a", {"tenant.id": "t", "gen_ai.usage.cost": 0.6})], end_ns=1_764_374_400_000_000_000
                    + 86_400 * 10**9)
    p.process(day1)
    p.process(day2)
    for b in (day1, day2):
        assert attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])["llm.budget.crossed"] == 0.5


def test_wire_values_match_a_walk_and_ignore_event_and_kvlist_keys() -> None:
    from collector.pdata import python_to_anyvalue
    attrs = dict(OPENLLMETRY, **{"gen_ai.usage.output_tokens": 300, "big": 2**40, "neg": -5, "f": 0.25,
                                 "llm.model_name": "x" * 200, "llm.no_log": False})
    b = batch_of([("a", attrs), ("b", {"gen_ai.request.model": "m"})])
    span = b.request.resource_spans[0].scope_spans[0].spans[1]
    ev = span.events.add()
    ev.name = "gen_ai.choice"
    kv = ev.attributes.add()
    kv.key = "tenant.id"
    kv.value.string_value = "from-event"
    kv = span.attributes.add()
    kv.key = "nested"
    python_to_anyvalue({"tenant_id": "from-kvlist", "user.id": "u"}, kv.value)
    b = Batch.from_bytes(Signal.TRACES, b.request.SerializeToString())
    values = genai.span_values(b)
    spans = list(b.request.resource_spans[0].scope_spans[0].spans)
    for s in spans:
        walked = genai.values_from_index(genai.index(s.attributes))
        assert values(s) == walked
    assert "tenant.id" not in values(spans[1]) and "tenant_id" not in values(spans[1])
    assert values(spans[0])["llm.model_name"] == "x" * 200


def test_budget_forgets_windows_older_than_the_previous_one() -> None:
    p = make(BudgetProcessor, BudgetConfig(default_limit_usd=1.0))
    day = 86_400 * 10**9
    t0 = 1_764_374_400_000_000_000
    for i in range(4):
        p.process(batch_of([("a", {"tenant.id": "t", "gen_ai.usage.cost": 0.1})], end_ns=t0 + i * day))
    assert sorted(w for _, w in p.state) == ["2025-12-01", "2025-12-02"]
    # a late span of the previous day still counts there
    p.process(batch_of([("a", {"tenant.id": "t", "gen_ai.usage.cost": 0.1})], end_ns=t0 + 2 * day))
    assert math.isclose(p.state[("t", "2025-12-01")].spent, 0.2)


# --- testdata ----------------------------------------------------------------------------------------------
from pathlib import Path as _Path

import yaml as _yaml

_TESTDATA = _Path(__file__).parent / "testdata"


def _doc(processors: dict[str, Any], extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": processors,
        "exporters": {"debug": {}},
        "extensions": extensions or {},
        "service": {"extensions": list(extensions or {}), "pipelines": {"traces": {
            "receivers": ["otlp"], "exporters": ["debug"], "processors": list(processors)}}},
    }


def test_testdata_config_is_valid() -> None:
    doc = _yaml.safe_load((_TESTDATA / "proc_a_config.yaml").read_text())
    cfg = validate(_doc(doc["processors"], {"file_storage": {"directory": "/tmp/unused"}}))
    assert {str(c) for c in cfg.components[Kind.PROCESSOR]} == set(doc["processors"])


@pytest.mark.parametrize("case", _yaml.safe_load((_TESTDATA / "proc_a_invalid_configs.yaml").read_text()),
                         ids=lambda c: c["name"])
def test_invalid_configs_fail_with_their_path(case: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as ei:
        validate(_doc(case["processors"]))
    assert any(case["error"] in e for e in ei.value.errors), ei.value.errors


def test_chain_shares_one_pass_and_sees_redacted_values() -> None:
    """redaction → cost → enrich → budget on one received batch: later processors read the values from
    redaction's scan, and the spans redaction changed show their redacted values."""
    import hashlib
    import hmac
    red = make(RedactionProcessor, RedactionConfig(hash_key="k", hash_keys=["tenant.id"]))
    cost = make(CostProcessor, CostConfig())
    enrich = make(EnrichProcessor, EnrichConfig(host_name=False, k8s=False))
    budget = make(BudgetProcessor, BudgetConfig(default_limit_usd=0.001, thresholds=[1.0]))
    clean = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 100, "tenant_id": "t-9", "gen_ai.prompt.0.content": "hello there"}
    src = batch_of([("a", dict(LITELLM, **{"tenant.id": "acme"})), ("b", OPENINFERENCE), ("c", clean)])
    b = Batch.from_bytes(Signal.TRACES, src.request.SerializeToString())
    for p in (red, cost, enrich, budget):
        p.process(b)
        b.modified()
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    hashed = hmac.new(b"k", b"acme", hashlib.sha256).hexdigest()
    assert s[0]["tenant.id"] == hashed and s[0]["llm.budget.key"] == hashed
    assert math.isclose(s[0]["gen_ai.usage.cost"], 0.006)
    assert s[1]["user.id"] == "u-77" and math.isclose(s[1]["gen_ai.usage.cost"], 0.00468)
    assert s[2]["tenant.id"] == "t-9" and math.isclose(s[2]["gen_ai.usage.cost"], 1000 * 0.15e-6 + 100 * 0.6e-6)
    assert sorted(budget.state) == sorted([(hashed, "2025-11-29"), ("t-9", "2025-11-29")])
    # every attribute exactly once
    for x in b.request.resource_spans[0].scope_spans[0].spans:
        keys = [kv.key for kv in x.attributes]
        assert len(keys) == len(set(keys))


def test_bad_input_never_fails_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    cost = make(CostProcessor, CostConfig())
    b = batch_of([("strs", {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": "abc",
                            "gen_ai.usage.output_tokens": -5}),
                  ("arr", {"gen_ai.request.model": ["gpt-4o"], "gen_ai.usage.input_tokens": 10}),
                  ("ok", {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": "1000"})])
    cost.process(b)
    s = [attrs_of(x) for x in b.request.resource_spans[0].scope_spans[0].spans]
    assert "gen_ai.usage.cost" not in s[0]
    assert s[1].get("llm.cost.unknown_model") is True
    assert math.isclose(s[2]["gen_ai.usage.cost"], 0.0025)
    # redaction fails closed: a span it cannot process leaves with its strings masked
    red = make(RedactionProcessor, RedactionConfig())

    def boom(_s: str) -> list[Any]:
        raise RuntimeError("detector bug")

    monkeypatch.setattr(red.r.finder, "find", boom)
    b = batch_of([("x", {"gen_ai.prompt.0.content": "mail bob@example.com", "n": 3})])
    red.process(b)
    a = attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])
    assert a == {"gen_ai.prompt.0.content": "<REDACTION_FAILED>", "n": 3}


def test_redaction_span_events_and_links_found_by_the_request_scan() -> None:
    p = make(RedactionProcessor, RedactionConfig())
    b = batch_of([("clean", {"gen_ai.request.model": "gpt-4o"}), ("ev", {"gen_ai.request.model": "gpt-4o"})])
    span = b.request.resource_spans[0].scope_spans[0].spans[1]
    ev = span.events.add()
    ev.name = "gen_ai.choice"
    kv = ev.attributes.add()
    kv.key = "message"
    from collector.pdata import python_to_anyvalue
    python_to_anyvalue({"role": "assistant", "content": "call (415) 555-0123"}, kv.value)
    link = span.links.add()
    kv = link.attributes.add()
    kv.key, kv.value.string_value = "note", "from 10.0.0.7"
    b = Batch.from_bytes(Signal.TRACES, b.request.SerializeToString())
    p.process(b)
    span = b.request.resource_spans[0].scope_spans[0].spans[1]
    msg = span.events[0].attributes[0].value.kvlist_value.values
    assert {x.key: x.value.string_value for x in msg} == {"role": "assistant", "content": "call <PHONE>"}
    assert span.links[0].attributes[0].value.string_value == "from <IP>"


@pytest.mark.parametrize("summary", ["silent", "info"])
def test_key_rules_without_walk_keep_later_values_exact(summary: str) -> None:
    """A span whose only hits are hash_keys / content keys is changed in place without a walk; cost, enrich
    and budget after it see the hashed / dropped values."""
    import hashlib
    import hmac
    red = make(RedactionProcessor, RedactionConfig(hash_key="k", hash_keys=["tenant.id", "user.id"],
                                                   content="drop", summary=summary))
    enrich = make(EnrichProcessor, EnrichConfig(host_name=False, k8s=False))
    budget = make(BudgetProcessor, BudgetConfig(default_limit_usd=100.0))
    clean = {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 1000, "tenant.id": "acme",
             "user.id": "u-1", "gen_ai.prompt.0.content": "no pii here", "gen_ai.usage.cost": 0.5}
    src = batch_of([("c", clean)])
    b = Batch.from_bytes(Signal.TRACES, src.request.SerializeToString())

    def no_walk(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the span was walked")

    red.r.span = no_walk  # type: ignore[method-assign]
    for p in (red, enrich, budget):
        p.process(b)
        b.modified()
    a = attrs_of(b.request.resource_spans[0].scope_spans[0].spans[0])
    h = {v: hmac.new(b"k", v.encode(), hashlib.sha256).hexdigest() for v in ("acme", "u-1")}
    assert a["tenant.id"] == h["acme"] and a["user.id"] == h["u-1"]
    assert "gen_ai.prompt.0.content" not in a
    assert list(budget.state) == [(h["acme"], "2025-11-29")]
    if summary == "info":
        assert a["redaction.masked.count"] == 2 and a["redaction.masked.kinds"] == "hash"
    else:
        assert "redaction.masked.count" not in a
    keys = [kv.key for kv in b.request.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert len(keys) == len(set(keys))
