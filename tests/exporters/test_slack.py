"""Exporter `slack` against a local HTTP server speaking Slack's incoming-webhook and chat.postMessage
protocols; every message it receives must parse as Block Kit with slack-sdk's own block models."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError
from slack_sdk.models.blocks import Block

from collector.component import ComponentID, CreateSettings, Kind
from collector.errors import PermanentError
from collector.pdata import Batch, Signal, new_keyvalue
from exporters.slack import SlackExporter, SlackExporterConfig
from tests.helpers import ROOT, CollectorProcess, free_port

TOKEN = "xoxb-test-token"
TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


class SlackServer:
    """Incoming webhooks at /services/T0/B0/<name> and the Web API at /api/chat.postMessage."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.requests: list[float] = []
        self.invalid: list[str] = []
        self.rate_limit: set[int] = set()  # request numbers (1-based) answered with 429
        self.retry_after = "1"
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def webhook(self, name: str = "good") -> str:
        return f"{self.base}/services/T0/B0/{name}"

    def _check(self, msg: dict[str, Any]) -> str | None:
        if not isinstance(msg.get("text"), str) or not msg["text"]:
            return "missing text"
        blocks = msg.get("blocks")
        if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
            return "bad blocks"
        for b in blocks:
            parsed = Block.parse(b)
            if parsed is None:
                return f"unknown block {b}"
            try:
                if parsed.to_dict() != b:
                    return f"block does not round-trip: {b}"
            except Exception as e:  # noqa: BLE001 - slack-sdk's SlackObjectFormationError and friends
                return f"{type(e).__name__}: {e}"
        return None

    async def _limited(self) -> web.Response | None:
        self.requests.append(time.monotonic())
        if len(self.requests) in self.rate_limit:
            return web.Response(status=429, headers={"Retry-After": self.retry_after},
                                content_type="application/json", text='{"ok":false,"error":"ratelimited"}')
        return None

    async def handle_webhook(self, request: web.Request) -> web.Response:
        if (r := await self._limited()) is not None:
            return r
        if request.match_info["name"] != "good":
            return web.Response(status=404, text="no_service")
        msg = await request.json()
        err = self._check(msg)
        if err:
            self.invalid.append(err)
            return web.Response(status=400, text="invalid_blocks")
        self.messages.append(msg)
        return web.Response(text="ok")

    async def handle_post_message(self, request: web.Request) -> web.Response:
        if (r := await self._limited()) is not None:
            return r
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.content_type == "application/json":
            msg = await request.json()
        else:
            form = await request.post()
            msg = {k: json.loads(v) if k == "blocks" else v for k, v in form.items()}
        if msg.get("channel") != "C0ALERTS":
            return web.json_response({"ok": False, "error": "channel_not_found"})
        err = self._check(msg)
        if err:
            self.invalid.append(err)
            return web.json_response({"ok": False, "error": "invalid_blocks"})
        self.messages.append(msg)
        return web.json_response({"ok": True, "channel": msg["channel"], "ts": f"{time.time():.6f}"})

    async def start(self) -> SlackServer:
        app = web.Application()
        app.router.add_post("/services/T0/B0/{name}", self.handle_webhook)
        app.router.add_post("/api/chat.postMessage", self.handle_post_message)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture()
async def slack() -> Any:
    s = await SlackServer().start()
    yield s
    await s.stop()


def budget_record(req: ExportLogsServiceRequest, tenant: str = "acme", threshold: float = 1.0,
                  spent: float = 105.2, limit: float = 100.0, key: str | None = None) -> None:
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.time_unix_nano = 1772600767_000_000_000
    rec.severity_text = "WARN"
    rec.trace_id = TRACE_ID
    rec.body.string_value = f"tenant.id {tenant} spent ${spent:.2f} of its daily budget ${limit:.2f} ({threshold:.0%})"
    for k, v in (("alert.key", key or f"budget:{tenant}:{threshold}:2026-03-04"), ("alert.kind", "budget"),
                 ("alert.severity", "critical" if threshold >= 1 else "warning"), ("alert.value", spent),
                 ("alert.threshold", limit * threshold), ("alert.window", "daily 2026-03-04"),
                 ("llm.budget.key_name", "tenant.id"), ("llm.budget.key", tenant)):
        rec.attributes.append(new_keyvalue(k, v))


def logs_batch(n: int = 1, same_key: bool = True) -> Batch:
    req = ExportLogsServiceRequest()
    for i in range(n):
        budget_record(req, tenant="acme" if same_key else f"tenant-{i}")
    return Batch(Signal.LOGS, req)


def make(cfg: dict[str, Any], signals: frozenset[Signal] = frozenset({Signal.LOGS})) -> SlackExporter:
    base = {"retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed_time": "10s"},
            "summary_interval": "300ms"}
    return SlackExporter(CreateSettings(ComponentID("slack"), Kind.EXPORTER, signals=signals),
                         SlackExporterConfig.model_validate({**base, **cfg}))


def all_text(msg: dict[str, Any]) -> str:
    return json.dumps(msg["blocks"])


async def wait_until(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_webhook_budget_alert_block_kit(slack: SlackServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exp = make({"webhook_url": slack.webhook(),
                "link_template": "https://cloud.langfuse.com/project/p1/traces/{trace_id}?tenant={llm.budget.key}"})
    await exp.start()
    await exp.consume(logs_batch())
    await exp.shutdown()
    assert slack.invalid == [] and len(slack.messages) == 1
    msg = slack.messages[0]
    blocks = all_text(msg)
    assert msg["blocks"][0]["type"] == "header" and "acme" in msg["blocks"][0]["text"]["text"]
    assert "tenant.id" in blocks and "$105.20" in blocks and "threshold $100.00" in blocks
    assert "daily 2026-03-04" in blocks and "critical" in blocks
    assert f"https://cloud.langfuse.com/project/p1/traces/{TRACE_ID.hex()}?tenant=acme" in blocks
    assert "acme" in msg["text"]
    ours = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]  # not the test server's log
    assert not any("/services/T0/B0/good" in m for m in ours)  # the URL is a secret, even at debug


async def test_chat_post_message(slack: SlackServer) -> None:
    exp = make({"token": TOKEN, "channel": "C0ALERTS", "api_url": f"{slack.base}/api"})
    await exp.start()
    await exp.consume(logs_batch(3, same_key=False))
    await exp.shutdown()
    assert slack.invalid == [] and len(slack.messages) == 3
    assert [m["channel"] for m in slack.messages] == ["C0ALERTS"] * 3
    assert ["tenant-0" in all_text(m) for m in slack.messages] == [True, False, False]


async def test_burst_of_identical_alerts_one_message_plus_held_back_summary(slack: SlackServer) -> None:
    exp = make({"webhook_url": slack.webhook()})
    await exp.start()
    await exp.consume(logs_batch(100))
    await wait_until(lambda: len(slack.messages) >= 2)
    await asyncio.sleep(0.5)  # nothing more comes
    await exp.shutdown()
    assert slack.invalid == [] and len(slack.messages) == 2
    first, summary = slack.messages
    assert "$105.20" in all_text(first)
    assert "99 alerts held back" in all_text(summary) and "99 repeats" in all_text(summary)


async def test_held_back_count_rides_on_next_message(slack: SlackServer) -> None:
    exp = make({"webhook_url": slack.webhook(), "summary_interval": "1h"})
    await exp.start()
    await exp.consume(logs_batch(5))  # 1 posted, 4 held as repeats
    req = ExportLogsServiceRequest()
    budget_record(req, tenant="globex")
    await exp.consume(Batch(Signal.LOGS, req))
    await wait_until(lambda: len(slack.messages) >= 2)
    await exp.shutdown()
    assert len(slack.messages) == 2
    assert "held back" not in all_text(slack.messages[0])
    assert "globex" in all_text(slack.messages[1]) and "4 alerts held back" in all_text(slack.messages[1])


async def test_max_per_minute(slack: SlackServer) -> None:
    exp = make({"webhook_url": slack.webhook(), "max_per_minute": 5, "summary_interval": "1h"})
    await exp.start()
    await exp.consume(logs_batch(30, same_key=False))
    await wait_until(lambda: exp._held.over_rate == 25)
    await asyncio.sleep(0.2)
    assert len(slack.messages) == 5 and exp._held.over_rate == 25
    exp.config.max_per_minute = 5  # the shutdown summary must still respect the limit: not posted
    await exp.shutdown()
    assert len(slack.messages) == 5


async def test_429_retry_after_is_honoured(slack: SlackServer) -> None:
    slack.rate_limit = {1}
    slack.retry_after = "1"
    exp = make({"webhook_url": slack.webhook()})
    await exp.start()
    await exp.consume(logs_batch(1))
    await wait_until(lambda: len(slack.messages) == 1, timeout=5)
    await exp.shutdown()
    assert len(slack.requests) == 2
    assert slack.requests[1] - slack.requests[0] >= 0.95  # not the 50ms of the configured backoff


async def test_retry_resumes_after_posted_alerts(slack: SlackServer) -> None:
    slack.rate_limit = {2}
    slack.retry_after = "0.2"
    exp = make({"token": TOKEN, "channel": "C0ALERTS", "api_url": f"{slack.base}/api/"})
    await exp.start()
    await exp.consume(logs_batch(3, same_key=False))
    await wait_until(lambda: len(slack.messages) == 3)
    await asyncio.sleep(0.4)
    await exp.shutdown()
    assert [("tenant-%d" % i) in all_text(m) for i, m in enumerate(slack.messages)] == [True] * 3
    assert len(slack.messages) == 3 and "held back" not in json.dumps(slack.messages)


async def test_invalid_channel_is_dead_lettered(slack: SlackServer, tmp_path: Path) -> None:
    dl = tmp_path / "dl.jsonl"
    exp = make({"token": TOKEN, "channel": "C-GONE", "api_url": f"{slack.base}/api/", "dead_letter": {"path": str(dl)}})
    await exp.start()
    await exp.consume(logs_batch(1))
    await wait_until(lambda: dl.exists() and dl.read_text().strip() != "")
    await exp.shutdown()
    (line,) = [json.loads(x) for x in dl.read_text().splitlines()]
    assert "channel_not_found" in line["reason"] and "C-GONE" in line["reason"]
    assert len(slack.requests) == 1 and slack.messages == []  # not retried
    assert exp.status == "error"


async def test_invalid_webhook_is_permanent_without_leaking_url(slack: SlackServer) -> None:
    exp = make({"webhook_url": slack.webhook("zq9secretpath"), "sending_queue": {"enabled": False}})
    await exp.start()
    with pytest.raises(PermanentError) as ei:
        await exp.send(logs_batch(1))
    await exp.shutdown()
    assert "no_service" in str(ei.value) and "zq9secretpath" not in str(ei.value) and "/services/" not in str(ei.value)


def error_spans() -> Batch:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, (feature, code) in enumerate((("checkout", 2), ("checkout", 2), ("search", 2), ("checkout", 1),
                                          ("checkout", 2))):
        s = ss.spans.add()
        s.trace_id = bytes([i + 1]) * 16
        s.span_id = bytes([i + 1]) * 8
        s.name = "chat gpt-4o"
        s.start_time_unix_nano, s.end_time_unix_nano = 1_000_000_000, 1_900_000_000
        s.status.code = code
        s.status.message = "upstream 500" if code == 2 else ""
        for k, v in (("feature", feature), ("gen_ai.request.model", "gpt-4o"), ("tenant.id", "acme")):
            s.attributes.append(new_keyvalue(k, v))
    return Batch(Signal.TRACES, req)


async def test_rules_on_traces(slack: SlackServer) -> None:
    rule = {"name": "checkout-errors", "when": {"outcome": "error", "feature": "checkout"}, "severity": "critical"}
    exp = make({"webhook_url": slack.webhook(), "rules": [rule],
                "link_template": "https://app.datadoghq.com/logs?query=trace_id%3A{trace_id}&from_ts={from_ms}"},
               signals=frozenset({Signal.TRACES}))
    await exp.start()
    await exp.consume(error_spans())
    await wait_until(lambda: len(slack.messages) >= 3)
    await exp.shutdown()
    assert slack.invalid == [] and len(slack.messages) == 3  # every checkout error (3 traces), not search
    text = all_text(slack.messages[0])
    assert "checkout-errors" in text and "upstream 500" in text and "checkout" in text
    assert f"trace_id%3A{(bytes([1]) * 16).hex()}" in text


async def test_rules_grouped_by_feature_dedupe(slack: SlackServer) -> None:
    rule = {"name": "errors", "when": {"status": "error"}, "group_by": ["feature"]}
    exp = make({"webhook_url": slack.webhook(), "rules": [rule]}, signals=frozenset({Signal.TRACES}))
    await exp.start()
    await exp.consume(error_spans())
    await wait_until(lambda: len(slack.messages) >= 3)
    await asyncio.sleep(0.2)
    await exp.shutdown()
    # checkout (first); search, which says a repeat was held back; then a summary of the last repeat
    assert len(slack.messages) == 3
    assert "checkout" in all_text(slack.messages[0]) and "held back" not in all_text(slack.messages[0])
    assert "search" in all_text(slack.messages[1]) and "1 alert held back" in all_text(slack.messages[1])
    assert "Alerts held back" in all_text(slack.messages[2]) and "rule:errors:checkout" in all_text(slack.messages[2])


@pytest.mark.parametrize("kind,value,threshold,expect", [
    ("error_rate", 0.042, 0.02, "4.2% (threshold 2.0%)"),
    ("latency_p95", 9400.0, 8000.0, "9,400 ms (threshold 8,000 ms)"),
    ("budget", 0.9, 0.8, "$0.90 (threshold $0.80)"),
    ("guardrail", 3.0, None, "*Value*\\n3"),
])
def test_render_kinds_are_valid_block_kit(kind: str, value: float, threshold: float | None, expect: str) -> None:
    from exporters.slack import Alert, Held, render_alert
    a = Alert(key=f"{kind}:checkout", kind=kind, severity="warning", summary=f"{kind} <b>&</b> too high",
              value=value, threshold=threshold, window="5m", group=[("feature", "checkout")])
    held = Held(duplicates=2, over_rate=1)
    held.keys["x"] = 3
    text, blocks = render_alert(a, "https://example.com/?q=a%20b", "Open", held, 10, "llm-collector slack")
    assert SlackServer()._check({"text": text, "blocks": blocks}) is None
    dumped = json.dumps(blocks)
    assert expect in dumped and "&lt;b&gt;&amp;&lt;/b&gt;" in dumped and "3 alerts held back" in dumped


@pytest.mark.parametrize("cfg,needle", [
    ({}, "webhook_url"),
    ({"token": "x"}, "channel is required"),
    ({"webhook_url": "hooks.slack.com/x"}, "http"),
    ({"webhook_url": "https://h/x", "token": "t", "channel": "c"}, "not both"),
    ({"webhook_url": "https://h/x", "max_per_minute": 0}, "max_per_minute"),
    ({"webhook_url": "https://h/x", "rules": [{"name": "r", "when": {"span_name": "("}}]}, "span_name"),
    ({"webhook_url": "https://h/x", "rules": [{"name": "r", "when": {"colour": "red"}}]}, "colour"),
])
def test_invalid_configs(cfg: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as ei:
        SlackExporterConfig.model_validate(cfg)
    assert needle in str(ei.value)


def test_secrets_not_in_config_repr() -> None:
    cfg = SlackExporterConfig.model_validate({"token": TOKEN, "channel": "C1"})
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg.model_dump())


def test_example_config_validates() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}
    r = subprocess.run([sys.executable, "-m", "collector", "validate", "--config", str(ROOT / "examples/slack.yaml")],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr


async def test_collector_process_otlp_logs_to_slack(slack: SlackServer, tmp_path: Path) -> None:
    http_port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "exporters": {"slack": {"webhook_url": "${env:SLACK_WEBHOOK_URL}", "summary_interval": "300ms",
                                "retry_on_failure": {"initial_interval": "50ms"}}},
        "service": {"pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["slack"]}}},
    }
    col = CollectorProcess(cfg, workdir=tmp_path, env={"SLACK_WEBHOOK_URL": slack.webhook()})
    await asyncio.to_thread(col.start)
    try:
        req = ExportLogsServiceRequest()
        for tenant in ("acme", "acme", "acme", "globex"):
            budget_record(req, tenant=tenant)
        plain = req.resource_logs.add().scope_logs.add().log_records.add()
        plain.body.string_value = "just a log line, not an alert"

        def post() -> int:
            r = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/logs", data=req.SerializeToString(),
                                       headers={"Content-Type": "application/x-protobuf"}, method="POST")
            with urllib.request.urlopen(r, timeout=5) as resp:
                return resp.status
        assert await asyncio.to_thread(post) == 200
        await wait_until(lambda: len(slack.messages) >= 2, timeout=10)
        await asyncio.sleep(0.5)
    finally:
        rc = await asyncio.to_thread(col.stop)
    assert rc == 0
    assert slack.invalid == [] and len(slack.messages) == 2  # the plain log line is no alert
    assert "acme" in all_text(slack.messages[0]) and "globex" in all_text(slack.messages[1])
    assert "2 alerts held back" in all_text(slack.messages[1])
    assert slack.webhook() not in col.logs()
