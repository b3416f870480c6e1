"""Processor `filter`: drops spans, metric data points and log records that match conditions.

``{spans|metrics|logs: {drop: [condition, ...]}}``; a condition is ``{attribute: key, <op>: value}``,
``{resource: key, <op>: value}`` or ``{field: <name>, <op>: value}`` with ``<op>`` one of ``equals``,
``matches`` (regex search), ``exists``, ``gt``, ``lt``; or ``{all: [...]}`` / ``{any: [...]}``. An item is
dropped when any condition of its signal matches. With ``drop_no_log: true`` (the default) spans and log
records marked not-to-be-logged (``llm.no_log``, LiteLLM's ``no-log``; names from collector/genai) are dropped
before any exporter sees them.

Conditions are compiled once, at config time (a bad regex is a config error with its path). Per request, the
attribute keys the conditions need are first looked for in the request's bytes; when none occurs, no
attribute of any item is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal
from collector.processorhelper import SimpleProcessor
from processors._presence import KeyFinder

__all__ = ["Condition", "FilterConfig", "FilterProcessor"]

_OPS = ("equals", "matches", "exists", "gt", "lt")
_SUBJECTS = ("attribute", "resource", "field")
_FIELDS = {
    "spans": ("name", "status", "kind"),
    "logs": ("body", "severity_text", "severity_number"),
    "metrics": ("name", "type"),
}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_KIND = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

Pred = Callable[[dict[str, Any], dict[str, Any], Any], bool]
"""A compiled condition: (item attributes, resource attributes, item) -> matches."""


class Condition(StrictModel):
    attribute: str | None = None
    resource: str | None = None
    field: Literal["name", "status", "kind", "body", "severity_text", "severity_number", "type"] | None = None
    equals: str | int | float | bool | None = None
    matches: str | None = None
    exists: bool | None = None
    gt: float | None = None
    lt: float | None = None
    all: list[Condition] | None = None
    any: list[Condition] | None = None
    _regex: re.Pattern[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Condition:
        given = self.model_fields_set
        subjects = [s for s in _SUBJECTS if s in given]
        groups = [g for g in ("all", "any") if g in given]
        ops = [o for o in _OPS if o in given]
        if groups:
            if subjects or ops or len(groups) > 1:
                raise ValueError("`all` / `any` stands alone: give either a list of conditions or one subject")
            if not getattr(self, groups[0]):
                raise ValueError(f"`{groups[0]}` needs at least one condition")
            return self
        if len(subjects) != 1:
            raise ValueError("a condition needs exactly one of attribute, resource, field (or all / any)")
        if len(ops) != 1:
            raise ValueError(f"a condition needs exactly one operator of {', '.join(_OPS)}")
        if ops[0] == "matches":
            try:
                self._regex = re.compile(self.matches or "")
            except re.error as e:
                raise ValueError(f"matches: invalid regex {self.matches!r}: {e}") from None
        if ops[0] == "exists" and self.exists is None:
            raise ValueError("exists must be true or false")
        return self

    def keys(self, kind: str) -> set[str]:
        """Attribute keys (kind 'attribute') or resource keys (kind 'resource') this condition reads."""
        out: set[str] = set()
        for sub in (self.all or []) + (self.any or []):
            out |= sub.keys(kind)
        v = getattr(self, kind, None) if kind in ("attribute", "resource") else None
        if v:
            out.add(v)
        return out


Condition.model_rebuild()


class SignalFilter(StrictModel):
    drop: list[Condition] = Field(default_factory=list)


class FilterConfig(StrictModel):
    drop_no_log: bool = True
    spans: SignalFilter | None = None
    metrics: SignalFilter | None = None
    logs: SignalFilter | None = None

    @model_validator(mode="after")
    def _fields(self) -> FilterConfig:
        for sig, allowed in _FIELDS.items():
            sf = getattr(self, sig)
            if sf is None:
                continue
            for i, c in enumerate(sf.drop):
                bad = _bad_fields(c, allowed)
                if bad:
                    raise ValueError(f"{sig}.drop.{i}: field {bad!r} does not apply to {sig} "
                                     f"(valid: {', '.join(allowed)})")
        return self


def _bad_fields(c: Condition, allowed: tuple[str, ...]) -> str | None:
    if c.field is not None and c.field not in allowed:
        return c.field
    for sub in (c.all or []) + (c.any or []):
        b = _bad_fields(sub, allowed)
        if b:
            return b
    return None


# --- compiling -------------------------------------------------------------------------------------------------
def _s(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_num = genai.as_number


def _field_getter(name: str, signal: str) -> Callable[[Any], Any]:
    if signal == "spans":
        if name == "name":
            return lambda s: s.name
        if name == "status":
            return lambda s: _STATUS.get(s.status.code, str(s.status.code))
        return lambda s: _KIND.get(s.kind, str(s.kind))
    if signal == "logs":
        if name == "body":
            return lambda r: genai.value_of(r.body)
        if name == "severity_text":
            return lambda r: r.severity_text
        return lambda r: r.severity_number
    # metrics: the item is (metric, data point)
    if name == "name":
        return lambda md: md[0].name
    return lambda md: md[0].WhichOneof("data")


def _normalise_enum(field: str | None, target: Any) -> Any:
    if field == "status" and isinstance(target, str):
        return target.lower().removeprefix("status_code_")
    if field == "kind" and isinstance(target, str):
        return target.lower().removeprefix("span_kind_")
    if field == "type" and isinstance(target, str):
        return target.lower()
    return target


def compile_condition(c: Condition, signal: str) -> Pred:
    if c.all is not None:
        subs = [compile_condition(x, signal) for x in c.all]
        return lambda a, r, it: all(p(a, r, it) for p in subs)
    if c.any is not None:
        subs = [compile_condition(x, signal) for x in c.any]
        return lambda a, r, it: any(p(a, r, it) for p in subs)
    get: Callable[[dict[str, Any], dict[str, Any], Any], Any]
    if c.attribute is not None:
        k = c.attribute
        get = lambda a, r, it: a.get(k)
    elif c.resource is not None:
        k = c.resource
        get = lambda a, r, it: r.get(k)
    else:
        assert c.field is not None
        fg = _field_getter(c.field, signal)
        get = lambda a, r, it: fg(it)
    given = c.model_fields_set
    if "equals" in given:
        target = _normalise_enum(c.field, c.equals)

        def eq(a: dict[str, Any], r: dict[str, Any], it: Any) -> bool:
            v = get(a, r, it)
            if v is None:
                return target is None
            if type(v) is type(target) or (isinstance(v, (int, float)) and isinstance(target, (int, float))
                                            and not isinstance(v, bool) and not isinstance(target, bool)):
                return bool(v == target)
            return _s(v) == _s(target)
        return eq
    if "matches" in given:
        rx = c._regex
        assert rx is not None
        return lambda a, r, it: (v := get(a, r, it)) is not None and rx.search(_s(v)) is not None
    if "exists" in given:
        want = bool(c.exists)
        return lambda a, r, it: (get(a, r, it) is not None) is want
    if "gt" in given:
        g = float(c.gt)  # type: ignore[arg-type]
        return lambda a, r, it: (n := _num(get(a, r, it))) is not None and n > g
    lt = float(c.lt)  # type: ignore[arg-type]
    return lambda a, r, it: (n := _num(get(a, r, it))) is not None and n < lt


class _Compiled:
    def __init__(self, conds: list[Condition], signal: str, no_log: bool) -> None:
        self.preds = [compile_condition(c, signal) for c in conds]
        self.attr_keys: frozenset[str] = frozenset().union(*(c.keys("attribute") for c in conds))
        self.res_keys: frozenset[str] = frozenset().union(*(c.keys("resource") for c in conds))
        self.no_log_keys: tuple[str, ...] = genai.KEYS["no_log"] if no_log else ()
        self.attr_keys |= frozenset(self.no_log_keys)
        self.finder = KeyFinder(self.attr_keys)
        self.active = bool(self.preds or self.no_log_keys)


def _attrs(kvs: Any, keys: frozenset[str]) -> dict[str, Any]:
    if not keys:
        return {}
    return {kv.key: genai.value_of(kv.value) for kv in kvs if kv.key in keys}


class FilterProcessor(SimpleProcessor):
    config: FilterConfig
    mutates = False  # marks the batch modified itself, only when it dropped something

    def __init__(self, settings: CreateSettings, config: FilterConfig) -> None:
        super().__init__(settings, config)
        self._c = {
            Signal.TRACES: _Compiled(config.spans.drop if config.spans else [], "spans", config.drop_no_log),
            Signal.LOGS: _Compiled(config.logs.drop if config.logs else [], "logs", config.drop_no_log),
            Signal.METRICS: _Compiled(config.metrics.drop if config.metrics else [], "metrics", False),
        }
        keys = set(self._c[Signal.TRACES].attr_keys | self._c[Signal.LOGS].attr_keys)
        self._indexed = all(genai.is_indexed(k) for k in keys)

    def _present(self, batch: Batch, keys: frozenset[str]) -> frozenset[str]:
        if not keys:
            return keys
        raw = batch.to_bytes()
        return frozenset(k for k in keys if k.encode() in raw)

    def process(self, batch: Batch) -> Batch | None:
        c = self._c[batch.signal]
        if not c.active:
            return batch
        if batch.signal is Signal.METRICS:
            if self._metrics(batch.request, c, self._present(batch, c.attr_keys), self._present(batch, c.res_keys)):
                batch.modified()
            return batch
        # Which items can have the keys the conditions read: from collector/genai's shared per-request index
        # when the request was changed upstream (earlier processors built the index), otherwise from the
        # request's bytes (a search, then only the items that contain a key are read).
        getter = self._shared_getter(batch) if self._indexed and not batch.has_bytes else None
        shared = getter is not None
        hits: set[tuple[int, int]] | None = None
        akeys = c.attr_keys
        if not shared and akeys:
            hits = c.finder.items(batch.to_bytes())
            if not hits:
                akeys = frozenset()
        rkeys = self._present(batch, c.res_keys) if not shared else c.res_keys
        if not c.preds and not akeys:
            return batch
        no_log = tuple(k for k in c.no_log_keys if k in akeys)
        req = batch.request
        if batch.signal is Signal.TRACES:
            changed = self._items(req.resource_spans, "scope_spans", "spans", c, akeys, rkeys, no_log, hits,
                                  getter)
        else:
            changed = self._items(req.resource_logs, "scope_logs", "log_records", c, akeys, rkeys, no_log,
                                  hits, getter)
        if changed:
            batch.modified()
        return batch

    @staticmethod
    def _shared_getter(batch: Batch) -> Callable[[Any, frozenset[str]], dict[str, Any]]:
        """``(item, keys) -> {key: value}`` from collector/genai's shared per-request pass: ``span_values``
        (Python values per span) for traces, ``indexes`` (KeyValues per item) for logs."""
        if batch.signal is Signal.TRACES:
            values = genai.span_values(batch)

            def from_values(it: Any, keys: frozenset[str]) -> dict[str, Any]:
                v = values(it)
                return {k: v[k] for k in keys if k in v}
            return from_values
        req = batch.request

        def from_index(it: Any, keys: frozenset[str]) -> dict[str, Any]:
            own = genai.indexes(req, it)[0]
            return {k: genai.value_of(own[k].value) for k in keys if k in own}
        return from_index

    def _items(self, resources: Any, scopes_f: str, items_f: str, c: _Compiled, akeys: frozenset[str],
               rkeys: frozenset[str], no_log: tuple[str, ...], hits: set[tuple[int, int]] | None,
               getter: Callable[[Any, frozenset[str]], dict[str, Any]] | None) -> bool:
        preds = c.preds
        changed = False
        empty: dict[str, Any] = {}
        ordinal = sum(len(getattr(r, scopes_f)) for r in resources)
        for ri in range(len(resources) - 1, -1, -1):
            res = resources[ri]
            rattrs = _attrs(res.resource.attributes, rkeys)
            scopes = getattr(res, scopes_f)
            for si in range(len(scopes) - 1, -1, -1):
                ordinal -= 1
                items = getattr(scopes[si], items_f)
                dead = []
                for i, it in enumerate(items):
                    if getter is not None:
                        a = getter(it, akeys)
                    elif hits and (ordinal, i) in hits:
                        a = _attrs(it.attributes, akeys)
                    else:
                        a = empty
                    if no_log and a and any(genai.as_bool(a.get(k)) for k in no_log):
                        dead.append(i)
                        continue
                    for p in preds:
                        if p(a, rattrs, it):
                            dead.append(i)
                            break
                if dead:
                    changed = True
                    if len(dead) == len(items):
                        del items[:]
                    else:
                        for i in reversed(dead):
                            del items[i]
                if not items:
                    del scopes[si]
            if not scopes:
                del resources[ri]
        return changed

    def _metrics(self, req: Any, c: _Compiled, akeys: frozenset[str], rkeys: frozenset[str]) -> bool:
        preds = c.preds
        changed = False
        rms = req.resource_metrics
        for ri in range(len(rms) - 1, -1, -1):
            rm = rms[ri]
            rattrs = _attrs(rm.resource.attributes, rkeys)
            for si in range(len(rm.scope_metrics) - 1, -1, -1):
                metrics = rm.scope_metrics[si].metrics
                for mi in range(len(metrics) - 1, -1, -1):
                    m = metrics[mi]
                    kind = m.WhichOneof("data")
                    if kind is None:
                        continue
                    dps = getattr(m, kind).data_points
                    for di in range(len(dps) - 1, -1, -1):
                        a = _attrs(dps[di].attributes, akeys)
                        if any(p(a, rattrs, (m, dps[di])) for p in preds):
                            del dps[di]
                            changed = True
                    if not dps:
                        del metrics[mi]
                if not metrics:
                    del rm.scope_metrics[si]
            if not rm.scope_metrics:
                del rms[ri]
        return changed


FACTORIES = [
    Factory("filter", Kind.PROCESSOR, FilterConfig, FilterProcessor,
            description="drops spans, data points and log records by conditions; drops llm.no_log spans"),
]
