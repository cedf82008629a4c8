"""Job -> validated data -> catalog entry -> connector instance -> runner -> JSON summary.

The queue adapter hands every job over as an :class:`ActiveJob` (our type, not bullmq's) and
maps the errors raised here onto bullmq's retry semantics.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from worker import skips
from worker.catalog import ANY_TYPE, Catalog, EnvLookup, InstanceEntry
from worker.connectors.base import ConnectorContext
from worker.connectors.registry import AnyConnector, Registry
from worker.deferrals import Deferrals
from worker.errors import (
    HandOff,
    InstanceBusy,
    InvalidConnectorConfig,
    InvalidJobData,
    Next,
    RetryLater,
    UnconfiguredInstance,
    UnknownConnector,
    classify,
    error_class,
)
from worker.handler import ActiveJob, Completion
from worker.labels import OTHER
from worker.logs import get_logger
from worker.metrics import Metrics
from worker.models import CrawlingJobData, JobOutcome, job_name
from worker.progress import ProgressReporter
from worker.queue.job_hash import json_type
from worker.runner import CrawlRequest, Runner, lease_token
from worker.settings import Settings
from worker.stats import StatsRecorder
from worker.sync_events import SyncEventPublisher

log = get_logger(__name__)


#: A connectorId or connector name that can be a directory name as it is.
_SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def path_part(value: str) -> str:
    """``value`` as one directory name inside the data directory: as it is when that is safe, else a
    hash (never ``..``, a separator or a hidden name: a catalog key cannot write outside ``data_dir``)."""
    if _SAFE_PART.fullmatch(value) and ".." not in value:
        return value
    return "id-" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "data"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_job_data(job: ActiveJob, max_bytes: int) -> CrawlingJobData:
    """Validate the job's data against the crawl job contract (InvalidJobData otherwise)."""
    if not isinstance(job.data, dict):
        raise InvalidJobData(f"job data must be a JSON object, got {json_type(job.data)}")
    size = job.data_bytes if job.data_bytes is not None else len(json.dumps(job.data, separators=(",", ":")))
    if size > max_bytes:
        raise InvalidJobData(f"job data is {size} bytes, above job_data_max_bytes={max_bytes}")
    try:
        data = CrawlingJobData.model_validate(job.data)
    except ValidationError as exc:
        raise InvalidJobData(f"invalid crawl job data: {_describe(exc)}") from None
    expected = job_name(data.connector, data.connector_id)
    if job.name.startswith("crawl-") and job.name != expected:  # the name is not used: the data decides
        log.warning("job.name_mismatch", name=job.name, expected=expected)
    return data


class Dispatcher:
    """Processes one job end to end. One instance per process, shared by all jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry,
        catalog: Catalog,
        runner: Runner,
        metrics: Metrics | None,
        lookup_env: EnvLookup,
        stats: StatsRecorder | None = None,
        sync_events: SyncEventPublisher | None = None,
        deferrals: Deferrals | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.catalog = catalog
        self.runner = runner
        self.metrics = metrics
        self.lookup_env = lookup_env
        self.stats = stats
        self.sync_events = sync_events
        self.deferrals = deferrals
        self.worker_name = settings.worker_name
        self._blobs = Path(settings.data_dir) / "blobs"
        # Lease tokens: unique per attempt across processes and restarts (a random prefix per process).
        self._token_prefix = secrets.token_hex(4)
        self._tokens = itertools.count()

    async def process(self, job: ActiveJob) -> Completion:
        """Run ``job``; return its completion or raise an error from ``worker.errors``."""
        started = time.monotonic()
        connector = OTHER
        bound = dict(structlog.contextvars.bind_contextvars(job_id=job.id, attempt=job.attempt))
        try:
            data = parse_job_data(job, self.settings.job_data_max_bytes)
            connector = data.connector_key
            bound.update(structlog.contextvars.bind_contextvars(connector=connector, connector_id=data.connector_id))
            self._started(job, connector)
            completion = await self._run(job, data)
            context = {
                "job_id": job.id,
                "attempt": job.attempt,
                "connector": connector,
                "connector_id": data.connector_id,
            }
            return dataclasses.replace(
                completion, on_committed=functools.partial(self._committed, job, completion.result, context, started)
            )
        except BaseException as exc:
            self._on_error(job, connector, exc, started)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    def _route(self, data: CrawlingJobData) -> tuple[InstanceEntry, AnyConnector]:
        """The catalog entry and connector class that serve the job (PermanentError if none does)."""
        try:
            route = self.catalog.resolve(data.connector_id, data.connector)
        except UnconfiguredInstance:
            if data.connector_key not in self.registry:
                names = ", ".join(self.registry.names())
                raise UnknownConnector(
                    f"connector {data.connector_key!r} is not installed (installed: {names}) "
                    "and no [connector_types] rule in the catalog routes it"
                ) from None
            raise
        entry = route.entry
        if route.rule == ANY_TYPE and self.catalog.rule_for(data.connector, self.registry) is None:
            # "*" hands the platform's own connector types on; a job naming a connector this worker runs
            # itself needs its instance (delegating it would "complete" a crawl nobody performs).
            raise UnconfiguredInstance(
                f"connectorId {data.connector_id!r} is not configured: connector {data.connector_key!r} runs in this "
                f'worker and needs an [instances."{data.connector_id}"] entry (the "*" rule routes only other types)'
            )
        cls = self.registry.get(entry.connector)
        if route.rule is None and entry.connector_key != data.connector_key and not cls.serves_any_type:
            if data.connector_key not in self.registry:
                self.registry.get(data.connector_key)  # raises UnknownConnector, listing what is installed
            raise UnconfiguredInstance(
                f"connectorId {data.connector_id!r} is configured as connector {entry.connector_key!r}, "
                f"but the job says {data.connector_key!r}"
            )
        return entry, cls

    async def _run(self, job: ActiveJob, data: CrawlingJobData) -> Completion:
        entry, cls = self._route(data)
        if entry.org_id is not None and entry.org_id != data.org_id:
            raise UnconfiguredInstance(f"connectorId {data.connector_id!r} is not configured for org {data.org_id!r}")
        try:
            config = cls.config_model.model_validate(entry.config)
        except ValidationError as exc:
            raise InvalidConnectorConfig(
                f"catalog entry for {data.connector_id!r} is not a valid {entry.connector_key} config: {_describe(exc)}"
            ) from None
        context = ConnectorContext(
            connector_id=data.connector_id,
            org_id=data.org_id,
            data_dir=self._blobs.joinpath(path_part(data.connector_key), path_part(data.connector_id)),
            attempt=job.attempt,
            credentials=entry.resolve_secrets(self.lookup_env),
            connector_type=data.connector,
            job_key=f"{job.id}@{job.timestamp_ms}",
            sync_events=self.sync_events,
            handoff=job.handoff,
        )
        instance = cls(config, context)
        request = CrawlRequest(
            org_id=data.org_id,
            connector=data.connector_key,
            connector_id=data.connector_id,
            config_hash=entry.config_hash,
            job_id=job.id,
            attempt=job.attempt,
            lease_token=lease_token(job.id, f"{self.worker_name}|{self._token_prefix}{next(self._tokens):x}"),
            max_run_s=entry.max_run_s,
        )
        progress = ProgressReporter(
            job.update_progress, fmt=self.settings.progress_format, interval_s=self.settings.progress_interval_s
        )
        try:
            await instance.validate()
            run = await self.runner.run(request, instance, progress, job.handoff, job.cancel)
        except InstanceBusy as exc:
            reason = str(exc)
            if self.settings.duplicate_run_policy != "skip":
                holder = None if self.deferrals is None else await self.deferrals.claim(request.instance_key, job.id)
                if holder is None:
                    raise
                reason = f"superseded: job {holder} is already deferred for this connector instance"
            skipped = JobOutcome(
                status="skipped",
                connector=request.connector,
                connector_id=request.connector_id,
                run_id="",
                reason=reason,
            )
            return Completion(skipped.model_dump(mode="json", exclude_none=True), log=f"skipped: {reason}")
        finally:
            await instance.aclose()
        outcome = run.outcome
        return Completion(
            outcome.model_dump(mode="json", exclude_none=True),
            progress=progress.final,
            log=_completion_line(outcome),
            after=(run.final_save,),
        )

    def _committed(self, job: ActiveJob, result: dict[str, Any], context: dict[str, Any], started: float) -> None:
        """The job's completion is stored: log it and count it (never before: Redis may refuse it)."""
        if result.get("status") == "skipped":
            log.info("job.completed", skipped=True, reason=result.get("reason"), **context)
        else:
            log.info(
                "job.completed",
                name=job.name,
                run_id=result.get("run_id"),
                resumed=result.get("resumed"),
                documents=result.get("documents"),
                duration_ms=result.get("duration_ms"),
                **context,
            )
        self._finished(job, context["connector"], "completed", started)

    def _started(self, job: ActiveJob, connector: str) -> None:
        wait_s = None
        if job.attempts_made == 0:
            wait_s = time.time() - (job.timestamp_ms + job.delay_ms) / 1000
        # debug: a job's info line is its outcome (plus progress lines while it runs); at thousands of
        # short jobs a second, a second info line per job cost 26 of the worker's 236 µs a job (measured)
        log.debug("job.started", name=job.name)
        if self.metrics:
            self.metrics.job_started(connector, wait_s)

    def _finished(self, job: ActiveJob, connector: str, outcome: str, started: float, error: str | None = None) -> None:
        if self.stats and outcome in {"completed", "failed"}:
            self.stats.record(connector, outcome, time.monotonic() - started)
        if self.metrics:
            attempts = job.attempt if outcome in {"completed", "failed"} else None
            self.metrics.job_finished(
                connector, outcome, time.monotonic() - started, error_class=error, attempts=attempts
            )

    def _on_error(self, job: ActiveJob, connector: str, exc: BaseException, started: float) -> None:
        """Log and count an error with the outcome bullmq will give it."""
        cls, next_step = error_class(exc), classify(exc)
        if next_step is Next.ABANDON:
            log.warning("job.abandoned", reason=str(exc) or type(exc).__name__)
            if connector != OTHER:
                self._finished(job, connector, "abandoned", started)
            return
        if isinstance(exc, RetryLater):  # Next.LATER
            reason = "handoff" if isinstance(exc, HandOff) else "busy" if isinstance(exc, InstanceBusy) else "later"
            log.info("job.delayed", reason=reason, delay_s=exc.delay_s, message=str(exc))
            if self.metrics:
                self.metrics.job_delayed(connector, reason)
            self._finished(job, connector, "handed_off" if reason == "handoff" else "delayed", started)
            return
        final = next_step is Next.FAIL or job.attempt >= job.max_attempts
        outcome = "failed" if final else "retried"
        log.warning("job.failed" if final else "job.retrying", error=str(exc), error_class=cls)
        if connector == OTHER and self.metrics:
            self.metrics.job_failed_before_start(cls)
        else:
            self._finished(job, connector, outcome, started, cls)


def _completion_line(outcome: JobOutcome) -> str:
    """The job's last log line (``job.log``): documents, failures and skips by reason; whether it was cut short."""
    line = f"completed: {outcome.documents} documents, {outcome.failures} failures, {skips.describe(outcome.skipped)}"
    return line + "; truncated: a budget, limit or trap guard cut the crawl short" if outcome.truncated else line
