"""The `langfuse` exporter against a local OTLP endpoint that decodes every request as protobuf."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langfuse import LangfuseOtelSpanAttributes as A

from collector.component import ComponentID, CreateSettings, Kind, registry
from collector.config import validate
from collector.errors import ConfigError
from collector.pdata import Batch, Signal, attrs_to_dict, set_attr
from tests.exporters import spans as S
from tests.exporters.intake import LF_PUBLIC, LF_SECRET, LangfuseIntake

FAST_RETRY = {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "10s"}


@pytest.fixture
def intake() -> Iterator[LangfuseIntake]:
    with LangfuseIntake() as srv:
        yield srv  # type: ignore[misc]
        assert srv.problems == []


def make(intake: LangfuseIntake, **over: Any) -> Any:
    cfg: dict[str, Any] = {"public_key": LF_PUBLIC, "secret_key": LF_SECRET, "host": intake.url,
                           "retry_on_failure": FAST_RETRY, "environment": "staging", "release": "v1.2.3"}
    cfg.update(over)
    f = registry.get(Kind.EXPORTER, "langfuse")
    assert f is not None
    return f.create(CreateSettings(ComponentID("langfuse"), Kind.EXPORTER, signals=frozenset({Signal.TRACES})),
                    f.config_model.model_validate(cfg))


async def until(pred: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


def by_name(intake: LangfuseIntake) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    out: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for rs, sp in intake.spans():
        out.setdefault(sp.name, []).append((rs, attrs_to_dict(sp.attributes)))
    return out


async def test_generations_and_spans(intake: LangfuseIntake) -> None:
    exp = make(intake)
    await exp.start()
    req = S.request(1)
    ss = req.resource_spans[0].scope_spans[0]
    S.llm_span(ss, ss.spans[0].trace_id, ss.spans[0].span_id, model="claude-3-5-haiku", provider="anthropic",
               status_code=529, error="Overloaded", input_tokens=12, output_tokens=0, cost=0.0003)
    before = req.SerializeToString()
    try:
        await exp.consume(Batch(Signal.TRACES, req))
        await until(lambda: len(intake.spans()) == 3)
    finally:
        await exp.shutdown()
    assert req.SerializeToString() == before  # the batch was not touched
    r = intake.accepted(LangfuseIntake.PATH)[0]
    assert r.headers["x-langfuse-ingestion-version"] == "4" and r.headers["Content-Encoding"] == "gzip"
    got = by_name(intake)
    (rs, root), = got["Received Proxy Server Request"]
    res = attrs_to_dict(rs.resource.attributes)
    assert res[A.ENVIRONMENT] == "staging" and res[A.RELEASE] == "v1.2.3" and res["service.name"] == "litellm-proxy"
    assert root[A.OBSERVATION_TYPE] == "span" and root[A.TRACE_NAME] == "Received Proxy Server Request"
    ok, bad = sorted((a for _rs, a in got["litellm_request"]), key=lambda a: A.OBSERVATION_LEVEL in a)
    assert ok[A.OBSERVATION_TYPE] == "generation" and ok[A.OBSERVATION_MODEL] == "gpt-4o"
    assert json.loads(ok[A.OBSERVATION_MODEL_PARAMETERS]) == {"temperature": 0.2, "max_tokens": 512, "stream": False}
    assert json.loads(ok[A.OBSERVATION_USAGE_DETAILS]) == {"input": 1000, "output": 523, "total": 1523}
    assert json.loads(ok[A.OBSERVATION_COST_DETAILS]) == {"total": 0.02}
    assert json.loads(ok[A.OBSERVATION_INPUT]) == [{"role": "user", "content": S.PROMPT}]
    assert json.loads(ok[A.OBSERVATION_OUTPUT]) == [{"role": "assistant", "content": S.ANSWER}]
    assert ok[A.TRACE_USER_ID] == "u-1" and ok[A.TRACE_SESSION_ID] == "s-1"
    assert set(ok[A.TRACE_TAGS]) == {"provider:openai", "feature:chat", "tenant:acme"}
    assert json.loads(ok[f"{A.OBSERVATION_METADATA}.tenant"]) == "acme"
    assert json.loads(ok[f"{A.OBSERVATION_METADATA}.feature"]) == "chat"
    assert json.loads(ok[f"{A.TRACE_METADATA}.tenant"]) == "acme"
    assert A.TRACE_NAME not in ok and A.OBSERVATION_LEVEL not in ok
    assert bad[A.OBSERVATION_LEVEL] == "ERROR" and bad[A.OBSERVATION_STATUS_MESSAGE] == "Overloaded"
    assert bad[A.OBSERVATION_MODEL] == "claude-3-5-haiku"
    # observation ids are the span ids
    sent_ids = {sp.span_id for sp in ss.spans}
    assert {sp.span_id for _rs, sp in intake.spans()} == sent_ids


async def test_without_content(intake: LangfuseIntake) -> None:
    exp = make(intake, include_content=False)
    await exp.start()
    req = S.request(2)
    ev = req.resource_spans[0].scope_spans[0].spans[1].events.add(name="gen_ai.user.message")
    set_attr(ev.attributes, "content", S.PROMPT)
    try:
        await exp.consume(Batch(Signal.TRACES, req))
        await until(lambda: len(intake.spans()) == 3)
    finally:
        await exp.shutdown()
    raw = b"".join(r.body for r in intake.accepted(LangfuseIntake.PATH))
    assert S.PROMPT.encode() not in raw and S.ANSWER.encode() not in raw
    for _rs, sp in intake.spans():
        a = attrs_to_dict(sp.attributes)
        assert A.OBSERVATION_INPUT not in a and not sp.events
    assert any(attrs_to_dict(sp.attributes).get(A.OBSERVATION_TYPE) == "generation" for _rs, sp in intake.spans())


async def test_retry_updates_instead_of_duplicating(intake: LangfuseIntake) -> None:
    exp = make(intake)
    await exp.start()
    intake.plan(LangfuseIntake.PATH, 500, body={"message": "boom"})
    intake.plan(LangfuseIntake.PATH, 429, {"Retry-After": "1"}, {"message": "slow down"})
    req = S.request(3)
    t0 = time.monotonic()
    try:
        await exp.consume(Batch(Signal.TRACES, req))
        await until(lambda: len(intake.spans()) == 4)
    finally:
        await exp.shutdown()
    assert time.monotonic() - t0 >= 0.9
    statuses = [r.status for r in intake.received]
    assert statuses == [500, 429, 200]
    # every attempt carried the same span (observation) ids
    ids = [sorted(sp.span_id for rs in r_.parsed.resource_spans for ss in rs.scope_spans for sp in ss.spans)
           for r_ in intake.received if r_.parsed is not None]
    assert ids == [sorted(sp.span_id for sp in req.resource_spans[0].scope_spans[0].spans)]


async def test_large_batches_split_under_the_limit() -> None:
    with LangfuseIntake(max_bytes=256 * 1024) as intake:
        # requests stay under the configured 300 kB; the server takes only 256 kB and answers 413
        exp = make(intake, max_request_size=300 * 1024)
        # a span that alone is over the limit has its input cut
        small = make(intake, max_request_size=128 * 1024)
        await exp.start()
        await small.start()
        big = S.request(40, root=False)
        for sp in big.resource_spans[0].scope_spans[0].spans:
            set_attr(sp.attributes, "gen_ai.prompt.0.content", "z" * 20_000)
        one_huge = S.request(1, root=False)
        set_attr(one_huge.resource_spans[0].scope_spans[0].spans[0].attributes, "gen_ai.prompt.0.content",
                 "h" * 2_000_000)
        try:
            await exp.consume(Batch(Signal.TRACES, big))
            await small.consume(Batch(Signal.TRACES, one_huge))
            await until(lambda: len(intake.spans()) == 41)
        finally:
            await exp.shutdown()
            await small.shutdown()
        assert all(len(r.body) <= 300 * 1024 for r in intake.received)
        assert any(r.status == 413 for r in intake.received)
        assert all(len(r.body) <= 256 * 1024 for r in intake.accepted(LangfuseIntake.PATH))
        ids = [sp.span_id for _rs, sp in intake.spans()]
        assert len(ids) == len(set(ids)) == 41  # split halves: every span once
        cut = next(attrs_to_dict(sp.attributes)[A.OBSERVATION_INPUT] for _rs, sp in intake.spans()
                   if sp.span_id == one_huge.resource_spans[0].scope_spans[0].spans[0].span_id)
        assert "truncated by llm-collector" in cut
        assert intake.problems == []


@pytest.mark.parametrize("status", [401, 403, 400])
async def test_permanent_errors_are_dead_lettered(intake: LangfuseIntake, tmp_path: Path, status: int) -> None:
    dl = tmp_path / "dead.jsonl"
    if status == 401:
        exp = make(intake, secret_key="sk-wrong", dead_letter={"path": str(dl)})
    else:
        intake.plan(LangfuseIntake.PATH, status, body={"message": "nope"})
        exp = make(intake, dead_letter={"path": str(dl)})
    await exp.start()
    try:
        await exp.consume(Batch(Signal.TRACES, S.request(1)))
        await until(lambda: dl.exists() and dl.read_text())
        await asyncio.sleep(0.2)
    finally:
        await exp.shutdown()
    assert len(intake.received) == 1  # not retried
    dead = json.loads(dl.read_text())
    assert f"HTTP {status}" in dead["reason"]
    if status in (401, 403):
        assert "check public_key, secret_key and host" in dead["reason"]
        assert "sk-wrong" not in dead["reason"] and LF_SECRET not in dead["reason"]
    assert exp.status_info()["status"] == "error"


def test_config_defaults_from_env_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    f = registry.get(Kind.EXPORTER, "langfuse")
    assert f is not None
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-env")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-env")
    monkeypatch.delenv("LANGFUSE_BASE_URL", raising=False)
    monkeypatch.setenv("LANGFUSE_HOST", "https://langfuse.internal/")
    c = f.config_model.model_validate({})
    assert (c.public_key, c.secret_key.get_secret_value(), c.host) == ("pk-env", "sk-env", "https://langfuse.internal")
    assert c.include_content is True
    monkeypatch.setenv("LANGFUSE_BASE_URL", "https://eu.example.com")
    assert f.config_model.model_validate({}).host == "https://eu.example.com"
    monkeypatch.delenv("LANGFUSE_BASE_URL")
    monkeypatch.delenv("LANGFUSE_HOST")
    assert f.config_model.model_validate({}).host == "https://cloud.langfuse.com"
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY")
    monkeypatch.delenv("LANGFUSE_SECRET_KEY")
    doc: dict[str, Any] = {
        "receivers": {"otlp": {"protocols": {"http": {}}}},
        "exporters": {"langfuse": {"host": "ftp:/x", "environment": "Prod!"}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["langfuse"]}}},
    }
    with pytest.raises(ConfigError) as e:
        validate(doc)
    text = "\n".join(e.value.errors)
    for what in ("exporters::langfuse::public_key", "exporters::langfuse::secret_key", "exporters::langfuse::host",
                 "exporters::langfuse::environment"):
        assert what in text
    doc["exporters"]["langfuse"] = {"public_key": "pk", "secret_key": "sk"}
    doc["service"]["pipelines"]["metrics"] = {"receivers": ["otlp"], "exporters": ["langfuse"]}
    with pytest.raises(ConfigError, match='exporter "langfuse" does not support metrics'):
        validate(doc)
