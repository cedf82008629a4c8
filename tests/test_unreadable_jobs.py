"""Jobs the port cannot read fail on their first pickup, with a reason in the producer's terms; nothing else moves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis.asyncio as aioredis
from bullmq import Queue
from redis.typing import EncodableT, FieldT

from tests.helpers import catalog_of, crawl_job, running_app, wait_state
from worker.settings import Settings

GOOD = {"connector": "mock", "config": {"items": 2}}

# name -> (fields to overwrite in the stored job hash (bytes allowed), expected fragment of failedReason)
CORRUPTIONS: dict[str, tuple[dict[FieldT, EncodableT], str]] = {
    "deep": ({"data": "[" * 200_000 + "]" * 200_000}, "job data is nested too deeply"),
    "utf8": ({"data": b'{"connector":"mock","connectorId":"good","orgId":"o","x":"\xff\xfe"}'}, "not valid UTF-8"),
    "timestamp": ({"timestamp": "yesterday"}, "job field timestamp must be an integer, got 'yesterday'"),
    "delay": ({"delay": "soon"}, "job field delay must be an integer"),
    "atm": ({"atm": "many"}, "job field atm must be an integer"),
    "progress": ({"progress": "{half"}, "job progress is not valid JSON"),
    "opts-array": ({"opts": "[1, 2]"}, "job options must be a JSON object, got array"),
    "attempts-inf": ({"opts": '{"attempts": 1e999}'}, "job option attempts must be a whole number, got number inf"),
    "data-json": ({"data": "{not json"}, "job data is not valid JSON"),
}


async def _ticker(gaps: list[float]) -> None:
    """Append the event loop's gaps between 10 ms sleeps to ``gaps`` until cancelled (a stalled loop shows)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


async def test_each_unreadable_job_fails_at_once_and_a_good_job_completes(
    make_settings: Callable[..., Settings], raw_redis: aioredis.Redis, queue: Queue
) -> None:
    """Deep nesting, invalid UTF-8, bad counters, bad progress, array options, infinite attempts: failed, attempt 1."""
    settings = make_settings(concurrency=2, max_stalled_count=0, lock_duration_ms=5000, stalled_interval_ms=1000)
    ids: dict[str, str] = {}
    for case, (fields, _) in CORRUPTIONS.items():
        name, data = crawl_job("mock", "good")
        job_id = str((await queue.add(name, data, {"attempts": 3, "removeOnFail": False})).id)
        await raw_redis.hset(f"bull:{settings.queue_name}:{job_id}", mapping=fields)
        ids[case] = job_id
    attempts_abc = await queue.add(*crawl_job("mock", "good"), {"attempts": "abc"})  # through the bullmq API
    ids["attempts-abc"] = str(attempts_abc.id)
    name, data = crawl_job("mock", "good")
    good = str((await queue.add(name, data, {"removeOnComplete": False})).id)
    async with running_app(settings, catalog_of(good=GOOD)):
        assert await wait_state(queue, good, ["completed", "failed"], timeout=30) == "completed"
        for job_id in ids.values():
            await wait_state(queue, job_id, ["failed"], timeout=15)
    for case, job_id in ids.items():
        stored = cast("dict[bytes, bytes]", await raw_redis.hgetall(f"bull:{settings.queue_name}:{job_id}"))
        expected = CORRUPTIONS.get(case, (None, "job option attempts must be a whole number, got string 'abc'"))[1]
        reason = stored[b"failedReason"].decode()
        assert expected in reason, (case, reason)
        assert stored[b"atm"] == b"1", (case, stored[b"atm"])
        assert stored.get(b"stc", b"0") == b"0", f"{case}: failed on its first pickup, never stalled"
        trace = json.loads(stored.get(b"stacktrace", b"[]"))
        assert trace == [], (case, trace)
    kept = cast(bytes, await raw_redis.hget(f"bull:{settings.queue_name}:{ids['deep']}", "data"))
    assert kept.startswith(b"[[["), "kept as sent"
    done = await queue.getJob(good)
    assert done.attemptsMade == 1, "nothing was done to the good job"
    assert done.failedReason is None


@pytest.mark.parametrize("size", [64 * 1024 * 1024])
async def test_oversized_job_data_is_refused_before_it_is_parsed(
    make_settings: Callable[..., Settings], raw_redis: aioredis.Redis, size: int, queue: Queue
) -> None:
    """A 64 MB job fails with its size and the limit, read but never parsed: the event loop never stalls for seconds."""
    settings = make_settings(job_data_max_bytes=1_048_576)
    name, data = crawl_job("mock", "good")
    job_id = str((await queue.add(name, data, {"removeOnFail": False})).id)
    # many small values (what made the parse cost seconds and 700 MB before): {"pad": [0, 0, ...]}
    blob = b'{"connector":"mock","connectorId":"good","orgId":"o","pad":[' + b"0," * (size // 2) + b"0]}"
    await raw_redis.hset(f"bull:{settings.queue_name}:{job_id}", "data", blob)
    gaps: list[float] = []

    async with running_app(settings, catalog_of(good=GOOD)):
        tick = asyncio.create_task(_ticker(gaps))
        await wait_state(queue, job_id, ["failed"], timeout=30)
        tick.cancel()
    assert max(gaps) < 1.5, f"the loop stalled {max(gaps):.2f} s (parsing it would stall it for seconds)"
    reason = cast(bytes, await raw_redis.hget(f"bull:{settings.queue_name}:{job_id}", "failedReason")).decode()
    assert f"job data is {len(blob)} bytes, above job_data_max_bytes=1048576" in reason


async def test_every_oversized_field_fails_the_job_unread(
    make_settings: Callable[..., Settings], raw_redis: aioredis.Redis, queue: Queue
) -> None:
    """A 64 MB opts, and 2 MB progress / returnvalue / stacktrace fields: each job fails naming
    the field and its size, the loop never stalls (the field never leaves Redis), and a good job completes."""
    settings = make_settings(concurrency=2)
    sizes = {"opts": 64 * 1024 * 1024, "progress": 2 << 20, "returnvalue": 2 << 20, "stacktrace": 2 << 20}
    ids = {}
    for field, size in sizes.items():
        job_id = str((await queue.add(*crawl_job("mock", "good"), {"removeOnFail": False})).id)
        blob = b'{"pad":[' + b"0," * (size // 2) + b"0]}" if field != "stacktrace" else b'["' + b"x" * size + b'"]'
        await raw_redis.hset(f"bull:{settings.queue_name}:{job_id}", field, blob)
        ids[field] = (job_id, len(blob))
    gaps: list[float] = []

    async with running_app(settings, catalog_of(good=GOOD)):
        tick = asyncio.create_task(_ticker(gaps))
        for job_id, _ in ids.values():
            await wait_state(queue, job_id, ["failed"], timeout=30)
        good = str((await queue.add(*crawl_job("mock", "good"), {"removeOnComplete": False})).id)
        assert await wait_state(queue, good, ["completed", "failed"], timeout=30) == "completed"
        tick.cancel()
    assert max(gaps) < 0.5, f"the loop stalled {max(gaps):.2f} s"
    for field, (job_id, size) in ids.items():
        reason = cast(bytes, await raw_redis.hget(f"bull:{settings.queue_name}:{job_id}", "failedReason")).decode()
        assert f"job field {field} ({size} bytes) above the 1048576-byte bound" in reason, (field, reason)
