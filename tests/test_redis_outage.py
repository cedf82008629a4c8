"""Losing Redis: the worker keeps retrying without exiting and resumes when Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from bullmq import Queue

from tests.helpers import add_crawl, wait_state
from tests.proc import Processes, write_catalog
from tests.redis_server import RedisServer
from worker.settings import Settings

pytestmark = pytest.mark.slow


async def test_worker_survives_a_redis_outage_and_resumes(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    private_redis: RedisServer,
    make_queue: Callable[..., Queue],
    processes: Processes,
) -> None:
    """Redis down for 6 s: the worker process stays up (no crash loop) and processes a job added afterwards."""
    private_redis.start()
    settings = make_settings(redis_url=private_redis.url)
    catalog = write_catalog(tmp_path / "catalog.toml", {"c": {"connector": "mock", "config": {"items": 3}}})
    proc = processes.crawler(settings, catalog, tmp_path, redis_url=private_redis.url, redis_retry_delay_ms=500)
    await asyncio.sleep(2)
    private_redis.stop()
    await asyncio.sleep(6)
    assert proc.poll() is None, "the worker exited while Redis was down"
    private_redis.start()
    queue = make_queue(settings)
    job_id = await add_crawl(queue, "mock", "c")
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=30) == "completed"
    assert proc.poll() is None
