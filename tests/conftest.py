"""Shared fixtures: a real Redis, a unique queue per test, and cleanup of only the keys a test made."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from tests.tools import missing
from worker.settings import Settings

REDIS_URL = os.environ.get("CRAWL_WORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(autouse=True)
def _no_worker_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see (and the workers they start inherit) no CRAWL_WORKER_* variable of the caller's shell."""
    for name in list(os.environ):
        if name.upper().startswith("CRAWL_WORKER_") and name.upper() != "CRAWL_WORKER_TEST_REDIS_URL":
            monkeypatch.delenv(name)


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
