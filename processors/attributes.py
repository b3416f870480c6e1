"""Processors `attributes` and `resource`: the Collector's attribute actions.

``actions: [{key, action, value | from_attribute | from_context, pattern, converted_type}]`` with ``action``
one of insert, update, upsert, delete, hash, extract, convert, applied in order. ``attributes`` works on span
attributes, log record attributes and metric data point attributes; ``resource`` on resource attributes.
``from_context: metadata.x-tenant-id`` (or just ``x-tenant-id``) reads the client's metadata (request headers
kept by a receiver with ``include_metadata``). ``hash`` is SHA-256 (the Collector's current choice).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import Field, model_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal, anyvalue_to_python, python_to_anyvalue
from collector.processorhelper import SimpleProcessor

__all__ = ["Action", "AttributesConfig", "AttributesProcessor", "ResourceProcessor", "apply_actions"]


class Action(StrictModel):
    key: str | None = None
    action: Literal["insert", "update", "upsert", "delete", "hash", "extract", "convert"]
    value: Any = None
    from_attribute: str | None = None
    from_context: str | None = None
    pattern: str | None = None
    converted_type: Literal["int", "double", "string", "bool"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Action:
        a = self.action
        if a in ("insert", "update", "upsert"):
            n = sum(x is not None for x in (self.value, self.from_attribute, self.from_context))
            if n != 1:
                raise ValueError(f"action {a} needs exactly one of value, from_attribute, from_context")
        if a in ("delete", "hash") and self.key is None and self.pattern is None:
            raise ValueError(f"action {a} needs key or pattern")
        if a != "extract" and a not in ("delete", "hash") and self.key is None:
            raise ValueError(f"action {a} needs key")
        if a == "extract" and (self.key is None or self.pattern is None):
            raise ValueError("action extract needs key and pattern (with named groups)")
        if a == "convert" and self.converted_type is None:
            raise ValueError("action convert needs converted_type")
        if self.pattern is not None:
            try:
                rx = re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"invalid pattern {self.pattern!r}: {e}") from e
            if a == "extract" and not rx.groupindex:
                raise ValueError("extract pattern needs at least one named group")
        return self


class AttributesConfig(StrictModel):
    actions: list[Action] = Field(default_factory=list)


def context_value(metadata: Any, name: str) -> str | None:
    """A client metadata value: ``metadata.x-tenant-id``, ``x-tenant-id`` (case-insensitive)."""
    key = name.removeprefix("metadata.")
    if not metadata:
        return None
    v = metadata.get(key)
    if v is None:
        low = key.lower()
        for k, x in metadata.items():
            if k.lower() == low:
                v = x
                break
    if isinstance(v, (list, tuple)):
        v = ",".join(str(x) for x in v)
    return None if v is None else str(v)


def _find(attrs: Any, key: str) -> Any:
    for kv in attrs:
        if kv.key == key:
            return kv
    return None


def _convert(v: Any, typ: str) -> Any:
    try:
        if typ == "int":
            return int(float(v)) if isinstance(v, str) else int(v)
        if typ == "double":
            return float(v)
        if typ == "bool":
            if isinstance(v, str):
                return v.strip().lower() in ("true", "1", "yes")
            return bool(v)
        return v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    except (TypeError, ValueError):
        return None


class _Compiled:
    def __init__(self, a: Action) -> None:
        self.a = a
        self.rx = re.compile(a.pattern) if a.pattern else None


def apply_actions(attrs: Any, actions: list[_Compiled], metadata: Any) -> bool:
    """Apply the actions to one repeated KeyValue field; True if anything changed."""
    changed = False
    for c in actions:
        a = c.a
        act = a.action
        if act in ("insert", "update", "upsert"):
            assert a.key is not None
            kv = _find(attrs, a.key)
            if (act == "insert" and kv is not None) or (act == "update" and kv is None):
                continue
            if a.from_attribute is not None:
                src = _find(attrs, a.from_attribute)
                if src is None:
                    continue
                val: Any = anyvalue_to_python(src.value)
            elif a.from_context is not None:
                val = context_value(metadata, a.from_context)
                if val is None:
                    continue
            else:
                val = a.value
            if kv is None:
                kv = attrs.add()
                kv.key = a.key
            python_to_anyvalue(val, kv.value)
            changed = True
        elif act == "delete":
            for i in range(len(attrs) - 1, -1, -1):
                k = attrs[i].key
                if (a.key is not None and k == a.key) or (c.rx is not None and c.rx.search(k)):
                    del attrs[i]
                    changed = True
        elif act == "hash":
            for kv in attrs:
                k = kv.key
                if (a.key is not None and k == a.key) or (c.rx is not None and c.rx.search(k)):
                    v = anyvalue_to_python(kv.value)
                    if v is None:
                        continue
                    kv.value.string_value = hashlib.sha256(str(v).encode()).hexdigest()
                    changed = True
        elif act == "extract":
            assert a.key is not None and c.rx is not None
            kv = _find(attrs, a.key)
            if kv is None or kv.value.WhichOneof("value") != "string_value":
                continue
            m = c.rx.search(kv.value.string_value)
            if m is None:
                continue
            for name, val in m.groupdict().items():
                if val is not None:
                    genai.set_value(attrs, None, name, val)
                    changed = True
        elif act == "convert":
            assert a.key is not None and a.converted_type is not None
            kv = _find(attrs, a.key)
            if kv is None:
                continue
            nv = _convert(anyvalue_to_python(kv.value), a.converted_type)
            if nv is not None:
                python_to_anyvalue(nv, kv.value)
                changed = True
    return changed


class AttributesProcessor(SimpleProcessor):
    def __init__(self, settings: CreateSettings, config: AttributesConfig) -> None:
        super().__init__(settings, config)
        self.actions = [_Compiled(a) for a in config.actions]

    def process(self, batch: Batch) -> Batch | None:
        if not self.actions:
            return batch
        req = batch.request
        md = batch.metadata
        changed = False
        if batch.signal is Signal.TRACES:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        changed |= apply_actions(span.attributes, self.actions, md)
        elif batch.signal is Signal.LOGS:
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        changed |= apply_actions(rec.attributes, self.actions, md)
        else:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is not None:
                            for dp in getattr(m, kind).data_points:
                                changed |= apply_actions(dp.attributes, self.actions, md)
        if changed:
            genai.forget(req)
        return batch


class ResourceProcessor(AttributesProcessor):
    def process(self, batch: Batch) -> Batch | None:
        if not self.actions:
            return batch
        req = batch.request
        field = {Signal.TRACES: "resource_spans", Signal.LOGS: "resource_logs",
                 Signal.METRICS: "resource_metrics"}[batch.signal]
        changed = False
        for r in getattr(req, field):
            changed |= apply_actions(r.resource.attributes, self.actions, batch.metadata)
        if changed:
            genai.forget(req)
        return batch


def _attrs(settings: CreateSettings, config: AttributesConfig) -> AttributesProcessor:
    return AttributesProcessor(settings, config)


def _resource(settings: CreateSettings, config: AttributesConfig) -> ResourceProcessor:
    return ResourceProcessor(settings, config)


FACTORIES = [
    Factory("attributes", Kind.PROCESSOR, AttributesConfig, _attrs,
            description="insert / update / upsert / delete / hash / extract / convert span, log and point attributes"),
    Factory("resource", Kind.PROCESSOR, AttributesConfig, _resource,
            description="the same actions on resource attributes"),
]
