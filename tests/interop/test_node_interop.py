"""Wire compatibility with real Node BullMQ (npm bullmq pinned in tests/interop/package-lock.json)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import catalog_of, crawl_job, running_app, wait_for
from worker.queue import producer_job_options
from worker.settings import Settings

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the pinned npm packages installed."""
    binary = shutil.which("node")
    if binary is None or not (HERE / "node_modules" / "bullmq").is_dir():
        pytest.fail("node and tests/interop/node_modules are required (make node)")
    return binary


def node_call(node: str, settings: Settings, *args: str) -> Any:
    """Run one node_client.mjs command and parse its JSON output."""
    out = subprocess.run(
        [node, "node_client.mjs", settings.redis_url, settings.queue_name, *args],
        cwd=HERE, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("progress_format", ["object", "number"])
async def test_node_producer_events_and_getjob_see_what_a_node_worker_would_leave(
    node: str, make_settings: Callable[..., Settings], progress_format: str
) -> None:
    """Node adds jobs; Node QueueEvents gets our progress/completed/failed; Node getJob and getWorkers agree."""
    settings = make_settings(progress_format=progress_format, progress_interval_s=0)
    good_name, good_data = crawl_job("mock", "good")
    bad_name, bad_data = crawl_job("mock", "unconfigured")
    jobs = [
        {"name": good_name, "data": good_data, "opts": producer_job_options()},
        {"name": bad_name, "data": bad_data, "opts": producer_job_options()},
    ]
    good_id, bad_id = node_call(node, settings, "add", json.dumps(jobs))
    listener = await asyncio.create_subprocess_exec(
        node, "node_client.mjs", settings.redis_url, settings.queue_name, "listen", f"{good_id},{bad_id}", "30000",
        cwd=HERE, stdout=asyncio.subprocess.PIPE,
    )
    assert listener.stdout is not None
    assert json.loads(await listener.stdout.readline()) == {"type": "ready"}
    catalog = catalog_of(good={"connector": "mock", "config": {"items": 12, "step_size": 4, "step_delay_s": 0.05}})
    async with running_app(settings, catalog):
        names = await wait_for(lambda: asyncio.to_thread(node_call, node, settings, "workers"), what="getWorkers")
        assert any(name.endswith(f":w:{settings.worker_name}") for name in names), names
        raw, _ = await asyncio.wait_for(listener.communicate(), timeout=40)
    events = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    progress = [e["data"] for e in events if e["type"] == "progress" and e["jobId"] == good_id]
    completed = next(e for e in events if e["type"] == "completed")
    failed = next(e for e in events if e["type"] == "failed")
    if progress_format == "number":
        assert all(isinstance(p, int | float) for p in progress)
        assert progress[-1] == 100
    else:
        assert all(isinstance(p, dict) and {"percentage", "current", "total"} <= set(p) for p in progress)
        assert progress[-1]["percentage"] == 100
        assert [p["current"] for p in progress] == sorted(p["current"] for p in progress)
    assert len(progress) >= 3
    assert completed["jobId"] == good_id
    assert completed["returnvalue"]["documents"] == 12
    assert failed["jobId"] == bad_id
    assert "connectorId 'unconfigured' is not configured" in failed["failedReason"]

    seen = node_call(node, settings, "inspect", f"{good_id},{bad_id}")
    good, bad = seen[good_id], seen[bad_id]
    assert good["state"] == "completed"
    assert good["returnvalue"]["documents"] == 12
    assert good["attemptsMade"] == 1
    assert good["timestamp"] <= good["processedOn"] <= good["finishedOn"]
    assert good["data"] == good_data
    assert (good["progress"] == 100) if progress_format == "number" else (good["progress"]["percentage"] == 100)
    assert bad["state"] == "failed"
    assert bad["attemptsMade"] == 1
    assert bad["finishedOn"] >= bad["processedOn"]
