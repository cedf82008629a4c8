"""The job operations the CLI and the HTTP API share, on one queue: reads from Redis, writes via bullmq."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from worker.cancel import CancelResult, request_cancel
from worker.connections import RedisClient
from worker.errors import JobNotFound, WrongState
from worker.jobs import ALL_STATES, JobFilter, JobPage, current_counts, export, iter_statuses, list_jobs
from worker.logs import get_logger
from worker.models import JobStatus, State
from worker.queue.producer import QueueAdmin
from worker.queue_stats import WorkerInfo, list_workers
from worker.schedules import ScheduleRequest, list_schedules, remove, upsert
from worker.settings import Settings
from worker.stats import JobStats, Period, read_stats
from worker.status import READ_MAX_BYTES, Keys, get_logs, get_status, oversized

log = get_logger(__name__)

CLEANABLE = ("completed", "failed", "delayed", "wait", "paused", "prioritized")
#: What ``clean`` takes: BullMQ's lists, and ``waiting`` (wait + prioritized, as the listings show it).
CLEAN_STATES = (*CLEANABLE, "waiting")


class Operations:
    """Everything an operator can ask of a queue. Owns nothing: ``client`` is closed by the caller."""

    def __init__(self, settings: Settings, client: RedisClient) -> None:
        self.settings = settings
        self.client = client
        self.keys = Keys(settings.prefix, settings.queue_name)
        self.admin = QueueAdmin(settings, client)

    async def get(self, job_id: str) -> tuple[JobStatus, list[str]]:
        """One job and its log lines."""
        status = await get_status(self.client, self.keys, job_id)
        if status is None:
            raise JobNotFound(f"job {job_id!r} not found in queue {self.keys.queue!r}")
        return status, await get_logs(self.client, self.keys, job_id)

    async def page(self, flt: JobFilter, *, limit: int, offset: int) -> JobPage:
        """A page of matching jobs."""
        return await list_jobs(self.client, self.keys, flt, limit=limit, offset=offset)

    def export(self, flt: JobFilter, fmt: str) -> AsyncIterator[str]:
        """Matching jobs as a CSV or JSON text stream."""
        return export(self.client, self.keys, flt, fmt)

    async def _existing(self, job_id: str) -> JobStatus:
        """The job's status; JobNotFound for anything that is not a job hash (the queue's own keys too)."""
        status = await get_status(self.client, self.keys, job_id)
        if status is None:
            raise JobNotFound(f"job {job_id!r} not found in queue {self.keys.queue!r}")
        return status

    async def _admin(self, job_id: str, action: Callable[[str], Awaitable[str | None]]) -> str | None:
        """``action(job_id)`` through bullmq, which reads the whole job and parses it: one with a field too large
        to read (sized first, never read) or one it cannot parse is a WrongState, not a 500 or a stalled API."""
        bound = max(READ_MAX_BYTES, self.settings.job_data_max_bytes)
        if too_large := await oversized(self.client, self.keys, job_id, bound):
            fields = ", ".join(f"{name} ({size} bytes)" for name, size in too_large.items())
            raise WrongState(f"job {job_id!r} has fields too large to read ({fields}); remove it")
        try:
            return await action(job_id)
        except (ValueError, TypeError, KeyError, RecursionError, UnicodeError) as exc:
            raise WrongState(f"job {job_id!r} cannot be read by bullmq ({type(exc).__name__}); remove it") from exc

    async def retry(self, job_id: str) -> JobStatus:
        """Retry a failed job (it goes back to waiting)."""
        await self._existing(job_id)
        before = await self._admin(job_id, self.admin.retry)
        if before is None:
            raise JobNotFound(f"job {job_id!r} not found in queue {self.keys.queue!r}")
        if before != "failed":
            raise WrongState(f"job {job_id!r} is {before}, only failed jobs can be retried")
        return (await self.get(job_id))[0]

    async def retry_failed(self, flt: JobFilter) -> list[str]:
        """Retry every failed job matching ``flt``; returns the ids retried."""
        flt = flt.model_copy(update={"state": State.FAILED})
        ids = [status.id async for status in iter_statuses(self.client, self.keys, flt) if status.id]
        return await self.retry_many(ids)

    async def retry_many(self, ids: list[str]) -> list[str]:
        """Retry each of ``ids`` that is failed (others are left alone); returns the ids retried."""
        done = []
        for job_id in ids:
            if await get_status(self.client, self.keys, job_id) is None:
                continue
            try:
                before = await self._admin(job_id, self.admin.retry)
            except WrongState as exc:
                log.warning("job.retry_skipped", job_id=job_id, reason=str(exc))
                continue
            if before == "failed":
                done.append(job_id)
        return done

    async def promote(self, job_id: str) -> JobStatus:
        """Run a delayed job now."""
        await self._existing(job_id)
        before = await self._admin(job_id, self.admin.promote)
        if before is None:
            raise JobNotFound(f"job {job_id!r} not found in queue {self.keys.queue!r}")
        if before != "delayed":
            raise WrongState(f"job {job_id!r} is {before}, only delayed jobs can be promoted")
        return (await self.get(job_id))[0]

    async def remove(self, job_id: str) -> None:
        """Remove a job (an active job holding its lock cannot be removed)."""
        status = await self._existing(job_id)
        if not await self.admin.remove(job_id):
            raise WrongState(f"job {job_id!r} is {status.state.value} and locked by a worker; it cannot be removed")

    async def cancel(self, job_id: str, *, by: str, discard_checkpoint: bool = False) -> CancelResult:
        """Cancel a job: a waiting / delayed one fails now, an active one is stopped by its worker within
        seconds; a finished one cannot be cancelled (WrongState). ``by`` goes in the failedReason."""
        status = await self._existing(job_id)
        result = await request_cancel(self.client, self.keys, job_id, by=by, discard=discard_checkpoint)
        if result.done == "none":
            state = status.state.value if result.state == "missing" else result.state
            raise WrongState(f"job {job_id!r} is {state}, only waiting, delayed or active jobs can be cancelled")
        return result

    async def cancel_matching(self, flt: JobFilter, *, by: str, discard_checkpoint: bool = False) -> list[CancelResult]:
        """Cancel every unfinished job matching ``flt`` (all unfinished states unless it names one)."""
        states = [flt.state] if flt.state else [s for s in ALL_STATES if s not in (State.COMPLETED, State.FAILED)]
        ids: list[str] = []
        for state in states:
            selected = flt.model_copy(update={"state": state})
            ids += [status.id async for status in iter_statuses(self.client, self.keys, selected) if status.id]
        done = []
        for job_id in dict.fromkeys(ids):
            result = await request_cancel(self.client, self.keys, job_id, by=by, discard=discard_checkpoint)
            if result.done != "none":
                done.append(result)
        return done

    async def pause(self) -> dict[str, Any]:
        """Pause the queue."""
        await self.admin.pause()
        return await self.queue_info()

    async def resume(self) -> dict[str, Any]:
        """Resume the queue."""
        await self.admin.resume()
        return await self.queue_info()

    async def queue_info(self) -> dict[str, Any]:
        """Queue name, paused flag and current counts."""
        return {
            "queue": self.keys.queue,
            "paused": await self.admin.is_paused(),
            "counts": await current_counts(self.client, self.keys),
        }

    async def workers(self) -> list[WorkerInfo]:
        """The workers connected to the queue (Node and Python), one per worker name."""
        return list_workers(await self.client.client_list(), self.keys.prefix, self.keys.queue)

    async def clean(self, state: str, older_than_ms: int, limit: int) -> list[str]:
        """Delete up to ``limit`` jobs in ``state`` older than ``older_than_ms``. ``waiting`` (the state the
        listings show) is BullMQ's ``wait`` list and its ``prioritized`` set."""
        if state == "waiting":
            ids = await self.admin.clean("wait", older_than_ms, limit)
            if len(ids) < limit:  # BullMQ reads a limit of 0 as "no limit": only ask for what is left
                ids += await self.admin.clean("prioritized", older_than_ms, limit - len(ids))
            return ids
        if state not in CLEANABLE:
            raise WrongState(f"cannot clean state {state!r} (one of {', '.join(CLEANABLE)}, waiting)")
        return await self.admin.clean(state, older_than_ms, limit)

    async def stats(self, period: Period) -> JobStats:
        """Statistics for ``period`` plus the queue's current counts."""
        counts = await current_counts(self.client, self.keys)
        return await read_stats(
            self.client, prefix=self.keys.prefix, queue=self.keys.queue, period=period, by_status=counts
        )

    async def upsert_schedule(self, req: ScheduleRequest) -> dict[str, Any]:
        """Create, update or (disabled) remove an instance's schedule."""
        return await upsert(self.admin, req)

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule."""
        return await list_schedules(self.admin)

    async def remove_schedule(self, connector: str, connector_id: str) -> bool:
        """Remove an instance's schedule."""
        return await remove(self.admin, connector, connector_id)

    async def close(self) -> None:
        """Close the bullmq queue handle."""
        await self.admin.close()
