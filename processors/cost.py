"""Processor `cost`: the USD cost of every LLM call, from its token counts and a price table.

Prices (USD per million tokens) come from, first match wins: the ``prices:`` of the config, the
``prices_file:`` (LiteLLM's ``model_prices_and_context_window.json`` format) and the built-in table
``processors/data/llm_prices.json`` (which says the date its prices were taken). Model names are normalised
(provider prefixes such as ``openai/`` or ``bedrock/``, Bedrock regional and vendor prefixes such as
``us.anthropic.``, version and date suffixes, Vertex ``@date``) before the lookup. An unknown model is never
guessed: the span gets ``llm.cost.unknown_model = true`` and the metric ``llm_cost_unknown_model_spans`` counts it.

Token semantics follow the GenAI conventions: cache-read and cache-write tokens are part of the input count,
reasoning tokens part of the output count; each part is charged at its own price.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from dataclasses import dataclass

from prometheus_client import Counter
from pydantic import Field, field_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.errors import ConfigError
from collector.pdata import Batch, Signal
from collector.processorhelper import SimpleProcessor
from collector.telemetry import REGISTRY, RateLimitedLogger
from collector.wire import encode_attribute

__all__ = ["BUILTIN_PRICES_PATH", "CostConfig", "CostProcessor", "Price", "PriceTable", "normalise_model"]

BUILTIN_PRICES_PATH = os.path.join(os.path.dirname(__file__), "data", "llm_prices.json")

unknown_model_spans = Counter(
    "llm_cost_unknown_model_spans",
    "LLM spans whose model has no price (cost not computed), by processor and model.",
    ["processor", "model"],
    registry=REGISTRY,
)
_MAX_MODEL_LABELS = 200


class ModelPrice(StrictModel):
    """USD per million tokens. Missing cache prices fall back to ``input``, reasoning to ``output``."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)


class CostConfig(StrictModel):
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    prices_file: str | None = None
    builtin_prices: bool = True
    override: bool = False
    parts: bool = True

    @field_validator("prices_file")
    @classmethod
    def _not_empty(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token (already divided by a million)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float

    @classmethod
    def per_million(cls, input: float, output: float, cache_read: float | None = None,
                    cache_write: float | None = None, reasoning: float | None = None) -> Price:
        m = 1e-6
        return cls(input * m, output * m, (input if cache_read is None else cache_read) * m,
                   (input if cache_write is None else cache_write) * m,
                   (output if reasoning is None else reasoning) * m)


_PATH_PREFIX = re.compile(r"^.*/")
_REGION = re.compile(r"^(?:us|eu|apac|ap|us-gov|global|ca|jp|au|de|fr)\.")
_VENDOR = re.compile(r"^(?:anthropic|mistral|meta|amazon|cohere|openai|google|ai21|deepseek|writer)\.")
_BEDROCK_VERSION = re.compile(r"(?:-v\d+(?::\d+)?|:\d+)$")
_VERTEX_AT = re.compile(r"@.*$")
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),
    re.compile(r"-\d{8}$"),
    re.compile(r"-(?:latest|preview(?:-\d{2}-\d{2})?|exp(?:-\d+)?)$"),
    re.compile(r"-\d{4}$"),
    re.compile(r"-\d{3}$"),
)


def normalise_model(name: str) -> list[str]:
    """The names to look a model up under, most specific first: as given, lower-cased, then with provider
    path, Bedrock region / vendor / version, Vertex ``@date`` and date / ``-latest`` suffixes removed."""
    out = [name]
    n = name.strip().lower()

    def add(x: str) -> None:
        if x and x not in out:
            out.append(x)

    add(n)
    n = _PATH_PREFIX.sub("", n)
    add(n)
    n = _REGION.sub("", n)
    add(n)
    n = _VENDOR.sub("", n)
    add(n)
    n = _BEDROCK_VERSION.sub("", n)
    add(n)
    n = _VERTEX_AT.sub("", n)
    add(n)
    changed = True
    while changed:
        changed = False
        for rx in _SUFFIXES:
            m = rx.sub("", n)
            if m != n and m:
                n = m
                add(n)
                changed = True
                break
    return out


class PriceTable:
    """Model name -> :class:`Price`: config ``prices`` over ``prices_file`` over the built-in table."""

    def __init__(self, prices: dict[str, ModelPrice] | None = None, prices_file: str | None = None,
                 builtin: bool = True) -> None:
        self.layers: list[dict[str, Price]] = []
        self.aliases: dict[str, str] = {}
        self.prices_taken = ""
        if prices:
            self.layers.append({k.lower(): Price.per_million(p.input, p.output, p.cache_read, p.cache_write,
                                                             p.reasoning) for k, p in prices.items()}
                               | {k: Price.per_million(p.input, p.output, p.cache_read, p.cache_write,
                                                       p.reasoning) for k, p in prices.items()})
        if prices_file:
            self.layers.append(load_litellm_prices(prices_file))
        if builtin:
            with open(BUILTIN_PRICES_PATH, encoding="utf-8") as fh:
                doc = json.load(fh)
            self.prices_taken = doc.get("prices_taken", "")
            self.layers.append({k: Price.per_million(**v) for k, v in doc["models"].items()})
            self.aliases = dict(doc.get("aliases", {}))
        self._cache: dict[str, tuple[Price, str] | None] = {}

    def lookup(self, model: str) -> tuple[Price, str] | None:
        """(price, the table name it was found under) or None. Cached per model string."""
        got = self._cache.get(model, False)
        if got is not False:
            return got  # type: ignore[return-value]
        found: tuple[Price, str] | None = None
        for cand in normalise_model(model):
            for name in (cand, self.aliases.get(cand)):
                if name is None:
                    continue
                for layer in self.layers:
                    p = layer.get(name)
                    if p is not None:
                        found = (p, name)
                        break
                if found:
                    break
            if found:
                break
        if len(self._cache) < 10000:
            self._cache[model] = found
        return found


def load_litellm_prices(path: str) -> dict[str, Price]:
    """Read LiteLLM's ``model_prices_and_context_window.json`` (USD per token)."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        raise ConfigError([f"prices_file: cannot read {path}: {e.strerror}"]) from e
    except ValueError as e:
        raise ConfigError([f"prices_file: {path} is not valid JSON: {e}"]) from e
    if not isinstance(doc, dict):
        raise ConfigError([f"prices_file: {path} must be a JSON object of model names"])
    out: dict[str, Price] = {}
    for name, spec in doc.items():
        if name == "sample_spec" or not isinstance(spec, dict):
            continue
        inp, outp = spec.get("input_cost_per_token"), spec.get("output_cost_per_token")
        if not isinstance(inp, (int, float)) or not isinstance(outp, (int, float)):
            continue
        cr = spec.get("cache_read_input_token_cost")
        cw = spec.get("cache_creation_input_token_cost")
        rs = spec.get("output_cost_per_reasoning_token")
        p = Price(float(inp), float(outp),
                  float(cr) if isinstance(cr, (int, float)) else float(inp),
                  float(cw) if isinstance(cw, (int, float)) else float(inp),
                  float(rs) if isinstance(rs, (int, float)) else float(outp))
        out[name] = p
        out.setdefault(name.lower(), p)
    return out


@dataclass(slots=True)
class CostParts:
    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float

    @property
    def total(self) -> float:
        return self.input + self.output + self.cache_read + self.cache_write + self.reasoning


def compute(price: Price, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0,
            reasoning: int = 0) -> CostParts:
    """Cost in USD. Cache tokens are part of ``input_tokens`` and reasoning part of ``output_tokens`` (GenAI
    conventions); when the cache counts exceed the input count the producer reported them separately
    (Anthropic's API does) and the input count is taken as the uncached part."""
    cached = cache_read + cache_write
    uncached = input_tokens - cached if cached <= input_tokens else input_tokens
    if reasoning <= output_tokens:
        plain_out = output_tokens - reasoning
    else:
        plain_out = output_tokens
    return CostParts(uncached * price.input, plain_out * price.output, cache_read * price.cache_read,
                     cache_write * price.cache_write, reasoning * price.reasoning)


_W = genai.WRITE
_pack_d = struct.Struct("<d").pack
# the attribute names of the fields cost reads (fields() looks at these only)
_FIELDS = ("cost", "response_model", "request_model", "input_tokens", "output_tokens", "total_tokens",
           "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_NAMES = genai.ranks_of(*_FIELDS)
_UNKNOWN_TRUE = encode_attribute(_W["cost_unknown_model"], True)


class CostProcessor(SimpleProcessor):
    def __init__(self, settings: CreateSettings, config: CostConfig) -> None:
        super().__init__(settings, config)
        genai.want_fields(*_FIELDS)
        genai.want(*(_W[k] for k in ("cost_input", "cost_output", "cost_cache_read", "cost_cache_write",
                                     "cost_reasoning", "cost_unknown_model")))
        self.table = PriceTable(config.prices, None, config.builtin_prices)
        self._fields = genai.FieldReader(_NAMES, _FIELDS)
        self._pid = str(settings.id)
        self._labels: dict[str, object] = {}
        self._rl = RateLimitedLogger(self.log)

    async def start(self) -> None:
        if self.config.prices_file:
            try:
                self.table = PriceTable(self.config.prices, self.config.prices_file, self.config.builtin_prices)
            except ConfigError as e:
                raise ConfigError([f"processors::{self._pid}::{m}" for m in e.errors]) from e

    def _count_unknown(self, model: str, n: int = 1) -> None:
        label = model[:80]
        child = self._labels.get(label)
        if child is None:
            if len(self._labels) >= _MAX_MODEL_LABELS:
                label = "other"
            child = unknown_model_spans.labels(self._pid, label)
            if len(self._labels) < _MAX_MODEL_LABELS or label == "other":
                self._labels[label] = child
        child.inc(n)  # type: ignore[attr-defined]

    def process(self, batch: Batch) -> Batch | None:
        # On the serialised request (collector/wire.py): read the few values needed, append the cost
        # attributes; no parse, no serialise.
        tw = batch.wire()
        values = genai.wire_values(tw)
        as_int = genai._int
        override = self.config.override
        parts = self.config.parts
        lookup = self.table.lookup
        put = genai.wire_put
        w_cost = _W["cost"]
        w_in, w_out = _W["cost_input"], _W["cost_output"]
        w_cr, w_cw, w_rz = _W["cost_cache_read"], _W["cost_cache_write"], _W["cost_reasoning"]
        w_unknown = _W["cost_unknown_model"]
        changed = False
        unknown: dict[str, int] = {}
        append = genai.wire_append
        h_cost, h_in, h_out = (genai.double_head(k) for k in (w_cost, w_in, w_out))
        pack = _pack_d
        read_row = self._fields.row
        for i, v in enumerate(values):
            if not v:
                continue
            try:
                existing, resp_model, req_model, inp, out, total, cr, cw, rz = read_row(v)  # _FIELDS
                if existing is not None and not override:
                    if w_cost not in v:
                        n = genai.as_number(existing)
                        if n is not None:
                            put(tw, i, w_cost, float(n))
                            changed = True
                    continue
                model = resp_model or req_model
                if model is None:
                    continue
                if type(inp) is not int:
                    inp = as_int(inp)
                if type(out) is not int:
                    out = as_int(out)
                if inp is not None and inp < 0:
                    inp = None
                if out is not None and out < 0:
                    out = None
                if inp is None and out is not None and total is not None:
                    total = as_int(total)
                    inp = None if total is None else max(0, total - out)
                if inp is None and out is None:
                    continue
                model = str(model)
                found = lookup(model)
                if found is None and req_model is not None and str(req_model) != model:
                    found = lookup(str(req_model))
                if found is None:
                    if not append(tw, i, {w_unknown: _UNKNOWN_TRUE}, {w_unknown: True}):
                        put(tw, i, w_unknown, True)
                    changed = True
                    unknown[model] = unknown.get(model, 0) + 1
                    continue
                cr = 0 if cr is None else max(0, as_int(cr) or 0)
                cw = 0 if cw is None else max(0, as_int(cw) or 0)
                rz = 0 if rz is None else max(0, as_int(rz) or 0)
                changed = True
                if parts and not (cr or cw or rz):  # the common case, compute() inlined
                    price = found[0]
                    ci = (inp or 0) * price.input
                    co = (out or 0) * price.output
                    tot = ci + co
                    if append(tw, i, {w_cost: h_cost + pack(tot), w_in: h_in + pack(ci), w_out: h_out + pack(co)},
                              {w_cost: tot, w_in: ci, w_out: co}):
                        continue  # three new attributes, encoded here, without the upsert of each
                    put(tw, i, w_cost, ci + co)
                    put(tw, i, w_in, ci)
                    put(tw, i, w_out, co)
                    continue
                c = compute(found[0], inp or 0, out or 0, cr, cw, rz)
                put(tw, i, w_cost, c.total)
                if parts:
                    put(tw, i, w_in, c.input)
                    put(tw, i, w_out, c.output)
                    if cr:
                        put(tw, i, w_cr, c.cache_read)
                    if cw:
                        put(tw, i, w_cw, c.cache_write)
                    if rz:
                        put(tw, i, w_rz, c.reasoning)
            except Exception as exc:  # noqa: BLE001 - one bad span must not fail the batch
                self._rl.log(logging.WARNING, "span", "cost: span left unchanged: %r", exc)
        for model, n in unknown.items():
            self._count_unknown(model, n)
        if changed:
            batch.wire_changed()
        return batch


def _create(settings: CreateSettings, config: CostConfig) -> CostProcessor:
    return CostProcessor(settings, config)


FACTORIES = [
    Factory("cost", Kind.PROCESSOR, CostConfig, _create, frozenset({Signal.TRACES}),
            description="USD cost per LLM call from token counts (built-in, configured or LiteLLM price table)"),
]
