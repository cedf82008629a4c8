"""Repeat ticks whose options are not what BullMQ writes fail on their first pickup, with the reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from bullmq import Queue

from tests.helpers import catalog_of, crawl_job, running_app, wait_for, wait_state
from worker.settings import Settings

GOOD = {"connector": "mock", "config": {"items": 2}}

# case -> (the tick's stored options (short keys, as the job hash holds them), expected fragment of failedReason)
BAD_REPEATS: dict[str, tuple[dict[str, Any], str]] = {
    "every-abc": ({"repeat": {"every": "abc"}}, "repeat.every must be a number of milliseconds, got string 'abc'"),
    "every-1e300": ({"repeat": {"every": 1e300}}, "repeat.every is 1e+300 ms, above the longest schedule"),
    "every-array": ({"repeat": {"every": [1]}}, "repeat.every must be a number of milliseconds, got array"),
    "count-string": ({"repeat": {"every": 60000, "count": "3"}}, "repeat.count must be a number, got string '3'"),
    "limit-string": ({"repeat": {"every": 60000, "limit": "5"}}, "repeat.limit must be a number, got string '5'"),
    "offset-string": ({"repeat": {"every": 60000, "offset": "x"}}, "repeat.offset must be a number"),
    "prev-string": ({"repeat": {"every": 60000}, "prevMillis": "soon"}, "prevMillis must be a number"),
    "tz-number": ({"repeat": {"pattern": "0 9 * * *", "tz": 5}}, "repeat.tz must be a string, got number '5'"),
    "offset-huge": ({"repeat": {"every": 60000, "offset": 1e300}}, "repeat.offset must be a number"),
    "end-huge": ({"repeat": {"every": 60000, "endDate": 1e300}}, "repeat.endDate is out of range"),
}


async def test_bad_repeat_options_fail_the_tick_at_once_and_other_jobs_run(
    make_settings: Callable[..., Settings], raw_redis: aioredis.Redis, queue: Queue
) -> None:
    """Each bad tick: failed on attempt 1, never stalled, no next tick made; a good job still completes."""
    settings = make_settings(concurrency=2, max_stalled_count=0, lock_duration_ms=5000, stalled_interval_ms=1000)
    ids: dict[str, str] = {}
    for case, (opts, _) in BAD_REPEATS.items():
        name, data = crawl_job("mock", "good")
        job_id = f"repeat:{case}:1700000000000"
        await queue.add(name, data, {"jobId": job_id, "attempts": 3})
        written = {**opts, "attempts": 3, "jobId": job_id, "repeatJobKey": case}
        await raw_redis.hset(f"bull:{settings.queue_name}:{job_id}", mapping={"opts": json.dumps(written), "rjk": case})
        ids[case] = job_id
    good = str((await queue.add(*crawl_job("mock", "good"), {"removeOnComplete": False})).id)
    async with running_app(settings, catalog_of(good=GOOD)):
        assert await wait_state(queue, good, ["completed", "failed"], timeout=30) == "completed"
        for job_id in ids.values():
            await wait_state(queue, job_id, ["failed"], timeout=15)
    for case, job_id in ids.items():
        stored = cast("dict[bytes, bytes]", await raw_redis.hgetall(f"bull:{settings.queue_name}:{job_id}"))
        reason = stored[b"failedReason"].decode()
        assert BAD_REPEATS[case][1] in reason, (case, reason)
        assert stored[b"atm"] == b"1", (case, stored[b"atm"])
        assert stored.get(b"stc", b"0") == b"0", f"{case}: failed on its first pickup, never stalled"
    delayed = [str(i) for i in await raw_redis.zrange(f"bull:{settings.queue_name}:delayed", 0, -1)]
    assert delayed == [], "no bad schedule made a next tick"


async def test_a_job_scheduler_every_1_ms_is_raised_to_the_minimum(
    make_settings: Callable[..., Settings], raw_redis: aioredis.Redis, queue: Queue
) -> None:
    """upsertJobScheduler every 1 ms (Node 6's way): the first tick runs, its record's every is raised to
    repeat_min_interval_s and the next tick is due about a minute later, not 1 ms."""
    settings = make_settings()
    name, data = crawl_job("mock", "good")
    await queue.upsertJobScheduler("flood", {"every": 1}, name, data, {})
    key = f"bull:{settings.queue_name}"

    async def completed() -> list[bytes]:
        ids = cast("list[bytes]", await raw_redis.zrange(f"{key}:completed", 0, -1))
        return [i for i in ids if i.startswith(b"repeat:flood:")]

    async def next_tick() -> list[bytes]:
        return cast("list[bytes]", await raw_redis.zrange(f"{key}:delayed", 0, -1))

    async with running_app(settings, catalog_of(good=GOOD)):
        done = await wait_for(completed, timeout=15)
        (following,) = await wait_for(next_tick, timeout=15)
    assert len(done) == 1, done
    assert await raw_redis.hget(f"{key}:repeat:flood", "every") == b"60000"
    first_ms = int(done[0].rsplit(b":", 1)[1])
    next_ms = int(following.rsplit(b":", 1)[1])
    assert 1000 < next_ms - first_ms <= 60_000, (first_ms, next_ms)
