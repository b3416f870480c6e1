"""Exporter `s3`: a cheap, durable archive of telemetry in S3 (or any S3-compatible store) that analysts query.

Keys follow the OpenTelemetry Collector's ``awss3`` exporter (``s3uploader``, ``marshaler``). Objects are
written under ``<s3_prefix>/<partition>/<signal>_<hash>.<ext>[.gz]``: the partition comes from the time the
data was received (UTC, ``s3_partition_format``), and the name ends in a hash of the object's content, so a
retried upload overwrites the same object instead of adding a second one.

One object should hold many calls. Batches are grouped by the delivery queue's ``sending_queue.batch``; while
the shared delivery helper does not batch by itself, this exporter groups concurrent ``send`` calls (group
commit: every queued batch stays in the queue until the object holding it is written), so nothing is held
outside the queue. ``marshaler: ndjson`` writes one flat JSON object per span (per log record, per metric
point) that DuckDB, Athena and Spark read directly. With ``include_content: false`` (the default) prompts,
completions and other content-bearing attributes and events (as ``collector.genai`` knows them) are left out;
the received batch is never modified, the exporter builds its own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from collector import genai
from collector.component import CreateSettings, Factory, Kind
from collector.config import Duration, StrictModel
from collector.errors import PermanentError, RetryableError
from collector.exporterhelper import BaseExporter, ExporterConfig, QueueBatchConfig, QueueConfig
from collector.pdata import REQUEST_TYPES, Batch, Signal, to_otlp_json
from collector.protocol_errors import from_http_status, parse_retry_after

__all__ = ["S3Exporter", "S3ExporterConfig", "S3UploaderConfig", "marshal", "object_key", "strip_content"]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
StorageClass = Literal[
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER",
    "GLACIER_IR", "DEEP_ARCHIVE", "EXPRESS_ONEZONE",
]


class S3UploaderConfig(StrictModel):
    region: str = "us-east-1"
    s3_bucket: str
    s3_prefix: str = ""
    s3_partition_format: str = "year=%Y/month=%m/day=%d/hour=%H/minute=%M"
    endpoint: str | None = None
    s3_force_path_style: bool = False
    compression: Literal["gzip", "none"] = "gzip"
    storage_class: StorageClass = "STANDARD"
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> S3UploaderConfig:
        if not _BUCKET_RE.match(self.s3_bucket) or ".." in self.s3_bucket:
            raise ValueError(f"s3_bucket {self.s3_bucket!r} is not a valid bucket name "
                             "(3-63 characters: lower-case letters, digits, dots and hyphens)")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse: aws:kms")
        if self.endpoint and not re.match(r"^https?://", self.endpoint):
            raise ValueError(f"endpoint {self.endpoint!r} must start with http:// or https://")
        try:
            time.strftime(self.s3_partition_format, time.gmtime(0))
        except ValueError as e:
            raise ValueError(f"s3_partition_format: {e}") from e
        return self


def _s3_queue() -> QueueConfig:
    # Big objects are cheaper to store, list and query: group up to 10k items or 30 s of data per object.
    return QueueConfig(batch=QueueBatchConfig(flush_timeout=30.0, min_size=10000, max_size=50000, sizer="items"))


class S3ExporterConfig(ExporterConfig):
    s3uploader: S3UploaderConfig
    marshaler: Literal["otlp_json", "otlp_proto", "ndjson"] = "otlp_json"
    include_content: bool = False
    timeout: Duration = 60.0
    sending_queue: QueueConfig = Field(default_factory=_s3_queue)

    @model_validator(mode="after")
    def _check_timeout(self) -> S3ExporterConfig:
        b = self.sending_queue.batch
        if b is not None and self.timeout and self.timeout <= b.flush_timeout:
            raise ValueError(f"timeout ({self.timeout:g}s) must be longer than sending_queue.batch.flush_timeout "
                             f"({b.flush_timeout:g}s): a batch may wait that long for others to join its object")
        return self


# --- marshalling ---------------------------------------------------------------------------------------------
_EXT = {"otlp_json": "json", "otlp_proto": "binpb", "ndjson": "ndjson"}
_CONTENT_TYPE = {"otlp_json": "application/json", "otlp_proto": "application/x-protobuf",
                 "ndjson": "application/x-ndjson"}


def _strip_attrs(attrs: Any) -> None:
    drop = [i for i, kv in enumerate(attrs) if genai.is_content_key(kv.key)]
    for i in reversed(drop):
        del attrs[i]


def strip_content(signal: Signal, request: Any) -> None:
    """Remove content-bearing attributes and events from a request (one the caller owns) in place."""
    if signal is Signal.TRACES:
        for rs in request.resource_spans:
            _strip_attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    _strip_attrs(span.attributes)
                    drop = [i for i, ev in enumerate(span.events) if genai.is_content_event(ev.name)]
                    for i in reversed(drop):
                        del span.events[i]
                    for ev in span.events:
                        _strip_attrs(ev.attributes)
    elif signal is Signal.LOGS:
        for rl in request.resource_logs:
            _strip_attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    _strip_attrs(rec.attributes)
                    name = rec.event_name or _str_attr(rec.attributes, "event.name")
                    if name and genai.is_content_event(name):
                        rec.ClearField("body")


def _str_attr(attrs: Any, key: str) -> str:
    for kv in attrs:
        if kv.key == key:
            return str(kv.value.string_value)
    return ""


def merge_requests(signal: Signal, batches: list[Batch]) -> Any:
    """A new request holding every batch's resources, in order; the batches are not touched."""
    out = REQUEST_TYPES[signal]()
    for b in batches:
        out.MergeFrom(b.request)
    return out


def _ts(ns: int) -> str | None:
    if not ns:
        return None
    secs, rem = divmod(ns, 1_000_000_000)
    d = dt.datetime.fromtimestamp(secs, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rem // 1000:06d}Z"


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    return str(o)


_SPAN_KIND = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
# genai fields the flat row carries as its own columns; their source attributes are not repeated.
_ROW_FIELDS = ("operation", "provider", "request_model", "response_model", "input_tokens", "output_tokens",
               "total_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cost", "tenant",
               "feature", "team", "user", "session", "status_code", "error_type", "cache_hit", "guardrail")
_CONSUMED = frozenset(n for f in _ROW_FIELDS for n in genai.KEYS[f])


def _attrs(attrs: Any, skip: frozenset[str] = frozenset(), include_content: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in attrs:
        k = kv.key
        if k in skip or (not include_content and genai.is_content_key(k)):
            continue
        out[k] = genai.value_of(kv.value)
    return out


def _span_rows(request: Any, include_content: bool) -> Iterator[dict[str, Any]]:
    for rs in request.resource_spans:
        res = rs.resource.attributes
        resource = _attrs(res, include_content=include_content)
        service = resource.pop("service.name", None)
        for ss in rs.scope_spans:
            for span in ss.spans:
                c = genai.read(span, res)
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                events = []
                for ev in span.events:
                    if not include_content and genai.is_content_event(ev.name):
                        continue
                    events.append({"name": ev.name, "time": _ts(ev.time_unix_nano),
                                   "attributes": _attrs(ev.attributes, include_content=include_content)})
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "name": span.name,
                    "kind": _SPAN_KIND.get(span.kind, str(span.kind)),
                    "start_time": _ts(start),
                    "end_time": _ts(end),
                    "start_time_unix_nano": start,
                    "end_time_unix_nano": end,
                    "duration_ms": (end - start) / 1e6 if end >= start else None,
                    "status": _STATUS.get(span.status.code, str(span.status.code)),
                    "status_message": span.status.message or None,
                    "service": service,
                    "scope": ss.scope.name or None,
                    "operation": c.operation,
                    "provider": c.provider,
                    "model": c.model,
                    "request_model": c.request_model,
                    "input_tokens": c.input_tokens,
                    "output_tokens": c.output_tokens,
                    "total_tokens": c.total_tokens if c.is_llm else None,
                    "cache_read_tokens": c.cache_read_tokens,
                    "cache_write_tokens": c.cache_write_tokens,
                    "reasoning_tokens": c.reasoning_tokens,
                    "cost": c.cost,
                    "tenant": c.tenant,
                    "feature": c.feature,
                    "team": c.team,
                    "user": c.user,
                    "session": c.session,
                    "outcome": c.outcome,
                    "status_code": c.status_code,
                    "error_type": c.error_type,
                    "cache_hit": c.cache_hit,
                    "guardrail_triggered": c.guardrail_triggered,
                    "is_llm": c.is_llm,
                    "attributes": _attrs(span.attributes, _CONSUMED, include_content),
                    "resource": resource,
                    "events": events,
                }


def _log_rows(request: Any, include_content: bool) -> Iterator[dict[str, Any]]:
    for rl in request.resource_logs:
        resource = _attrs(rl.resource.attributes, include_content=include_content)
        service = resource.pop("service.name", None)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                event = rec.event_name or _str_attr(rec.attributes, "event.name") or None
                body = genai.value_of(rec.body) if rec.HasField("body") else None
                if not include_content and event and genai.is_content_event(event):
                    body = None
                yield {
                    "time": _ts(rec.time_unix_nano),
                    "observed_time": _ts(rec.observed_time_unix_nano),
                    "time_unix_nano": rec.time_unix_nano,
                    "severity_text": rec.severity_text or None,
                    "severity_number": rec.severity_number,
                    "event_name": event,
                    "body": body,
                    "trace_id": rec.trace_id.hex() or None,
                    "span_id": rec.span_id.hex() or None,
                    "service": service,
                    "scope": sl.scope.name or None,
                    "attributes": _attrs(rec.attributes, include_content=include_content),
                    "resource": resource,
                }


def _metric_rows(request: Any) -> Iterator[dict[str, Any]]:
    for rm in request.resource_metrics:
        resource = _attrs(rm.resource.attributes)
        service = resource.pop("service.name", None)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                for p in getattr(m, kind).data_points:
                    row: dict[str, Any] = {
                        "name": m.name, "type": kind, "unit": m.unit or None, "service": service,
                        "time": _ts(p.time_unix_nano), "start_time": _ts(p.start_time_unix_nano),
                        "time_unix_nano": p.time_unix_nano, "attributes": _attrs(p.attributes),
                        "resource": resource,
                    }
                    if kind in ("gauge", "sum"):
                        v = p.WhichOneof("value")
                        row["value"] = getattr(p, v) if v else None
                    else:
                        row["count"] = p.count
                        row["sum"] = p.sum if p.HasField("sum") else None
                        if kind == "histogram":
                            row["bucket_counts"] = list(p.bucket_counts)
                            row["explicit_bounds"] = list(p.explicit_bounds)
                    yield row


def marshal(signal: Signal, batches: list[Batch], marshaler: str, include_content: bool) -> bytes:
    """The uncompressed object body for a group of batches (which are only read, never changed)."""
    if marshaler == "ndjson":  # rows leave content out themselves: no copy of the requests needed
        out: list[str] = []
        for b in batches:
            if signal is Signal.TRACES:
                rows: Iterator[dict[str, Any]] = _span_rows(b.request, include_content)
            elif signal is Signal.LOGS:
                rows = _log_rows(b.request, include_content)
            else:
                rows = _metric_rows(b.request)
            out.extend(json.dumps(r, separators=(",", ":"), default=_json_default) + "\n" for r in rows)
        return "".join(out).encode()
    if len(batches) == 1 and include_content:
        request = batches[0].request  # read-only use: no copy needed
        if marshaler == "otlp_proto":
            return batches[0].to_bytes()
    else:
        request = merge_requests(signal, batches)
        if not include_content:
            strip_content(signal, request)
    if marshaler == "otlp_proto":
        return bytes(request.SerializeToString(deterministic=True))
    return (to_otlp_json(request) + "\n").encode()


def object_key(cfg: S3UploaderConfig, signal: Signal, marshaler: str, when_ns: int, body: bytes) -> str:
    """``<prefix>/<partition>/<signal>_<sha256 of body, 32 hex>.<ext>[.gz]``."""
    partition = time.strftime(cfg.s3_partition_format, time.gmtime(when_ns / 1e9)).strip("/")
    name = f"{signal.value}_{hashlib.sha256(body).hexdigest()[:32]}.{_EXT[marshaler]}"
    if cfg.compression == "gzip":
        name += ".gz"
    return "/".join(p for p in (cfg.s3_prefix.strip("/"), partition, name) if p)


def gzip_compress(body: bytes) -> bytes:
    """gzip with a fixed header (mtime 0), so equal bodies give equal objects; ISA-L when available."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a declared dependency
        return gzip.compress(body, compresslevel=6, mtime=0)
    return igzip.compress(body, compresslevel=3, mtime=0)


# --- grouping (group commit while the delivery helper does not batch) ------------------------------------------
@dataclass(eq=False)
class _Group:
    signal: Signal
    batches: list[Batch] = field(default_factory=list)
    items: int = 0
    done: asyncio.Future[None] | None = None
    key: str | None = None
    body: bytes | None = None
    uploaded: bool = False
    retrying: asyncio.Future[None] | None = None


# --- the exporter ----------------------------------------------------------------------------------------------
_PERMANENT_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccountProblem",
    "InvalidBucketName", "InvalidStorageClass", "InvalidArgument", "AuthorizationHeaderMalformed",
    "InvalidRequest", "KMS.NotFoundException", "KMS.DisabledException", "KMS.KMSInvalidStateException",
    "InvalidObjectState", "MethodNotAllowed", "PermanentRedirect", "NotSignedUp", "EntityTooLarge",
})
_RETRY_CODES = frozenset({
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException",
    "RequestTimeTooSkewed", "OperationAborted", "ExpiredToken", "RequestLimitExceeded", "TooManyRequests",
})


def map_error(err: BaseException, bucket: str) -> Exception:
    """botocore / network errors -> PermanentError or RetryableError, naming the bucket."""
    import botocore.exceptions as bx

    if isinstance(err, bx.ClientError):
        e = err.response.get("Error", {})
        code = str(e.get("Code", ""))
        msg = str(e.get("Message", "")) or code
        meta = err.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        headers = meta.get("HTTPHeaders") or {}
        if code == "NoSuchBucket":
            return PermanentError(f"S3 bucket {bucket!r} does not exist (NoSuchBucket: {msg}); create it or "
                                  "fix s3uploader.s3_bucket / region / endpoint")
        if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return PermanentError(f"S3 denied writing to bucket {bucket!r} ({code}: {msg}); the credentials "
                                  "from the AWS chain need s3:PutObject on it (and kms:GenerateDataKey with sse: "
                                  "aws:kms)")
        if code in _PERMANENT_CODES:
            return PermanentError(f"S3 rejected the upload to bucket {bucket!r} ({code}: {msg})")
        if code in _RETRY_CODES or status >= 500 or status == 429:
            return RetryableError(f"S3 bucket {bucket!r}: {code or status}: {msg}",
                                  retry_after=parse_retry_after(headers.get("retry-after")))
        mapped = from_http_status(status or 400, headers, f"{code}: {msg}", backend=f"S3 (bucket {bucket!r})")
        return mapped or PermanentError(f"S3 bucket {bucket!r}: {code}: {msg}")
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return RetryableError(f"no usable AWS credentials for bucket {bucket!r} ({err}); set AWS_ACCESS_KEY_ID/"
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the host an instance/pod role")
    if isinstance(err, bx.ParamValidationError):
        return PermanentError(f"invalid S3 request for bucket {bucket!r}: {err}")
    return RetryableError(f"S3 bucket {bucket!r}: {type(err).__name__}: {err}")


def _helper_batches() -> bool:
    """Does the shared delivery helper merge queued batches per ``sending_queue.batch`` by itself?"""
    if getattr(BaseExporter, "batches_in_queue", False):
        return True
    try:
        from collector import queue
    except ImportError:
        return False
    return hasattr(queue, "SendingQueue")


class S3Exporter(BaseExporter):
    config: S3ExporterConfig

    def __init__(self, settings: CreateSettings, config: S3ExporterConfig) -> None:
        super().__init__(settings, config)
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        # Group commit, used only while the delivery helper does not batch inside the queue itself.
        q = config.sending_queue
        self._grouping = q.enabled and q.batch is not None and not _helper_batches()
        self._open_groups: dict[Signal, _Group] = {}
        self._flush_tasks: dict[Signal, asyncio.Task[None]] = {}
        self._failed: dict[int, tuple[Batch, _Group]] = {}
        self._uploads: set[asyncio.Task[None]] = set()
        self._draining = False
        self.objects_written = 0

    async def open(self) -> None:
        import aioboto3
        from aiobotocore.config import AioConfig

        up = self.config.s3uploader
        session = aioboto3.Session(region_name=up.region)
        t = self.config.timeout or 60.0
        cfg = AioConfig(
            s3={"addressing_style": "path" if up.s3_force_path_style else "auto"},
            retries={"total_max_attempts": 1},  # the delivery helper retries, with its backoff
            connect_timeout=min(10.0, t), read_timeout=t,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client = await self._stack.enter_async_context(
            session.client("s3", region_name=up.region, endpoint_url=up.endpoint, config=cfg))

    async def close(self) -> None:
        for t in self._flush_tasks.values():
            t.cancel()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    async def shutdown(self) -> None:
        # Flush open groups at once: no batch waits for its object's age while the queue drains.
        self._draining = True
        for sig, g in list(self._open_groups.items()):
            self._flush_soon(sig, g)
        await super().shutdown()

    def _flush_soon(self, sig: Signal, g: _Group) -> None:
        """While draining: flush once no other batch joined for a moment (debounced)."""
        t = self._flush_tasks.pop(sig, None)
        if t is not None:
            t.cancel()
        self._flush_tasks[sig] = asyncio.create_task(self._flush_after(sig, g, 0.02))

    def _queue_empty(self) -> bool:
        return self._queue is None or self._queue.empty()

    # -- upload ------------------------------------------------------------------------------------------------
    def _build(self, g: _Group) -> None:
        body = marshal(g.signal, g.batches, self.config.marshaler, self.config.include_content)
        when = min(b.received_ns for b in g.batches)
        g.key = object_key(self.config.s3uploader, g.signal, self.config.marshaler, when, body)
        if self.config.s3uploader.compression == "gzip":
            body = gzip_compress(body)
        g.body = body

    async def _upload(self, g: _Group) -> None:
        if g.body is None:
            self._build(g)
        up = self.config.s3uploader
        args: dict[str, Any] = {
            "Bucket": up.s3_bucket, "Key": g.key, "Body": g.body,
            "ContentType": _CONTENT_TYPE[self.config.marshaler], "StorageClass": up.storage_class,
        }
        if up.sse:
            args["ServerSideEncryption"] = up.sse
            if up.sse_kms_key_id:
                args["SSEKMSKeyId"] = up.sse_kms_key_id
        if self._client is None:
            raise RetryableError("S3 client is not open")
        try:
            await self._client.put_object(**args)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise map_error(e, up.s3_bucket) from e
        g.uploaded = True
        self.objects_written += 1
        self.log.debug("wrote s3://%s/%s (%d bytes, %d items)", up.s3_bucket, g.key, len(g.body or b""), g.items)

    async def send(self, batch: Batch) -> None:
        if not self._grouping:
            await self._upload(_Group(batch.signal, [batch], batch.item_count()))
            return
        failed = self._failed.pop(id(batch), None)
        if failed is not None and failed[0] is batch:
            await self._retry_group(batch, failed[1])
            return
        await self._join(batch)

    async def _retry_group(self, batch: Batch, g: _Group) -> None:
        """A retry of a batch whose object failed: the same object again (same key), uploaded once."""
        assert g.done is not None
        try:
            if not g.done.done():  # the first attempt is still running (this member timed out waiting)
                await asyncio.shield(g.done)
            elif not g.uploaded:
                # members of one group retry about together: one upload at a time, the others wait for it
                if g.retrying is None or (g.retrying.done() and not g.uploaded):
                    g.retrying = asyncio.ensure_future(self._upload(g))
                    g.retrying.add_done_callback(lambda f: f.cancelled() or f.exception())
                await asyncio.shield(g.retrying)
        except (TimeoutError, RetryableError, asyncio.CancelledError):
            self._remember_failed(batch, g)
            raise

    def _remember_failed(self, batch: Batch, g: _Group) -> None:
        self._failed[id(batch)] = (batch, g)
        while len(self._failed) > 10 * self.config.sending_queue.queue_size:
            self._failed.pop(next(iter(self._failed)))

    async def _join(self, batch: Batch) -> None:
        qb = self.config.sending_queue.batch
        assert qb is not None
        n = batch.item_count()
        sig = batch.signal
        g = self._open_groups.get(sig)
        if g is not None and qb.max_size and g.items + n > qb.max_size and g.batches:
            self._flush_now(sig)
            g = None
        if g is None:
            g = _Group(sig, done=asyncio.get_running_loop().create_future())
            self._open_groups[sig] = g
            self._flush_tasks[sig] = asyncio.create_task(self._flush_after(sig, g, qb.flush_timeout))
        g.batches.append(batch)
        g.items += n
        full = g.items >= qb.min_size or (qb.max_size and g.items >= qb.max_size)
        all_waiting = self.config.sending_queue.enabled and len(g.batches) >= self.config.sending_queue.num_consumers
        if full or all_waiting:
            self._flush_now(sig)
        elif self._draining and self._queue_empty():
            self._flush_soon(sig, g)
        assert g.done is not None
        try:
            await asyncio.shield(g.done)
        except (RetryableError, asyncio.CancelledError):
            # The helper retries this same Batch object: it must come back to this group's object.
            self._remember_failed(batch, g)
            raise

    def _flush_now(self, sig: Signal) -> None:
        g = self._open_groups.pop(sig, None)
        if g is None:
            return
        t = self._flush_tasks.pop(sig, None)
        if t is not None and t is not asyncio.current_task():
            t.cancel()
        task = asyncio.create_task(self._finish(g))
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _flush_after(self, sig: Signal, g: _Group, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._open_groups.get(sig) is g:
            self._open_groups.pop(sig, None)
            self._flush_tasks.pop(sig, None)
            await self._finish(g)

    async def _finish(self, g: _Group) -> None:
        assert g.done is not None
        try:
            await self._upload(g)
        except Exception as e:  # noqa: BLE001 - handed to every member of the group
            if not g.done.done():
                g.done.set_exception(e)
                g.done.exception()  # retrieved: members that timed out must not leave it unobserved
        else:
            if not g.done.done():
                g.done.set_result(None)


FACTORIES = [
    Factory(
        "s3", Kind.EXPORTER, S3ExporterConfig, S3Exporter,
        description="archive to S3 / S3-compatible stores (otlp_json, otlp_proto, ndjson)",
        example={"s3uploader": {"s3_bucket": "llm-archive", "region": "us-east-1"}, "marshaler": "ndjson"},
    ),
]
