"""Exporter `slack`: a human ping only when a human should look.

In a logs pipeline it posts every alert log record of the ``llm_alerts`` connector's shape (attributes
``alert.key``, ``alert.kind``, ``alert.severity``, ``alert.value``, ``alert.threshold``, ``alert.window``, the
grouping attribute such as ``tenant.id`` or ``llm.budget.key_name`` / ``llm.budget.key``, body a one-line
summary) as a Block Kit message; log records without ``alert.kind`` / ``alert.key`` are not alerts and are
skipped. In a traces pipeline, optional ``rules`` turn matching spans (e.g. every error of one feature) into
the same kind of alert.

It never floods a channel: an alert key already posted within ``dedupe_window`` is held back, at most
``max_per_minute`` messages go out per rolling minute, and whatever was held back is announced by the next
message (or, if none follows, by a summary message after ``summary_interval``). Slack's 429 Retry-After is
honoured through the delivery helper; an invalid webhook, token or channel is a permanent error carrying
Slack's own error text (dead-lettered). Uses slack-sdk's async clients: ``AsyncWebhookClient`` for
``webhook_url``, ``AsyncWebClient.chat_postMessage`` for ``token`` + ``channel`` (``api_url`` overrides the API
base URL, for proxies and tests). The webhook URL and the token never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import PermanentError, RetryableError
from collector.exporterhelper import BaseExporter, ExporterConfig, QueueConfig
from collector.pdata import Batch, Signal, attrs_to_dict, iter_spans
from collector.protocol_errors import parse_retry_after

__all__ = ["Alert", "Rule", "SlackExporter", "SlackExporterConfig", "alert_from_record", "render_alert"]

Scalar = str | int | float | bool


class RuleMatch(StrictModel):
    """Conditions on a span; all that are set must hold. Lists mean "any of"."""

    outcome: str | list[str] | None = None
    feature: str | list[str] | None = None
    tenant: str | list[str] | None = None
    model: str | list[str] | None = None
    provider: str | list[str] | None = None
    operation: str | list[str] | None = None
    span_name: str | None = Field(default=None, description="regular expression searched in the span name")
    status: Literal["unset", "ok", "error"] | None = None
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    min_cost_usd: float | None = None
    min_latency_ms: float | None = None
    guardrail_triggered: bool | None = None
    budget_exceeded: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> RuleMatch:
        if self.span_name is not None:
            try:
                re.compile(self.span_name)
            except re.error as e:
                raise ValueError(f"span_name: invalid regular expression: {e}") from e
        return self


class Rule(StrictModel):
    name: str = Field(min_length=1)
    when: RuleMatch
    severity: Literal["info", "warning", "critical"] = "warning"
    group_by: list[str] = Field(default_factory=lambda: ["trace_id"])
    summary: str | None = None


def _no_parallel_queue() -> QueueConfig:
    # One consumer: messages keep their order and the limits are applied in that order.
    return QueueConfig(num_consumers=1, queue_size=1000)


class SlackExporterConfig(ExporterConfig):
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    link_template: str | None = None
    link_text: str = "Open"
    dedupe_window: Duration = 3600.0
    max_per_minute: int = Field(default=10, ge=1)
    summary_interval: Duration = 60.0
    rules: list[Rule] = Field(default_factory=list)
    timeout: Duration = 10.0
    sending_queue: QueueConfig = Field(default_factory=_no_parallel_queue)

    @model_validator(mode="after")
    def _check(self) -> SlackExporterConfig:
        if self.webhook_url is not None and self.token is not None:
            raise ValueError("set either webhook_url or token + channel, not both")
        if self.webhook_url is None and self.token is None:
            raise ValueError("set webhook_url (incoming webhook) or token + channel (chat.postMessage)")
        if self.webhook_url is not None:
            url = self.webhook_url.get_secret_value()
            if not re.match(r"^https?://[^/]+/", url):
                raise ValueError("webhook_url must be an http(s) URL such as https://hooks.slack.com/services/...")
        if self.token is not None and not self.channel:
            raise ValueError("channel is required with token (a channel id such as C0123456789, or #name)")
        if not re.match(r"^https?://", self.api_url):
            raise ValueError("api_url must start with http:// or https://")
        if not self.api_url.endswith("/"):
            self.api_url += "/"
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rules: duplicate rule names {sorted(dup)}")
        return self


# --- alerts --------------------------------------------------------------------------------------------------
@dataclass
class Alert:
    key: str
    kind: str
    severity: str
    summary: str
    value: float | None = None
    threshold: float | None = None
    window: str | None = None
    group: list[tuple[str, str]] = field(default_factory=list)
    trace_id: str = ""
    span_id: str = ""
    time_ns: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


_NOT_GROUP = ("alert.", "llm.budget.", "trace_id", "span_id", "event.name", "otel.")


def alert_from_record(rec: Any, resource_attributes: Any = ()) -> Alert | None:
    """An alert from a log record of the llm_alerts shape, or None if the record is not an alert."""
    a = attrs_to_dict(rec.attributes)
    if "alert.kind" not in a and "alert.key" not in a:
        return None
    kind = str(a.get("alert.kind") or "alert")
    body = genai.value_of(rec.body) if rec.HasField("body") else None
    summary = str(body) if body not in (None, "") else str(a.get("alert.summary") or f"{kind} alert")
    group: list[tuple[str, str]] = []
    if a.get("llm.budget.key_name"):
        group.append((str(a["llm.budget.key_name"]), str(a.get("llm.budget.key", ""))))
    for k, v in a.items():
        if not k.startswith(_NOT_GROUP) and v not in (None, "") and all(k != g[0] for g in group):
            group.append((k, str(v)))
    key = str(a.get("alert.key") or f"{kind}:{':'.join(v for _, v in group)}:{summary}")
    fields = dict(attrs_to_dict(resource_attributes))
    fields.update(a)
    return Alert(
        key=key, kind=kind, severity=str(a.get("alert.severity") or "warning"), summary=summary,
        value=_num(a.get("alert.value")), threshold=_num(a.get("alert.threshold")),
        window=None if a.get("alert.window") is None else str(a["alert.window"]),
        group=group[:6], trace_id=rec.trace_id.hex(), span_id=rec.span_id.hex(),
        time_ns=rec.time_unix_nano or rec.observed_time_unix_nano, fields=fields,
    )


def _as_list(v: str | list[str] | None) -> list[str] | None:
    return None if v is None else ([v] if isinstance(v, str) else v)


_STATUS = {0: "unset", 1: "ok", 2: "error"}


def _span_matches(w: RuleMatch, span: Any, c: genai.LLMCall, attrs: dict[str, Any]) -> bool:
    for want, got in ((w.outcome, c.outcome), (w.feature, c.feature), (w.tenant, c.tenant),
                      (w.model, c.model), (w.provider, c.provider), (w.operation, c.operation)):
        lst = _as_list(want)
        if lst is not None and got not in lst:
            return False
    if w.span_name is not None and not re.search(w.span_name, span.name):
        return False
    if w.status is not None and _STATUS.get(span.status.code) != w.status:
        return False
    for k, v in w.attributes.items():
        if attrs.get(k) != v:
            return False
    if w.min_cost_usd is not None and (c.cost is None or c.cost < w.min_cost_usd):
        return False
    if w.min_latency_ms is not None and c.latency_ms < w.min_latency_ms:
        return False
    if w.guardrail_triggered is not None and c.guardrail_triggered != w.guardrail_triggered:
        return False
    if w.budget_exceeded is not None and c.budget_exceeded != w.budget_exceeded:
        return False
    return True


def _fill(template: str, values: dict[str, Any], quote: bool = False) -> str | None:
    """``{name}`` placeholders (names may contain dots); None if one has no value."""
    missing = False

    def repl(m: re.Match[str]) -> str:
        nonlocal missing
        v = values.get(m.group(1))
        if v is None or v == "":
            missing = True
            return ""
        s = str(v)
        return urllib.parse.quote(s, safe="") if quote else s

    out = re.sub(r"\{([A-Za-z0-9_.\-]+)\}", repl, template)
    return None if missing else out


def alerts_from_spans(rules: list[Rule], batch: Batch) -> list[Alert]:
    out: list[Alert] = []
    for rs, _ss, span in iter_spans(batch.request):
        c = genai.read(span, rs.resource.attributes)
        attrs: dict[str, Any] | None = None
        for rule in rules:
            if rule.when.attributes and attrs is None:
                attrs = attrs_to_dict(span.attributes)
            if not _span_matches(rule.when, span, c, attrs or {}):
                continue
            values: dict[str, Any] = {
                "rule": rule.name, "span_name": span.name, "model": c.model, "provider": c.provider,
                "tenant": c.tenant, "feature": c.feature, "outcome": c.outcome, "user": c.user,
                "status_message": span.status.message, "latency_ms": round(c.latency_ms),
                "cost": c.cost, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                "operation": c.operation, "error_type": c.error_type,
            }
            group = [(g, str(values.get(g) if g in values else _attr(span, g) or "")) for g in rule.group_by]
            if rule.summary:
                summary = _fill(rule.summary, {**attrs_to_dict(span.attributes), **values}) or rule.summary
            else:
                parts = [f"{c.outcome} in {span.name!r}"]
                parts += [f"{k}={v}" for k, v in (("feature", c.feature), ("tenant", c.tenant),
                                                  ("model", c.model)) if v]
                if span.status.message:
                    parts.append(f"({span.status.message})")
                summary = f"{rule.name}: " + " ".join(parts)
            shown = [(k, v) for k, v in (("feature", c.feature), ("tenant.id", c.tenant), ("model", c.model),
                                         ("outcome", c.outcome)) if v]
            shown += [(k, v) for k, v in group if k != "trace_id" and (k, v) not in shown and v]
            fields = {**attrs_to_dict(span.attributes), **{k: v for k, v in values.items() if v is not None}}
            out.append(Alert(
                key=f"rule:{rule.name}:" + ":".join(v for _, v in group), kind="rule", severity=rule.severity,
                summary=summary, value=c.latency_ms if rule.when.min_latency_ms is not None else c.cost,
                threshold=rule.when.min_latency_ms if rule.when.min_latency_ms is not None else rule.when.min_cost_usd,
                group=shown[:6], trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                time_ns=span.end_time_unix_nano, fields=fields,
            ))
    return out


def _attr(span: Any, key: str) -> Any:
    for kv in span.attributes:
        if kv.key == key:
            return genai.value_of(kv.value)
    return None


# --- rendering -------------------------------------------------------------------------------------------------
_EMOJI = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
_TITLE = {"budget": "Budget alert", "error_rate": "Error rate alert", "latency_p95": "Latency alert",
          "guardrail": "Guardrail triggered", "rule": "Alert"}


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(kind: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    if kind == "budget" or kind == "cost":
        return f"${v:,.2f}" if abs(v) >= 0.1 or v == 0 else f"${v:.4f}"
    if kind == "error_rate":
        return f"{v * 100:.1f}%"
    if kind == "latency_p95":
        return f"{v:,.0f} ms"
    return f"{v:g}"


@dataclass
class Held:
    duplicates: int = 0
    over_rate: int = 0
    keys: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return self.duplicates + self.over_rate

    def text(self, max_per_minute: int) -> str:
        parts = []
        if self.duplicates:
            parts.append(f"{self.duplicates} repeat{'s' if self.duplicates != 1 else ''} of alerts already posted")
        if self.over_rate:
            parts.append(f"{self.over_rate} over the limit of {max_per_minute} messages per minute")
        top = ", ".join(f"`{_esc(k)}` ×{n}" for k, n in self.keys.most_common(3))
        n = self.total
        return (f":mute: {n} alert{'s' if n != 1 else ''} held back since the last message "
                f"({'; '.join(parts)})" + (f": {top}" if top else ""))


def render_alert(a: Alert, link: str | None, link_text: str, held: Held | None, max_per_minute: int,
                 source: str) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for one alert."""
    title = _TITLE.get(a.kind, f"{a.kind.replace('_', ' ').capitalize()} alert")
    if a.group:
        title += ": " + ", ".join(v for _, v in a.group[:2])
    emoji = _EMOJI.get(a.severity, ":bell:")
    fields = [{"type": "mrkdwn", "text": f"*{_esc(k)}*\n{_esc(v)[:1900]}"} for k, v in a.group]
    if a.value is not None or a.threshold is not None:
        unit_kind = "cost" if a.kind == "rule" and a.threshold is None else a.kind
        vt = _fmt(unit_kind, a.value)
        if a.threshold is not None:
            vt += f" (threshold {_fmt(a.kind, a.threshold)})"
        fields.append({"type": "mrkdwn", "text": f"*Value*\n{vt}"})
    if a.window:
        fields.append({"type": "mrkdwn", "text": f"*Window*\n{_esc(a.window)[:1900]}"})
    fields.append({"type": "mrkdwn", "text": f"*Severity*\n{_esc(a.severity)}"})
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{emoji} {title}"[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _esc(a.summary)[:2900]}, "fields": fields[:10]},
    ]
    if link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|{_esc(link_text)}>"}})
    ctx = f"alert `{_esc(a.key)[:500]}` · {a.kind} · {_esc(source)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ctx}]})
    text = f"[{a.severity}] {a.summary}"
    if held is not None and held.total:
        note = held.text(max_per_minute)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note[:2900]}]})
        text += f" ({held.total} more held back)"
    return text[:3000], blocks


def render_summary(held: Held, max_per_minute: int, source: str) -> tuple[str, list[dict[str, Any]]]:
    note = held.text(max_per_minute)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": ":mute: Alerts held back", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": note[:2900]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(source)}]},
    ]
    return f"{held.total} alerts held back since the last message", blocks


# --- the exporter ----------------------------------------------------------------------------------------------
_RETRYABLE_SLACK = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org"})
_HINTS = {
    "channel_not_found": "check `channel` (use a channel id, or invite the app to the channel)",
    "not_in_channel": "invite the app to the channel",
    "is_archived": "the channel is archived",
    "channel_is_archived": "the channel is archived",
    "invalid_auth": "check `token`",
    "not_authed": "check `token`",
    "token_revoked": "the token was revoked",
    "account_inactive": "the token's account is inactive",
    "no_service": "the webhook URL is invalid or was revoked",
    "invalid_token": "the webhook URL is invalid or was revoked",
    "no_team": "the webhook URL is invalid or was revoked",
    "team_disabled": "the workspace is disabled",
    "missing_scope": "the token needs the chat:write scope",
    "invalid_blocks": "the message was rejected (a bug: please report it)",
}


def map_slack_error(status: int, headers: Any, error: str, target: str) -> Exception:
    h = {str(k).lower(): v for k, v in (headers or {}).items()}
    ra = h.get("retry-after")
    if isinstance(ra, list):
        ra = ra[0] if ra else None
    err = (error or "").strip()[:300] or f"HTTP {status}"
    if status == 429 or err in _RETRYABLE_SLACK or status >= 500 or status in (408,):
        return RetryableError(f"Slack {target}: {err} (HTTP {status})", retry_after=parse_retry_after(ra))
    hint = _HINTS.get(err)
    return PermanentError(f"Slack {target} rejected the message: {err} (HTTP {status})"
                          + (f"; {hint}" if hint else ""))


class SlackExporter(BaseExporter):
    config: SlackExporterConfig

    def __init__(self, settings: CreateSettings, config: SlackExporterConfig) -> None:
        super().__init__(settings, config)
        self._session: Any = None
        self._webhook: Any = None
        self._web: Any = None
        self._lock = asyncio.Lock()
        self._posted: dict[str, float] = {}
        self._post_times: collections.deque[float] = collections.deque()
        self._held = Held()
        self._last_post = 0.0
        self._blocked_until = 0.0
        self._progress: dict[int, tuple[Batch, int]] = {}
        self._summary_task: asyncio.Task[None] | None = None
        self.messages_posted = 0
        self._target = "webhook" if config.webhook_url is not None else f"channel {config.channel!r}"

    async def open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession()
        c = self.config
        t = max(1, int(c.timeout or 10))
        # slack-sdk logs the webhook URL and the Authorization header at debug level: keep its logger above that
        sdk_log = logging.getLogger(f"llm_collector.exporter.{self.id}.slack_sdk")
        sdk_log.setLevel(logging.WARNING)
        if c.webhook_url is not None:
            from slack_sdk.webhook.async_client import AsyncWebhookClient

            self._webhook = AsyncWebhookClient(c.webhook_url.get_secret_value(), timeout=t, session=self._session,
                                               retry_handlers=[], logger=sdk_log)
        else:
            from slack_sdk.web.async_client import AsyncWebClient

            assert c.token is not None
            self._web = AsyncWebClient(token=c.token.get_secret_value(), base_url=c.api_url, timeout=t,
                                       session=self._session, retry_handlers=[], logger=sdk_log)
        if Signal.TRACES in self.settings.signals and not c.rules:
            self.log.warning("slack exporter %s is in a traces pipeline without rules: spans post nothing", self.id)

    async def close(self) -> None:
        if self._summary_task is not None:
            self._summary_task.cancel()
            await asyncio.gather(self._summary_task, return_exceptions=True)
            self._summary_task = None
        if self._held.total and len(self._post_times) < self.config.max_per_minute:
            text, blocks = render_summary(self._held, self.config.max_per_minute, f"llm-collector {self.id}")
            try:  # announce what was held back before going away, if the limits allow
                await asyncio.wait_for(self._post(text, blocks), timeout=min(5.0, self.config.timeout or 5.0))
                self._held = Held()
            except Exception as e:  # noqa: BLE001 - shutting down anyway
                self.log.warning("held-back summary not posted at shutdown: %s", e)
        if self._held.total:
            self.log.warning("%d alerts held back and not announced at shutdown", self._held.total)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- posting -----------------------------------------------------------------------------------------------
    async def _post(self, text: str, blocks: list[dict[str, Any]]) -> None:
        import aiohttp
        from slack_sdk.errors import SlackApiError

        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            raise RetryableError(f"Slack {self._target}: rate limited", retry_after=wait)
        try:
            if self._webhook is not None:
                resp = await self._webhook.send(text=text, blocks=blocks, unfurl_links=False)
                if resp.status_code != 200:
                    raise map_slack_error(resp.status_code, resp.headers, resp.body, self._target)
            else:
                await self._web.chat_postMessage(channel=self.config.channel, text=text, blocks=blocks,
                                                 unfurl_links=False)
        except SlackApiError as e:
            r = e.response
            data = r.data if isinstance(r.data, dict) else {}
            raise map_slack_error(r.status_code, r.headers, str(data.get("error") or r.data), self._target) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise RetryableError(f"Slack {self._target} unreachable: {type(e).__name__}") from None
        except RetryableError as e:
            if e.retry_after:
                self._blocked_until = time.monotonic() + e.retry_after
            raise
        now = time.monotonic()
        self._post_times.append(now)
        self._last_post = now
        self.messages_posted += 1

    def _prune(self, now: float) -> None:
        while self._post_times and now - self._post_times[0] >= 60.0:
            self._post_times.popleft()
        if len(self._posted) > 256:
            w = self.config.dedupe_window
            self._posted = {k: t for k, t in self._posted.items() if now - t < w}

    def _link(self, a: Alert) -> str | None:
        tpl = self.config.link_template
        if not tpl:
            return None
        ms = (a.time_ns // 1_000_000) or int(time.time() * 1000)
        values = {**{k: v for k, v in a.fields.items() if not isinstance(v, (dict, list))},
                  "trace_id": a.trace_id, "span_id": a.span_id, "alert.key": a.key, "alert.kind": a.kind,
                  "time_ms": ms, "from_ms": ms - 3_600_000, "to_ms": ms + 300_000}
        if a.group:
            values.setdefault("group", a.group[0][1])
        return _fill(tpl, values, quote=True)

    async def _handle(self, a: Alert) -> None:
        """Post one alert or hold it back. Raises on a failed post (nothing is recorded then)."""
        c = self.config
        now = time.monotonic()
        self._prune(now)
        posted = self._posted.get(a.key)
        if posted is not None and now - posted < c.dedupe_window:
            self._held.duplicates += 1
            self._held.keys[a.key] += 1
            self._ensure_summary()
            return
        if len(self._post_times) >= c.max_per_minute:
            self._held.over_rate += 1
            self._held.keys[a.key] += 1
            self._ensure_summary()
            return
        held = self._held
        text, blocks = render_alert(a, self._link(a), c.link_text, held, c.max_per_minute, f"llm-collector {self.id}")
        await self._post(text, blocks)
        self._posted[a.key] = time.monotonic()
        self._held = Held()

    def _ensure_summary(self) -> None:
        if self._summary_task is None or self._summary_task.done():
            self._summary_task = asyncio.create_task(self._summary_loop())

    async def _summary_loop(self) -> None:
        """Announce held-back alerts when no message did within summary_interval."""
        c = self.config
        while self._held.total:
            now = time.monotonic()
            self._prune(now)
            due = self._last_post + c.summary_interval
            if len(self._post_times) >= c.max_per_minute:
                due = max(due, self._post_times[0] + 60.0)
            due = max(due, self._blocked_until)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            async with self._lock:
                if not self._held.total or len(self._post_times) >= c.max_per_minute:
                    continue
                held = self._held
                text, blocks = render_summary(held, c.max_per_minute, f"llm-collector {self.id}")
                try:
                    await self._post(text, blocks)
                except PermanentError as e:
                    self._rl.log(logging.ERROR, "summary", "dropping the held-back summary: %s", e)
                    self._held = Held()
                    return
                except Exception as e:  # noqa: BLE001 - try again later
                    self._rl.log(logging.WARNING, "summary", "held-back summary not posted, will retry: %s", e)
                    self._last_post = time.monotonic()
                    continue
                self._held = Held()

    async def send(self, batch: Batch) -> None:
        if batch.signal is Signal.LOGS:
            alerts = [a for rl, _sl, rec in _iter_logs(batch.request)
                      if (a := alert_from_record(rec, rl.resource.attributes)) is not None]
        elif batch.signal is Signal.TRACES and self.config.rules:
            alerts = alerts_from_spans(self.config.rules, batch)
        else:
            return
        entry = self._progress.get(id(batch))
        start = entry[1] if entry is not None and entry[0] is batch else 0
        i = start
        try:
            async with self._lock:
                for i in range(start, len(alerts)):
                    await self._handle(alerts[i])
                i = len(alerts)
        except (RetryableError, asyncio.CancelledError):
            # the helper retries this Batch: resume after the alerts already handled
            self._progress[id(batch)] = (batch, i)
            while len(self._progress) > 1000:
                self._progress.pop(next(iter(self._progress)))
            raise
        except BaseException:
            self._progress.pop(id(batch), None)
            raise
        self._progress.pop(id(batch), None)


def _iter_logs(request: Any) -> Any:
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                yield rl, sl, rec


FACTORIES = [
    Factory(
        "slack", Kind.EXPORTER, SlackExporterConfig, SlackExporter,
        signals=frozenset({Signal.LOGS, Signal.TRACES}),
        description="alerts to Slack (webhook or chat.postMessage), deduplicated and rate-limited",
        example={"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX"},
    ),
]
