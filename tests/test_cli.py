"""The command line: check, connectors, enqueue, exit codes."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from bullmq import Queue

from tests.proc import REPO, run_cli, worker_env, write_catalog
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


@pytest.mark.slow
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


@pytest.mark.slow
async def test_enqueue_takes_the_org_the_catalog_guards_and_refuses_what_it_cannot_add(
    make_settings: Callable[..., Settings], queue: Queue, tmp_path: Path
) -> None:
    """No --org-id: the catalog entry's org_id (the README's example would be refused with org-demo); an empty
    --connector is a clear exit 2, not a traceback; a --job-id that exists is said, not silently ignored."""
    settings = make_settings()
    catalog = tmp_path / "c.toml"
    catalog.write_text('[instances."guarded"]\nconnector = "mock"\norg_id = "507f1f77bcf86cd799439012"\n')
    env = {"redis_url": settings.redis_url, "queue_name": settings.queue_name, "catalog_file": catalog}
    added = run_cli("enqueue", "--connector", "mock", "--connector-id", "guarded", "--job-id", "one", **env)
    assert added.returncode == 0, added.stderr
    assert (await queue.getJob("one")).data["orgId"] == "507f1f77bcf86cd799439012"
    again = run_cli("enqueue", "--connector", "mock", "--connector-id", "guarded", "--job-id", "one", **env)
    assert again.returncode == 1
    assert "job 'one' already exists (prioritized)" in again.stderr
    empty = run_cli("enqueue", "--connector", "", "--connector-id", "x", **env)
    assert empty.returncode == 2
    assert empty.stderr.startswith("crawl-worker: cannot enqueue: connector:"), empty.stderr
    assert "Traceback" not in empty.stderr
    unknown = run_cli("enqueue", "--connector", "mock", "--connector-id", "elsewhere", **env)
    assert unknown.returncode == 0, unknown.stderr
    assert (await queue.getJob(json.loads(unknown.stdout)["id"])).data["orgId"] == "org-demo"


def test_a_closed_stdout_ends_the_command_quietly(make_settings: Callable[..., Settings]) -> None:
    """`crawl-worker connectors | head -1`, the reader gone before the output: no "Redis unreachable ... Broken
    pipe", no traceback; exit 141 as a Unix tool killed by SIGPIPE."""
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait(5)  # the pipe's only reader has exited: the next write fails with EPIPE
    assert reader.stdin is not None
    settings = make_settings()
    writer = subprocess.run(
        [sys.executable, "-m", "worker", "connectors"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(redis_url=settings.redis_url),
        cwd=REPO,
        timeout=60,
        check=False,
    )
    reader.stdin.close()
    assert writer.returncode == 141, writer.stderr
    assert writer.stderr == ""


def test_api_on_a_taken_port_exits_2_with_a_clear_message(make_settings: Callable[..., Settings]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = make_settings()
        result = run_cli("api", "--port", str(port), redis_url=s.redis_url, api_admin_token="t" * 20)
    assert result.returncode == 2, result.stderr
    assert f"cannot serve the API on 127.0.0.1:{port}" in result.stderr
    assert "crawl-worker api: http" not in result.stderr  # no banner for a server that never ran
