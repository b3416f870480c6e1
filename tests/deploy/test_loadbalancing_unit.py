"""The hash ring moves ~1/N of the keys when a backend joins or leaves; requests split by routing key."""

from __future__ import annotations

import os

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from collector.component import Kind
from collector.config import validate
from collector.errors import ConfigError
from collector.pdata import Batch, Signal, python_to_anyvalue
from exporters._hashring import HashRing
from exporters.loadbalancing import normalize_endpoint, routing_keys, split_batch

KEYS = [os.urandom(16) for _ in range(20000)]


def owners(ring: HashRing, skip: frozenset[str] = frozenset()) -> list[str | None]:
    return [ring.lookup(k, skip) for k in KEYS]


def test_ring_spreads_keys_evenly() -> None:
    ring = HashRing([f"10.0.0.{i}:4317" for i in range(4)])
    got = owners(ring)
    for m in ring.members:
        share = got.count(m) / len(KEYS)
        assert 0.17 < share < 0.33, (m, share)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_adding_a_backend_moves_about_one_in_n_keys(n: int) -> None:
    members = [f"gw-{i}:4317" for i in range(n)]
    before = owners(HashRing(members))
    after = owners(HashRing(members + ["gw-new:4317"]))
    moved = [(a, b) for a, b in zip(before, after) if a != b]
    # every moved key went to the new backend, and about 1/(n+1) of them moved
    assert all(b == "gw-new:4317" for _a, b in moved)
    assert abs(len(moved) / len(KEYS) - 1 / (n + 1)) < 0.08


@pytest.mark.parametrize("n", [2, 3, 5])
def test_removing_or_skipping_a_backend_moves_only_its_keys(n: int) -> None:
    members = [f"gw-{i}:4317" for i in range(n)]
    ring = HashRing(members)
    before = owners(ring)
    gone = members[0]
    for after in (owners(HashRing(members[1:])), owners(ring, frozenset({gone}))):
        moved = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert all(before[i] == gone for i in moved)
        assert len(moved) == before.count(gone)
        assert abs(len(moved) / len(KEYS) - 1 / n) < 0.08
        assert gone not in after


def test_skipping_every_member_finds_none() -> None:
    ring = HashRing(["a:1", "b:1"])
    assert ring.lookup(b"x", {"a:1", "b:1"}) is None
    assert HashRing().lookup(b"x") is None


def _request(traces: int, spans: int) -> Batch:
    b = Batch(Signal.TRACES)
    for svc in ("chat", "search"):
        rs: ResourceSpans = b.request.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key = "service.name"
        python_to_anyvalue(svc, kv.value)
        ss = rs.scope_spans.add()
        ss.scope.name = "lib"
        for t in range(traces):
            for s in range(spans):
                sp = ss.spans.add()
                sp.trace_id = bytes([t + 1]) * 16
                sp.span_id = bytes([s + 1]) * 8
                sp.name = f"{svc}-{t}-{s}"
                a = sp.attributes.add()
                a.key = "tenant"
                python_to_anyvalue(f"t{t % 3}", a.value)
    return b


def test_split_by_trace_id_keeps_resources_and_scopes() -> None:
    batch = _request(traces=12, spans=3)
    ring = HashRing(["a:1", "b:1", "c:1"])
    key = routing_keys(Signal.TRACES, "traceID", [])
    parts = split_batch(batch, lambda r, s, i: ring.lookup(key(r, s, i)))
    assert len(parts) == 3
    assert sum(p.item_count() for p in parts.values()) == batch.item_count()
    for owner, part in parts.items():
        for rs in part.request.resource_spans:
            assert rs.resource.attributes[0].key == "service.name"
            for ss in rs.scope_spans:
                assert ss.scope.name == "lib"
                for sp in ss.spans:
                    assert ring.lookup(sp.trace_id) == owner
        # the bytes of a part are a valid request of their own
        again = Batch.from_bytes(Signal.TRACES, part.to_bytes())
        assert again.item_count() == part.item_count()


def test_one_owner_passes_the_batch_unchanged() -> None:
    batch = _request(traces=2, spans=2)
    parts = split_batch(batch, lambda r, s, i: "only:1")
    assert parts == {"only:1": batch}


def test_split_by_service_and_attributes() -> None:
    batch = _request(traces=6, spans=2)
    by_svc = routing_keys(Signal.TRACES, "service", [])
    parts = split_batch(batch, lambda r, s, i: by_svc(r, s, i).decode())
    assert sorted(parts) == ["chat", "search"]
    by_attr = routing_keys(Signal.TRACES, "attributes", ["tenant", "service.name"])
    parts = split_batch(batch, lambda r, s, i: by_attr(r, s, i).decode())
    assert sorted(parts) == sorted(f"t{t}\x00{svc}" for t in range(3) for svc in ("chat", "search"))
    assert all(p.item_count() == 4 for p in parts.values())


def test_endpoint_normalisation() -> None:
    assert normalize_endpoint("gw") == "gw:4317"
    assert normalize_endpoint("gw:5317") == "gw:5317"
    assert normalize_endpoint("::1") == "[::1]:4317"
    assert normalize_endpoint("[::1]:9") == "[::1]:9"


def _cfg(exp: dict) -> dict:
    return {"receivers": {"otlp": {"protocols": {"grpc": {}}}}, "exporters": {"loadbalancing": exp},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["loadbalancing"]}}}}


@pytest.mark.parametrize("exp, message", [
    ({}, "exporters::loadbalancing::resolver: field required"),
    ({"resolver": {}}, "exporters::loadbalancing::resolver: exactly one of static or dns"),
    ({"resolver": {"static": {"hostnames": ["a"]}, "dns": {"hostname": "b"}}}, "exactly one of static or dns"),
    ({"resolver": {"static": {"hostnames": []}}}, "exporters::loadbalancing::resolver::static::hostnames"),
    ({"resolver": {"static": {"hostnames": ["a"]}}, "routing_key": "attributes"}, "needs routing_attributes"),
    ({"resolver": {"static": {"hostnames": ["a"]}}, "routing_key": "spanID"}, "exporters::loadbalancing::routing_key"),
    ({"resolver": {"dns": {"hostname": "gw", "interval": "soon"}}}, "exporters::loadbalancing::resolver::dns::interval"),
    ({"resolver": {"static": {"hostnames": ["a"]}}, "protocol": {"otlp": {"endpoint": "x:1"}}},
     "exporters::loadbalancing::protocol::otlp::endpoint: the endpoint of each backend comes from the resolver"),
])
def test_invalid_configs_name_the_path(exp: dict, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        validate(_cfg(exp))
    assert any(message in e for e in ei.value.errors), ei.value.errors


def test_valid_config() -> None:
    cfg = validate(_cfg({"routing_key": "service", "resolver": {"dns": {"hostname": "gw.svc", "port": 4317}},
                         "protocol": {"otlp": {"timeout": "2s", "tls": {"insecure": True},
                                                "retry_on_failure": {"initial_interval": "50ms"}}}}))
    (cc,) = cfg.components[Kind.EXPORTER].values()
    assert cc.config.resolver.dns.interval == 5.0
    assert cc.config.protocol.otlp.retry_on_failure.initial_interval == 0.05
