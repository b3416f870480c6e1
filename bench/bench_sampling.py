"""CPU cost of the sampling, filter and LLM connectors of proc-b: ns per span and spans per CPU-second.

Usage: python -m bench.bench_sampling [--requests 40] [--spans 500] [--spans-per-trace 1] [--repeat 3]
       [--shared-index] [--only NAME]

Each measurement feeds ``--requests`` export requests of ``--spans`` realistic LLM spans (GenAI attributes,
0.5-2 KB of prompt/response content) through one component in process and counts the CPU time of the
component alone (parsing the request is done before the clock starts). ``cached bytes`` means the request
arrives as received (its bytes reusable); ``modified`` means an earlier processor changed it (as in the full
chain memory_limiter -> redaction -> cost -> enrich -> tail_sampling), so a key-presence check over the
request's bytes must serialise it first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Batch, Signal

_WORDS = ["the", "model", "answered", "with", "a", "summary", "of", "the", "quarterly", "report", "including", "revenue", "growth", "churn", "and", "customer", "feedback", "latency", "pricing", "support", "tickets", "retrieval", "augmented", "generation", "embedding", "vector", "store", "chunk", "overlap", "temperature", "system", "prompt", "assistant", "tool", "call", "json", "schema", "translation"]
_MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet"),
           ("aws.bedrock", "meta.llama3-70b")]


def _text(rng: random.Random, n: int) -> str:
    out, size = [], 0
    while size < n:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def make_request(n_spans: int, spans_per_trace: int, seed: int) -> bytes:
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", "chat-api"), ("service.version", "1.4.2"), ("deployment.environment", "prod")):
        kv = rs.resource.attributes.add(key=k)
        kv.value.string_value = v
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai"
    now = 1_760_000_000_000_000_000
    tid = b""
    for i in range(n_spans):
        if i % spans_per_trace == 0:
            tid = os.urandom(16)
        provider, model = rng.choice(_MODELS)
        sp = ss.spans.add(trace_id=tid, span_id=os.urandom(8), name=f"chat {model}", kind=3)
        sp.start_time_unix_nano = now + i * 1_000_000
        sp.end_time_unix_nano = sp.start_time_unix_nano + rng.randint(200, 9000) * 1_000_000
        sp.status.code = 2 if rng.random() < 0.02 else 1
        attrs: list[tuple[str, Any]] = [
            ("gen_ai.operation.name", "chat"), ("gen_ai.system", provider), ("gen_ai.request.model", model),
            ("gen_ai.response.model", model + "-2024-08-06"), ("gen_ai.request.temperature", 0.7),
            ("gen_ai.usage.input_tokens", rng.randint(50, 4000)), ("gen_ai.usage.output_tokens", rng.randint(10, 1500)),
            ("gen_ai.response.finish_reasons", "stop"), ("user.id", f"user-{rng.randint(1, 5000)}"),
            ("tenant.id", f"tenant-{rng.randint(1, 40)}"), ("gen_ai.usage.cost", rng.random() / 10),
            ("gen_ai.prompt.0.role", "user"), ("gen_ai.prompt.0.content", _text(rng, rng.randint(300, 1200))),
            ("gen_ai.completion.0.role", "assistant"), ("gen_ai.completion.0.content", _text(rng, rng.randint(200, 800))),
        ]
        if rng.random() < 0.01:
            attrs.append(("llm.budget.exceeded", True))
        for k, v in attrs:
            kv = sp.attributes.add(key=k)
            if isinstance(v, bool):
                kv.value.bool_value = v
            elif isinstance(v, int):
                kv.value.int_value = v
            elif isinstance(v, float):
                kv.value.double_value = v
            else:
                kv.value.string_value = v
    return req.SerializeToString()


class _Count:
    def __init__(self) -> None:
        self.items = 0

    async def consume(self, batch: Batch) -> None:
        self.items += batch.item_count()


class _Storage:
    """A file_storage extension in a temporary directory (for tail_sampling with storage)."""

    def __init__(self) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="bench-ts-")
        self.fsync = False

    def path_for(self, kind: str, cid: str) -> str:
        return os.path.join(self.dir, f"{kind}_{cid}_{time.time_ns()}.sqlite")

    def extension(self, _cid: str) -> Any:
        return self


def _settings(name: str, sink: Any, kind: Kind = Kind.PROCESSOR, host: Any = None) -> CreateSettings:
    return CreateSettings(id=ComponentID.parse(name), kind=kind, signal=Signal.TRACES, pipeline="traces",
                          next=sink, consumers={Signal.METRICS: sink, Signal.LOGS: sink}, host=host)


class _Started:
    """tail_sampling with storage: start() opens the SQLite file (outside the clock), no timer task."""

    def __init__(self, ts: Any) -> None:
        self.ts = ts

    async def consume(self, batch: Batch) -> None:
        if self.ts._store is None:
            from processors.tail_sampling import _Store

            ext = self.ts.settings.host.extension("file_storage")
            self.ts._store = _Store(ext.path_for("processor", "tail_sampling"), False)
        await self.ts.consume(batch)

    async def flush(self) -> None:
        await self.ts.flush()


_WARM: dict[int, tuple[Any, dict[str, Any]]] = {}


def _emulate_shared_index() -> None:
    """Stand-in for collector/genai's shared per-request index (``genai.indexes``) as the processors before
    tail_sampling leave it: a warm cache, so a lookup is a dict access. Only for this benchmark."""
    from collector import genai

    def indexes(request: Any, item: Any, resource: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        got = _WARM.get(id(item))
        if got is None or got[0] is not item:
            got = (item, genai.index(item.attributes))
            _WARM[id(item)] = got
        res: dict[str, Any] = {}
        if resource is not None:
            r = _WARM.get(id(resource))
            if r is None or r[0] is not resource:
                r = (resource, genai.index(resource.attributes))
                _WARM[id(resource)] = r
            res = r[1]
        return got[1], res

    genai.indexes = indexes  # type: ignore[attr-defined]
    if not hasattr(genai, "is_indexed"):
        genai.is_indexed = lambda k: True  # type: ignore[attr-defined]


def _batches(raws: list[bytes], modified: bool) -> list[Batch]:
    out = []
    _WARM.clear()
    from collector import genai

    warm = getattr(genai, "indexes", None)
    for r in raws:
        b = Batch.from_bytes(Signal.TRACES, r)
        _ = b.request  # parsed before the clock starts
        if modified:
            b.modified()
            if warm is not None:  # the earlier processors' pass, outside the clock
                req = b.request
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            warm(req, sp, rs.resource)
        out.append(b)
    return out


async def _measure(make: Any, raws: list[bytes], modified: bool, flush: bool = False) -> tuple[float, int]:
    sink = _Count()
    comp = make(sink)
    batches = _batches(raws, modified)
    n = sum(b.item_count() for b in batches)
    gc.collect()
    t0 = time.process_time()
    for b in batches:
        await comp.consume(b)
    if flush:
        await comp.flush()
    cpu = time.process_time() - t0
    return cpu * 1e9 / n, sink.items


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--spans", type=int, default=500)
    ap.add_argument("--spans-per-trace", type=int, default=1)
    ap.add_argument("--shared-index", action="store_true",
                    help="'modified' requests come with a warm genai shared index (emulated if genai lacks one)")
    ap.add_argument("--only", default="", help="run only the components whose name contains this")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is printed")
    args = ap.parse_args()
    if args.shared_index:
        from collector import genai

        if not hasattr(genai, "indexes"):
            _emulate_shared_index()
    from processors._hashing import preload

    preload()
    raws = [make_request(args.spans, args.spans_per_trace, seed=i) for i in range(args.requests)]
    total = args.requests * args.spans

    from processors.filter import FilterConfig, FilterProcessor
    from processors.llm_alerts import LLMAlertsConfig, LLMAlertsConnector
    from processors.llm_metrics import LLMMetricsConfig, LLMMetricsConnector
    from processors.probabilistic_sampler import ProbabilisticSampler, ProbabilisticSamplerConfig
    from processors.routing import RoutingConfig, RoutingConnector
    from processors.tail_sampling import TailSampler, TailSamplingConfig

    recipe = TailSamplingConfig.model_validate({"decision_wait": 3600, "num_traces": 10 ** 6, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "budget", "type": "budget_exceeded"},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}}]})
    no_attr = TailSamplingConfig.model_validate({"decision_wait": 3600, "num_traces": 10 ** 6, "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}}]})
    stored = recipe.model_copy(update={"storage": "file_storage"})
    cases: list[tuple[str, Any, bool]] = [
        ("tail_sampling recipe + storage (SQLite, no fsync)", lambda s: _Started(TailSampler(
            _settings("tail_sampling", s, host=_Storage()), stored)), True),
        ("tail_sampling recipe (errors, budget_exceeded, 5%)", lambda s: TailSampler(_settings("tail_sampling", s), recipe), True),
        ("tail_sampling (errors, 5%)", lambda s: TailSampler(_settings("tail_sampling", s), no_attr), True),
        ("probabilistic_sampler 10%", lambda s: ProbabilisticSampler(
            _settings("probabilistic_sampler", s), ProbabilisticSamplerConfig(sampling_percentage=10)), False),
        ("filter (drop_no_log only)", lambda s: FilterProcessor(_settings("filter", s), FilterConfig()), False),
        ("filter (no_log + name regex + attribute gt)", lambda s: FilterProcessor(_settings("filter", s),
            FilterConfig.model_validate({"spans": {"drop": [{"field": "name", "matches": "^health"},
                                                            {"attribute": "gen_ai.usage.input_tokens", "gt": 3900}]}})),
         False),
        ("routing (resource attribute, one pipeline)", lambda s: RoutingConnector(
            CreateSettings(id=ComponentID.parse("routing"), kind=Kind.CONNECTOR, pipelines={"traces/a": s}),
            RoutingConfig.model_validate({"attribute": "service.name", "table": [
                {"value": "chat-api", "pipelines": ["traces/a"]}]})), False),
        ("llm_metrics", lambda s: LLMMetricsConnector(_settings("llm_metrics", s, Kind.CONNECTOR),
                                                      LLMMetricsConfig()), False),
        ("llm_alerts (budget only)", lambda s: LLMAlertsConnector(_settings("llm_alerts", s, Kind.CONNECTOR),
                                                                 LLMAlertsConfig()), False),
    ]
    print(f"{total} spans ({args.requests} requests x {args.spans}, {args.spans_per_trace} span(s) per trace)")
    print(f"{'component':52} {'input':14} {'ns/span':>9} {'spans/CPU-s':>12} {'out':>7}")
    for name, make, flush in cases:
        if args.only and args.only not in name:
            continue
        for modified in (False, True):
            ns, out = min([await _measure(make, raws, modified, flush) for _ in range(args.repeat)])
            label = "modified" if modified else "cached bytes"
            print(f"{name:52} {label:14} {ns:9.0f} {1e9 / ns:12,.0f} {out:7}")


if __name__ == "__main__":
    asyncio.run(main())
