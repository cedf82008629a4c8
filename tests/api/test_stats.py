"""Per-minute / per-hour stats aggregates: recording, reading per period, bounded keys, worker integration."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from bullmq import Queue

from tests.api.conftest import READ, auth
from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from worker.settings import Settings
from worker.stats import BUCKETS_MS, Period, StatsRecorder, bucket_index, read_stats


async def test_periods_count_only_their_window(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """Jobs 10 min, 5 h, 3 d and 20 d ago land in 1h/24h/7d/30d as expected; rates, avg and p95 follow."""
    s = make_settings()
    rec = StatsRecorder(
        redis_client, prefix=s.prefix, queue=s.queue_name, retention_days=35, connectors=["web", "drive"]
    )
    now = time.time()
    for _ in range(19):
        await rec.add("web", "completed", 0.2, now_s=now - 600)  # 200 ms -> bucket <=250
    await rec.add("web", "failed", 9.0, now_s=now - 600)  # 9 s -> bucket <=10000
    await rec.add("drive", "completed", 1.0, now_s=now - 5 * 3600)
    await rec.add("drive", "failed", 1.0, now_s=now - 3 * 86400)
    await rec.add("drive", "completed", 1.0, now_s=now - 20 * 86400)
    await rec.add("drive", "completed", 1.0, now_s=now - 40 * 86400)  # outside every period

    async def stats(period: Period) -> dict[str, Any]:
        return (
            await read_stats(redis_client, prefix=s.prefix, queue=s.queue_name, period=period, now_s=now)
        ).model_dump()

    h1 = await stats(Period.H1)
    assert (h1["total_jobs"], h1["completed_jobs"], h1["failed_jobs"]) == (20, 19, 1)
    assert h1["success_rate"] == 0.95
    assert h1["avg_processing_time_ms"] == (19 * 200 + 9000) / 20
    assert h1["p95_processing_time_ms"] == 250
    assert h1["by_connector"] == [
        {"connector": "web", "job_count": 20, "completed": 19, "failed": 1, "success_rate": 0.95}
    ]
    assert (await stats(Period.H24))["total_jobs"] == 21
    d7 = await stats(Period.D7)
    assert d7["total_jobs"] == 22
    assert d7["by_status"]["failed"] == 2
    assert (await stats(Period.D30))["total_jobs"] == 23
    keys = [k async for k in redis_client.scan_iter(match=f"bull:{s.queue_name}:stats:*")]
    assert len(keys) == 2 * 5  # a minute and an hour hash for each of the 5 distinct minutes
    ttl = await redis_client.ttl(keys[0])
    assert 34 * 86400 < ttl <= 35 * 86400


def test_histogram_buckets() -> None:
    """Processing times fall in the first bucket whose bound they do not exceed; above all bounds: overflow."""
    assert bucket_index(0) == 0
    assert bucket_index(100) == 0
    assert bucket_index(101) == 1
    assert bucket_index(BUCKETS_MS[-1] + 1) == len(BUCKETS_MS)


async def test_worker_records_outcomes_and_http_serves_them(
    make_settings: Callable[..., Settings], queue: Queue, http: httpx.AsyncClient
) -> None:
    """The real worker records a completed and a failed crawl; GET /v1/stats reports them with queue counts."""
    settings = make_settings()
    good = await add_crawl(queue, "mock", "good")
    bad = await add_crawl(queue, "mock", "bad", attempts=1)
    catalog = catalog_of(
        good={"connector": "mock", "config": {"items": 3}},
        bad={"connector": "mock", "config": {"items": 3, "invalid_credentials": True}},
    )
    async with running_app(settings, catalog):
        await wait_state(queue, good, ["completed"])
        await wait_state(queue, bad, ["failed"])
    body = (await http.get("/v1/stats", params={"period": "1h"}, headers=auth(READ))).json()
    assert body["period"] == "1h"
    assert (body["completed_jobs"], body["failed_jobs"], body["total_jobs"]) == (1, 1, 2)
    assert body["by_connector"][0]["connector"] == "mock"
    assert body["by_status"]["completed"] == 1
    assert {"waiting", "active", "delayed", "paused", "stuck"} <= set(body["by_status"])
    assert (await http.get("/v1/stats", params={"period": "2w"}, headers=auth(READ))).status_code == 422


async def test_counts_wait_in_memory_until_a_flush_and_survive_a_failed_one() -> None:
    """record() writes nothing; a flush that fails keeps the counts, and the next flush writes them once."""
    from fakeredis import FakeServer
    from fakeredis.aioredis import FakeRedis

    server = FakeServer()
    client = FakeRedis(server=server, decode_responses=True)
    rec = StatsRecorder(client, prefix="bull", queue="q", retention_days=35, connectors=["web", "drive"])
    now = time.time()
    for _ in range(3):
        rec.record("web", "completed", 0.2, now_s=now)
    rec.record("web", "failed", 2.0, now_s=now)
    assert await client.keys("*") == []
    server.connected = False
    with pytest.raises(redis.exceptions.ConnectionError):
        await rec.flush()
    server.connected = True
    rec.record("web", "completed", 0.2, now_s=now)
    await rec.flush()
    await rec.flush()  # nothing pending: writes nothing more
    minute = int(now // 60)
    stored = await client.hgetall(f"bull:q:stats:m:{minute}")
    assert stored["c:web"] == "4"
    assert stored["f:web"] == "1"
    assert stored["t:web"] == str(4 * 200 + 2000)
    assert await client.hgetall(f"bull:q:stats:h:{minute // 60}") == stored
    await client.aclose()


async def test_junk_connector_names_from_job_data_do_not_grow_the_stats_hashes(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """2,000 jobs with 2,000 made-up connector names: counted under "other", so a minute's hash keeps a handful
    of fields (on main: 3 fields per name, 6,000+ in one hash) and the overview names only known connectors."""
    s = make_settings()
    rec = StatsRecorder(redis_client, prefix=s.prefix, queue=s.queue_name, retention_days=1, connectors=["web"])
    now = time.time()
    for i in range(2000):
        rec.record(f"junk-{i}", "failed", 0.1, now_s=now)
    rec.record("web", "completed", 0.1, now_s=now)
    await rec.flush()
    keys = [k async for k in redis_client.scan_iter(match=f"bull:{s.queue_name}:stats:*")]
    assert keys
    for key in keys:
        assert await redis_client.hlen(key) <= 6, key
    overview = await read_stats(redis_client, prefix=s.prefix, queue=s.queue_name, period=Period.H1, now_s=now)
    assert {c.connector for c in overview.by_connector} == {"web", "other"}
    assert overview.total_jobs == 2001
