"""The producing half of the bullmq adapter: adding jobs and operator actions (``worker/queue/`` is the only
package that imports bullmq). Imports nothing of the job stack: sinks,
schedules, the API and the CLI add jobs through here without loading dispatch, runner or runs."""

from __future__ import annotations

import base64
from typing import Any

from bullmq import Job, Queue

from worker.connections import RedisClient
from worker.settings import Settings


def node_client_name(prefix: str, queue: str, worker_name: str) -> str:
    """The client name Node BullMQ's ``getWorkers()`` recognises."""
    encoded = base64.b64encode(queue.encode()).decode()
    return f"{prefix}:{encoded}:w:{worker_name}"


def producer_job_options(
    *, attempts: int = 3, backoff_ms: int = 5000, priority: int = 5, keep: int = 10, delay_ms: int = 0
) -> dict[str, Any]:
    """The options PipesHub's producer sets on every crawl job."""
    opts: dict[str, Any] = {
        "attempts": attempts,
        "backoff": {"type": "exponential", "delay": backoff_ms},
        "priority": priority,
        "removeOnComplete": keep,
        "removeOnFail": keep,
    }
    if delay_ms:
        opts["delay"] = delay_ms
    return opts


class JobQueue:
    """Producer-side access to a queue: add crawl jobs (enqueue command, demo, tests). Owns ``client``."""

    def __init__(self, settings: Settings, client: RedisClient, name: str | None = None) -> None:
        self._queue = Queue(name or settings.queue_name, {"connection": client, "prefix": settings.prefix})

    async def add(self, name: str, data: Any, opts: dict[str, Any]) -> str:
        """Add one job; returns its id."""
        job = await self._queue.add(name, data, opts)
        return str(job.id)

    async def state(self, job_id: str) -> str | None:
        """The state of job ``job_id``, None when there is no such job (BullMQ ignores an add with its id)."""
        state = await self._queue.getJobState(job_id)
        return None if state in (None, "unknown") else str(state)

    async def close(self) -> None:
        """Close the queue's connections."""
        await self._queue.close()


class QueueAdmin:
    """Operator actions on one queue through bullmq's Queue / Job API (retry, promote, remove, pause, clean,
    job schedulers). Does not own ``client``."""

    def __init__(self, settings: Settings, client: RedisClient, name: str | None = None) -> None:
        self.name = name or settings.queue_name
        self._queue = Queue(self.name, {"connection": client, "prefix": settings.prefix})

    async def _job(self, job_id: str) -> Job | None:
        job: Job | None = await Job.fromId(self._queue, job_id)
        return job

    async def retry(self, job_id: str) -> str | None:
        """Move a failed job back to wait; returns its previous state (None if the job does not exist)."""
        job = await self._job(job_id)
        if job is None:
            return None
        state = str(await job.getState())
        if state == "failed":
            await job.retry("failed")
        return state

    async def promote(self, job_id: str) -> str | None:
        """Move a delayed job to wait now; returns its previous state (None if missing)."""
        job = await self._job(job_id)
        if job is None:
            return None
        state = str(await job.getState())
        if state == "delayed":
            await job.promote()
        return state

    async def remove(self, job_id: str) -> bool:
        """Remove a job (not an active, locked one); True if it was removed."""
        return bool(await self._queue.remove(job_id))

    async def pause(self) -> None:
        """Pause the queue for every worker (Node and Python)."""
        await self._queue.pause()

    async def resume(self) -> None:
        """Resume the queue."""
        await self._queue.resume()

    async def is_paused(self) -> bool:
        """Is the queue paused?"""
        return bool(await self._queue.isPaused())

    async def clean(self, state: str, grace_ms: int, limit: int) -> list[str]:
        """Delete up to ``limit`` jobs in ``state`` older than ``grace_ms``; returns their ids."""
        return [str(i) for i in await self._queue.clean(grace_ms, limit, state)]

    async def upsert_scheduler(
        self, scheduler_id: str, *, repeat: dict[str, Any], name: str, data: dict[str, Any], opts: dict[str, Any]
    ) -> None:
        """Create or replace a job scheduler (bullmq ``upsertJobScheduler``; ``repeat``: ``{pattern | every, tz}``)."""
        await self._queue.upsertJobScheduler(scheduler_id, repeat, name, data, opts)

    async def remove_scheduler(self, scheduler_id: str) -> bool:
        """Remove a job scheduler and its next delayed job; True if it existed."""
        existed = bool(await self._queue.isJobScheduler(scheduler_id))
        await self._queue.removeJobScheduler(scheduler_id)
        return existed

    async def schedulers(self) -> list[dict[str, Any]]:
        """Every job scheduler's record (id, name, pattern, tz, next, template)."""
        return [dict(s) for s in await self._queue.getJobSchedulers(0, -1, True)]

    async def close(self) -> None:
        """Close the queue (the client stays open: the caller owns it)."""
        await self._queue.close()
