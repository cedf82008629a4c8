"""The queue-state collector against real Redis: every state, O(1) cost, a cache shared across replicas."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

import redis.asyncio as aioredis
from bullmq import Queue, Worker
from bullmq.custom_errors import UnrecoverableError
from prometheus_client import CollectorRegistry, generate_latest

from tests.helpers import wait_for
from tests.observability.conftest import CountingRedis
from worker.queue.producer import node_client_name
from worker.queue_stats import QueueStatsCollector
from worker.stuck import find_stuck, lock_key


def collector(client: Any, queue: str, cache_s: float = 0.0) -> QueueStatsCollector:
    """A collector for one queue under the ``bull`` prefix."""
    return QueueStatsCollector(client, prefix="bull", queues=[queue], cache_s=cache_s)


async def fill_wait(client: aioredis.Redis, queue: str, count: int, oldest_ms: int) -> None:
    """Put ``count`` bullmq-shaped job ids in the wait list; the oldest one gets a job hash."""
    for start in range(0, count, 5000):
        await client.lpush(f"bull:{queue}:wait", *range(start + 1, min(count, start + 5000) + 1))
    await client.hset(f"bull:{queue}:1", mapping={"name": "n", "data": "{}", "timestamp": oldest_ms, "delay": 0})


async def test_every_state_is_counted(
    queue_name: str, redis_url: str, redis_client: aioredis.Redis, queue: Queue
) -> None:
    """waiting (wait + prioritized), active, stuck, delayed, failed, completed, paused, workers and age are right."""
    release = asyncio.Event()

    async def process(job: Any, _token: str) -> str:
        if job.name == "bad":
            raise UnrecoverableError("scripted")
        if job.name == "hold":
            await release.wait()
        return "ok"

    worker = Worker(queue_name, process, {"connection": redis_url, "concurrency": 2, "name": "w1"})
    stats = collector(redis_client, queue_name)
    try:
        for name in ("ok", "bad", "hold", "hold"):
            await queue.add(name, {}, {"attempts": 1})

        async def settled() -> bool:
            counts: dict[str, int] = await queue.getJobCounts("active", "completed", "failed")
            return counts == {"active": 2, "completed": 1, "failed": 1}

        await wait_for(settled, what="2 active, 1 completed, 1 failed")
        added = int(time.time() * 1000)
        await queue.add("w", {}, {})
        await queue.add("w", {}, {})
        await queue.add("p", {}, {"priority": 5})
        await queue.add("p", {}, {"priority": 5})
        await queue.add("d", {}, {"delay": 60_000})
        active_ids = cast("list[str]", await redis_client.lrange(f"bull:{queue_name}:active", 0, -1))  # decoded
        await redis_client.delete(lock_key("bull", queue_name, active_ids[0]))  # its worker "died"

        state = await stats.compute(queue_name)
        assert state.jobs == {
            "waiting": 4,
            "paused": 0,
            "active": 2,
            "stuck": 1,
            "delayed": 1,
            "failed": 1,
            "completed": 1,
        }
        assert await find_stuck(redis_client, "bull", queue_name, active_ids) == [active_ids[0]]
        # a stock Python bullmq worker names its connections ``bull:<queue>:w:<name>`` (not base64):
        # Node's getWorkers() does not count it, and neither does our gauge (they must agree)
        assert state.workers == 0
        assert state.oldest_waiting_ms is not None
        assert abs(state.oldest_waiting_ms - added) < 2000
        assert 0 <= state.oldest_age_s(time.time()) < 5

        await queue.pause()
        paused = await stats.compute(queue_name)
        assert (paused.jobs["waiting"], paused.jobs["paused"]) == (0, 4)
        await queue.resume()
    finally:
        release.set()  # the held jobs finish, so the worker can close
        await worker.close()


async def test_workers_are_counted_by_node_client_name(
    queue_name: str, redis_url: str, make_redis: Callable[..., aioredis.Redis]
) -> None:
    """Every connection named like a Node worker of this queue counts, as in Node's getWorkersCount(); others not."""
    clients = [make_redis(redis_url) for _ in range(4)]
    names = [
        node_client_name("bull", queue_name, "a"),
        node_client_name("bull", queue_name, "a"),
        node_client_name("bull", queue_name, "b"),
        node_client_name("bull", queue_name + "x", "c"),
    ]
    for client, name in zip(clients, names, strict=True):
        await client.client_setname(name)
    probe = make_redis(redis_url, decode_responses=True)
    state = await collector(probe, queue_name).compute(queue_name)
    assert state.workers == 3


async def test_cost_does_not_grow_with_the_queue(queue_name: str, counting_client: CountingRedis) -> None:
    """10 and 20,000 waiting jobs cost the same Redis commands, and the collector reports that count."""
    stats = collector(counting_client, queue_name)
    await fill_wait(counting_client, queue_name, 10, int(time.time() * 1000) - 30_000)
    before = counting_client.commands
    await stats.refresh()
    small = counting_client.commands - before
    assert stats.snapshot(queue_name).jobs["waiting"] == 10  # type: ignore[union-attr]
    await counting_client.delete(f"bull:{queue_name}:wait")
    await fill_wait(counting_client, queue_name, 20_000, int(time.time() * 1000) - 30_000)
    before = counting_client.commands
    await stats.refresh()
    large = counting_client.commands - before
    state = stats.snapshot(queue_name)
    assert state is not None
    assert state.jobs["waiting"] == 20_000
    assert 29 < state.oldest_age_s(time.time()) < 40
    assert small == large == stats.last_commands
    assert large <= 16


async def test_snapshot_is_shared_across_replicas(
    queue_name: str, counting_client: CountingRedis, make_counting_client: Callable[[], CountingRedis]
) -> None:
    """Two collectors (two replicas): only the first computes; the second reads the snapshot with one GET."""
    other = make_counting_client()
    await fill_wait(counting_client, queue_name, 3, int(time.time() * 1000))
    first, second = collector(counting_client, queue_name, 30), collector(other, queue_name, 30)
    await first.refresh()
    assert first.last_commands > 5
    await second.refresh()
    assert other.commands == 1
    assert second.snapshot(queue_name) == first.snapshot(queue_name)
    await counting_client.lpush(f"bull:{queue_name}:wait", "99")
    await second.refresh()  # fresh in the process: no Redis call
    assert other.commands == 1
    assert second.snapshot(queue_name).jobs["waiting"] == 3  # type: ignore[union-attr]


async def test_exposition_and_error_accounting(
    queue_name: str, redis_client: aioredis.Redis, make_redis: Callable[..., aioredis.Redis]
) -> None:
    """The registry exposes the queue gauges; a failing Redis is counted, never raised, and hides no stale data."""
    registry = CollectorRegistry()
    stats = collector(redis_client, queue_name)
    registry.register(stats)
    await fill_wait(redis_client, queue_name, 2, int(time.time() * 1000))
    await stats.refresh()
    text = generate_latest(registry).decode()
    assert f'crawl_worker_queue_jobs{{queue="{queue_name}",state="waiting"}} 2.0' in text
    assert f'crawl_worker_queue_oldest_waiting_age_seconds{{queue="{queue_name}"}}' in text
    assert "crawl_worker_queue_collector_errors_total 0.0" in text

    broken = make_redis("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    failing = collector(broken, queue_name)
    registry.register(failing)
    await failing.refresh()
    text = generate_latest(registry).decode()
    assert "crawl_worker_queue_collector_errors_total 1.0" in text
    assert "crawl_worker_queue_collector_last_success_timestamp_seconds 0.0" in text


async def test_only_the_lock_holder_recomputes_a_stale_snapshot(
    queue_name: str, counting_client: CountingRedis, make_counting_client: Callable[[], CountingRedis]
) -> None:
    """Snapshot stale and another replica holding the lock: a collector serves the old snapshot (2 commands)."""
    other = make_counting_client()
    await fill_wait(counting_client, queue_name, 3, int(time.time() * 1000))
    first, second = collector(counting_client, queue_name, 0.2), collector(other, queue_name, 0.2)
    await first.refresh()
    await counting_client.lpush(f"bull:{queue_name}:wait", "99")
    await asyncio.sleep(0.25)  # snapshot and lock are now older than the TTL
    await counting_client.set(f"bull:{queue_name}:crawl-worker:queue-stats:lock", "1", px=5000)  # "A computes"
    await second.refresh()
    assert other.commands == 2  # GET, SET NX (lost)
    assert second.snapshot(queue_name).jobs["waiting"] == 3  # type: ignore[union-attr]
    await counting_client.delete(f"bull:{queue_name}:crawl-worker:queue-stats:lock")
    await asyncio.sleep(0.25)
    await second.refresh()  # lock free: this replica computes and publishes
    assert second.snapshot(queue_name).jobs["waiting"] == 4  # type: ignore[union-attr]
    published = json.loads(cast(str, await counting_client.get(f"bull:{queue_name}:crawl-worker:queue-stats")))
    assert published["jobs"]["waiting"] == 4
