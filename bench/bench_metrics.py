"""/metrics scrape time with 10 and with 1,000,000 waiting jobs, and Redis commands per scrape.

The queue-state collector costs O(1) Redis commands per queue, so both sizes should scrape in the
same time within noise. Jobs are written bullmq-shaped (job hash + id in the wait list) by a Lua
script in chunks, and deleted the same way afterwards.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import statistics
import time
import uuid
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from worker.http import OpsServer
from worker.metrics import Metrics
from worker.queue_stats import QueueStatsCollector
from worker.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_WAIT_BUCKETS

SCRAPES = 200
CHUNK = 100_000
FILL = """
local base, first, last, now = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local data = '{"orgId":"org-1","connector":"mock","connectorId":"c","userId":"u"}'
for i = first, last do
  redis.call('HSET', base .. ':' .. i, 'name', 'crawl-mock-c', 'data', data,
             'opts', '{"attempts":3}', 'timestamp', now, 'delay', '0', 'priority', '0')
  redis.call('LPUSH', base .. ':wait', i)
end
return last
"""
DROP = """
local base, first, last = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = first, last do redis.call('UNLINK', base .. ':' .. i) end
return last
"""


async def _chunks(client: aioredis.Redis, script: str, base: str, count: int, *extra: Any) -> None:
    for first in range(1, count + 1, CHUNK):
        await client.eval(script, 1, base, first, min(count, first + CHUNK - 1), *extra)  # type: ignore[misc]


async def _scrape_series(http: httpx.AsyncClient, stats: QueueStatsCollector) -> dict[str, Any]:
    times: list[float] = []
    commands: list[int] = []
    size = 0
    for _ in range(5):  # warm-up: connection set-up, first snapshot
        await http.get("/metrics")
    for _ in range(SCRAPES):
        started = time.perf_counter()
        response = await http.get("/metrics")
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        commands.append(stats.last_commands)
        size = len(response.content)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
        "max_ms": round(times[-1], 2),
        "redis_commands_per_scrape": max(commands),
        "metrics_bytes": size,
    }


async def _measure(redis_url: str, queue: str, waiting: int) -> list[dict[str, Any]]:
    rows = []
    for label, cache_s in (("off: computed every scrape", 0.0), ("5 s, another replica computed it", 5.0)):
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        registry = CollectorRegistry()
        Metrics(registry, queue=queue, connectors=["mock"], duration_buckets=DEFAULT_DURATION_BUCKETS,
                wait_buckets=DEFAULT_WAIT_BUCKETS).set_slots(5)
        stats = QueueStatsCollector(client, prefix="bull", queues=[queue], cache_s=cache_s)
        registry.register(stats)
        server = OpsServer(registry, _always_ready, host="127.0.0.1", port=0, before_scrape=[stats.refresh])
        await server.start()
        try:
            if cache_s:  # replica A computes the snapshot; this replica reads it once (GET), then from memory
                await QueueStatsCollector(client, prefix="bull", queues=[queue], cache_s=cache_s).refresh()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                result = await _scrape_series(http, stats)
            snapshot = stats.snapshot(queue)
            assert snapshot is not None
            assert snapshot.jobs["waiting"] == waiting, snapshot
        finally:
            await server.stop()
            await client.aclose()
        rows.append({"waiting_jobs": waiting, "cache": label, "scrapes": SCRAPES, **result})
    return rows


async def _always_ready() -> tuple[bool, str]:
    return True, "ok"


async def _run(redis_url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    rows: list[dict[str, Any]] = []
    notes = []
    try:
        for waiting in (10, 1_000_000):
            queue = f"bench-metrics-{uuid.uuid4().hex[:8]}"
            base = f"bull:{queue}"
            started = time.perf_counter()
            await _chunks(client, FILL, base, waiting, int(time.time() * 1000))
            notes.append(f"{waiting:,} jobs written in {time.perf_counter() - started:.1f} s")
            try:
                rows.extend(await _measure(redis_url, queue, waiting))
            finally:
                started = time.perf_counter()
                await _chunks(client, DROP, base, waiting)
                await client.unlink(f"{base}:wait", f"{base}:crawl-worker:queue-stats",
                                    f"{base}:crawl-worker:queue-stats:lock")
                notes.append(f"deleted in {time.perf_counter() - started:.1f} s")
    finally:
        await client.aclose()
    return {
        "title": "Prometheus /metrics scrape: 10 vs 1,000,000 waiting jobs",
        "rows": rows,
        "notes": (
            f"{SCRAPES} sequential HTTP scrapes of the worker's /metrics (worker metrics + queue-state collector) "
            "per row, over loopback. 'off': the collector recomputes the queue state on every scrape "
            "(two pipelined round trips). '5 s': another replica computed the shared snapshot; this one reads it "
            "with one GET on its first scrape and from memory for the rest of the TTL (max shown). "
            "Redis commands are counted by the collector (pipelined commands one by one; "
            "tests/observability/test_queue_stats.py checks that count against a counting client). "
            + "; ".join(notes)
        ),
    }


def run(redis_url: str, out_dir: pathlib.Path) -> dict[str, Any]:
    """Bench contract: measure, write ``metrics.json`` into ``out_dir``, return the table."""
    result = asyncio.run(_run(redis_url))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(run("redis://127.0.0.1:6379/0", pathlib.Path(".bench")), indent=2))
