"""The `loadbalancing` exporter in-process, against real OTLP/gRPC receivers (our own `otlp` receiver)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Batch, Signal, python_to_anyvalue
from exporters.loadbalancing import LoadBalancingConfig, LoadBalancingExporter
from receivers.otlp import OtlpReceiver, OtlpReceiverConfig
from tests.helpers import free_port


class Sink:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def consume(self, batch: Batch) -> None:
        self.batches.append(batch)

    def trace_ids(self) -> set[bytes]:
        out = set()
        for b in self.batches:
            if b.signal is Signal.TRACES:
                out |= {s.trace_id for rs in b.request.resource_spans for ss in rs.scope_spans for s in ss.spans}
            elif b.signal is Signal.LOGS:
                out |= {r.trace_id for rl in b.request.resource_logs for sl in rl.scope_logs for r in sl.log_records}
        return out


async def backend(port: int) -> tuple[OtlpReceiver, Sink]:
    sink = Sink()
    rec = OtlpReceiver(CreateSettings(ComponentID("otlp", str(port)), Kind.RECEIVER,
                                      consumers={s: sink for s in Signal}),
                       OtlpReceiverConfig.model_validate({"protocols": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}}))
    await rec.start()
    return rec, sink


def balancer(**cfg: Any) -> LoadBalancingExporter:
    base = {"protocol": {"otlp": {"tls": {"insecure": True}, "timeout": "1s",
                                  "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"}}}}
    return LoadBalancingExporter(CreateSettings(ComponentID("loadbalancing"), Kind.EXPORTER,
                                                signals=frozenset(Signal)),
                                 LoadBalancingConfig.model_validate({**base, **cfg}))


def traces(trace_ids: list[bytes]) -> Batch:
    b = Batch(Signal.TRACES)
    ss = b.request.resource_spans.add().scope_spans.add()
    for t in trace_ids:
        sp = ss.spans.add()
        sp.trace_id, sp.span_id, sp.name = t, os.urandom(8), "chat"
    return b


async def until(pred: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_dns_resolver_finds_the_backend_and_logs_route_by_trace_id() -> None:
    port = free_port()
    rec, sink = await backend(port)
    lb = balancer(resolver={"dns": {"hostname": "localhost", "port": port, "interval": "100ms"}})
    await lb.start()
    try:
        assert f"127.0.0.1:{port}" in lb.ring.members
        b = Batch(Signal.LOGS)
        sl = b.request.resource_logs.add().scope_logs.add()
        tids = [os.urandom(16) for _ in range(10)]
        for t in tids:
            r = sl.log_records.add()
            r.trace_id = t
            r.body.string_value = "budget crossed"
        # ::1 may resolve too but has no listener: that backend is marked down and its keys rerouted
        await lb.consume(b)
        await until(lambda: sink.trace_ids() >= set(tids))
    finally:
        await lb.shutdown()
        await rec.shutdown()


async def test_adding_a_backend_moves_only_keys_to_it() -> None:
    ports = [free_port() for _ in range(3)]
    recs = [await backend(p) for p in ports]
    eps = [f"127.0.0.1:{p}" for p in ports]
    lb = balancer(resolver={"static": {"hostnames": eps[:2]}})
    await lb.start()
    try:
        tids = [os.urandom(16) for _ in range(300)]
        await lb.consume(traces(tids))
        await until(lambda: sum(len(s.trace_ids()) for _r, s in recs) == 300)
        before = {t: i for i, (_r, s) in enumerate(recs) for t in s.trace_ids()}
        assert set(before.values()) == {0, 1}
        for _r, s in recs:
            s.batches.clear()
        await lb.set_backends(set(eps))
        await lb.consume(traces(tids))
        await until(lambda: sum(len(s.trace_ids()) for _r, s in recs) == 300)
        after = {t: i for i, (_r, s) in enumerate(recs) for t in s.trace_ids()}
        moved = [t for t in tids if before[t] != after[t]]
        assert all(after[t] == 2 for t in moved), "a key moved between the old backends"
        assert 0.2 < len(moved) / len(tids) < 0.47
        # and removing it again brings every key home
        for _r, s in recs:
            s.batches.clear()
        await lb.set_backends(set(eps[:2]))
        await lb.consume(traces(tids))
        await until(lambda: sum(len(s.trace_ids()) for _r, s in recs) == 300)
        assert {t: i for i, (_r, s) in enumerate(recs) for t in s.trace_ids()} == before
    finally:
        await lb.shutdown()
        for r, _s in recs:
            await r.shutdown()


async def test_metrics_route_by_service() -> None:
    ports = [free_port(), free_port()]
    recs = [await backend(p) for p in ports]
    lb = balancer(routing_key="service", resolver={"static": {"hostnames": [f"127.0.0.1:{p}" for p in ports]}})
    await lb.start()
    try:
        b = Batch(Signal.METRICS)
        services = [f"svc-{i}" for i in range(12)]
        for svc in services:
            rm = b.request.resource_metrics.add()
            kv = rm.resource.attributes.add()
            kv.key = "service.name"
            python_to_anyvalue(svc, kv.value)
            m = rm.scope_metrics.add().metrics.add()
            m.name = "llm.requests"
            m.sum.data_points.add().as_int = 1
        await lb.consume(b)

        def got() -> dict[str, int]:
            out = {}
            for i, (_r, s) in enumerate(recs):
                for bb in s.batches:
                    for rm in bb.request.resource_metrics:
                        out[rm.resource.attributes[0].value.string_value] = i
            return out
        await until(lambda: len(got()) == 12)
        owners = got()
        assert set(owners.values()) == {0, 1}
        for svc, i in owners.items():
            assert lb.ring.lookup(svc.encode()) == f"127.0.0.1:{ports[i]}"
    finally:
        await lb.shutdown()
        for r, _s in recs:
            await r.shutdown()


async def test_a_lone_backend_is_never_marked_down_and_gets_its_data_when_back() -> None:
    port = free_port()
    lb = balancer(resolver={"static": {"hostnames": [f"127.0.0.1:{port}"]}},
                  rebalance={"failure_threshold": 1, "probe_interval": "100ms"})
    await lb.start()
    rec = None
    try:
        tids = [os.urandom(16) for _ in range(5)]
        await lb.consume(traces(tids))  # queued: the backend is not listening yet
        await until(lambda: lb.status_info()["status"] == "active"
                    and lb.status_info()["backends"][f"127.0.0.1:{port}"]["last_error"] is not None)
        assert not lb.down
        rec, sink = await backend(port)
        await until(lambda: sink.trace_ids() == set(tids))
    finally:
        await lb.shutdown()
        if rec is not None:
            await rec.shutdown()


async def test_dns_changes_are_picked_up_every_interval() -> None:
    ports = [free_port(), free_port()]
    recs = [await backend(p) for p in ports]
    lb = balancer(resolver={"dns": {"hostname": "localhost", "port": ports[0], "interval": "50ms"}})
    answers = [{f"127.0.0.1:{ports[0]}"}]

    async def fake_resolve() -> set[str] | None:  # stands in for the name server's changing answer
        return answers[-1]

    lb._resolve_dns = fake_resolve  # type: ignore[method-assign]
    await lb.start()
    try:
        assert lb.ring.members == {f"127.0.0.1:{ports[0]}"}
        answers.append({f"127.0.0.1:{p}" for p in ports})
        await until(lambda: lb.ring.members == {f"127.0.0.1:{p}" for p in ports})
        tids = [os.urandom(16) for _ in range(50)]
        await lb.consume(traces(tids))
        await until(lambda: recs[0][1].trace_ids() | recs[1][1].trace_ids() == set(tids))
        assert recs[0][1].trace_ids() and recs[1][1].trace_ids()
        answers.append({f"127.0.0.1:{ports[1]}"})
        await until(lambda: lb.ring.members == {f"127.0.0.1:{ports[1]}"})
        await until(lambda: f"127.0.0.1:{ports[0]}" not in lb.backends)
        answers.append(None)  # a failed lookup keeps the backends
        await asyncio.sleep(0.2)
        assert lb.ring.members == {f"127.0.0.1:{ports[1]}"}
    finally:
        await lb.shutdown()
        for r, _s in recs:
            await r.shutdown()
