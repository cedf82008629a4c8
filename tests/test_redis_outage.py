"""Losing Redis: the worker keeps retrying without exiting and resumes when Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import add_crawl, open_queue, wait_state
from tests.proc import start_worker, write_catalog
from tests.redis_server import RedisServer
from worker.settings import Settings

pytestmark = pytest.mark.slow


async def test_worker_survives_a_redis_outage_and_resumes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Redis down for 6 s: the worker process stays up (no crash loop) and processes a job added afterwards."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = make_settings(redis_url=server.url)
    catalog = write_catalog(tmp_path / "catalog.toml", {"c": {"connector": "mock", "config": {"items": 3}}})
    proc = start_worker(
        tmp_path / "worker.log", redis_url=server.url, queue_name=settings.queue_name, catalog_file=catalog,
        data_dir=tmp_path / "data", redis_retry_delay_ms=500,
    )
    try:
        await asyncio.sleep(2)
        server.stop()
        await asyncio.sleep(6)
        assert proc.poll() is None, "the worker exited while Redis was down"
        server.start()
        queue = open_queue(settings)
        try:
            job_id = await add_crawl(queue, "mock", "c")
            assert await wait_state(queue, job_id, ["completed", "failed"], timeout=30) == "completed"
        finally:
            await queue.close()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(5)
        server.stop()
