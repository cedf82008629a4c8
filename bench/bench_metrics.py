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

from bench.common import DROP_JOBS
from worker.http import OpsServer
from worker.metrics import Metrics
from worker.queue_stats import QueueStatsCollector
from worker.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_WAIT_BUCKETS

SCRAPES = 200
WARMUP = 5
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


async def _chunks(client: aioredis.Redis, script: str, base: str, count: int, *extra: Any) -> None:
    for first in range(1, count + 1, CHUNK):
        await client.eval(script, 1, base, first, min(count, first + CHUNK - 1), *extra)  # type: ignore[misc]


class _Target:
    """One worker's /metrics endpoint for one queue and cache mode, with its timings."""

    def __init__(self, redis_url: str, queue: str, waiting: int, cache: str, cache_s: float) -> None:
        self.queue, self.waiting, self.cache = queue, waiting, cache
        self.client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.registry = CollectorRegistry()
        Metrics(
            self.registry,
            queue=queue,
            connectors=["mock"],
            duration_buckets=DEFAULT_DURATION_BUCKETS,
            wait_buckets=DEFAULT_WAIT_BUCKETS,
        ).set_slots(5)
        self.stats = QueueStatsCollector(self.client, prefix="bull", queues=[queue], cache_s=cache_s)
        self.registry.register(self.stats)
        self.server = OpsServer(
            self.registry, _always_ready, host="127.0.0.1", port=0, before_scrape=[self.stats.refresh]
        )
        self.cache_s = cache_s
        self.times: list[float] = []
        self.commands: list[int] = []
        self.size = 0

    async def start(self) -> httpx.AsyncClient:
        await self.server.start()
        if self.cache_s:  # another replica computes the shared snapshot; this one reads it (GET), then from memory
            await QueueStatsCollector(self.client, prefix="bull", queues=[self.queue], cache_s=self.cache_s).refresh()
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.server.port}")

    async def scrape(self, http: httpx.AsyncClient, *, timed: bool) -> None:
        started = time.perf_counter()
        response = await http.get("/metrics")
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        self.commands.append(self.stats.last_commands)
        self.size = len(response.content)
        if timed:
            self.times.append(elapsed)

    def row(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot(self.queue)
        assert snapshot is not None
        assert snapshot.jobs["waiting"] == self.waiting, snapshot
        times = sorted(self.times)
        return {
            "waiting_jobs": self.waiting,
            "cache": self.cache,
            "scrapes": len(times),
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            "max_ms": round(times[-1], 2),
            "redis_commands_per_scrape": max(self.commands),
            "metrics_bytes": self.size,
        }

    async def close(self) -> None:
        await self.server.stop()
        await self.client.aclose()


async def _measure(redis_url: str, queues: dict[int, str]) -> list[dict[str, Any]]:
    """Scrape every (size, cache mode) target in turn, so machine noise hits all rows alike."""
    targets = [
        _Target(redis_url, queue, waiting, cache, cache_s)
        for cache, cache_s in (("off: computed every scrape", 0.0), ("30 s TTL, another replica computed it", 30.0))
        for waiting, queue in queues.items()
    ]
    clients = [await target.start() for target in targets]
    try:
        for i in range(WARMUP + SCRAPES):  # warm-up: connection set-up, first snapshot read (commands counted)
            for target, http in zip(targets, clients, strict=True):
                await target.scrape(http, timed=i >= WARMUP)
        return [target.row() for target in targets]
    finally:
        for target, http in zip(targets, clients, strict=True):
            await http.aclose()
            await target.close()


async def _always_ready() -> tuple[bool, str]:
    return True, "ok"


async def _run(redis_url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    queues = {waiting: f"bench-metrics-{uuid.uuid4().hex[:8]}" for waiting in (10, 1_000_000)}
    notes = []
    try:
        for waiting, queue in queues.items():
            started = time.perf_counter()
            await _chunks(client, FILL, f"bull:{queue}", waiting, int(time.time() * 1000))
            notes.append(f"{waiting:,} jobs written in {time.perf_counter() - started:.1f} s")
        rows = await _measure(redis_url, queues)
    finally:
        started = time.perf_counter()
        for waiting, queue in queues.items():
            base = f"bull:{queue}"
            await _chunks(client, DROP_JOBS, base, waiting)
            snapshot = f"{base}:crawl-worker:queue-stats"
            await client.unlink(f"{base}:wait", snapshot, f"{snapshot}:lock")
        notes.append(f"all deleted in {time.perf_counter() - started:.1f} s")
        await client.aclose()
    return {
        "title": "Prometheus /metrics scrape: 10 vs 1,000,000 waiting jobs",
        "rows": rows,
        "notes": (
            f"{SCRAPES} HTTP scrapes of a worker's /metrics (worker metrics + queue-state collector) per row, over "
            "loopback, the four targets scraped in turn so machine noise hits all rows alike. 'off': the collector "
            "recomputes the queue state on every scrape (two pipelined round trips). '30 s TTL': another replica "
            "computed the shared snapshot; this one reads it with one GET on its first scrape and from memory for "
            "the rest of the TTL (max shown). Redis commands are counted by the collector (pipelined commands one "
            "by one; tests/observability/test_queue_stats.py checks that count against a counting client). "
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
