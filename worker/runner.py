"""The step loop of one crawl: resume-or-start, then sink -> checkpoint -> progress per step.

Commit order for each step: the sink has accepted the documents, then the checkpoint, counters
and the step's changes to the run's stored state (``worker.crawlstate``) are written in one fenced
call, then progress is reported. A crash replays at most one step, and documents have stable ids,
so sinks stay idempotent. A step's commit costs what the step changed, not the size of the crawl;
a run whose stored state passes ``run_state_max_mb`` fails (RunStateTooLarge) and its state is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from worker import skips
from worker.connections import ScriptCall
from worker.connectors.base import Checkpoint, Connector, StepResult
from worker.crawlstate import StateChanges
from worker.documents import Document
from worker.errors import (
    HandOff,
    InstanceBusy,
    JobCancelled,
    LeaseLost,
    NoProgressError,
    RetryLater,
    RunStateTooLarge,
    RunTooLong,
    TransientError,
)
from worker.handler import CancelSignal, cancel_reason
from worker.logs import get_logger, suppressed
from worker.metrics import Metrics
from worker.models import JobOutcome
from worker.progress import ProgressReporter
from worker.run_handle import RunHandle
from worker.runs import RunRecord, RunStore
from worker.sinks.base import InstanceRef, Sink

log = get_logger(__name__)


def takeover_prefix(job_id: str) -> str:
    """What every lease token of ``job_id`` starts with: a later attempt of the same job may take over."""
    return f"job:{job_id}|"


def lease_token(job_id: str, holder: str) -> str:
    """The lease token of one attempt: the job's takeover prefix, then a holder unique to the attempt."""
    return takeover_prefix(job_id) + holder


@dataclass(frozen=True)
class CrawlRequest:
    """One attempt at crawling one instance."""

    org_id: str
    connector: str
    connector_id: str
    config_hash: str
    job_id: str
    attempt: int
    lease_token: str
    #: The crawl's time limit (seconds) from the job's first attempt; None: the runner's default.
    max_run_s: float | None = None

    @property
    def takeover_prefix(self) -> str:
        """Lease tokens of earlier attempts of this same job start with this."""
        return takeover_prefix(self.job_id)

    @property
    def instance_key(self) -> str:
        """The run-store key of the instance."""
        return f"{self.org_id}:{self.connector}:{self.connector_id}"


@dataclass(frozen=True)
class RunResult:
    """A finished run: its summary, and the record write to send with the job's completion."""

    outcome: JobOutcome
    final_save: ScriptCall


class Runner:
    """Runs crawls against a store, a sink and metrics shared by the whole process."""

    def __init__(
        self,
        store: RunStore,
        sink: Sink,
        metrics: Metrics | None,
        *,
        max_no_progress_attempts: int,
        busy_delay_s: float,
        max_state_bytes: int = 512 * 1024 * 1024,
        max_run_s: float = 14400.0,
    ) -> None:
        self.busy_delay_s = busy_delay_s
        self.max_run_s = max_run_s
        self.max_state_bytes = max_state_bytes
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.max_no_progress = max_no_progress_attempts
        self._run_id_prefix = secrets.token_hex(8)  # run ids: unique across processes, cheap to make
        self._run_ids = itertools.count()

    async def run(
        self,
        request: CrawlRequest,
        connector: Connector[Any, Any],
        progress: ProgressReporter,
        handoff: asyncio.Event,
        cancel: CancelSignal | None = None,
    ) -> RunResult:
        """Crawl until the connector says there is no more, or a hand-off / error interrupts it.

        The run's last record write (completed, lease released) is returned, not sent: it goes out
        in the round trip that completes the job.
        """
        started = time.monotonic()
        handle = await RunHandle.acquire(
            self.store, request.instance_key, request.lease_token, takeover_prefix=request.takeover_prefix
        )
        if handle is None:
            raise InstanceBusy(
                f"connector instance {request.connector}/{request.connector_id} is already being crawled "
                "by another job; deferred",
                self.busy_delay_s,
            )
        try:
            run = await self._begin(request, connector, handle)
            record, resumed = handle.record, run.resumed
            progress.raise_floor(record.percentage)
            connector.bind(handle.run_data())
            run.cancel = cancel or CancelSignal()
            last = await self._steps(run, connector, run.checkpoint, progress=progress, handoff=handoff)
            final_save = handle.complete_call(connector.carried, last)  # sent with the job's completion
            progress.finish(record.counters.processed, **_extra(record, request, resumed))
        finally:
            await handle.close()
        c = record.counters
        outcome = JobOutcome(
            connector=request.connector,
            connector_id=request.connector_id,
            run_id=record.run_id,
            resumed=resumed,
            documents=c.documents - c.deleted,
            deleted=c.deleted,
            bytes=c.bytes,
            failures=c.failures,
            steps=c.steps,
            duration_ms=round((time.monotonic() - started) * 1000),
            skipped=dict(c.skipped),
            truncated=skips.truncates(c.skipped),
            details=run.details or None,
        )
        if outcome.truncated:  # one line per run that was cut short, whatever the connector
            log.warning(
                "crawl.truncated",
                connector=request.connector,
                connector_id=request.connector_id,
                run_id=record.run_id,
                documents=outcome.documents,
                skipped=outcome.skipped,
            )
        return RunResult(outcome, final_save)

    async def _steps(
        self,
        run: _Run,
        connector: Connector[Any, Any],
        checkpoint: Checkpoint,
        *,
        progress: ProgressReporter,
        handoff: asyncio.Event,
    ) -> StateChanges:
        """Run steps until the connector has no more: sink, then checkpoint commit, then progress, each step.

        The last step is committed by the caller, together with the completion record: its state
        changes are returned.
        """
        request, handle, resumed = run.request, run.handle, run.resumed
        record = handle.record
        instance = InstanceRef(request.org_id, request.connector, request.connector_id, record.run_id)
        last = StateChanges()
        committing = False
        try:
            await progress.report(record.counters.processed, record.total, **_extra(record, request, resumed))
            while checkpoint.has_more:
                if run.cancel.is_set():
                    raise _cancelled(run.cancel)
                if handoff.is_set():
                    raise HandOff()
                step = await self._timed_step(run, connector, checkpoint)
                handle.check_held()
                self._check_size(run, step.changes)
                written = await self._write(instance, step.documents)
                committing = True  # from here until the commit returns, the stored record may be either step's
                checkpoint = step.checkpoint
                record.commit_step(step, written, checkpoint.model_dump(mode="json"))
                run.details.update(step.details)
                if checkpoint.has_more:  # the last step is committed with the completion record below
                    await handle.save(step.changes)
                else:
                    last = step.changes
                committing = False
                self._record_step(request.connector, step)
                if checkpoint.has_more:  # the last step's progress is the final one, reported below
                    await progress.report(record.counters.processed, record.total, **_extra(record, request, resumed))
                    record.percentage = progress.percentage
                if handoff.is_set() and checkpoint.has_more:  # a wait the hand-off cut short ended the step
                    raise HandOff()
                if step.retry_after_s is not None and checkpoint.has_more:
                    raise RetryLater(f"{request.connector} source asked to come back later", step.retry_after_s)
        except LeaseLost:
            raise
        except BaseException as exc:
            await self._stopped(run, exc, committing=committing, progress=progress)
            raise
        return last

    async def _stopped(self, run: _Run, exc: BaseException, *, committing: bool, progress: ProgressReporter) -> None:
        """What a run leaves stored when ``exc`` stops it between commits: the checkpoint kept (the next
        attempt resumes) or, for a state past its cap or a cancel that discards it, the run abandoned."""
        abandon = isinstance(exc, RunStateTooLarge) or (
            isinstance(exc, JobCancelled) and exc.discard_checkpoint and not committing
        )
        if abandon:  # the next run starts fresh (documents already written stay)
            await run.handle.abandon(quietly=True)
            return
        if committing:  # the commit may or may not have landed: the stored record is consistent either way
            return
        with suppressed("run.progress_flush_failed", run_id=run.handle.record.run_id):
            await progress.flush()
        await run.handle.interrupt()

    async def _timed_step(self, run: _Run, connector: Connector[Any, Any], checkpoint: Checkpoint) -> StepResult[Any]:
        """One step, cut off when the crawl's time limit passes (RunTooLong; the checkpoint before it is kept)."""
        limit = run.request.max_run_s or self.max_run_s
        record = run.handle.record
        deadline = asyncio.timeout(max(record.job_started_at + limit - time.time(), 0))
        try:
            async with deadline:
                return await _unless_cancelled(connector.run_step(checkpoint), run.cancel)
        except TimeoutError:
            if not deadline.expired():  # the source's own timeout, not ours
                raise
            raise RunTooLong(
                f"crawl of {run.request.connector}/{run.request.connector_id} ran longer than max_run_s={limit:g} s "
                f"({record.counters.processed} items done); stopped without retries, its checkpoint is kept: "
                "the next job resumes from it"
            ) from None

    def _check_size(self, run: _Run, changes: StateChanges) -> None:
        """Fail the run when this step would take its stored state past the cap."""
        record = run.handle.record
        if record.state_size + changes.size <= self.max_state_bytes:
            return
        cap_mb = self.max_state_bytes / 1024 / 1024
        raise RunStateTooLarge(
            f"run {record.run_id} of {run.request.connector}/{run.request.connector_id} would store more than "
            f"{cap_mb:g} MiB of crawl state (run_state_max_mb) after {record.counters.processed} items; "
            "narrow the crawl (max_pages, max_depth, include / exclude) or raise run_state_max_mb"
        )

    async def _write(self, instance: InstanceRef, documents: list[Document]) -> int:
        """The sink's write; a storage failure (disk full, file too large, I/O error) is transient."""
        try:
            return await self.sink.write(instance, documents)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__  # not the path: failedReasons are read by the producer side
            raise TransientError(f"sink could not store {len(documents)} documents: {reason}") from exc

    def _record_step(self, connector: str, step: StepResult[Any]) -> None:
        """Documents, deletions, bytes, item failures and fetches of a committed step, as metrics."""
        if self.metrics is None:
            return
        deleted = sum(doc.deleted for doc in step.documents)
        size = sum(doc.size for doc in step.documents)
        self.metrics.step_committed(connector, len(step.documents) - deleted, deleted, size, len(step.failures))
        for key, count in step.stats.items():
            if key.startswith("fetches_") and count:
                self.metrics.fetched(connector, key.removeprefix("fetches_"), count)
        for reason, count in step.skipped.items():
            if count:
                self.metrics.skipped(connector, skips.reason(reason), count)

    async def _begin(self, request: CrawlRequest, connector: Connector[Any, Any], handle: RunHandle) -> _Run:
        """Resume an interrupted run from its checkpoint, or start a new (incremental) run."""
        record = handle.stored_record()
        version = connector.checkpoint_model.schema_version
        if record is not None and record.resumable(request.config_hash, version):
            assert record.checkpoint is not None
            checkpoint = connector.checkpoint_model.model_validate(record.checkpoint)
            handle.record = record
            if record.count_resume() >= self.max_no_progress:
                attempts = record.no_progress_attempts
                await handle.abandon()
                raise NoProgressError(
                    f"run {record.run_id} made no progress in {attempts} consecutive attempts "
                    f"(stuck at {record.counters.processed} items); the next run starts fresh"
                )
            log.info("run.resumed", run_id=record.run_id, processed=record.counters.processed, epoch=handle.lease.epoch)
            if self.metrics:
                self.metrics.run_resumed(request.connector)
            record.start_attempt(request.job_id)
            await handle.save()  # the attempt (and its no-progress count) is on record first
            return _Run(request, handle, True, checkpoint)
        last_done = record.previous(request.config_hash, version) if record is not None else None
        previous = connector.checkpoint_model.model_validate(last_done) if last_done is not None else None
        checkpoint = connector.initial_checkpoint(previous)
        run_id = f"{self._run_id_prefix}{next(self._run_ids):08x}"
        if record is None:
            fresh = RunRecord(run_id=run_id, config_hash=request.config_hash, checkpoint_version=version)
        else:
            # an unfinished run that is not resumed leaves its state behind: dropped with the first commit
            handle.drop_later(record.run_id, record.state_names)
            fresh = record.successor(run_id, request.config_hash, version, incremental=previous is not None)
            if previous is None:
                handle.drop_later(record.last_completed_run_id, record.last_completed_names)
        fresh.start_attempt(request.job_id, checkpoint.model_dump(mode="json"))
        log.debug("run.started", run_id=run_id, incremental=previous is not None)
        # A fresh run is first written with its first step (or as interrupted, if that step raises):
        # until then there is nothing to resume, and a crash leaves the previous record as it was.
        handle.record = fresh
        return _Run(request, handle, False, checkpoint)


@dataclass
class _Run:
    """One attempt while it holds its instance's lease (the handle: lease, record, pending deletions)."""

    request: CrawlRequest
    handle: RunHandle
    resumed: bool
    checkpoint: Checkpoint
    #: What the steps reported besides documents (``StepResult.details``), for the return value.
    details: dict[str, Any] = field(default_factory=dict)
    #: An operator's request to stop the job.
    cancel: CancelSignal = field(default_factory=CancelSignal)


def _extra(record: RunRecord, request: CrawlRequest, resumed: bool) -> dict[str, Any]:
    c = record.counters
    return {
        "documents": c.documents - c.deleted,
        "deleted": c.deleted,
        "failures": c.failures,
        "skipped": dict(c.skipped),
        "truncated": skips.truncates(c.skipped),
        "totalIsEstimate": True,
        "resumed": resumed,
        "runId": record.run_id,
        "attempt": request.attempt,
    }


def _cancelled(cancel: CancelSignal) -> JobCancelled:
    return JobCancelled(cancel_reason(cancel.by), discard_checkpoint=cancel.discard_checkpoint)


async def _unless_cancelled(step: Awaitable[StepResult[Any]], cancel: CancelSignal) -> StepResult[Any]:
    """``step``, run as a task the cancel signal cancels when the job is cancelled (JobCancelled is raised)."""
    if cancel.is_set():
        raise _cancelled(cancel)
    task: asyncio.Future[StepResult[Any]] = asyncio.ensure_future(step)
    cancel.step = task
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if cancel.is_set() and (current is None or not current.cancelling()):  # ours, not a caller's cancel
            raise _cancelled(cancel) from None
        raise
    finally:
        cancel.step = None
