"""Processor `enrich`: who made the call and where the collector runs.

Derives ``tenant.id``, ``feature``, ``team`` and ``user.id`` on every span (and log record) from a configured
fallback order of sources: client metadata (``context:x-tenant-id``), span attributes (``attribute:<key>``),
resource attributes (``resource:<key>``) or every name :mod:`collector.genai` knows for the field
(``genai``: e.g. ``tenant_id``, LiteLLM's ``metadata.user_api_key_team_id``). Adds ``host.name`` and the
Kubernetes identity from the downward-API variables ``K8S_POD_NAME``, ``K8S_NAMESPACE_NAME`` and
``K8S_NODE_NAME`` to resource attributes.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import Field, field_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import StrictModel
from collector.pdata import Batch, Signal, anyvalue_to_python, attrs_to_dict
from collector.processorhelper import SimpleProcessor
from processors.attributes import context_value

__all__ = ["EnrichConfig", "EnrichProcessor", "FieldRule"]

_PREFIXES = ("context:", "attribute:", "resource:")


class FieldRule(StrictModel):
    sources: list[str]
    default: str | None = None
    override: bool = False

    @field_validator("sources")
    @classmethod
    def _check(cls, v: list[str]) -> list[str]:
        for s in v:
            if s != "genai" and not (s.startswith(_PREFIXES) and s.split(":", 1)[1]):
                raise ValueError(f"invalid source {s!r} (use context:<header>, attribute:<key>, "
                                 "resource:<key> or genai)")
        return v


def _rule(*sources: str) -> Any:
    return lambda: FieldRule(sources=list(sources))


class EnrichConfig(StrictModel):
    tenant: FieldRule | None = Field(default_factory=_rule("context:x-tenant-id", "genai", "resource:tenant.id"))
    feature: FieldRule | None = Field(default_factory=_rule("context:x-feature", "genai", "resource:feature"))
    team: FieldRule | None = Field(default_factory=_rule("context:x-team", "genai", "resource:team"))
    user: FieldRule | None = Field(default_factory=_rule("context:x-user-id", "genai"))
    host_name: bool = True
    k8s: bool = True


_TARGET = {"tenant": genai.WRITE["tenant"], "feature": genai.WRITE["feature"], "team": genai.WRITE["team"],
           "user": genai.WRITE["user"]}
_K8S = (("k8s.pod.name", "K8S_POD_NAME"), ("k8s.namespace.name", "K8S_NAMESPACE_NAME"),
        ("k8s.node.name", "K8S_NODE_NAME"))


def _lookup(attrs: Any, values: dict[str, Any] | None, key: str) -> Any:
    """A value by key: from the genai values dict when the key is indexed, else by a walk."""
    if values is not None and genai.is_indexed(key):
        v = values.get(key)
        return None if v is None or v == "" else v
    else:
        kv = None
        for x in attrs:
            if x.key == key:
                kv = x
                break
    if kv is None:
        return None
    v = anyvalue_to_python(kv.value)
    return None if v is None or v == "" else v


class EnrichProcessor(SimpleProcessor):
    def __init__(self, settings: CreateSettings, config: EnrichConfig) -> None:
        super().__init__(settings, config)
        self.rules = [(f, r) for f in ("tenant", "feature", "team", "user")
                      if (r := getattr(config, f)) is not None]
        res: list[tuple[str, str]] = []
        if config.host_name:
            res.append(("host.name", os.environ.get("HOSTNAME") or socket.gethostname()))
        if config.k8s:
            for key, env in _K8S:
                v = os.environ.get(env)
                if v:
                    res.append((key, v))
        self.resource_attrs = res
        self.steps = [(f, _TARGET[f], self._compile(f, r), r.default, r.override) for f, r in self.rules]
        genai.want(*(key for _f, target, st, _d, _o in self.steps for key in [target] + [k for w, k in st if w == 0]))

    @staticmethod
    def _compile(field: str, rule: FieldRule) -> list[tuple[int, str]]:
        """Sources as (where, key): 0 span attributes (values from collector/genai), 1 resource attributes,
        2 client metadata."""
        out: list[tuple[int, str]] = []
        for s in rule.sources:
            if s == "genai":
                out += [(0, n) for n in genai.KEYS[field]]
                out += [(1, n) for n in genai.KEYS[field]]
                continue
            kind, _, name = s.partition(":")
            if kind == "context":
                out.append((2, name.removeprefix("metadata.")))
            elif kind == "attribute":
                out.append((0, name))  # span attributes: values from collector/genai (keys wanted at start)
            else:
                out.append((1, name))
        return out

    def _resolve(self, field: str, rule: FieldRule, md: Any, own: dict[str, Any], res: dict[str, Any],
                 attrs: Any, rattrs: Any) -> Any:
        for s in rule.sources:
            if s == "genai":
                v = genai.vfield(own, field)
                if v is None and res:
                    v = genai.vfield(res, field)
            else:
                kind, _, name = s.partition(":")
                if kind == "context":
                    v = context_value(md, name)
                elif kind == "attribute":
                    v = _lookup(attrs, own, name)
                else:
                    v = _lookup(rattrs, res, name)
            if v is not None and v != "":
                return v
        return rule.default

    def _resource(self, resource: Any) -> bool:
        """Add host / k8s identity the resource does not have yet; True if something was added."""
        if not self.resource_attrs:
            return False
        present = {kv.key for kv in resource.attributes}
        added = False
        for key, val in self.resource_attrs:
            if key in present:
                continue
            kv = resource.attributes.add()
            kv.key = key
            kv.value.string_value = val
            added = True
        return added

    def process(self, batch: Batch) -> Batch | None:
        md = batch.metadata
        if batch.signal is Signal.TRACES:
            # on the serialised request (collector/wire.py): no parse, no serialise
            tw = batch.wire()
            values = genai.wire_values(tw)
            ctx = self._context(md)
            put = genai.wire_put
            changed = False
            present: set[str] = set().union(*values) if values else set()
            for r, (_others, scopes) in enumerate(tw.resources):
                resource = tw.resource(r)
                if self._resource(resource):
                    tw.set_resource(r, resource.SerializeToString())
                    changed = True
                plan = self._plan((None, attrs_to_dict(resource.attributes), ctx), present)
                if not plan:
                    continue
                for _sc, first, n in scopes:
                    for i in range(first, first + n):
                        own = values[i]
                        for target, live, const, override in plan:
                            if not override and target in own:
                                continue
                            for key in live:
                                v = own.get(key)
                                if v is not None and v != "":
                                    break
                            else:
                                v = const
                            if v is not None and v != "":
                                put(tw, i, target, str(v))
                                changed = True
            if changed:
                batch.wire_changed()
            return batch
        req = batch.request
        if batch.signal is Signal.LOGS:
            for rl in req.resource_logs:
                self._resource(rl.resource)
                rres = genai.values_from_index(genai.index(rl.resource.attributes))
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        own = genai.values_from_index(genai.index(rec.attributes))
                        self._apply(own, rres, md, rec.attributes, rl.resource.attributes)
        else:
            for rm in req.resource_metrics:
                self._resource(rm.resource)
        return batch

    def _plan(self, srcs: tuple[None, dict[str, Any], dict[str, str]],
              present: set[str]) -> list[tuple[str, tuple[str, ...], Any, bool]]:
        """Per rule, for the spans of one resource: (target, the span attributes to try in order, the value
        when none of them is there, override). The request-wide constants (client metadata, resource) are
        looked up once; span attributes that no span of the request has are left out; a rule that can give
        no value is left out."""
        plan = []
        for _f, target, st, default, override in self.steps:
            live: list[str] = []
            const: Any = default
            for where, key in st:
                if where == 0:
                    if key in present:
                        live.append(key)
                    continue
                v = srcs[where].get(key)  # type: ignore[union-attr]
                if v is not None and v != "":
                    const = v
                    break
            if live or (const is not None and const != ""):
                plan.append((target, tuple(live), const, override))
        return plan

    def _context(self, md: Any) -> dict[str, str]:
        """The client metadata values the rules ask for (case-insensitive header names)."""
        out: dict[str, str] = {}
        for _f, _t, st, _d, _o in self.steps:
            for where, key in st:
                if where == 2 and key not in out:
                    v = context_value(md, key)
                    if v:
                        out[key] = v
        return out

    def _fixed(self, md: Any) -> dict[str, str]:
        """Fields whose first source is client metadata that this batch has: the same for all its spans."""
        out: dict[str, str] = {}
        for field, rule in self.rules:
            first = rule.sources[0]
            if first.startswith("context:"):
                v = context_value(md, first[len("context:"):])
                if v:
                    out[field] = v
        return out

    def _apply(self, own: dict[str, Any], res: dict[str, Any], md: Any, attrs: Any, rattrs: Any,
               fixed: dict[str, str] | None = None, req: Any = None, span: Any = None) -> None:
        for field, rule in self.rules:
            target = _TARGET[field]
            if not rule.override and target in own:
                continue
            v = fixed.get(field) if fixed else None
            if v is None:
                v = self._resolve(field, rule, md, own, res, attrs, rattrs)
            if v is None:
                continue
            genai.put(attrs, own, target, str(v), req, span)


def _create(settings: CreateSettings, config: EnrichConfig) -> EnrichProcessor:
    return EnrichProcessor(settings, config)


FACTORIES = [
    Factory("enrich", Kind.PROCESSOR, EnrichConfig, _create,
            description="tenant / feature / team / user from metadata, attributes or resource; host and k8s identity"),
]
