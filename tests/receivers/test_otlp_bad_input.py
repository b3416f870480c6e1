"""Bad input over HTTP and gRPC: the right status each time, and the next good request still succeeds in the
same (still running) collector process."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import status_pb2

from bench.llm_spans import make_request
from collector.pdata import Signal
from tests.helpers import CollectorProcess, free_port, read_otlp_jsonl, spans_of, wait_for

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 1024 * 1024


class Env:
    def __init__(self, col: CollectorProcess, grpc_port: int, http_port: int, out: Path) -> None:
        self.col, self.grpc_port, self.http_port, self.out = col, grpc_port, http_port, out
        self.good = 0

    def post(self, body: bytes, ctype: str = "application/x-protobuf",
             headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": ctype, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def grpc_call(self, body: bytes, compression: grpc.Compression | None = None) -> grpc.StatusCode:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}", compression=compression,
                                   options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
            call = ch.unary_unary(TRACES, request_serializer=None, response_deserializer=None)
            try:
                call(body, timeout=20)
            except grpc.RpcError as e:
                return e.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    def check_still_good(self) -> None:
        """A good request over each transport is accepted and reaches the file; the process lives on."""
        assert self.col.proc is not None and self.col.proc.poll() is None, self.col.logs()
        status, body, _ = self.post(make_request(2, seed=self.good).SerializeToString())
        assert status == 200, body
        assert self.grpc_call(make_request(3, seed=self.good).SerializeToString()) is grpc.StatusCode.OK
        self.good += 5
        wait_for(lambda: len(list(spans_of(read_otlp_jsonl(self.out, Signal.TRACES)))) == self.good,
                 what=f"{self.good} good spans in the file")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("badinput")
    gp, hp = free_port(), free_port()
    cfg = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{gp}", "max_recv_msg_size_mib": 1},
            "http": {"endpoint": f"127.0.0.1:{hp}", "max_request_body_size": LIMIT}}}},
        "exporters": {"file": {"path": str(d / "traces.jsonl")}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}}},
    }
    with CollectorProcess(cfg, workdir=d) as col:
        yield Env(col, gp, hp, d / "traces.jsonl")
    assert col.proc is not None and col.proc.returncode == 0


GOOD = make_request(4, seed=99).SerializeToString()
BOMB = gzip.compress(b"\0" * (16 * 1024 * 1024), 9)  # 16 MiB of zeros in 16 KB; the limit is 1 MiB


@pytest.mark.parametrize(
    ("case", "body", "ctype", "headers", "status"),
    [
        ("garbage bytes", b"\x00\xffnot a protobuf\xff" * 10, "application/x-protobuf", {}, 400),
        ("truncated protobuf", GOOD[:-7], "application/x-protobuf", {}, 400),
        ("invalid JSON", b'{"resourceSpans": [', "application/json", {}, 400),
        ("JSON of the wrong shape", b'{"resourceSpans": {"x": 1}}', "application/json", {}, 400),
        ("JSON bad hex id", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "zz", "spanId": "01"}]}]}]}).encode(), "application/json", {}, 400),
        ("wrong content type", GOOD, "text/plain", {}, 415),
        ("oversized body", b"\x0a" * (LIMIT + 1), "application/x-protobuf", {}, 413),
        ("gzip bomb", BOMB, "application/x-protobuf", {"Content-Encoding": "gzip"}, 413),
        ("invalid gzip", b"\x1f\x8bnot gzip at all", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
        ("unknown encoding", GOOD, "application/x-protobuf", {"Content-Encoding": "br"}, 400),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_http_bad_input(env: Env, case: str, body: bytes, ctype: str, headers: dict[str, str], status: int) -> None:
    got, resp, _h = env.post(body, ctype, headers)
    assert got == status, f"{case}: {resp[:300]!r}"
    if status == 400 and ctype == "application/x-protobuf":
        st = status_pb2.Status.FromString(resp)  # the OTLP spec's error body: a google.rpc.Status
        assert st.code == 3 and st.message
    elif status == 400:
        assert json.loads(resp)["message"]
    env.check_still_good()


def test_http_gzip_body_accepted(env: Env) -> None:
    got, resp, _ = env.post(gzip.compress(make_request(5, seed=7).SerializeToString()),
                            headers={"Content-Encoding": "gzip"})
    assert got == 200, resp
    env.good += 5
    env.check_still_good()


@pytest.mark.parametrize(
    ("case", "body", "compression", "code"),
    [
        ("garbage bytes", b"\x00\xffnot a protobuf\xff" * 10, None, grpc.StatusCode.INVALID_ARGUMENT),
        ("truncated protobuf", GOOD[:-7], None, grpc.StatusCode.INVALID_ARGUMENT),
        ("oversized message", b"\x0a" * (LIMIT + 10), None, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("gzip bomb", b"\0" * (8 * 1024 * 1024), grpc.Compression.Gzip, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_grpc_bad_input(env: Env, case: str, body: bytes, compression: grpc.Compression | None,
                        code: grpc.StatusCode) -> None:
    assert env.grpc_call(body, compression) is code, case
    env.check_still_good()


def test_http_garbage_connection(env: Env) -> None:
    """Not HTTP at all on the HTTP port, and a half-sent request: the server closes, nothing else breaks."""
    with socket.create_connection(("127.0.0.1", env.http_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00 definitely not http\r\n\r\n")
        s.recv(1024)
    with socket.create_connection(("127.0.0.1", env.http_port), timeout=5) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: 1000\r\n\r\npartial")
    env.check_still_good()
