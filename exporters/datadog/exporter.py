"""The `datadog` exporter: LLM-ops logs and metrics, OTel logs and metrics, through datadog-api-client's
async client (``AsyncApiClient``: ``LogsApi.submit_log``, ``MetricsApi.submit_metrics``, the v1
``submit_distribution_points`` and ``AuthenticationApi.validate``).

Every batch is converted once; the requests it becomes are kept until each is accepted, so a retry resends
only what failed (Datadog does not deduplicate logs) and LLM metrics are counted once per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from collector import genai
from collector.component import CreateSettings
from collector.errors import PermanentError, RetryableError
from collector.exporterhelper import BaseExporter
from collector.pdata import Batch, Signal, iter_log_records
from collector.protocol_errors import from_http_status
from exporters._resume import Resume

from .config import DatadogExporterConfig
from .logs import LogSettings, chunk_entries, fit_entry, llm_tags, log_record_entry, resource_tags, span_entry
from .metrics import LLMAggregator, OtlpConverter, series_size

__all__ = ["DatadogExporter", "map_api_exception"]

_MAX_SERIES_BYTES = 3_000_000  # the v2 series intake takes 5 MB uncompressed; stay well under
_MAX_REQUESTS = 720  # LLM metric requests kept while Datadog is unreachable (an hour of 10 s windows)


def _dd_message(body: Any) -> str:
    if isinstance(body, dict):
        errs = body.get("errors")
        if isinstance(errs, list) and errs:
            return "; ".join(str(x) for x in errs)
        return str(body)
    if isinstance(body, bytes):
        return body.decode(errors="replace")
    return "" if body is None else str(body)


def map_api_exception(e: Any) -> Exception:
    """An ``ApiException`` as a collector error: 429/5xx retryable after ``X-RateLimit-Reset`` (or
    ``Retry-After``) seconds, other 4xx permanent with Datadog's message."""
    status = int(getattr(e, "status", 0) or 0)
    headers = {str(k).lower(): str(v) for k, v in (getattr(e, "headers", None) or {}).items()}
    if "retry-after" not in headers and "x-ratelimit-reset" in headers:
        headers["retry-after"] = headers["x-ratelimit-reset"]
    msg = _dd_message(getattr(e, "body", None)) or str(getattr(e, "reason", "") or "")
    if status in (401, 403):
        msg = f"{msg} (check api.key and api.site)".strip()
    err = from_http_status(status or 500, headers, msg, backend="Datadog")
    return err if err is not None else RetryableError(f"Datadog answered HTTP {status}")


class _Req:
    """One request in the making: what kind, and its items (log entries or series)."""

    __slots__ = ("items", "kind")

    def __init__(self, kind: str, items: list[Any]) -> None:
        self.kind = kind
        self.items = items


class DatadogExporter(BaseExporter):
    config: DatadogExporterConfig

    def __init__(self, settings: CreateSettings, config: DatadogExporterConfig) -> None:
        super().__init__(settings, config)
        c = config
        self.log_settings = LogSettings(source=c.source, service=c.service, hostname=c.hostname,
                                        tags=tuple(c.tags), include_content=c.include_content,
                                        all_spans=c.logs.all_spans)
        self.aggregate = c.metrics.enabled and Signal.TRACES in settings.signals
        self.aggregator = LLMAggregator(c.metrics.flush_interval)
        self.converter = OtlpConverter(tuple(c.tags))
        self._resume = Resume(max(64, 4 * config.sending_queue.num_consumers))
        self._metric_reqs: deque[_Req] = deque()
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_stop = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._clients: list[Any] = []
        self._logs_api: Any = None
        self._metrics_api: Any = None
        self._dist_api: Any = None
        self._api_exception: type[BaseException] = Exception
        self.key_valid: bool | None = None
        self._key_task: asyncio.Task[None] | None = None

    # -- connections ---------------------------------------------------------------------------------------
    def _client(self, endpoint: str | None) -> Any:
        from datadog_api_client import AsyncApiClient, Configuration

        key = self.config.api.key.get_secret_value()
        cfg = Configuration(host=endpoint, api_key={"apiKeyAuth": key}) if endpoint else Configuration(
            api_key={"apiKeyAuth": key})
        cfg.server_variables["site"] = self.config.api.site  # after the constructor, so DD_SITE cannot win
        cfg.server_operation_variables = {}
        cfg.check_input_type = False  # models are built here from checked values; skip a second walk
        cfg.request_timeout = self.config.timeout or None
        cfg.enable_retry = False  # the delivery helper retries
        client = AsyncApiClient(cfg)
        self._clients.append(client)
        return client

    async def open(self) -> None:
        from datadog_api_client.exceptions import ApiException
        from datadog_api_client.v1.api.authentication_api import AuthenticationApi
        from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
        from datadog_api_client.v2.api.logs_api import LogsApi
        from datadog_api_client.v2.api.metrics_api import MetricsApi

        self._api_exception = ApiException
        logs_client = self._client(self.config.logs.endpoint)
        metrics_client = self._client(self.config.metrics.endpoint)
        self._logs_api = LogsApi(logs_client)
        self._metrics_api = MetricsApi(metrics_client)
        self._dist_api = MetricsApiV1(metrics_client)
        check = self._validate_key(AuthenticationApi(metrics_client))
        if self.config.api.fail_on_invalid_key:
            await check
        else:  # do not hold up the start for the key check; its result shows in the status and the log
            self._key_task = asyncio.create_task(check)
        if self.aggregate:
            self._flush_task = asyncio.create_task(self._flush_loop())

    async def _validate_key(self, api: Any) -> None:
        where = self.config.metrics.endpoint or f"api.{self.config.api.site}"
        try:
            resp = await asyncio.wait_for(api.validate(), timeout=self.config.timeout or 15.0)
        except self._api_exception as e:
            status = getattr(e, "status", 0)
            if status in (401, 403):
                self.key_valid = False
                msg = (f"the Datadog API key is invalid for {where} (HTTP {status}: "
                       f"{_dd_message(getattr(e, 'body', None))}); check api.key and api.site")
                self._record_error("error", PermanentError(msg))
                self.log.error("%s", msg)
                if self.config.api.fail_on_invalid_key:
                    raise PermanentError(msg) from None
                return
            self.log.warning("could not check the Datadog API key at %s: HTTP %s", where, status)
            return
        except Exception as e:  # noqa: BLE001 - network trouble: the key may be fine, carry on
            self.log.warning("could not check the Datadog API key at %s: %s", where, e or type(e).__name__)
            return
        valid = getattr(resp, "valid", None)
        if valid is None and isinstance(resp, dict):
            valid = resp.get("valid")
        self.key_valid = bool(valid) if valid is not None else True
        if self.key_valid:
            self.log.info("Datadog API key is valid (%s)", where)

    async def close(self) -> None:
        if self._key_task is not None and not self._key_task.done():
            self._key_task.cancel()
            await asyncio.gather(self._key_task, return_exceptions=True)
        if self._flush_task is not None:
            self._flush_stop.set()
            try:
                await self._flush_task
            except Exception:
                self.log.exception("metrics flush loop failed")
            self._flush_task = None
            await self._flush_metrics(final=True)
        for c in self._clients:
            try:
                await c.rest_client._client.__aexit__(None, None, None)
            except Exception as e:  # noqa: BLE001 - best effort
                self.log.debug("closing the Datadog client: %s", e)
        self._clients.clear()

    # -- conversion ----------------------------------------------------------------------------------------
    def _convert(self, batch: Batch) -> deque[_Req]:
        reqs: deque[_Req] = deque()
        req = batch.request
        s = self.log_settings
        if batch.signal is Signal.TRACES:
            sized = []
            for rs in req.resource_spans:
                res_attrs = rs.resource.attributes
                res_tags = s.tags + resource_tags(res_attrs)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        call = genai.read(span, res_attrs)
                        if call.is_llm and self.aggregate:
                            self.aggregator.add(call, llm_tags(call) + res_tags)
                        e = span_entry(span, res_attrs, call, s)
                        if e is not None:
                            sized.append(fit_entry(e))
            reqs.extend(_Req("logs", c) for c in chunk_entries(sized))
        elif batch.signal is Signal.LOGS:
            sized = [fit_entry(log_record_entry(rec, rl.resource.attributes, s))
                     for rl, _sl, rec in iter_log_records(req)]
            reqs.extend(_Req("logs", c) for c in chunk_entries(sized))
        else:
            reqs.extend(_Req("series", c) for c in self._chunk_series(self.converter.convert(req)))
        return reqs

    @staticmethod
    def _chunk_series(series: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        cur: list[dict[str, Any]] = []
        size = 0
        for s in series:
            n = series_size(s)
            if cur and size + n > _MAX_SERIES_BYTES:
                out.append(cur)
                cur, size = [], 0
            cur.append(s)
            size += n
        if cur:
            out.append(cur)
        return out

    # -- sending -------------------------------------------------------------------------------------------
    async def send(self, batch: Batch) -> None:
        await self._resume.attempt(batch, lambda: self._convert(batch), self._drain, "Datadog")

    async def _drain(self, reqs: deque[_Req]) -> None:
        """Send the requests in order; a 413 splits a request in two, in place."""
        while reqs:
            r = reqs[0]
            try:
                await self._submit(r)
            except self._api_exception as e:
                if getattr(e, "status", 0) == 413:
                    if len(r.items) > 1:
                        half = len(r.items) // 2
                        reqs.popleft()
                        reqs.appendleft(_Req(r.kind, r.items[half:]))
                        reqs.appendleft(_Req(r.kind, r.items[:half]))
                        self.log.info("Datadog answered 413: splitting %d %s into two requests",
                                      len(r.items), r.kind)
                        continue
                    reqs.popleft()
                    raise PermanentError("Datadog rejected a single entry as too large (HTTP 413)") from None
                raise map_api_exception(e) from None
            reqs.popleft()

    async def _submit(self, r: _Req) -> None:
        if r.kind == "logs":
            from datadog_api_client.v2.model.content_encoding import ContentEncoding
            from datadog_api_client.v2.model.http_log import HTTPLog

            # The entries are plain dicts in HTTPLogItem's shape (built and size-checked in logs.py): making
            # an HTTPLogItem of each cost six times the rest of the conversion; the tests parse every body
            # with HTTPLogItem.
            body = HTTPLog(r.items, _check_type=False)
            await self._logs_api.submit_log(body, content_encoding=ContentEncoding.GZIP)
        elif r.kind == "series":
            from datadog_api_client.v2.model.metric_content_encoding import MetricContentEncoding

            await self._metrics_api.submit_metrics(self._series_payload(r.items),
                                                   content_encoding=MetricContentEncoding.GZIP)
        else:
            from datadog_api_client.v1.model.distribution_points_content_encoding import (
                DistributionPointsContentEncoding,
            )

            await self._dist_api.submit_distribution_points(self._dist_payload(r.items),
                                                            content_encoding=DistributionPointsContentEncoding.DEFLATE)

    @staticmethod
    def _series_payload(items: list[dict[str, Any]]) -> Any:
        from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
        from datadog_api_client.v2.model.metric_payload import MetricPayload
        from datadog_api_client.v2.model.metric_point import MetricPoint
        from datadog_api_client.v2.model.metric_resource import MetricResource
        from datadog_api_client.v2.model.metric_series import MetricSeries

        series = []
        for s in items:
            kw: dict[str, Any] = {"type": MetricIntakeType(s["type"]), "tags": s["tags"], "_check_type": False}
            if "interval" in s:
                kw["interval"] = s["interval"]
            if "unit" in s:
                kw["unit"] = s["unit"]
            if "resources" in s:
                kw["resources"] = [MetricResource(name=r["name"], type=r["type"]) for r in s["resources"]]
            points = [MetricPoint(timestamp=p["timestamp"], value=p["value"]) for p in s["points"]]
            series.append(MetricSeries(metric=s["metric"], points=points, **kw))
        return MetricPayload(series=series, _check_type=False)

    @staticmethod
    def _dist_payload(items: list[dict[str, Any]]) -> Any:
        from datadog_api_client.v1.model.distribution_point import DistributionPoint
        from datadog_api_client.v1.model.distribution_points_payload import DistributionPointsPayload
        from datadog_api_client.v1.model.distribution_points_series import DistributionPointsSeries
        from datadog_api_client.v1.model.distribution_points_type import DistributionPointsType

        series = [DistributionPointsSeries(
            metric=s["metric"], points=[DistributionPoint(p, _check_type=False) for p in s["points"]],
            tags=s["tags"], type=DistributionPointsType.DISTRIBUTION, _check_type=False) for s in items]
        return DistributionPointsPayload(series=series, _check_type=False)

    # -- LLM metrics ---------------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        interval = self.config.metrics.flush_interval
        while not self._flush_stop.is_set():
            try:
                await asyncio.wait_for(self._flush_stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                await self._flush_metrics()
            except Exception:
                self.log.exception("unexpected error while flushing LLM metrics")

    async def _flush_metrics(self, final: bool = False) -> None:
        """Send the finished window's requests (each window its own points, nothing summed across windows).
        Requests that fail with a retryable error are kept for the next flush, up to :data:`_MAX_REQUESTS`."""
        async with self._flush_lock:
            w = self.aggregator.drain()
            if not w.empty():
                ns = self.config.metrics.namespace
                self._metric_reqs.extend(_Req("series", c) for c in self._chunk_series(w.series(ns)))
                self._metric_reqs.extend(_Req("dist", c) for c in self._chunk_series(w.distributions(ns)))
            if len(self._metric_reqs) > _MAX_REQUESTS:
                dropped = len(self._metric_reqs) - _MAX_REQUESTS
                for _ in range(dropped):
                    self._metric_reqs.popleft()
                self._rl.log(logging.ERROR, "windows", "dropped %d requests of LLM metrics: Datadog "
                             "unreachable for too long", dropped)
            if not self._metric_reqs:
                return
            try:
                if final:
                    left = self._deadline() - time.monotonic()
                    await asyncio.wait_for(self._drain(self._metric_reqs),
                                           timeout=max(0.1, min(left, self.config.timeout or left)))
                else:
                    await self._drain(self._metric_reqs)
            except PermanentError as e:
                self._record_error("error", e)
                self._rl.log(logging.ERROR, "metrics", "dropping LLM metrics: %s", e)
                self._metric_reqs.clear()
                return
            except Exception as e:  # noqa: BLE001 - retry on the next flush
                self._record_error("retrying", e)
                self._rl.log(logging.WARNING, "metrics", "LLM metrics not sent, will retry: %s",
                             e or type(e).__name__)
                if final:
                    self.log.error("%d requests of LLM metrics not sent at shutdown", len(self._metric_reqs))
                return
            if self.key_valid is not False:
                self.status = "active"
