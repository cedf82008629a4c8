"""The command line: check, connectors, enqueue, exit codes."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

from bullmq import Queue

from tests.proc import run_cli, write_catalog
from worker.app import App
from worker.cli import freeze_start_up
from worker.settings import Settings


def test_check_passes_with_valid_catalog_and_redis(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """`check` exits 0 when the catalog validates and Redis answers."""
    settings = make_settings()
    catalog = write_catalog(tmp_path / "c.toml", {"m": {"connector": "mock", "config": {"items": 2}}})
    result = run_cli("check", redis_url=settings.redis_url, catalog_file=catalog)
    assert result.returncode == 0, result.stdout
    assert "ok   catalog m: mock" in result.stdout
    assert "ok   redis" in result.stdout


def test_check_fails_on_bad_entry_and_unreachable_redis(tmp_path: Path) -> None:
    """`check` exits 1 and says which entry and which dependency failed."""
    catalog = write_catalog(
        tmp_path / "c.toml", {"m": {"connector": "mock", "config": {"items": "lots"}}, "x": {"connector": "nope"}}
    )
    result = run_cli("check", redis_url="redis://127.0.0.1:1/0", catalog_file=catalog, redis_connect_timeout_s=0.5)
    assert result.returncode == 1
    assert "FAIL catalog m:" in result.stdout
    assert "FAIL catalog x: connector 'nope' is not installed" in result.stdout
    assert "FAIL redis" in result.stdout


def test_connectors_lists_builtins() -> None:
    """`connectors` lists the installed connectors with their config fields."""
    result = run_cli("connectors")
    assert result.returncode == 0
    assert "filesystem" in result.stdout
    assert "root" in result.stdout
    assert "mock" in result.stdout


async def test_enqueue_adds_a_pipeshub_shaped_job(make_settings: Callable[..., Settings], queue: Queue) -> None:
    """`enqueue` adds a job with the producer's name, data and options."""
    settings = make_settings()
    result = run_cli(
        "enqueue",
        "--connector",
        "Local FS",
        "--connector-id",
        "abc-123",
        "--org-id",
        "o1",
        redis_url=settings.redis_url,
        queue_name=settings.queue_name,
    )
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["id"]
    job = await queue.getJob(job_id)
    assert job.name == "crawl-local-fs-abc-123"
    assert job.data["connectorId"] == "abc-123"
    assert job.data["orgId"] == "o1"
    assert job.data["scheduleConfig"]["scheduleType"] == "hourly"
    assert job.opts["attempts"] == 3
    assert job.opts["backoff"] == {"type": "exponential", "delay": 5000}
    assert job.priority == 5
    assert await queue.getJobState(job_id) == "prioritized"


def test_exit_codes_say_what_failed_redis_or_a_file(tmp_path: Path) -> None:
    """An unreachable Redis is exit 3 naming Redis (password hidden); a file problem is exit 1 naming the file."""
    down = run_cli(
        "enqueue",
        "--connector",
        "mock",
        "--connector-id",
        "m",
        redis_url="redis://:s3cret@127.0.0.1:1/0",
        redis_connect_timeout_s=0.5,
    )
    assert down.returncode == 3, down.stderr
    assert "Redis unreachable at redis://:***@127.0.0.1:1/0" in down.stderr
    assert "s3cret" not in down.stderr
    folder = tmp_path / "catalog-is-a-directory"
    folder.mkdir()
    bad_file = run_cli("check", catalog_file=folder)
    assert bad_file.returncode == 1, bad_file.stderr
    assert str(folder) in bad_file.stderr
    assert "Redis" not in bad_file.stderr


async def test_run_freezes_what_start_up_built(make_settings: Callable[..., Settings]) -> None:
    """`run` freezes the start-up heap once the worker has started, so full collections during crawls skip it."""
    app = App(make_settings())
    gc.unfreeze()
    try:
        await freeze_start_up(app)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
