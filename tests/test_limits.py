"""A crawl's time limit (``max_run_s``, per instance in the catalog): it fails unretried and keeps its checkpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from bullmq import Queue

from tests.helpers import catalog_of, crawl_job, running_app, wait_state
from worker.settings import Settings

SLOW = {"items": 100_000, "step_size": 1, "step_delay_s": 0.05}


async def test_a_crawl_past_its_time_limit_fails_at_once_and_the_next_job_resumes(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Instance limit 1 s (setting 2 s for the other): each job fails near its limit on attempt 1 of 3, naming
    max_run_s; the next job for the instance resumes from the checkpoint the first one kept."""
    settings = make_settings(max_run_s=2, concurrency=2)
    catalog = catalog_of(
        own={"connector": "mock", "config": SLOW, "max_run_s": 1},
        default={"connector": "mock", "config": SLOW},
    )
    opts = {"attempts": 3, "backoff": {"type": "fixed", "delay": 10}, "removeOnFail": False}
    async with running_app(settings, catalog):
        started = time.monotonic()
        own = str((await queue.add(*crawl_job("mock", "own"), opts)).id)
        other = str((await queue.add(*crawl_job("mock", "default"), opts)).id)
        assert await wait_state(queue, own, ["failed"], timeout=10) == "failed"
        own_s = time.monotonic() - started
        assert await wait_state(queue, other, ["failed"], timeout=10) == "failed"
        other_s = time.monotonic() - started
        for job_id, limit in ((own, 1), (other, 2)):
            job = await Queue.getJob(queue, job_id)
            assert f"ran longer than max_run_s={limit} s" in job.failedReason, job.failedReason
            assert "checkpoint is kept" in job.failedReason
            assert job.attemptsMade == 1, "not retried"
        assert 1 <= own_s < 4, own_s
        assert 2 <= other_s < 5, other_s
        again = str((await queue.add(*crawl_job("mock", "own"), opts)).id)
        assert await wait_state(queue, again, ["failed"], timeout=10) == "failed"
        job = await Queue.getJob(queue, again)
        progress = job.progress if isinstance(job.progress, dict) else json.loads(str(job.progress))
        assert progress["resumed"] is True, "the next job resumed the kept checkpoint"
        assert progress["current"] > 15, progress
