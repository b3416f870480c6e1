"""filter, probabilistic_sampler, routing, llm_metrics, llm_alerts and tail_sampling in a running collector,
fed by the OpenTelemetry SDK with spans shaped like LiteLLM, OpenLLMetry and OpenInference."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from collector.pdata import Signal, attrs_to_dict
from processors._hashing import fnv32a_many, fnv32a_state
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for
from tests.processors.llm_spans import sdk_llm_span, sdk_provider


def _file(name: str) -> dict[str, Any]:
    return {"path": f"./data/{name}.jsonl", "sending_queue": {"enabled": False}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One collector with every connector and stateless processor of this branch; spans sent once."""
    work = tmp_path_factory.mktemp("procb")
    port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "processors": {
            "filter": {"spans": {"drop": [{"field": "name", "matches": "^healthcheck"}]}},
            "probabilistic_sampler": {"sampling_percentage": 30, "hash_seed": 7},
        },
        "connectors": {
            "routing": {"attribute": "tenant.id", "table": [{"value": "globex", "pipelines": ["traces/globex"]}],
                        "default_pipelines": ["traces/default"]},
            "llm_metrics": {"metrics_flush_interval": "200ms", "dimensions": ["model", "tenant", "outcome"]},
            "llm_alerts": {},
        },
        "exporters": {f"file/{n}": _file(n) for n in ("kept", "sampled", "globex", "default", "metrics", "alerts")},
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["filter"],
                       "exporters": ["file/kept", "routing", "llm_metrics", "llm_alerts"]},
            "traces/sampled": {"receivers": ["otlp"], "processors": ["probabilistic_sampler"],
                               "exporters": ["file/sampled"]},
            "traces/globex": {"receivers": ["routing"], "exporters": ["file/globex"]},
            "traces/default": {"receivers": ["routing"], "exporters": ["file/default"]},
            "metrics": {"receivers": ["llm_metrics"], "exporters": ["file/metrics"]},
            "logs": {"receivers": ["llm_alerts"], "exporters": ["file/alerts"]},
        }},
    }
    sent: dict[str, Any] = {"litellm": [], "openllmetry": [], "openinference": [], "nolog": [], "health": []}
    with CollectorProcess(cfg, workdir=work) as col:
        tp, tracer = sdk_provider(f"127.0.0.1:{port}")
        for i in range(60):
            sent["litellm"].append(sdk_llm_span(tracer, "litellm", error=i % 10 == 0))
            sent["openllmetry"].append(sdk_llm_span(tracer, "openllmetry"))
            sent["openinference"].append(sdk_llm_span(tracer, "openinference", duration_ms=1200))
        sent["nolog"].append(sdk_llm_span(tracer, "litellm", extra={"metadata.no-log": True}))
        sent["health"].append(sdk_llm_span(tracer, "openinference", name="healthcheck"))
        budget = {"llm.budget.key_name": "tenant.id", "llm.budget.key": "globex", "llm.budget.limit_usd": 50.0}
        sent["budget80"] = sdk_llm_span(tracer, "openllmetry", extra={**budget, "llm.budget.crossed": 0.8,
                                                                        "llm.budget.spent_usd": 40.2})
        sent["budget100"] = sdk_llm_span(tracer, "openllmetry", extra={**budget, "llm.budget.crossed": 1.0,
                                                                         "llm.budget.spent_usd": 50.1,
                                                                         "llm.budget.exceeded": True})
        assert tp.force_flush(10_000)
        tp.shutdown()
        out = work / "data"
        wait_for(lambda: len(list(spans_of(read_otlp_jsonl(out / "kept.jsonl", Signal.TRACES)))) >= 182,
                 what="filtered spans")
        wait_for(lambda: (out / "metrics.jsonl").exists(), what="metrics")
        yield sent, out, col


def _ids(path: Path) -> set[bytes]:
    return {s.span_id for s in spans_of(read_otlp_jsonl(path, Signal.TRACES))}


def test_filter_drops_no_log_and_conditions(run: Any) -> None:
    sent, out, _col = run
    kept = _ids(out / "kept.jsonl")
    assert len(kept) == 182
    assert sent["nolog"][0][1] not in kept and sent["health"][0][1] not in kept
    assert {sid for _t, sid in sent["litellm"]} <= kept


def test_probabilistic_sampler_matches_the_collector_formula(run: Any) -> None:
    sent, out, _col = run
    every = [ts for k in ("litellm", "openllmetry", "openinference", "nolog", "health") for ts in sent[k]]
    every += [sent["budget80"], sent["budget100"]]
    hashes = fnv32a_many([t for t, _s in every], fnv32a_state(7))
    want = {sid for (_t, sid), hv in zip(every, hashes) if (hv & 0x3FFF) < int(30 * 0x4000 / 100)}
    assert 20 < len(want) < 90
    wait_for(lambda: _ids(out / "sampled.jsonl") == want, what="sampled spans")


def test_routing_splits_by_span_attribute(run: Any) -> None:
    sent, out, _col = run
    globex = {sid for _t, sid in sent["openllmetry"]} | {sent["budget80"][1], sent["budget100"][1]}
    wait_for(lambda: _ids(out / "globex.jsonl") == globex, what="globex spans")
    default = _ids(out / "default.jsonl")
    assert {sid for _t, sid in sent["litellm"] + sent["openinference"]} == default


def test_llm_metrics_counts_requests_errors_and_latency(run: Any) -> None:
    _sent, out, _col = run

    def totals() -> dict[tuple[str, str, str], int]:
        reqs = read_otlp_jsonl(out / "metrics.jsonl", Signal.METRICS)
        if not reqs:
            return {}
        last = reqs[-1]  # cumulative: the last flush has everything
        got = {}
        for m in last.resource_metrics[0].scope_metrics[0].metrics:
            if m.name == "llm.requests":
                for dp in m.sum.data_points:
                    a = attrs_to_dict(dp.attributes)
                    got[(a["model"], a.get("tenant.id", ""), a["outcome"])] = dp.as_int
        return got

    want = {("gpt-4o-2024-08-06", "acme", "success"): 54, ("gpt-4o-2024-08-06", "acme", "error"): 6,
            ("claude-3-5-sonnet-20241022", "globex", "success"): 62, ("gpt-4o-mini", "initech", "success"): 60}
    wait_for(lambda: totals() == want, what=f"llm.requests == {want}")
    last = read_otlp_jsonl(out / "metrics.jsonl", Signal.METRICS)[-1]
    names = {m.name for m in last.resource_metrics[0].scope_metrics[0].metrics}
    assert {"llm.errors", "llm.tokens", "llm.cost_usd", "llm.latency_ms", "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration"} <= names


def test_llm_alerts_budget_records(run: Any) -> None:
    sent, out, _col = run

    def recs() -> list[Any]:
        return [r for req in read_otlp_jsonl(out / "alerts.jsonl", Signal.LOGS) for rl in req.resource_logs
                for sl in rl.scope_logs for r in sl.log_records]

    got = wait_for(lambda: len(recs()) == 2 and recs(), what="two alert records")
    attrs = [attrs_to_dict(r.attributes) for r in got]
    assert sorted(a["alert.severity"] for a in attrs) == ["critical", "warning"]
    assert all(a["tenant.id"] == "globex" and a["alert.kind"] == "budget" for a in attrs)
    assert {r.span_id for r in got} == {sent["budget80"][1], sent["budget100"][1]}


TAIL_RECIPE = {
    "decision_wait": "4s",
    "storage": "file_storage",
    "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "budget", "type": "budget_exceeded"},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}},
    ],
}


def test_tail_sampling_survives_sigkill_during_decision_wait(tmp_path: Path) -> None:
    port = free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}},
        "extensions": {"file_storage": {"directory": "./data/storage"}},
        "processors": {"tail_sampling": TAIL_RECIPE},
        "exporters": {"file": _file("traces")},
        "service": {"extensions": ["file_storage"], "pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["tail_sampling"], "exporters": ["file"]}}},
    }
    col = CollectorProcess(cfg, workdir=tmp_path).start()
    try:
        tp, tracer = sdk_provider(f"127.0.0.1:{port}")
        errors, breaches, rest = [], [], []
        for i in range(300):
            shape = ("litellm", "openllmetry", "openinference")[i % 3]
            if i % 20 == 0:
                errors.append(sdk_llm_span(tracer, shape, error=True))
            elif i % 50 == 7:
                breaches.append(sdk_llm_span(tracer, shape, extra={"llm.budget.exceeded": True}))
            else:
                rest.append(sdk_llm_span(tracer, shape))
        assert tp.force_flush(10_000)  # acknowledged by the collector
        tp.shutdown()
        col.kill()  # SIGKILL inside decision_wait
    finally:
        col.kill()
    out = tmp_path / "data" / "traces.jsonl"
    assert not _ids(out), "nothing decided before the kill"
    db = tmp_path / "data" / "storage" / "processor_tail_sampling.sqlite"
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM held").fetchone()[0] >= 1
    with CollectorProcess(cfg, workdir=tmp_path):
        must = {sid for _t, sid in errors + breaches}
        wait_for(lambda: must <= _ids(out), timeout=20, what="every error and budget trace after restart")
    kept = _ids(out)
    rest_kept = len(kept - must)
    assert 0 <= rest_kept <= 40  # about 5% of 279 (hash of random ids)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM held").fetchone()[0] == 0
