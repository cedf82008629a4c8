"""bull-board (npm @bull-board/api, pinned in tests/interop/package-lock.json) shows our jobs as a Node worker's."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from worker.settings import Settings

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.node


def bull_board(settings: Settings, job_id: str) -> dict[str, Any]:
    """What bull-board's API routes answer for one job of our queue (job, logs, workers)."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "@bull-board" / "api").is_dir():
        pytest.fail("node and tests/interop/node_modules/@bull-board/api are required (make node)")
    out = subprocess.run(
        [node, "bull_board.mjs", settings.redis_url, settings.queue_name, job_id],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
async def seen(make_settings: Callable[..., Settings], queue: Queue) -> dict[str, Any]:
    """One completed and one failed job of our worker, as bull-board reports them while the worker runs."""
    settings = make_settings(progress_interval_s=0)
    catalog = catalog_of(
        good={"connector": "mock", "config": {"items": 6, "step_size": 2}},
        bad={"connector": "mock", "config": {"invalid_credentials": True}},
    )
    async with running_app(settings, catalog):
        good = await add_crawl(queue, "mock", "good")
        bad = await add_crawl(queue, "mock", "bad")
        await wait_state(queue, good, ["completed"])
        await wait_state(queue, bad, ["failed"])
        views = await asyncio.gather(*(asyncio.to_thread(bull_board, settings, i) for i in (good, bad)))
    return {"settings": settings, "good": views[0], "bad": views[1]}


async def test_bull_board_reports_our_progress_logs_and_return_value(seen: dict[str, Any]) -> None:
    """bull-board's job route shows our object progress at 100 %, our log lines and the JSON return value."""
    good = seen["good"]
    assert good["status"] == "completed"
    assert good["job"]["progress"]["percentage"] == 100
    assert good["job"]["progress"]["current"] == 6
    assert good["job"]["returnValue"]["documents"] == 6
    assert good["job"]["returnValue"]["status"] == "completed"
    assert good["job"]["attempts"] == 1
    assert good["job"]["timestamp"] <= good["job"]["processedOn"] <= good["job"]["finishedOn"]
    assert any("completed: 6 documents" in line for line in good["logs"]), good["logs"]


async def test_bull_board_reports_our_failed_reason_and_stack(seen: dict[str, Any]) -> None:
    """bull-board's job route shows our failedReason and a stack trace naming our error class."""
    bad = seen["bad"]
    assert bad["status"] == "failed"
    assert bad["job"]["isFailed"] is True
    assert bad["job"]["failedReason"] == "mock source rejected the credentials (401)"
    assert any("CredentialsError" in frame for frame in bad["job"]["stacktrace"])


async def test_bull_board_reports_processed_by(seen: dict[str, Any]) -> None:
    """bull-board's job route names our worker in processedBy, as it does a Node worker."""
    assert seen["good"]["job"].get("processedBy") == seen["settings"].worker_name


async def test_bull_board_lists_one_worker_per_process(seen: dict[str, Any]) -> None:
    """bull-board's workers route lists our process once, under its worker name."""
    workers = seen["good"]["workers"]
    assert [w["name"] for w in workers] == [seen["settings"].worker_name], workers
