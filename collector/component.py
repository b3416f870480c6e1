"""The component model: kinds, ids, factories and the registry.

Every component module (``receivers/*``, ``processors/*``, ``exporters/*``, ``collector/extensions/*``)
declares one or more :class:`Factory` objects at module level in a list named ``FACTORIES``. The registry finds
them by importing every module of those packages, so adding a component never means editing a central list.
Vendor SDKs are imported lazily inside ``start()`` or ``send()`` so that the registry stays cheap to load.

Lifecycle (habit 1 of STYLE.md): ``async start()`` and ``async shutdown()``; shutdown is safe before start
and safe twice. Consumers have one ``async consume(batch)``.
"""

from __future__ import annotations

import builtins
import enum
import importlib
import logging
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from collector.pdata import Batch, Signal

__all__ = [
    "Component",
    "ComponentID",
    "Consumer",
    "CreateSettings",
    "Factory",
    "Kind",
    "Registry",
    "registry",
]

log = logging.getLogger(__name__)


class Kind(str, enum.Enum):
    RECEIVER = "receivers"
    PROCESSOR = "processors"
    EXPORTER = "exporters"
    CONNECTOR = "connectors"
    EXTENSION = "extensions"

    @property
    def singular(self) -> str:
        return self.value[:-1]


@dataclass(frozen=True, order=True)
class ComponentID:
    """``type`` or ``type/name``, e.g. ``otlp`` or ``datadog/eu``."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        text = str(text).strip()
        typ, _, name = text.partition("/")
        if not typ:
            raise ValueError(f"invalid component id {text!r}: empty type")
        if "/" in text and not name:
            raise ValueError(f"invalid component id {text!r}: empty name after '/'")
        return cls(typ, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@runtime_checkable
class Component(Protocol):
    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    async def consume(self, batch: Batch) -> None: ...


@dataclass
class CreateSettings:
    """What a factory gets besides its config.

    ``signals`` the signals an exporter serves, ``next`` the consumer to forward to (processors), ``consumers`` the per-signal consumers
    (receivers, connectors), ``pipelines`` the per-pipeline entry consumers of a connector's outputs
    (for routing), ``host`` gives access to extensions (e.g. ``host.extension("file_storage")``).
    """

    id: ComponentID
    kind: Kind
    signal: Signal | None = None
    pipeline: str | None = None
    signals: frozenset[Signal] = frozenset()
    next: Consumer | None = None
    consumers: Mapping[Signal, Consumer] = field(default_factory=dict)
    pipelines: Mapping[str, Consumer] = field(default_factory=dict)
    host: Any = None

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"llm_collector.{self.kind.singular}.{self.id}")


@dataclass(frozen=True)
class Factory:
    """How to build one component type.

    ``signals``: the signals it takes (for connectors, the input signals); ``out_signals``: for connectors,
    what it emits. ``create(settings, config)`` returns the component.
    """

    type: str
    kind: Kind
    config_model: builtins.type[BaseModel]  # ``type`` is the field above
    create: Callable[[CreateSettings, Any], Any]
    signals: frozenset[Signal] = frozenset(Signal)
    out_signals: frozenset[Signal] = frozenset()
    stability: str = "beta"
    description: str = ""
    example: Mapping[str, Any] | None = None
    """A minimal valid config for types whose default config is not valid (required keys); used by the
    conformance test over the registry and by the docs."""

    def default_config(self) -> BaseModel:
        return self.config_model()


_PACKAGES: dict[Kind, tuple[str, ...]] = {
    Kind.RECEIVER: ("receivers",),
    Kind.PROCESSOR: ("processors",),
    Kind.EXPORTER: ("exporters",),
    Kind.CONNECTOR: ("processors", "exporters", "receivers"),
    Kind.EXTENSION: ("collector.extensions",),
}


class Registry:
    """Factories by kind and type name, discovered from the component packages on first use."""

    def __init__(self) -> None:
        self._factories: dict[Kind, dict[str, Factory]] | None = None

    def _load(self) -> dict[Kind, dict[str, Factory]]:
        if self._factories is not None:
            return self._factories
        found: dict[Kind, dict[str, Factory]] = {k: {} for k in Kind}
        packages = sorted({p for pkgs in _PACKAGES.values() for p in pkgs})
        for pkg_name in packages:
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.iter_modules(pkg.__path__):
                if info.name.startswith("_"):
                    continue
                mod = importlib.import_module(f"{pkg_name}.{info.name}")
                for f in getattr(mod, "FACTORIES", ()):
                    if f.type in found[f.kind]:
                        raise RuntimeError(f"duplicate {f.kind.singular} type {f.type!r} in {mod.__name__}")
                    found[f.kind][f.type] = f
        self._factories = found
        return found

    def register(self, factory: Factory) -> None:
        """Add a factory by hand (tests, plugins)."""
        self._load()[factory.kind][factory.type] = factory

    def get(self, kind: Kind, type_name: str) -> Factory | None:
        return self._load()[kind].get(type_name)

    def types(self, kind: Kind) -> list[str]:
        return sorted(self._load()[kind])

    def all(self) -> dict[Kind, dict[str, Factory]]:
        return self._load()


registry = Registry()
