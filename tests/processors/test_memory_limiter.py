"""memory_limiter: over the limit the receiver answers 429 + Retry-After (retryable), under it data flows;
config errors name the key."""

from __future__ import annotations

import pytest

from collector.config import validate
from collector.errors import ConfigError
from tests.collector.delivery_harness import Harness, exporter_cfg, ids_of, wait_until
from tests.delivery_support import OtlpBackend


async def test_refuses_over_limit_and_accepts_under_it() -> None:
    with OtlpBackend() as be:
        procs = {"memory_limiter": {"check_interval": "50ms", "limit_mib": 100_000}}
        async with Harness({"testotlp/ml": exporter_cfg(be.http_endpoint())}, processors=procs) as h:
            assert (await h.post([1])).status == 200
            ml = h.svc.graph.processors[0][1]
            assert ml.soft == (100_000 - 20_000) * 1024 * 1024  # spike defaults to 20% of the limit
            ml.hard = ml.spike = 1024 * 1024  # pretend the limit is 1 MiB: the process is over it
            ml.soft = 0
            await wait_until(lambda: ml.refusing, what="refusing after a check")
            r = await h.post([2])
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            ml.hard, ml.soft = 10**15, 10**15
            await wait_until(lambda: not ml.refusing, what="accepting again")
            assert (await h.post([3])).status == 200
            await wait_until(lambda: be.received_ids() == ids_of(1) | ids_of(1, 3), what="accepted spans")


def test_percentage_limits_and_validation() -> None:
    base = {"receivers": {"otlp": {"protocols": {"http": {}}}}, "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter"],
                                                 "exporters": ["debug"]}}}}
    ok = validate({**base, "processors": {"memory_limiter": {"limit_percentage": 80,
                                                             "spike_limit_percentage": 25}}})
    assert ok.components  # valid
    for bad, msg in (({}, "one of limit_mib or limit_percentage"),
                     ({"limit_mib": 100, "spike_limit_mib": 100}, "spike_limit_mib must be smaller"),
                     ({"limit_mib": 100, "check_interval": "0s"}, "check_interval"),
                     ({"limit_mib": 100, "limit_percentage": 50}, "not both")):
        with pytest.raises(ConfigError) as ei:
            validate({**base, "processors": {"memory_limiter": bad}})
        assert any(e.startswith("processors::memory_limiter") and msg in e for e in ei.value.errors), ei.value.errors
