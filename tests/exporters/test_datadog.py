"""The `datadog` exporter against a local intake that parses every body with datadog-api-client's models."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.config import validate
from collector.errors import ConfigError, PermanentError
from collector.pdata import Batch, Signal, set_attr
from exporters.datadog.logs import TRUNCATION_MARKER
from tests.exporters import spans as S
from tests.exporters.intake import DD_KEY, DatadogIntake

FAST_RETRY = {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "10s"}


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake() as srv:
        yield srv  # type: ignore[misc]
        assert srv.problems == []


def make(intake: DatadogIntake, signals: frozenset[Signal] = frozenset({Signal.TRACES}), **over: Any) -> Any:
    cfg: dict[str, Any] = {
        "api": {"key": DD_KEY},
        "logs": {"endpoint": intake.url},
        "metrics": {"endpoint": intake.url, "flush_interval": "200ms"},
        "retry_on_failure": FAST_RETRY,
        "tags": ["env:test"],
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    f = registry.get(Kind.EXPORTER, "datadog")
    assert f is not None
    conf = f.config_model.model_validate(cfg)
    return f.create(CreateSettings(ComponentID("datadog"), Kind.EXPORTER, signals=signals), conf)


@pytest.fixture
async def exporter(intake: DatadogIntake) -> AsyncIterator[Any]:
    exp = make(intake)
    await exp.start()
    yield exp
    await exp.shutdown()


def traces(req: Any) -> Batch:
    return Batch(Signal.TRACES, req)


async def until(pred: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_llm_call_log_shape(intake: DatadogIntake, exporter: Any) -> None:
    req = S.request(1)
    S.llm_span(req.resource_spans[0].scope_spans[0], req.resource_spans[0].scope_spans[0].spans[0].trace_id,
               model="claude-3-5-sonnet", provider="anthropic", status_code=500, error="upstream overloaded",
               input_tokens=10, output_tokens=0, cost=0.0001)
    await exporter.consume(traces(req))
    logs = await until(lambda: len(intake.logs()) == 2 and intake.logs())
    ok, bad = sorted(logs, key=lambda e: e["status"] == "error")
    span = req.resource_spans[0].scope_spans[0].spans[1]
    assert ok["message"] == "[openai] gpt-4o status=200 latency=842ms tokens=1523 cost=$0.0200"
    assert ok["status"] == "info" and ok["ddsource"] == "llm-collector" and ok["service"] == "litellm-proxy"
    assert ok["hostname"] == "gw-1"
    assert (ok["model"], ok["provider"], ok["input_tokens"], ok["output_tokens"], ok["cost"]) == (
        "gpt-4o", "openai", 1000, 523, 0.02)
    assert ok["latency_ms"] == pytest.approx(842.0)
    assert (ok["tenant"], ok["feature"], ok["outcome"], ok["cache_hit"], ok["guardrail_triggered"]) == (
        "acme", "chat", "success", False, False)
    assert ok["dd.trace_id"] == str(int.from_bytes(span.trace_id[8:], "big"))
    assert ok["dd.span_id"] == str(int.from_bytes(span.span_id, "big"))
    assert ok["otel.trace_id"] == span.trace_id.hex() and ok["otel.span_id"] == span.span_id.hex()
    tags = ok["ddtags"].split(",")
    for t in ("model:gpt-4o", "provider:openai", "status_code:200", "error:false", "cache:miss",
              "guardrail:none", "env:test"):
        assert t in tags
    assert bad["status"] == "error" and "error:true" in bad["ddtags"].split(",")
    assert bad["message"].startswith("[anthropic] claude-3-5-sonnet status=500 latency=842ms tokens=10")
    # content stays out by default, wherever it might hide
    assert S.PROMPT not in json.dumps(logs) and S.ANSWER not in json.dumps(logs)
    hdrs = intake.accepted("/api/v2/logs")[0].headers
    assert hdrs["DD-API-KEY"] == DD_KEY and hdrs["Content-Encoding"] == "gzip"


async def test_all_spans_and_content(intake: DatadogIntake) -> None:
    exp = make(intake, logs={"all_spans": True}, include_content=True, service="gateway", source="litellm")
    await exp.start()
    try:
        await exp.consume(traces(S.request(1)))
        logs = await until(lambda: len(intake.logs()) == 2 and intake.logs())
    finally:
        await exp.shutdown()
    plain = next(e for e in logs if e["span_name"] == "Received Proxy Server Request")
    assert plain["message"].startswith("[span] Received Proxy Server Request status=ok latency=900ms")
    llm = next(e for e in logs if e["span_name"] == "litellm_request")
    assert llm["content"]["gen_ai.prompt.0.content"] == S.PROMPT
    assert {e["service"] for e in logs} == {"gateway"} and {e["ddsource"] for e in logs} == {"litellm"}


async def test_batches_respect_entry_count_and_size_limits(intake: DatadogIntake) -> None:
    exp = make(intake, include_content=True)
    await exp.start()
    try:
        await exp.consume(traces(S.request(2500, root=False, content=False)))
        await until(lambda: len(intake.logs()) == 2500)
        counts = [len(json.loads(r.body)) for r in intake.accepted("/api/v2/logs")]
        assert counts == [1000, 1000, 500]

        # 12 entries of ~450 kB and one of 1 MB: 6.4 MB, at most 5 MB per request, so two requests
        big = S.request(12, root=False)
        for sp in big.resource_spans[0].scope_spans[0].spans:
            set_attr(sp.attributes, "gen_ai.prompt.0.content", "x" * 450_000)
        # and one entry over 1 MB, truncated with a marker
        huge = S.llm_span(big.resource_spans[0].scope_spans[0], b"\x01" * 16)
        set_attr(huge.attributes, "gen_ai.prompt.0.content", "y" * 3_000_000)
        n_before = len(intake.accepted("/api/v2/logs"))
        await exp.consume(traces(big))
        await until(lambda: len(intake.logs()) == 2513)
    finally:
        await exp.shutdown()
    new = intake.accepted("/api/v2/logs")[n_before:]
    assert len(new) == 2 and all(len(r.body) <= 5_000_000 for r in new)
    cut = next(e for e in intake.logs() if e.get("llm_collector.truncated"))
    assert cut["content"]["gen_ai.prompt.0.content"].endswith(TRUNCATION_MARKER)
    assert len(json.dumps(cut)) <= 1_000_000
    assert cut["input_tokens"] == 1000  # the rest of the entry is intact


async def test_llm_metrics_per_window(intake: DatadogIntake, exporter: Any) -> None:
    req = S.request(3, latency_ms=100.0, input_tokens=100, output_tokens=20, cost=0.5)
    set_attr(req.resource_spans[0].resource.attributes, "deployment.environment.name", "prod")
    S.llm_span(req.resource_spans[0].scope_spans[0], b"\x02" * 16, latency_ms=300.0, input_tokens=7,
               output_tokens=3, cost=0.25, status_code=429, error="rate limited")
    await exporter.consume(traces(req))
    await until(lambda: intake.distributions() and intake.series())

    def total(name: str, **tags: str) -> float:
        return sum(p["value"] for s in intake.series() if s["metric"] == f"llm.{name}"
                   and all(f"{k}:{v}" in s["tags"] for k, v in tags.items()) for p in s["points"])

    assert total("requests") == 4 and total("errors") == 1 and total("errors", status_code="429") == 1
    assert total("input_tokens") == 307 and total("output_tokens") == 63
    assert total("cost") == pytest.approx(1.75)
    s = next(s for s in intake.series() if s["metric"] == "llm.requests")
    assert s["type"] == 1 and s["interval"] >= 1 and "model:gpt-4o" in s["tags"] and "env:test" in s["tags"]
    assert "env:prod" in s["tags"] and all("env:prod" in e["ddtags"].split(",") for e in intake.logs())
    lat = sorted(v for d in intake.distributions() if d["metric"] == "llm.latency_ms"
                 for p in d["points"] for v in p[1])
    assert lat == pytest.approx([100.0, 100.0, 100.0, 300.0])
    # an idle window sends nothing
    n = len(intake.received)
    await asyncio.sleep(0.6)
    assert len(intake.received) == n


async def test_invalid_key(intake: DatadogIntake, caplog: pytest.LogCaptureFixture) -> None:
    intake.key = "another-key"
    exp = make(intake)
    with caplog.at_level(logging.ERROR):
        await exp.start()  # the check runs in the background: the start is not held up
        await until(lambda: exp.key_valid is not None)
    assert exp.status_info()["status"] == "error" and exp.key_valid is False
    assert "Datadog API key is invalid" in caplog.text and DD_KEY not in caplog.text
    await exp.shutdown()
    refuse = make(intake, api={"key": DD_KEY, "fail_on_invalid_key": True})
    with pytest.raises(PermanentError, match="invalid"):
        await refuse.start()
    await refuse.shutdown()
    intake.key = DD_KEY
    good = make(intake)
    await good.start()
    await until(lambda: good.key_valid is not None)
    assert good.key_valid is True and good.status_info()["status"] == "active"
    await good.shutdown()


async def test_faults(intake: DatadogIntake, tmp_path: Path) -> None:
    dl = tmp_path / "dead.jsonl"
    exp = make(intake, dead_letter={"path": str(dl)})
    await exp.start()
    try:
        # 429 with X-RateLimit-Reset: waits that long, then succeeds
        intake.plan("/api/v2/logs", 429, {"X-RateLimit-Reset": "1"}, {"errors": ["rate limited"]})
        t0 = time.monotonic()
        await exp.consume(traces(S.request(1)))
        await until(lambda: len(intake.logs()) == 1)
        assert time.monotonic() - t0 >= 0.9
        # 500: retried
        intake.plan("/api/v2/logs", 500, body={"errors": ["Internal Server Error"]})
        await exp.consume(traces(S.request(1)))
        await until(lambda: len(intake.logs()) == 2)
        # 413: the request is split in two halves, every entry arrives once
        intake.plan("/api/v2/logs", 413, body={"errors": ["Payload too large"]})
        await exp.consume(traces(S.request(10, root=False)))
        await until(lambda: len(intake.logs()) == 12)
        sizes = [len(json.loads(r.body)) for r in intake.accepted("/api/v2/logs")][-2:]
        assert sizes == [5, 5]
        # 400 and 403: permanent, dead-lettered with Datadog's message, not retried
        for status, text in ((400, "Bad request: invalid JSON"), (403, "Forbidden")):
            n = len([r for r in intake.received if r.path == "/api/v2/logs"])
            intake.plan("/api/v2/logs", status, body={"errors": [text]})
            await exp.consume(traces(S.request(1)))
            want = 1 if status == 400 else 2
            await until(lambda w=want: dl.exists() and len(dl.read_text().splitlines()) == w)
            await asyncio.sleep(0.3)
            assert len([r for r in intake.received if r.path == "/api/v2/logs"]) == n + 1
        dead = [json.loads(x) for x in dl.read_text().splitlines()]
        assert len(dead) == 2
        assert "HTTP 400" in dead[0]["reason"] and "Bad request: invalid JSON" in dead[0]["reason"]
        assert "HTTP 403" in dead[1]["reason"] and "Forbidden" in dead[1]["reason"]
        assert dead[0]["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert len(intake.logs()) == 12
    finally:
        await exp.shutdown()


async def test_retry_resends_only_what_failed(intake: DatadogIntake) -> None:
    exp = make(intake)
    await exp.start()
    try:
        # the first request of three is accepted, the second fails once: the first is not sent again
        intake.plan("/api/v2/logs", 202, body={})
        intake.plan("/api/v2/logs", 503, body={"errors": ["unavailable"]})
        await exp.consume(traces(S.request(2500, root=False, content=False)))
        await until(lambda: len(intake.logs()) == 2500)
        statuses = [r.status for r in intake.received if r.path == "/api/v2/logs"]
        assert statuses == [202, 503, 202, 202]
        # the LLM metrics counted the batch once
        await until(lambda: any(s["metric"] == "llm.requests" for s in intake.series()))
        await asyncio.sleep(0.3)
        assert sum(p["value"] for s in intake.series() if s["metric"] == "llm.requests"
                   for p in s["points"]) == 2500
    finally:
        await exp.shutdown()


async def test_logs_pipeline(intake: DatadogIntake) -> None:
    exp = make(intake, signals=frozenset({Signal.LOGS}))
    await exp.start()
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attr(rl.resource.attributes, "service.name", "billing")
    sl = rl.scope_logs.add()
    rec = sl.log_records.add()
    rec.time_unix_nano = 1_700_000_000_123_000_000
    rec.severity_number = 17
    rec.severity_text = "ERROR"
    rec.body.string_value = "payment failed"
    rec.trace_id = bytes(range(16))
    rec.span_id = bytes(range(8))
    set_attr(rec.attributes, "order.id", 42)
    prompt = sl.log_records.add()
    prompt.severity_number = 9
    prompt.event_name = "gen_ai.user.message"
    prompt.body.kvlist_value.values.add(key="content").value.string_value = S.PROMPT
    try:
        await exp.consume(Batch(Signal.LOGS, req))
        logs = await until(lambda: len(intake.logs()) == 2 and intake.logs())
    finally:
        await exp.shutdown()
    e = logs[0]
    assert (e["message"], e["status"], e["service"], e["order.id"], e["timestamp"]) == (
        "payment failed", "error", "billing", 42, 1_700_000_000_123)
    assert e["dd.trace_id"] == str(int.from_bytes(bytes(range(8, 16)), "big"))
    assert logs[1]["status"] == "info" and S.PROMPT not in json.dumps(logs)
    # no LLM metrics from a logs-only exporter
    assert intake.series() == []


async def test_metrics_pipeline(intake: DatadogIntake) -> None:
    exp = make(intake, signals=frozenset({Signal.METRICS}))
    await exp.start()
    start = time.time_ns()

    def req(t: int, total: int, bucket_counts: list[int]) -> Batch:
        r = ExportMetricsServiceRequest()
        rm = r.resource_metrics.add()
        set_attr(rm.resource.attributes, "service.name", "gw")
        sm = rm.scope_metrics.add()
        m = sm.metrics.add(name="http.requests")
        m.sum.is_monotonic = True
        m.sum.aggregation_temporality = 2
        dp = m.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t, as_int=total)
        set_attr(dp.attributes, "route", "/chat")
        g = sm.metrics.add(name="queue.depth")
        g.gauge.data_points.add(time_unix_nano=t, as_double=3.5)
        h = sm.metrics.add(name="latency")
        h.histogram.aggregation_temporality = 1
        h.histogram.data_points.add(start_time_unix_nano=t - 10**9, time_unix_nano=t, count=sum(bucket_counts),
                                    sum=12.5, explicit_bounds=[1.0, 10.0], bucket_counts=bucket_counts)
        return Batch(Signal.METRICS, r)

    try:
        await exp.consume(req(start + 10**9, 10, [1, 2, 3]))
        await exp.consume(req(start + 2 * 10**9, 25, [0, 1, 0]))
        await until(lambda: len(intake.accepted("/api/v2/series")) == 2)
    finally:
        await exp.shutdown()
    s = intake.series()
    counts = [p["value"] for x in s if x["metric"] == "http.requests" for p in x["points"]]
    assert counts == [10, 15]  # cumulative -> deltas (the series began after the exporter started)
    assert all(x["type"] == 1 and "route:/chat" in x["tags"] and "service:gw" in x["tags"]
               for x in s if x["metric"] == "http.requests")
    assert [x["type"] for x in s if x["metric"] == "queue.depth"] == [3, 3]
    buckets = {tuple(t for t in x["tags"] if "bound" in t): x["points"][0]["value"]
               for x in s[:len(s) // 2] if x["metric"] == "latency.bucket"}
    assert buckets[("lower_bound:1.0", "upper_bound:10.0")] == 2
    assert [x["points"][0]["value"] for x in s if x["metric"] == "latency.count"] == [6, 1]


def test_config_errors_name_the_path() -> None:
    doc = {
        "receivers": {"otlp": {}},
        "exporters": {"datadog": {"api": {"key": "", "site": "datadoghq.moon"}, "logs": {"endpoint": "x"},
                                  "metrics": {"flush_interval": "soon"}, "bogus": 1}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["datadog"]}}},
    }
    with pytest.raises(ConfigError) as e:
        validate(doc)
    text = "\n".join(e.value.errors)
    for path in ("exporters::datadog::api::key", "exporters::datadog::api::site",
                 "exporters::datadog::logs::endpoint", "exporters::datadog::metrics::flush_interval",
                 "exporters::datadog::bogus: unknown key"):
        assert path in text


def test_cumulative_to_delta_edge_cases() -> None:
    from exporters.datadog.metrics import COUNT, GAUGE, OtlpConverter

    conv = OtlpConverter(("env:test",))
    before = conv.started_ns - 10**9

    def req(start: int, t: int, value: int) -> Any:
        r = ExportMetricsServiceRequest()
        sm = r.resource_metrics.add().scope_metrics.add()
        m = sm.metrics.add(name="c")
        m.sum.is_monotonic = True
        m.sum.aggregation_temporality = 2
        m.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t, as_int=value)
        s = sm.metrics.add(name="s")
        dp = s.summary.data_points.add(start_time_unix_nano=start, time_unix_nano=t, count=value, sum=value * 2.0)
        dp.quantile_values.add(quantile=0.99, value=7.0)
        return r

    t = conv.started_ns
    assert [x for x in conv.convert(req(before, t + 1, 100)) if x["type"] == COUNT] == []  # baseline only
    out = conv.convert(req(before, t + 2, 130))
    assert [(x["metric"], x["points"][0]["value"]) for x in out if x["type"] == COUNT] == [
        ("c", 30), ("s.count", 30), ("s.sum", 60.0)]
    q = next(x for x in out if x["type"] == GAUGE)
    assert q["metric"] == "s.quantile" and "quantile:0.99" in q["tags"] and "env:test" in q["tags"]
    # the same point again (a client's retry): nothing counted twice
    assert [x for x in conv.convert(req(before, t + 2, 130)) if x["type"] == COUNT] == []
    # a reset (new start, lower value): the new value is the delta
    out = conv.convert(req(t + 3, t + 4, 5))
    assert [x["points"][0]["value"] for x in out if x["metric"] == "c"] == [5]


async def test_retry_of_the_same_bytes_resumes(intake: DatadogIntake) -> None:
    """A persistent queue hands the retry a new Batch read back from disk: it resumes all the same."""
    from collector.errors import RetryableError

    exp = make(intake)
    await exp.start()
    try:
        first = traces(S.request(2500, root=False, content=False))
        intake.plan("/api/v2/logs", 202)
        intake.plan("/api/v2/logs", 500, body={"errors": ["Internal Server Error"]})
        with pytest.raises(RetryableError, match="HTTP 500"):
            await exp.send(first)
        again = Batch.from_bytes(Signal.TRACES, first.to_bytes())
        await exp.send(again)
        assert len(intake.logs()) == 2500
        assert [r.status for r in intake.received if r.path == "/api/v2/logs"] == [202, 500, 202, 202]
        await until(lambda: any(s["metric"] == "llm.requests" for s in intake.series()))
        await asyncio.sleep(0.3)
        assert sum(p["value"] for s in intake.series() if s["metric"] == "llm.requests"
                   for p in s["points"]) == 2500
    finally:
        await exp.shutdown()


def test_site_picks_the_intake_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    from datadog_api_client.v1.api.authentication_api import AuthenticationApi
    from datadog_api_client.v2.api.logs_api import LogsApi
    from datadog_api_client.v2.api.metrics_api import MetricsApi

    monkeypatch.setenv("DD_SITE", "us5.datadoghq.com")  # the config wins over the client's own variable
    f = registry.get(Kind.EXPORTER, "datadog")
    assert f is not None
    exp = f.create(CreateSettings(ComponentID("datadog"), Kind.EXPORTER),
                   f.config_model.model_validate({"api": {"key": DD_KEY, "site": "datadoghq.eu"}}))
    client = exp._client(None)

    def host(endpoint: Any) -> str:
        return str(endpoint._validate_and_get_host({}) if not endpoint.params_map else
                   client.configuration.get_host_from_settings(
                       client.configuration.server_index, variables=client.configuration.server_variables,
                       servers=endpoint.settings.get("servers")))

    assert host(LogsApi(client)._submit_log_endpoint) == "https://http-intake.logs.datadoghq.eu"
    assert host(MetricsApi(client)._submit_metrics_endpoint) == "https://api.datadoghq.eu"
    assert host(AuthenticationApi(client)._validate_endpoint) == "https://api.datadoghq.eu"
    client.close()
