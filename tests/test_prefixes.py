"""A worker whose prefix is not its producer's says so: at start-up and in ``crawl-worker check`` (exit 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bullmq import Queue
from structlog.testing import capture_logs

from tests.conftest import delete_keys
from tests.helpers import catalog_of, crawl_job, running_app
from tests.proc import run_cli, write_catalog
from worker.prefixes import check_prefix
from worker.settings import Settings

OTHERS = ("{crawling}", "{acme-crawling}")


@pytest.fixture
def elsewhere(redis_url: str, queue_name: str) -> Iterator[None]:
    """The test's queue may be written under the prefixes in OTHERS; those keys are deleted afterwards."""
    yield
    for prefix in OTHERS:
        delete_keys(redis_url, prefix, queue_name)


async def _produce(redis_url: str, queue_name: str, prefix: str) -> None:
    """A producer adds one crawl job to the queue under ``prefix``."""
    producer = Queue(queue_name, {"connection": redis_url, "prefix": prefix})
    try:
        await producer.add(*crawl_job("mock", "c1"), {})
    finally:
        await producer.close()


@pytest.mark.usefixtures("elsewhere")
async def test_check_and_start_up_name_the_prefix_when_the_queue_lives_under_crawling(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Jobs under {crawling}, worker on bull: check exits 1 naming prefix; the worker logs queue.prefix_mismatch."""
    settings = make_settings()
    await _produce(settings.redis_url, settings.queue_name, "{crawling}")
    catalog = write_catalog(tmp_path / "catalog.toml", {"c1": {"connector": "mock"}})
    common = {"redis_url": settings.redis_url, "queue_name": settings.queue_name, "catalog_file": catalog}
    result = await asyncio.to_thread(run_cli, "check", **common)
    assert result.returncode == 1, result.stdout
    assert "FAIL prefix" in result.stdout
    assert "'{crawling}'" in result.stdout
    assert "set prefix (CRAWL_WORKER_PREFIX)" in result.stdout
    matching = await asyncio.to_thread(run_cli, "check", prefix="{crawling}", **common)
    assert matching.returncode == 0, matching.stdout
    assert "ok   prefix '{crawling}'" in matching.stdout
    with capture_logs() as logs:
        async with running_app(settings, catalog_of(c1={"connector": "mock"})):
            pass
    (warning,) = [line for line in logs if line["event"] == "queue.prefix_mismatch"]
    assert (warning["prefix"], warning["found"], warning["setting"]) == ("bull", ["{crawling}"], "prefix")


@pytest.mark.usefixtures("elsewhere")
async def test_an_unusual_prefix_is_found_by_scan_and_a_used_queue_is_not_a_mismatch(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """{<namespace>-crawling} is found with SCAN; once the queue has keys under our prefix, nothing is said."""
    settings = make_settings()
    await _produce(settings.redis_url, settings.queue_name, "{acme-crawling}")
    found = await check_prefix(redis_client, "bull", settings.queue_name)
    assert found.mismatch
    assert found.elsewhere == ("{acme-crawling}",)
    await _produce(settings.redis_url, settings.queue_name, "bull")
    assert not (await check_prefix(redis_client, "bull", settings.queue_name)).mismatch


def test_check_fails_when_the_catalog_file_is_missing(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A missing catalog is an error (every job would fail as unconfigured), not an empty catalog."""
    settings = make_settings()
    result = run_cli("check", redis_url=settings.redis_url, catalog_file=tmp_path / "nope.toml")
    assert result.returncode == 1, result.stdout
    assert "FAIL catalog" in result.stdout
    assert "does not exist" in result.stdout
