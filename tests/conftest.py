"""Shared fixtures: a real Redis, a unique queue per test, and cleanup of only the keys a test made.

Whatever a fixture opens (queues, clients, processes, servers) it closes after the test: tests hold no
``finally`` of their own for them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from bullmq import Queue, Worker

from tests.helpers import open_queue
from tests.proc import Processes
from tests.redis_server import RedisServer
from tests.tools import missing
from worker.connections import make_client
from worker.operations import Operations
from worker.settings import Settings

REDIS_URL = os.environ.get("CRAWL_WORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _no_worker_settings_from_the_shell() -> Iterator[None]:
    """Tests and fixtures of any scope see (and the workers they start inherit) no CRAWL_WORKER_* of the shell."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("CRAWL_WORKER_") and name.upper() != "CRAWL_WORKER_TEST_REDIS_URL":
                patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skipped locally when missing, an error in CI."""
    if not _redis_available():
        missing(f"a Redis at {REDIS_URL}", "start redis-server, or set CRAWL_WORKER_TEST_REDIS_URL")
    return REDIS_URL


def delete_keys(url: str, prefix: str, queue: str) -> None:
    """Delete every key of ``queue`` under ``prefix`` (and nothing else)."""
    client = redis.Redis.from_url(url)
    try:
        for pattern in (f"{prefix}:{queue}:*", f"{prefix}:{queue}"):
            batch = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(batch), 500):
                client.delete(*batch[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def queue_name(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A queue name no other test uses; its keys are deleted afterwards."""
    name = f"cwtest-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)
    yield name
    delete_keys(redis_url, "bull", name)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A decoded asyncio Redis client, closed after the test."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client without decoding (bytes in, bytes out: what a broken producer stores), closed after."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_redis() -> AsyncIterator[Callable[..., aioredis.Redis]]:
    """Open asyncio Redis clients (``Redis.from_url``'s arguments, or a subclass's); every one is closed after."""
    opened: list[aioredis.Redis] = []

    def factory(url: str, client_class: type[aioredis.Redis] = aioredis.Redis, **kwargs: Any) -> aioredis.Redis:
        client = client_class.from_url(url, **kwargs)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        await client.aclose()


@pytest.fixture
async def make_queue(redis_url: str, queue_name: str) -> AsyncIterator[Callable[..., Queue]]:
    """Open bullmq Queues: this test's queue, or the queue of the Settings given; every one is closed after."""
    opened: list[Queue] = []

    def factory(settings: Settings | None = None) -> Queue:
        queue = open_queue(settings) if settings else Queue(queue_name, {"connection": redis_url, "prefix": "bull"})
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        await queue.close()


@pytest.fixture
def queue(make_queue: Callable[..., Queue]) -> Queue:
    """A bullmq Queue on this test's queue (the Redis, prefix and queue of ``make_settings()``), closed after."""
    return make_queue()


@pytest.fixture
async def hand_worker(redis_url: str, queue_name: str) -> AsyncIterator[Worker]:
    """A bullmq Worker on this test's queue that takes jobs only by hand (``getNextJob``), closed after."""
    worker = Worker(queue_name, None, {"connection": redis_url, "autorun": False})
    yield worker
    await worker.close(force=True)


@pytest.fixture
async def ops(make_settings: Callable[..., Settings]) -> AsyncIterator[Operations]:
    """The shared job operations on this test's queue, closed (with their client) after."""
    settings = make_settings()
    client = make_client(settings)
    operations = Operations(settings, client)
    yield operations
    await operations.close()
    await client.aclose()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start processes through this; each one still running after the test is killed and waited for, once."""
    started = Processes()
    yield started
    started.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, not started yet (for tests that stop and restart Redis); killed after."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def make_settings(redis_url: str, queue_name: str, tmp_path: Path) -> Callable[..., Settings]:
    """Build Settings for this test's queue, data dir and catalog, with overrides."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "queue_name": queue_name,
            "data_dir": tmp_path / "data",
            "catalog_file": tmp_path / "catalog.toml",
            "metrics_enabled": False,
            "log_format": "json",
            "worker_name": f"test-{uuid.uuid4().hex[:6]}",
        }
        values.update(overrides)
        return Settings(**values)

    return factory
