"""The fast paths of the processor chain give the same attributes as the plain ones: cost's attribute writes on
the serialised request (new keys appended, existing keys replaced, no duplicates), the shared KeyValue index
kept exact, and the wire values reading only a span's own attributes."""

from __future__ import annotations

from typing import Any

from collector import genai
from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Batch, Signal
from processors.cost import CostConfig, CostProcessor
from tests.processors.shapes import attrs_of, batch_of


class _Sink:
    async def consume(self, batch: Batch) -> None:
        return None


def _cost(**cfg: Any) -> CostProcessor:
    s = CreateSettings(id=ComponentID.parse("cost"), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                       pipeline="traces", next=_Sink())
    return CostProcessor(s, CostConfig(**cfg))


def _keys(span: Any) -> list[str]:
    return [kv.key for kv in span.attributes]


def test_cost_writes_each_attribute_once_with_its_value() -> None:
    base = {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    stale = dict(base, **{"llm.cost.input": 99.0})  # an existing part is overwritten, not repeated
    cached = dict(base, **{"gen_ai.usage.cache_read_input_tokens": 400})
    src = batch_of([("a", base), ("b", stale), ("c", cached)])
    b = Batch.from_bytes(Signal.TRACES, src.request.SerializeToString())
    _cost(override=True).process(b)
    b.modified()
    spans = list(b.request.resource_spans[0].scope_spans[0].spans)
    for sp in spans:
        keys = _keys(sp)
        assert len(keys) == len(set(keys)), keys
    a, s, c = (attrs_of(sp) for sp in spans)
    assert a["llm.cost.input"] > 0 and a["llm.cost.output"] > 0
    assert a["gen_ai.usage.cost"] == a["llm.cost.input"] + a["llm.cost.output"]
    assert s["llm.cost.input"] == a["llm.cost.input"] and s["gen_ai.usage.cost"] == a["gen_ai.usage.cost"]
    assert "llm.cost.cache_read" not in a and c["llm.cost.cache_read"] > 0
    assert c["gen_ai.usage.cost"] == c["llm.cost.input"] + c["llm.cost.output"] + c["llm.cost.cache_read"]
    # a serialise / parse round trip keeps them
    again = Batch.from_bytes(Signal.TRACES, b.to_bytes())
    assert attrs_of(again.request.resource_spans[0].scope_spans[0].spans[2]) == c


def test_wire_values_read_only_the_spans_own_attributes() -> None:
    src = batch_of([("a", {"gen_ai.request.model": "gpt-4o", "x": "y"})])
    span = src.request.resource_spans[0].scope_spans[0].spans[0]
    ev = span.events.add()
    ev.name = "e"
    kv = ev.attributes.add()
    kv.key, kv.value.string_value = "tenant.id", "from-an-event"
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "user.id", "u" * 200  # a KeyValue longer than 127 bytes
    b = Batch.from_bytes(Signal.TRACES, src.request.SerializeToString())
    genai.forget(b.request)
    v = genai.span_values(b)(b.request.resource_spans[0].scope_spans[0].spans[0])
    assert v["gen_ai.request.model"] == "gpt-4o"
    assert v["user.id"] == "u" * 200
    assert "tenant.id" not in v


def test_redaction_skips_the_walk_of_spans_with_false_candidates_only() -> None:
    from processors.redaction import RedactionConfig, RedactionProcessor

    s = CreateSettings(id=ComponentID.parse("redaction"), kind=Kind.PROCESSOR, signal=Signal.TRACES,
                       pipeline="traces", next=_Sink())
    red = RedactionProcessor(s, RedactionConfig(summary="info"))
    walked: list[str] = []
    real_span = red.r.span

    def span(req: Any, item: Any, *a: Any, **k: Any) -> None:
        walked.append(item.name)
        real_span(req, item, *a, **k)

    red.r.span = span  # type: ignore[method-assign]
    hexid = "chatcmpl-1234567890123456"  # 16 digits failing the Luhn check: a card-number candidate only
    src = batch_of([("false", {"gen_ai.response.id": hexid, "user.id": "u-1"}),
                    ("real", {"gen_ai.prompt.0.content": "card 4111 1111 1111 1111 please", "user.id": "u-2"}),
                    ("both", {"gen_ai.response.id": hexid, "gen_ai.completion.0.content": "ssn 123-45-6789"})])
    b = Batch.from_bytes(Signal.TRACES, src.request.SerializeToString())
    red.process(b)
    b.modified()
    assert walked == ["real", "both"]
    spans = list(b.request.resource_spans[0].scope_spans[0].spans)
    a0, a1, a2 = (attrs_of(sp) for sp in spans)
    assert a0 == {"gen_ai.response.id": hexid, "user.id": "u-1"}
    assert a1["gen_ai.prompt.0.content"] == "card <CREDIT_CARD> please" and a1["redaction.masked.count"] == 1
    assert a2["gen_ai.response.id"] == hexid and "<US_SSN>" in a2["gen_ai.completion.0.content"]
    values = genai.span_values(b)
    assert values(spans[0])["user.id"] == "u-1" and values(spans[1])["user.id"] == "u-2"
    assert values(spans[1])["redaction.masked.count"] == 1


def test_field_reader_equals_fields() -> None:
    names = genai.ranks_of("request_model", "response_model", "input_tokens", "cost")
    cases = [
        {"gen_ai.request.model": "a", "gen_ai.response.model": "b", "gen_ai.usage.input_tokens": 0},
        {"llm.model_name": "x", "gen_ai.request.model": "a", "llm.token_count.prompt": 5},
        {"gen_ai.response.model": "", "llm.response.model": "c", "gen_ai.usage.cost": 0.5},  # empty: next name
        {"gen_ai.response.model": None, "tenant.id": "t"},
        {"gen_ai.usage.cost": 0.5, "tenant.id": "t"},  # a plan of one field
        {"gen_ai.usage.cost": "", "llm.usage.cost": 0.0},
        {"gen_ai.usage.input_tokens": 0, "gen_ai.request.model": "m", "llm.token_count.prompt": False},
        {"tenant.id": "t"},
        {},
    ]
    order = ("cost", "request_model", "input_tokens", "response_model")
    rows = genai.FieldReader(names, order)
    one = genai.FieldReader(names, ("input_tokens",))
    cases.append({"llm.token_count.prompt": [1, 2], "gen_ai.usage.input_tokens": ""})  # unhashable, empty
    for _ in range(2):  # second time through the cached plans
        for v in cases:
            want = genai.fields(v, names)
            assert rows.row(v) == tuple(want.get(f) for f in order), v
            assert one.row(v) == (want.get("input_tokens"),), v
