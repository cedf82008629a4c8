"""The one rule for a *stuck* job: it is in the active list but its lock key has expired.

This is the condition BullMQ's stalled check (``moveStalledJobsToWait``) acts on: a worker holds
``<prefix>:<queue>:<jobId>:lock`` while it processes a job and renews it every half lock
duration; when the worker dies the key expires and the next stalled check moves the job back to
wait (or fails it after ``maxStalledCount``). Between those two moments the job is stuck. The
queue-state collector counts stuck jobs with this rule and the job status API reports the
``stuck`` state with it, so both always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.connections import RedisClient

#: At most this many active jobs are checked per call (one pipelined EXISTS each), oldest first.
DEFAULT_MAX_CHECKED = 200


def lock_key(prefix: str, queue: str, job_id: str) -> str:
    """The lock key a worker holds while it processes ``job_id`` (BullMQ's ``<jobKey>:lock``)."""
    return f"{prefix}:{queue}:{job_id}:lock"


def is_stuck(*, in_active: bool, lock_exists: bool) -> bool:
    """The rule for one job: it is in the active list and its lock key is gone."""
    return in_active and not lock_exists


def stuck_from_exists(job_ids: Sequence[str], lock_exists: Sequence[object]) -> list[str]:
    """The rule over active jobs (``lock_exists`` = their EXISTS replies): those whose lock is gone."""
    pairs = zip(job_ids, lock_exists, strict=True)
    return [job_id for job_id, exists in pairs if is_stuck(in_active=True, lock_exists=bool(exists))]


async def find_stuck(client: RedisClient, prefix: str, queue: str, job_ids: Sequence[str]) -> list[str]:
    """The ids among ``job_ids`` (active jobs) that are stuck; one pipelined EXISTS per id."""
    if not job_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(lock_key(prefix, queue, job_id))
    return stuck_from_exists(job_ids, await pipe.execute())
