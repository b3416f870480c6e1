"""The `nats` exporter and receiver against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from collector.component import ComponentID, CreateSettings, Kind
from collector.errors import RefusedError, RetryableError
from collector.pdata import Batch, Signal
from exporters.nats import NatsExporter, NatsExporterConfig
from receivers.nats import NatsReceiver, NatsReceiverConfig
from tests.helpers import free_port
from tests.nats_server import NatsServer


@pytest.fixture
def server(tmp_path) -> Iterator[NatsServer]:  # type: ignore[no-untyped-def]
    with NatsServer(tmp_path / "js") as s:
        yield s


def span_batch(i: int, n: int = 3) -> Batch:
    b = Batch(Signal.TRACES)
    ss = b.request.resource_spans.add().scope_spans.add()
    for j in range(n):
        sp = ss.spans.add()
        sp.trace_id = i.to_bytes(16, "big")
        sp.span_id = (i * 100 + j + 1).to_bytes(8, "big")
        sp.name = f"span {i}.{j}"
    return b


def exporter(url: str, **kw) -> NatsExporter:  # type: ignore[no-untyped-def]
    cfg = NatsExporterConfig.model_validate({"url": url, "timeout": "2s", "connect_timeout": "500ms",
                                             "sending_queue": {"enabled": False},
                                             "retry_on_failure": {"enabled": False}} | kw)
    return NatsExporter(CreateSettings(ComponentID("nats"), Kind.EXPORTER, signals=frozenset(Signal)), cfg)


class Sink:
    """A pipeline stand-in that records what it took and can refuse the first n batches."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.got: list[Batch] = []
        self.refused = 0

    async def consume(self, batch: Batch) -> None:
        if self.refused < self.refuse:
            self.refused += 1
            raise RefusedError("queue full", retry_after=0.1)
        self.got.append(batch)


def receiver(url: str, sink: Sink, **kw) -> NatsReceiver:  # type: ignore[no-untyped-def]
    cfg = NatsReceiverConfig.model_validate({"url": url, "fetch_timeout": "200ms", "ack_wait": "2s", **kw})
    return NatsReceiver(CreateSettings(ComponentID("nats"), Kind.RECEIVER, consumers={Signal.TRACES: sink}), cfg)


@pytest.fixture
async def js_client(server: NatsServer) -> AsyncIterator:  # type: ignore[type-arg]
    nc = await nats.connect(server.url)
    yield nc.jetstream()
    await nc.close()


async def wait_until(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_exporter_creates_the_stream_and_publishes_with_acks(server: NatsServer, js_client) -> None:  # type: ignore[no-untyped-def]
    exp = exporter(server.url, stream={"name": "TEL", "storage": "memory"})
    await exp.start()
    try:
        for i in range(5):
            await exp.consume(span_batch(i))
        # the same bytes again: JetStream drops it by Nats-Msg-Id
        await exp.consume(span_batch(0))
        info = await js_client.stream_info("TEL")
        assert info.state.messages == 5
        assert sorted(info.config.subjects) == ["otlp.logs", "otlp.metrics", "otlp.traces"]
        msg = await js_client.get_msg("TEL", 1)
        assert msg.subject == "otlp.traces"
        assert Batch.from_bytes(Signal.TRACES, msg.data).item_count() == 3
    finally:
        await exp.shutdown()


async def test_exporter_reports_failure_when_nats_is_down() -> None:
    exp = exporter(f"nats://127.0.0.1:{free_port()}", connect_timeout="100ms")
    await exp.start()  # starting without a server is fine: it connects when data comes
    try:
        with pytest.raises(RetryableError, match="cannot connect to NATS"):
            await exp.send(span_batch(1))
    finally:
        await exp.shutdown()


async def test_exporter_fails_when_no_stream_takes_the_subject(server: NatsServer) -> None:
    exp = exporter(server.url, stream={"name": "NOPE", "create": False})
    await exp.start()
    try:
        with pytest.raises(RetryableError, match="does not exist"):
            await exp.send(span_batch(1))
    finally:
        await exp.shutdown()


async def test_receiver_acks_after_consume_and_redelivers_refused(server: NatsServer, js_client) -> None:  # type: ignore[no-untyped-def]
    exp = exporter(server.url)
    await exp.start()
    for i in range(4):
        await exp.consume(span_batch(i))
    await js_client.publish("otlp.traces", b"\xff\xfe not protobuf")
    sink = Sink(refuse=2)
    rec = receiver(server.url, sink)
    await rec.start()
    try:
        await wait_until(lambda: len(sink.got) == 4)
        assert sink.refused == 2  # refused twice, redelivered, then taken
        assert sorted(b.request.resource_spans[0].scope_spans[0].spans[0].trace_id[-1] for b in sink.got) == \
            [0, 1, 2, 3]
        ci = None
        for _ in range(100):
            ci = await js_client.consumer_info("OTLP", "llm-collector-traces")
            if ci.num_ack_pending == 0 and ci.num_pending == 0:
                break
            await asyncio.sleep(0.05)
        assert ci is not None and ci.num_ack_pending == 0 and ci.num_pending == 0
        assert ci.delivered.stream_seq == 5  # the bad message was delivered once and terminated
    finally:
        await rec.shutdown()
        await exp.shutdown()
    assert len(sink.got) == 4


async def test_unacknowledged_messages_come_back_to_the_next_consumer(server: NatsServer) -> None:
    exp = exporter(server.url)
    await exp.start()
    for i in range(3):
        await exp.consume(span_batch(i))
    await exp.shutdown()

    class Hang(Sink):
        async def consume(self, batch: Batch) -> None:
            self.got.append(batch)
            await asyncio.sleep(3600)

    hang = Hang()
    first = receiver(server.url, hang, fetch_batch=3, ack_wait="1s")
    await first.start()
    await wait_until(lambda: len(hang.got) == 3)
    assert first._task is not None
    first._task.cancel()  # a crash: nothing acknowledged
    await first.shutdown()
    sink = Sink()
    second = receiver(server.url, sink, ack_wait="1s")
    await second.start()
    try:
        await wait_until(lambda: len(sink.got) == 3, timeout=10)
    finally:
        await second.shutdown()


def test_invalid_configs_name_the_path() -> None:
    from collector.config import validate
    from collector.errors import ConfigError

    doc = {"receivers": {"nats": {"durable": "a.b", "fetch_batch": 0}},
           "exporters": {"nats": {"stream": {"name": "has space", "storage": "disk"}, "subjects": {"traces": ""}}},
           "service": {"pipelines": {"traces": {"receivers": ["nats"], "exporters": ["nats"]}}}}
    with pytest.raises(ConfigError) as ei:
        validate(doc)
    joined = "\n".join(ei.value.errors)
    for path in ("receivers::nats::durable", "receivers::nats::fetch_batch", "exporters::nats::stream::name",
                 "exporters::nats::stream::storage", "exporters::nats::subjects::traces"):
        assert path in joined


async def test_client_metadata_travels_as_headers(server: NatsServer) -> None:
    exp = exporter(server.url, include_metadata=True)
    await exp.start()
    b = span_batch(7)
    b.metadata = {"x-tenant-id": "acme"}
    await exp.consume(b)
    await exp.shutdown()
    sink = Sink()
    rec = receiver(server.url, sink, include_metadata=True)
    await rec.start()
    try:
        await wait_until(lambda: len(sink.got) == 1)
        assert dict(sink.got[0].metadata) == {"x-tenant-id": "acme"}
    finally:
        await rec.shutdown()
