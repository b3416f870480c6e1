"""The real `otlphttp` and `otlp` exporters behind the delivery helper, against a backend that fails for a
while: every span arrives, Retry-After is honoured, a 400 / INVALID_ARGUMENT is dead-lettered, not retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.collector.delivery_harness import FAST_RETRY, Harness, ids_of, read_dead_letters, wait_until
from tests.delivery_support import Action, OtlpBackend


def scripted(*actions: Action) -> object:
    return lambda n: actions[n] if n < len(actions) else Action()


async def test_otlphttp_recovers_with_retry_after(tmp_path: Path) -> None:
    with OtlpBackend(scripted(Action(503), Action(429, retry_after=1), Action(502))) as be:
        cfg = {"endpoint": f"http://127.0.0.1:{be.http_port}", "compression": "none",
               "retry_on_failure": FAST_RETRY, "sending_queue": {"storage": "file_storage"}}
        async with Harness({"otlphttp": cfg}, storage=tmp_path) as h:
            assert (await h.post([1, 2, 3])).status == 200
            await wait_until(lambda: be.received_ids() == ids_of(3), what="spans via otlphttp")
            t = be.attempt_times()
            assert [a.status for a in be.attempts] == [503, 429, 502, 200]
            assert t[2] - t[1] >= 0.98  # Retry-After: 1


async def test_otlp_grpc_recovers_and_400_is_dead_lettered(tmp_path: Path) -> None:
    with OtlpBackend(scripted(Action(503), Action(503))) as good, \
            OtlpBackend(lambda n: Action(400, message="invalid span kind")) as bad:
        dl = tmp_path / "dl.jsonl"
        base = {"compression": "none", "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY}
        exps = {"otlp/good": {**base, "endpoint": f"127.0.0.1:{good.grpc_port}"},
                "otlp/bad": {**base, "endpoint": f"127.0.0.1:{bad.grpc_port}", "dead_letter": {"path": str(dl)}}}
        async with Harness(exps) as h:
            assert (await h.post([5, 6])).status == 200
            await wait_until(lambda: good.received_ids() == ids_of(2, 5), what="spans via otlp")
            await wait_until(lambda: read_dead_letters(dl), what="dead letter")
            await asyncio.sleep(0.3)
            assert len(bad.attempts) == 1
            (rec,) = read_dead_letters(dl)
            assert "INVALID_ARGUMENT" in rec["reason"] and "invalid span kind" in rec["reason"]
