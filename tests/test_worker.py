"""The core worker against real Redis: PipesHub-shaped jobs, progress, retries, delays, concurrency."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from bullmq import Queue

from tests.helpers import RecordingSink, add_crawl, catalog_of, running_app, wait_for, wait_state
from worker.settings import Settings

MOCK = {"connector": "mock", "config": {"items": 30, "step_size": 10}}


async def test_pipeshub_job_is_processed_with_object_progress_and_summary(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """A job with PipesHub's exact name, data and options completes with a JSON summary and object progress."""
    settings = make_settings(progress_interval_s=0)
    async with running_app(settings, catalog_of(c1=MOCK)):
        job_id = await add_crawl(queue, "mock", "c1")
        assert await wait_state(queue, job_id, ["completed", "failed"]) == "completed"
    job = await queue.getJob(job_id)
    assert job.name == "crawl-mock-c1"
    assert job.returnvalue["documents"] == 30
    assert job.returnvalue["connector_id"] == "c1"
    assert job.returnvalue["duration_ms"] >= 0
    assert job.progress["percentage"] == 100
    assert job.progress["current"] == 30
    assert job.progress["total"] == 30
    assert job.attemptsMade == 1


async def test_number_progress_for_consumers_that_expect_one(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """With progress_format=number the job's progress is a plain 0-100 number."""
    settings = make_settings(progress_format="number", progress_interval_s=0)
    async with running_app(settings, catalog_of(c1=MOCK)):
        job_id = await add_crawl(queue, "mock", "c1")
        await wait_state(queue, job_id, ["completed"])
    job = await queue.getJob(job_id)
    assert job.progress == 100


async def test_permanent_error_fails_at_once_without_spending_retries(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Bad credentials fail the job on its first attempt with a specific reason (attemptsMade 1 of 3)."""
    settings = make_settings()
    bad = {"connector": "mock", "config": {"invalid_credentials": True}}
    async with running_app(settings, catalog_of(c1=bad)):
        job_id = await add_crawl(queue, "mock", "c1")
        await wait_state(queue, job_id, ["failed", "completed"])
    job = await queue.getJob(job_id)
    assert await queue.getJobState(job_id) == "failed"
    assert job.attemptsMade == 1
    assert "rejected the credentials" in job.failedReason


@pytest.mark.slow
async def test_transient_error_retries_with_exponential_backoff_then_succeeds(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Two transient failures are retried after ~1 s and ~2 s (exponential) and the third attempt completes."""
    settings = make_settings()
    flaky = {"connector": "mock", "config": {"items": 5, "transient_failures": 2}}
    async with running_app(settings, catalog_of(c1=flaky)):
        job_id = await add_crawl(queue, "mock", "c1", backoff={"type": "exponential", "delay": 1000})
        await wait_state(queue, job_id, ["completed", "failed"], timeout=30)
    job = await queue.getJob(job_id)
    assert await queue.getJobState(job_id) == "completed"
    assert job.attemptsMade == 3
    elapsed_s = (job.finishedOn - job.timestamp) / 1000
    assert elapsed_s >= 3.0, f"backoff 1 s + 2 s not honoured: finished after {elapsed_s:.2f}s"
    assert elapsed_s < 8.0


@pytest.mark.slow
async def test_delayed_job_runs_on_time(make_settings: Callable[..., Settings], queue: Queue) -> None:
    """A job with delay 3000 ms starts no earlier than its delay and within 1.5 s after it."""
    settings = make_settings()
    async with running_app(settings, catalog_of(c1=MOCK)):
        job_id = await add_crawl(queue, "mock", "c1", delay=3000)
        await wait_state(queue, job_id, ["completed"], timeout=15)
    job = await queue.getJob(job_id)
    late_s = (job.processedOn - job.timestamp - 3000) / 1000
    assert 0 <= late_s <= 1.5, f"started {late_s:.3f}s after its due time"


async def test_sub_second_delay_is_not_rounded_up_to_a_second(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """A 300 ms delay runs within 300-700 ms (the port alone rounds it up to about 1.07 s)."""
    settings = make_settings()
    async with running_app(settings, catalog_of(c1=MOCK)):
        await asyncio.sleep(0.5)
        job_id = await add_crawl(queue, "mock", "c1", delay=300)
        await wait_state(queue, job_id, ["completed"], timeout=15)
    job = await queue.getJob(job_id)
    waited_ms = job.processedOn - job.timestamp
    assert 300 <= waited_ms <= 700, f"a 300 ms delay ran after {waited_ms} ms"


@pytest.mark.slow
async def test_idle_worker_picks_up_a_job_due_8s_later(make_settings: Callable[..., Settings], queue: Queue) -> None:
    """An idle worker (past redis-py 8's 5 s socket timeout) picks up a job due 8 s later within 1.5 s."""
    settings = make_settings()
    async with running_app(settings, catalog_of(c1=MOCK)):
        await asyncio.sleep(6)  # idle long enough for a 5 s socket timeout to have bitten
        job_id = await add_crawl(queue, "mock", "c1", delay=8000)
        await wait_state(queue, job_id, ["completed"], timeout=20)
    job = await queue.getJob(job_id)
    late_s = (job.processedOn - job.timestamp - 8000) / 1000
    assert 0 <= late_s <= 1.5, f"idle worker started the due job {late_s:.3f}s late"


async def test_two_workers_never_process_the_same_job_at_once(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Two workers on one queue share 20 jobs: each job is processed exactly once, never concurrently."""
    settings_a = make_settings(concurrency=3)
    settings_b = make_settings(concurrency=3)
    sink = RecordingSink()
    instances = {
        f"c{i}": {"connector": "mock", "config": {"items": 4, "step_size": 1, "step_delay_s": 0.02}} for i in range(20)
    }
    async with (
        running_app(settings_a, catalog_of(**instances), sink=sink),
        running_app(settings_b, catalog_of(**instances), sink=sink),
    ):
        ids = [await add_crawl(queue, "mock", cid, removeOnComplete=False) for cid in instances]
        for job_id in ids:
            await wait_state(queue, job_id, ["completed", "failed"], timeout=30)
    states = [await queue.getJobState(job_id) for job_id in ids]
    assert states == ["completed"] * 20
    per_instance: dict[str, list[float]] = {}
    for ts, instance, _docs in sink.batches:
        per_instance.setdefault(instance.connector_id, []).append(ts)
    assert all(len(stamps) == 4 for stamps in per_instance.values()), "a job was processed twice"
    runs = {instance.run_id for _, instance, _ in sink.batches}
    assert len(runs) == 20


async def test_return_value_is_json_that_node_can_parse(
    make_settings: Callable[..., Settings], redis_client: object, queue: Queue
) -> None:
    """The stored returnvalue is compact JSON with the summary's documented keys."""
    settings = make_settings()
    async with running_app(settings, catalog_of(c1=MOCK)):
        job_id = await add_crawl(queue, "mock", "c1")
        await wait_state(queue, job_id, ["completed"])
    raw = await queue.client.hget(f"bull:{settings.queue_name}:{job_id}", "returnvalue")
    summary = json.loads(raw)
    assert set(summary) >= {
        "status",
        "connector",
        "connector_id",
        "run_id",
        "documents",
        "bytes",
        "failures",
        "duration_ms",
        "resumed",
        "steps",
    }
    assert time.time() * 1000 - (await queue.getJob(job_id)).finishedOn < 60_000


async def test_concurrency_caps_jobs_in_flight_and_every_job_completes(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """With concurrency 3, nine slow jobs never run more than 3 at a time, and all of them complete."""
    settings = make_settings(concurrency=3)
    slow = {"connector": "mock", "config": {"items": 2, "step_size": 1, "step_delay_s": 0.1}}
    instances = {f"s{i}": slow for i in range(9)}
    peak = 0
    async with running_app(settings, catalog_of(**instances)) as app:
        assert app.queue_worker is not None
        worker = app.queue_worker
        ids = [await add_crawl(queue, "mock", cid) for cid in instances]

        async def all_completed() -> bool:
            nonlocal peak
            peak = max(peak, worker.active)
            return all([await queue.getJobState(job_id) == "completed" for job_id in ids])

        await wait_for(all_completed, timeout=20, interval=0.01, what="all nine jobs to complete")
    assert peak == 3


async def test_worker_pause_waits_for_the_job_in_flight_and_takes_none_until_resumed(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """pause() returns once the running job completed; a job added while paused waits until resume()."""
    settings = make_settings(concurrency=2)
    slow = {"connector": "mock", "config": {"items": 3, "step_size": 1, "step_delay_s": 0.2}}
    async with running_app(settings, catalog_of(a=slow, b=MOCK)) as app:
        assert app.queue_worker is not None
        bullmq_worker = app.queue_worker._worker
        assert bullmq_worker is not None
        first = await add_crawl(queue, "mock", "a")
        await wait_state(queue, first, ["active"])
        await bullmq_worker.pause()
        assert await queue.getJobState(first) == "completed"
        second = await add_crawl(queue, "mock", "b")
        await asyncio.sleep(0.5)
        assert await queue.getJobState(second) in {"waiting", "prioritized"}
        bullmq_worker.resume()
        assert await wait_state(queue, second, ["completed", "failed"]) == "completed"
