"""Batch: bytes kept from the wire, lazy parse, copies, release of the parsed form; OTLP/JSON mapping."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from bench.llm_spans import make_request
from collector.pdata import Batch, Signal, from_otlp_json, to_otlp_json


def test_bytes_kept_until_modified() -> None:
    raw = make_request(3).SerializeToString()
    b = Batch.from_bytes(Signal.TRACES, raw)
    assert b.to_bytes() is raw or b.to_bytes() == raw
    b.request.resource_spans[0].scope_spans[0].spans[0].name = "changed"
    assert b.to_bytes() == raw  # not marked modified yet: the cached bytes still go out
    b.modified()
    assert b.to_bytes() != raw and b"changed" in b.to_bytes()


def test_lazy_parse_and_release() -> None:
    raw = make_request(4).SerializeToString()
    b = Batch(Signal.TRACES, None, raw=raw)
    assert b._request is None and b.to_bytes() == raw  # no parse needed to forward
    assert b.item_count() == 4
    b.release_request()
    assert b._request is None and b.item_count() == 4 and b.to_bytes() == raw
    assert b.request.resource_spans[0].scope_spans[0].spans[3].span_id  # parsed again on use
    b.modified()
    b.release_request()  # no current bytes: the parsed form must stay
    assert b._request is not None


def test_copy_is_independent() -> None:
    b = Batch(Signal.TRACES, make_request(2))
    c = b.copy()
    c.request.resource_spans[0].scope_spans[0].spans[0].name = "x"
    c.modified()
    assert b.request.resource_spans[0].scope_spans[0].spans[0].name != "x"


def test_otlp_json_roundtrip_hex_ids() -> None:
    req = make_request(2)
    text = to_otlp_json(req)
    obj = json.loads(text)
    span = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    assert "\n" not in text
    assert from_otlp_json(Signal.TRACES, text) == req


@pytest.mark.parametrize("bad", [b"[]", b"{", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "xy"}]}]}]}',
                                 b'{"resourceSpans": 5}'])
def test_otlp_json_errors(bad: bytes) -> None:
    with pytest.raises((ValueError, json_format.ParseError)):
        from_otlp_json(Signal.TRACES, bad)
