"""Our worker on the crawl queue: the bullmq adapter's consuming side (``worker/queue/`` is the only package
that imports bullmq).

What it fixes or adds over the Python port (see shared/research/bullmq-python.md), beside the loop in
``worker/queue/loop.py``:
- the stalled check also runs at start-up (the port waits a full interval first);
- one dedicated blocking connection, named as Node names a worker's (``<prefix>:<base64(queue)>:w:<name>``),
  so Node ``getWorkers()`` and bull-board list each process once;
- the blocking connection is probed, so delays and backoffs are not rounded up to whole seconds;
- our error hierarchy mapped onto ``UnrecoverableError`` / ``DelayedError`` in one place;
- drain, hand-off and forced close for the process lifecycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bullmq import Job
from bullmq.custom_errors import DelayedError, UnrecoverableError

from worker.cancel import CancelListener
from worker.connections import AutoPipeline, RedisClient, make_client
from worker.errors import Next, RetryLater, classify
from worker.handler import ActiveJob, CancelSignal, Completion, Handler, cancel_reason
from worker.logs import get_logger, reap
from worker.queue.loop import NodeLoopWorker
from worker.queue.producer import node_client_name
from worker.settings import Settings
from worker.status import Keys

log = get_logger(__name__)


class QueueWorker:
    """Consumes the crawl queue: one bullmq Worker, our handler, our shutdown sequence."""

    def __init__(
        self,
        settings: Settings,
        client: RedisClient,
        handler: Handler,
        *,
        autopipeline: AutoPipeline | None = None,
        on_stalled: Callable[[str], None] | None = None,
        on_failed_undecodable: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._autopipeline = autopipeline or AutoPipeline(client)
        self._handler = handler
        self._on_stalled = on_stalled
        self._on_failed_undecodable = on_failed_undecodable
        self._worker: NodeLoopWorker | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._handoffs: dict[str, asyncio.Event] = {}
        self._cancels: dict[str, CancelSignal] = {}
        self._cancel_listener: CancelListener | None = None

    @property
    def active(self) -> int:
        """Jobs in progress now."""
        return len(self._handoffs)

    def _options(self) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = {
            "connection": self._client,
            "prefix": s.prefix,
            "concurrency": s.concurrency,
            "lockDuration": s.lock_duration_ms,
            "stalledInterval": s.stalled_interval_ms,
            "maxStalledCount": s.max_stalled_count,
            "runRetryDelay": s.redis_retry_delay_ms,
            "name": s.worker_name,
            "autorun": False,
        }
        if s.remove_on_complete is not None:
            opts["removeOnComplete"] = {"count": s.remove_on_complete}
        if s.remove_on_fail is not None:
            opts["removeOnFail"] = {"count": s.remove_on_fail}
        return opts

    async def start(self) -> None:
        """Create the worker, recover stalled jobs now, and start fetching."""
        s = self.settings
        worker = NodeLoopWorker(
            s.queue_name,
            self._process,
            self._options(),
            client_name=node_client_name(s.prefix, s.queue_name, s.worker_name),
            # the port would block on (and name) the shared pool: the loop gets a connection of its own
            blocking_client=make_client(s, max_connections=2),
            autopipeline=self._autopipeline,
            max_data_bytes=s.job_data_max_bytes,
            min_every_ms=int(s.repeat_min_interval_s * 1000),
        )
        worker.on("stalled", self._stalled)
        worker.on("error", self._error)
        worker.on("failed", self._failed)
        self._worker = worker
        # The port never probes its blocking connection, so it rounds every block timeout up to whole
        # seconds (delays of 200 ms ran after ~1.07 s). Probing it lets delays run to the millisecond.
        await worker.blockingRedisConnection.getRedisVersion()
        await worker.load_scripts()
        keys = Keys(self.settings.prefix, self.settings.queue_name)
        self._cancel_listener = CancelListener(make_client(self.settings, max_connections=2), keys, self._running)
        self._cancel_listener.start()
        await self.check_stalled()
        self._run_task = asyncio.create_task(worker.run(), name="bullmq-worker")

    async def check_stalled(self) -> None:
        """Run bullmq's stalled-job check once (also done every stalled interval)."""
        if self._worker is not None:
            await self._worker.runStalledJobsCheck()

    def _running(self) -> dict[str, CancelSignal]:
        return self._cancels

    def _stalled(self, job_id: str, *_: Any) -> None:
        log.warning("job.stalled_recovered", job_id=job_id)
        if self._on_stalled:
            self._on_stalled(job_id)

    def _error(self, err: BaseException, *_: Any) -> None:
        log.error("worker.error", error=str(err), error_type=type(err).__name__)

    def _failed(self, job: Job, *_: Any) -> None:
        if job.deferredFailure and self._on_failed_undecodable:
            self._on_failed_undecodable()

    async def _process(self, job: Job, token: str) -> Completion:
        handoff = asyncio.Event()
        self._handoffs[job.id] = handoff
        cancel = self._cancels[job.id] = CancelSignal()

        async def update_progress(value: float | dict[str, Any]) -> None:
            log.debug("job.progress", job_id=job.id, progress=value)  # info is for state changes
            await job.updateProgress(value)

        active = ActiveJob(
            id=job.id,
            name=job.name or "",
            data=job.data,
            attempts_made=job.attemptsMade,
            max_attempts=max(1, int(job.opts.get("attempts") or 1)),
            timestamp_ms=job.timestamp,
            delay_ms=int(job.delay or 0),
            update_progress=update_progress,
            handoff=handoff,
            cancel=cancel,
            data_bytes=getattr(job, "data_bytes", None),
        )
        try:
            return await self._handler(active)
        except Exception as exc:
            next_step = classify(exc)
            if cancel.is_set() and next_step is not Next.ABANDON:  # cancelled: no retry, no deferral
                raise UnrecoverableError(cancel_reason(cancel.by)) from exc
            if next_step is Next.FAIL:
                raise UnrecoverableError(str(exc)) from exc
            if isinstance(exc, RetryLater):  # Next.LATER
                await job.moveToDelayed(round((time.time() + exc.delay_s) * 1000), token)
                raise DelayedError(str(exc)) from exc
            if next_step is Next.ABANDON:  # another worker owns the job now: leave it alone
                raise DelayedError(str(exc)) from exc
            raise  # Next.RETRY: bullmq applies the job's attempts and backoff
        finally:
            self._handoffs.pop(job.id, None)
            self._cancels.pop(job.id, None)

    async def drain(self, timeout_s: float) -> bool:
        """Stop fetching and wait up to ``timeout_s`` for active jobs; True if all finished."""
        if self._worker is None:
            return True
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._worker.close(), name="bullmq-close")
        done, _ = await asyncio.wait({self._close_task}, timeout=timeout_s)
        return bool(done)

    def request_handoff(self) -> int:
        """Ask every active crawl to stop at its next checkpoint and go back to the queue."""
        for event in self._handoffs.values():
            event.set()
        return len(self._handoffs)

    async def close(self, *, force: bool = False) -> None:
        """Close the worker; ``force`` cancels active jobs (they are recovered as stalled)."""
        worker = self._worker
        if worker is None:
            return
        if force:
            worker.forceClosing = True
            worker.cancelProcessing()
        if self._close_task is None:
            self._close_task = asyncio.create_task(worker.close(force=force), name="bullmq-close")
        try:
            await asyncio.wait_for(asyncio.shield(self._close_task), timeout=10)
        except TimeoutError:
            log.warning("worker.close_slow", waited_s=10)
        except asyncio.CancelledError:
            log.warning("worker.close_cancelled")
        if self._run_task is not None:
            self._run_task.cancel()
            await reap(self._run_task, "worker.run_failed")
        if self._cancel_listener is not None:
            await self._cancel_listener.close()
