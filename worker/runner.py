"""The step loop of one crawl: resume-or-start, then sink -> checkpoint -> progress per step.

Commit order for each step: the sink has accepted the documents, then the checkpoint and
counters are written (fenced), then progress is reported. A crash replays at most one step,
and documents have stable ids, so sinks stay idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from worker.connections import ScriptCall
from worker.connectors.base import Checkpoint, Connector, StepResult
from worker.documents import Document
from worker.errors import HandOff, InstanceBusy, LeaseLost, NoProgressError, RetryLater, TransientError
from worker.logs import get_logger
from worker.metrics import Metrics
from worker.models import JobOutcome
from worker.progress import ProgressReporter
from worker.runs import Lease, RunRecord, RunStore
from worker.sinks.base import InstanceRef, Sink

log = get_logger(__name__)


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

    @property
    def takeover_prefix(self) -> str:
        """Lease tokens of earlier attempts of this same job start with this."""
        return f"job:{self.job_id}|"

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
    ) -> None:
        self.busy_delay_s = busy_delay_s
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
    ) -> RunResult:
        """Crawl until the connector says there is no more, or a hand-off / error interrupts it.

        The run's last record write (completed, lease released) is returned, not sent: it goes out
        in the round trip that completes the job.
        """
        started = time.monotonic()
        lease = await self.store.acquire(
            request.instance_key, request.lease_token, takeover_prefix=request.takeover_prefix
        )
        if lease is None:
            raise InstanceBusy(
                f"connector instance {request.connector}/{request.connector_id} is already being crawled "
                "by another job; deferred",
                self.busy_delay_s,
            )
        lost = self.store.hold(lease)
        released = False
        try:
            record, checkpoint, resumed = await self._begin(request, connector, lease)
            progress.raise_floor(record.percentage)
            run = _Run(request, lease, lost, record, resumed)
            await self._steps(run, connector, checkpoint, progress=progress, handoff=handoff)
            record.status = "completed"
            record.last_completed_checkpoint = record.checkpoint
            record.last_completed_version = record.checkpoint_version
            record.last_completed_at = time.time()
            record.checkpoint = None
            final_save = self.store.save_call(lease, record, release=True)  # sent with the job's completion
            released = True
            progress.finish(record.counters.processed, **_extra(record, request, resumed))
        finally:
            self.store.drop(lease)
            if not released and not lost.is_set():
                with contextlib.suppress(Exception):
                    await self.store.release(lease)
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
            details=run.details or None,
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
    ) -> None:
        """Run steps until the connector has no more: sink, then checkpoint commit, then progress, each step.

        The last step is committed by the caller, together with the completion record.
        """
        request, lease, lost, record, resumed = run.request, run.lease, run.lost, run.record, run.resumed
        instance = InstanceRef(request.org_id, request.connector, request.connector_id, record.run_id)
        try:
            await progress.report(record.counters.processed, record.total, **_extra(record, request, resumed))
            while checkpoint.has_more:
                if handoff.is_set():
                    raise HandOff()
                step = await connector.run_step(checkpoint)
                if lost.is_set():
                    raise LeaseLost(f"instance {lease.key}: lease lost during a step")
                written = await self._write(instance, step.documents)
                _account(record, step, written)
                run.details.update(step.details)
                checkpoint = step.checkpoint
                record.checkpoint = checkpoint.model_dump(mode="json")
                if checkpoint.has_more:  # the last step is committed with the completion record below
                    await self.store.save(lease, record)
                self._record_step(request.connector, step)
                if checkpoint.has_more:  # the last step's progress is the final one, reported below
                    await progress.report(
                        record.counters.processed, record.total, **_extra(record, request, resumed)
                    )
                    record.percentage = progress.percentage
                if step.retry_after_s is not None and checkpoint.has_more:
                    raise RetryLater(f"{request.connector} source asked to come back later", step.retry_after_s)
        except LeaseLost:
            raise
        except BaseException:
            record.status = "interrupted"
            with contextlib.suppress(Exception):
                await progress.flush()
                await self.store.save(lease, record)
            raise

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

    async def _begin(
        self, request: CrawlRequest, connector: Connector[Any, Any], lease: Lease
    ) -> tuple[RunRecord, Checkpoint, bool]:
        """Resume an interrupted run from its checkpoint, or start a new (incremental) run."""
        record = lease.record()
        version = connector.checkpoint_model.schema_version
        resumable = (
            record is not None
            and record.status in ("running", "interrupted")
            and record.checkpoint is not None
            and record.config_hash == request.config_hash
            and record.checkpoint_version == version
        )
        if record is not None and resumable:
            assert record.checkpoint is not None
            checkpoint = connector.checkpoint_model.model_validate(record.checkpoint)
            progressed = record.commits > record.commits_at_start
            record.no_progress_attempts = 0 if progressed else record.no_progress_attempts + 1
            if record.no_progress_attempts >= self.max_no_progress:
                record.status = "abandoned"
                await self.store.save(lease, record)
                raise NoProgressError(
                    f"run {record.run_id} made no progress in {record.no_progress_attempts} consecutive attempts "
                    f"(stuck at {record.counters.processed} items); the next run starts fresh"
                )
            log.info("run.resumed", run_id=record.run_id, processed=record.counters.processed, epoch=lease.epoch)
            if self.metrics:
                self.metrics.run_resumed(request.connector)
            resumed = True
        else:
            previous = None
            if (
                record is not None
                and record.last_completed_checkpoint is not None
                and record.config_hash == request.config_hash
                and record.last_completed_version == version
            ):
                previous = connector.checkpoint_model.model_validate(record.last_completed_checkpoint)
            checkpoint = connector.initial_checkpoint(previous)
            run_id = f"{self._run_id_prefix}{next(self._run_ids):08x}"
            fresh = RunRecord(run_id=run_id, config_hash=request.config_hash, checkpoint_version=version)
            if record is not None and record.config_hash == request.config_hash:
                fresh.last_completed_checkpoint = record.last_completed_checkpoint
                fresh.last_completed_version = record.last_completed_version
                fresh.last_completed_at = record.last_completed_at
            record = fresh
            record.checkpoint = checkpoint.model_dump(mode="json")
            resumed = False
            log.debug("run.started", run_id=record.run_id, incremental=previous is not None)
        record.status = "running"
        record.commits_at_start = record.commits
        record.attempts += 1
        record.job_id = request.job_id
        if resumed:  # the attempt (and its no-progress count) is on record before any step runs
            await self.store.save(lease, record)
        # A fresh run is first written with its first step (or as interrupted, if that step raises):
        # until then there is nothing to resume, and a crash leaves the previous record as it was.
        return record, checkpoint, resumed


@dataclass(frozen=True)
class _Run:
    """One attempt while it holds its instance's lease."""

    request: CrawlRequest
    lease: Lease
    lost: asyncio.Event
    record: RunRecord
    resumed: bool
    #: What the steps reported besides documents (``StepResult.details``), for the return value.
    details: dict[str, Any] = field(default_factory=dict)


def _account(record: RunRecord, step: Any, written: int) -> None:
    c = record.counters
    c.processed += step.processed
    c.documents += len(step.documents)
    c.written += written
    c.deleted += sum(doc.deleted for doc in step.documents)
    c.bytes += sum(doc.size for doc in step.documents)
    c.failures += len(step.failures)
    c.steps += 1
    record.commits += 1
    if step.total is not None:
        record.total = max(step.total, c.processed)


def _extra(record: RunRecord, request: CrawlRequest, resumed: bool) -> dict[str, Any]:
    c = record.counters
    return {
        "documents": c.documents - c.deleted,
        "deleted": c.deleted,
        "failures": c.failures,
        "totalIsEstimate": True,
        "resumed": resumed,
        "runId": record.run_id,
        "attempt": request.attempt,
    }
