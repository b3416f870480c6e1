"""The unit of data: one OTLP export request (protobuf, upb backend) plus a small context.

A :class:`Batch` keeps the bytes it was received as; as long as no processor changed it, exporters and the
persistent queue reuse those bytes, so a pass-through costs one parse and no serialise. A processor that
changes the request in place calls :meth:`Batch.modified` (the processor helper does it for you).
"""

from __future__ import annotations

import base64
import enum
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, Union

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
    "Batch",
    "Request",
    "Signal",
    "anyvalue_to_python",
    "attrs_to_dict",
    "count_items",
    "from_otlp_json",
    "get_attr",
    "iter_log_records",
    "iter_spans",
    "python_to_anyvalue",
    "set_attr",
    "to_otlp_json",
]

Request = Union[ExportTraceServiceRequest, ExportMetricsServiceRequest, ExportLogsServiceRequest]


class Signal(str, enum.Enum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def item_name(self) -> str:
        """The Collector's name for one item of this signal, as used in metric names."""
        return {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}[self.value]


REQUEST_TYPES: dict[Signal, Any] = {  # message classes
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}
RESPONSE_TYPES: dict[Signal, Any] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}


def count_items(signal: Signal, request: Any) -> int:
    """Spans, metric data points or log records in a request (Python work per scope, not per item)."""
    n = 0
    if signal is Signal.TRACES:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                n += len(ss.spans)
    elif signal is Signal.LOGS:
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                n += len(sl.log_records)
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is not None:
                        n += len(getattr(m, kind).data_points)
    return n


class Batch:
    """One OTLP export request and its context (signal, client metadata, receive time)."""

    __slots__ = ("_count", "_raw", "_request", "_wire", "metadata", "received_ns", "signal")

    def __init__(
        self,
        signal: Signal,
        request: Any | None = None,
        *,
        raw: bytes | None = None,
        metadata: Mapping[str, str] | None = None,
        received_ns: int | None = None,
    ) -> None:
        if request is None and raw is None:
            request = REQUEST_TYPES[signal]()
        self.signal = signal
        self._request = request
        self._raw = raw
        self._count: int | None = None
        self._wire: Any = None
        self.metadata: Mapping[str, str] = metadata or {}
        self.received_ns = received_ns if received_ns is not None else time.time_ns()

    @classmethod
    def from_bytes(cls, signal: Signal, raw: bytes, **kw: Any) -> Batch:
        """Parse (and so validate) serialised bytes; raises ``google.protobuf.message.DecodeError``."""
        req = REQUEST_TYPES[signal]()
        req.ParseFromString(raw)
        return cls(signal, req, raw=bytes(raw), **kw)

    @property
    def request(self) -> Any:
        if self._request is None:
            req = REQUEST_TYPES[self.signal]()
            req.ParseFromString(self.to_bytes())
            self._request = req
        return self._request

    def to_bytes(self) -> bytes:
        """Serialised form; the received bytes when nothing changed the request since."""
        if self._raw is None:
            w = self._wire
            if w is not None:
                w = self._wire = w.rendered()
                self._raw = w.data
            else:
                assert self._request is not None  # a batch always has its bytes, its request or its wire
                self._raw = self._request.SerializeToString()
        return self._raw

    @property
    def has_bytes(self) -> bool:
        """True when the serialised form is at hand (nothing changed the request since it was received or
        last serialised), so :meth:`to_bytes` costs nothing."""
        return self._raw is not None

    def modified(self) -> None:
        """Call after changing the request in place: drops the cached bytes and item count."""
        if self._request is None:  # not parsed, so not changed (changes through wire() are in the wire)
            return
        self._raw = None
        self._count = None
        self._wire = None

    def wire(self) -> Any:
        """The :class:`collector.wire.TraceWire` of this trace batch, for reading and editing spans in the
        serialised form (no parse, no serialise). After edits through it, call :meth:`wire_changed`."""
        if self.signal is not Signal.TRACES:
            raise TypeError(f"wire() is for trace batches, not {self.signal.value}")
        w = self._wire
        if w is None or (self._raw is not None and w.data is not self._raw):
            from collector.wire import TraceWire

            w = self._wire = TraceWire(self.to_bytes())
            # the parse of these bytes, if at hand, serves as the wire's lean view (trace ids, status, times)
            w._lean = self._request
        return w

    def wire_changed(self) -> None:
        """Call after editing through :meth:`wire`: the parsed request and the bytes are stale now."""
        self._raw = None
        self._request = None
        self._count = None

    def item_count(self) -> int:
        if self._count is None:
            w = None
            if self._request is None and self.signal is Signal.TRACES:  # a layout costs less than a parse
                try:
                    w = self.wire()
                except ValueError:  # not laid out: the parse says what is wrong
                    w = None
            if w is not None:
                self._count = w.span_count()
            else:
                self._count = count_items(self.signal, self.request)
        return self._count

    def copy(self) -> Batch:
        """An independent copy, for fan-out to several pipelines that may each change it."""
        raw = self.to_bytes()
        return Batch(self.signal, None, raw=raw, metadata=self.metadata, received_ns=self.received_ns)

    def release_request(self) -> None:
        """Drop the parsed request, keeping the bytes and the item count, when the bytes are current.

        For holders of read-only batches (an exporter's in-memory queue, after the fan-out): a 1 MB request
        takes ~1.7 MB more parsed. The request is parsed again on first use. Never call it while a processor
        may still hold references into the parsed request."""
        if self._wire is not None:
            self._wire._lean = None  # the parse it may keep as its lean view
        if self._raw is not None and self._request is not None:
            self.item_count()
            self._request = None

    def __repr__(self) -> str:
        return f"Batch({self.signal.value}, items={self.item_count()})"


# --- OTLP/JSON -------------------------------------------------------------------------------------------
# The OTLP/JSON mapping differs from proto3's canonical JSON in one way that matters: trace and span ids
# are hex strings, not base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _ids(obj: Any, conv: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str):
                obj[k] = conv(v)
            else:
                _ids(v, conv)
    elif isinstance(obj, list):
        for v in obj:
            _ids(v, conv)


def _hex_to_b64(v: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(v)).decode()
    except ValueError as e:
        raise json_format.ParseError(f"invalid hex id {v!r}") from e


def _b64_to_hex(v: str) -> str:
    return base64.b64decode(v).hex()


def from_otlp_json(signal: Signal, data: bytes | str) -> Any:
    """Parse an OTLP/JSON request; raises ``ValueError`` (incl. ``ParseError``) on bad input."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("OTLP/JSON request must be an object")
    _ids(obj, _hex_to_b64)
    req = REQUEST_TYPES[signal]()
    json_format.ParseDict(obj, req, ignore_unknown_fields=True)
    return req


def to_otlp_json_obj(request: Any) -> dict[str, Any]:
    obj: dict[str, Any] = json_format.MessageToDict(request, use_integers_for_enums=True)
    _ids(obj, _b64_to_hex)
    return obj


def to_otlp_json(request: Any) -> str:
    """One request as compact OTLP/JSON (one line)."""
    return json.dumps(to_otlp_json_obj(request), separators=(",", ":"))


# --- attribute helpers --------------------------------------------------------------------------------------


def iter_spans(request: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(resource_spans, scope_spans, span) for every span of a trace request."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, ss, span


def iter_log_records(request: Any) -> Iterator[tuple[Any, Any, Any]]:
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                yield rl, sl, rec


def anyvalue_to_python(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [anyvalue_to_python(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: anyvalue_to_python(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def python_to_anyvalue(value: Any, out: AnyValue | None = None) -> AnyValue:
    av = out if out is not None else AnyValue()
    if isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, int):
        av.int_value = value
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, str):
        av.string_value = value
    elif isinstance(value, bytes):
        av.bytes_value = value
    elif isinstance(value, (list, tuple)):
        arr = av.array_value
        del arr.values[:]
        for x in value:
            python_to_anyvalue(x, arr.values.add())
    elif isinstance(value, dict):
        kvl = av.kvlist_value
        del kvl.values[:]
        for k, x in value.items():
            kv = kvl.values.add()
            kv.key = str(k)
            python_to_anyvalue(x, kv.value)
    elif value is None:
        av.Clear()
    else:
        av.string_value = str(value)
    return av


def get_attr(attributes: Any, key: str) -> Any:
    """The Python value of one attribute of a repeated KeyValue field, or None."""
    for kv in attributes:
        if kv.key == key:
            return anyvalue_to_python(kv.value)
    return None


def set_attr(attributes: Any, key: str, value: Any) -> None:
    """Upsert one attribute of a repeated KeyValue field."""
    for kv in attributes:
        if kv.key == key:
            python_to_anyvalue(value, kv.value)
            return
    kv = attributes.add()
    kv.key = key
    python_to_anyvalue(value, kv.value)


def attrs_to_dict(attributes: Any) -> dict[str, Any]:
    return {kv.key: anyvalue_to_python(kv.value) for kv in attributes}


def new_keyvalue(key: str, value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    python_to_anyvalue(value, kv.value)
    return kv
