"""A schedule may not flood the queue: ``every: 1`` from Node bullmq 5.56.1 (PipesHub's producer version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from tests.helpers import running_app, wait_for
from tests.interop.pipeshub import aproducer, delayed_ticks, members, tick_millis
from worker.catalog import Catalog, InstanceEntry
from worker.settings import Settings

pytestmark = pytest.mark.node

ORG = "6a0f1e2d3c4b5a6978877665"
DATA = {"connector": "Jira", "orgId": ORG, "userId": "u", "timestamp": "2026-08-22T10:00:00.000Z"}


def _mock(config: dict[str, Any]) -> Catalog:
    return Catalog.from_entries({}, {"*": InstanceEntry(connector="mock", config=config)})


async def _tick_of(client: aioredis.Redis, key: str, queue: str, state: str) -> list[str]:
    return [t for t in await members(client, f"bull:{queue}:{state}") if t.startswith(key + ":")]


async def test_every_1_is_clamped_to_the_minimum_interval(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, redis_url: str
) -> None:
    """With the default repeat_min_interval_s the next tick is in the next minute slot (460 a second before), logged."""
    settings = make_settings()
    job = {"name": "crawl-jira-flood", "data": {**DATA, "connectorId": "flood"}, "opts": {"repeat": {"every": 1}}}
    added = await aproducer(redis_url, settings.queue_name, "bullmq5", "add", job)
    key = added["jobId"].rsplit(":", 1)[0]
    with capture_logs() as logs:
        async with running_app(settings, _mock({"items": 1})):
            done = await wait_for(lambda: _tick_of(redis_client, key, settings.queue_name, "completed"), timeout=15)
            following = await wait_for(lambda: delayed_ticks(redis_client, settings.queue_name, key + ":"))
    assert len(done) == 1, done
    assert len(following) == 1, following
    gap = tick_millis(following[0]) - tick_millis(done[0])
    assert 1000 < gap <= 60_000, "the next one-minute slot, not 1 ms later"
    assert tick_millis(following[0]) % 60_000 == 0, "slots of the clamped interval"
    clamped = [line for line in logs if line["event"] == "repeat.clamped"]
    assert clamped, "the clamp is said in the log"
    assert clamped[0]["min_every_ms"] == 60_000


async def test_deferrals_of_a_busy_instance_never_pile_up(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, redis_url: str
) -> None:
    """A flooding schedule (every 1 ms, no minimum) on an instance a long crawl holds: at most one deferred job,
    the other ticks complete as skipped, superseded (2,027 deferred jobs piled up in 15 s before)."""
    settings = make_settings(
        repeat_min_interval_s=0, duplicate_run_delay_s=0.05, concurrency=3, drain_timeout_s=1, handoff_timeout_s=2
    )
    queue = settings.queue_name
    slow = {"name": "crawl-jira-busy", "data": {**DATA, "connectorId": "busy"}, "opts": {"attempts": 1}}
    long_crawl = await aproducer(redis_url, queue, "bullmq5", "add", slow)
    catalog = _mock({"items": 10_000, "step_size": 1, "step_delay_s": 0.05})
    deferred_counts = []
    with capture_logs() as logs:
        async with running_app(settings, catalog):
            await wait_for(lambda: _active(redis_client, queue, long_crawl["jobId"]), what="the long crawl running")
            flood = {**slow, "opts": {"repeat": {"every": 1}}}
            await aproducer(redis_url, queue, "bullmq5", "add", flood)

            async def superseded(count: int) -> bool:
                deferred_counts.append(await _deferred(redis_client, queue))
                reasons = [str(line.get("reason", "")) for line in logs if line["event"] == "job.completed"]
                return sum(reason.startswith("superseded") for reason in reasons) >= count

            await wait_for(lambda: superseded(200), timeout=30, interval=0.1, what="200 superseded ticks")
            for _ in range(20):  # and it stays so while the flood goes on
                await superseded(200)
    assert max(deferred_counts) <= 1, deferred_counts


async def _active(client: aioredis.Redis, queue: str, job_id: str) -> bool:
    return job_id in await client.lrange(f"bull:{queue}:active", 0, -1)


#: Delayed jobs taken before (deferred), not next ticks waiting for their first time; read atomically.
_DEFERRED = """
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('HEXISTS', ARGV[1] .. id, 'processedOn') == 1 then n = n + 1 end
end
return n
"""


async def _deferred(client: aioredis.Redis, queue: str) -> int:
    return int(await client.eval(_DEFERRED, 1, f"bull:{queue}:delayed", f"bull:{queue}:"))
