"""A job's completion: last progress, log line and moveToFinished in one round trip, in that order."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import redis.asyncio as aioredis
from bullmq import Queue
from prometheus_client import CollectorRegistry

from tests.helpers import add_crawl, catalog_of, running_app, wait_for, wait_state
from tests.redis_server import RedisServer
from worker.settings import Settings
from worker.stats import Period, read_stats

NOOP = {"connector": "mock", "config": {"items": 3}}


async def _events(client: aioredis.Redis, queue: str, job_id: str) -> list[str]:
    entries = cast("list[tuple[str, dict[str, str]]]", await client.xrange(f"bull:{queue}:events"))  # decoded
    return [fields["event"] for _, fields in entries if fields.get("jobId") == job_id]


async def test_last_progress_and_log_land_before_completed(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, queue: Queue
) -> None:
    """A short job writes one progress (100 %) and its log line, and the progress event precedes completed."""
    settings = make_settings()  # progress every 1 s: a job this short only writes its last value
    async with running_app(settings, catalog_of(c=NOOP)):
        job_id = await add_crawl(queue, "mock", "c", removeOnComplete=False)
        assert await wait_state(queue, job_id, ["completed", "failed"]) == "completed"
    events = await _events(redis_client, settings.queue_name, job_id)
    assert events.count("progress") == 1
    assert events.index("progress") < events.index("completed")
    job = await queue.getJob(job_id)
    assert job.progress["percentage"] == 100
    assert job.returnvalue["documents"] == 3
    logs = await queue.getJobLogs(job_id)
    assert logs["logs"] == ["completed: 3 documents, 0 failures, 0 skipped"]


async def test_completion_survives_a_redis_that_lost_its_scripts(
    make_settings: Callable[..., Settings],
    private_redis: RedisServer,
    make_redis: Callable[..., aioredis.Redis],
    make_queue: Callable[..., Queue],
) -> None:
    """After SCRIPT FLUSH (as after a restart or failover) the next job still completes with progress and log."""
    private_redis.start()
    client = make_redis(private_redis.url, decode_responses=True)
    settings = make_settings(redis_url=private_redis.url)
    queue = make_queue(settings)
    async with running_app(settings, catalog_of(a=NOOP, b=NOOP)):
        first = await add_crawl(queue, "mock", "a")
        assert await wait_state(queue, first, ["completed", "failed"]) == "completed"
        await client.script_flush()
        second = await add_crawl(queue, "mock", "b", removeOnComplete=False)
        assert await wait_state(queue, second, ["completed", "failed"]) == "completed"
    job = await queue.getJob(second)
    assert job.progress["percentage"] == 100
    assert (await queue.getJobLogs(second))["logs"] == ["completed: 3 documents, 0 failures, 0 skipped"]
    events = await _events(client, settings.queue_name, second)
    assert events.index("progress") < events.index("completed")


@pytest.mark.slow
async def test_a_completion_redis_refuses_is_not_counted(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, queue: Queue
) -> None:
    """The job's lock is lost mid-run: its refused completion counts nowhere; it is recovered and counted once."""
    settings = make_settings(lock_duration_ms=5000, stalled_interval_ms=1000)
    registry = CollectorRegistry()
    job_id = await add_crawl(queue, "mock", "slow", removeOnComplete=False)
    catalog = catalog_of(slow={"connector": "mock", "config": {"items": 2, "step_size": 1, "step_delay_s": 0.6}})
    async with running_app(settings, catalog, registry=registry):
        lock = f"bull:{settings.queue_name}:{job_id}:lock"
        await wait_for(lambda: redis_client.exists(lock), what="the job's lock")
        await redis_client.delete(lock)  # as if Redis stalled past the lock and another worker took it
        assert await wait_state(queue, job_id, ["completed"], timeout=30) == "completed"

        async def flushed() -> bool:
            stats = await read_stats(redis_client, prefix="bull", queue=settings.queue_name, period=Period.H1)
            return stats.completed_jobs > 0

        await wait_for(flushed, timeout=10, what="the stats flush")
    labels = {"queue": settings.queue_name, "connector": "mock"}
    assert registry.get_sample_value("crawl_worker_jobs_completed_total", labels) == 1
    stats = await read_stats(redis_client, prefix="bull", queue=settings.queue_name, period=Period.H1)
    assert stats.completed_jobs == 1  # the app's last flush at shutdown added nothing more
    assert (await queue.getJob(job_id)).stalledCounter == 1, "recovered once, then completed"
