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
from tests.proc import Processes
from worker.queue.producer import node_client_name, producer_job_options
from worker.queue_stats import count_workers
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
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
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
        node,
        "node_client.mjs",
        settings.redis_url,
        settings.queue_name,
        "listen",
        f"{good_id},{bad_id}",
        "30000",
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert listener.stdout is not None
    assert json.loads(await listener.stdout.readline()) == {"type": "ready"}
    catalog = catalog_of(good={"connector": "mock", "config": {"items": 12, "step_size": 4, "step_delay_s": 0.05}})
    async with running_app(settings, catalog):
        seen = await wait_for(lambda: _workers(node, settings, 1), what="getWorkers")
        assert any(name.endswith(f":w:{settings.worker_name}") for name in seen["names"]), seen
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


async def _workers(node: str, settings: Settings, count: int) -> dict[str, Any] | None:
    """Node ``getWorkers()`` names and ``getWorkersCount()``, once ``count`` workers are listed."""
    seen: dict[str, Any] = await asyncio.to_thread(node_call, node, settings, "workers")
    return seen if len(seen["names"]) >= count else None


@pytest.mark.slow
async def test_node_sees_processed_by_and_one_worker_per_process(
    node: str, make_settings: Callable[..., Settings], tmp_path: Path, redis_client: Any, processes: Processes
) -> None:
    """Node job.processedBy is our worker name (also for jobs a completion fetched); one getWorkers entry a process."""
    settings = make_settings()
    catalog = tmp_path / "rules.toml"
    catalog.write_text('[connector_types."*"]\nconnector = "mock"\nconfig = { items = 1 }\n')
    common = {
        "redis_url": settings.redis_url,
        "queue_name": settings.queue_name,
        "catalog_file": catalog,
        "data_dir": tmp_path / "data",
    }
    jobs = []
    for i in range(4):
        name, data = crawl_job("Drive", f"drive-{i}")
        jobs.append({"name": name, "data": data, "opts": producer_job_options()})
    ids = node_call(node, settings, "add", json.dumps(jobs))
    processes.worker(tmp_path / "p1.log", worker_name="proc-one", concurrency=1, **common)

    async def all_done() -> dict[str, Any] | None:
        seen = await asyncio.to_thread(node_call, node, settings, "inspect", ",".join(ids))
        return seen if all(job["state"] == "completed" for job in seen.values()) else None

    done = await wait_for(all_done, timeout=30, what="4 completed jobs")
    assert {job["processedBy"] for job in done.values()} == {"proc-one"}, done
    processes.worker(tmp_path / "p2.log", worker_name="proc-two", concurrency=5, **common)
    seen = await wait_for(lambda: _workers(node, settings, 2), timeout=20, what="two workers")
    await asyncio.sleep(0.5)  # any extra named connection would show up by now
    seen = await _workers(node, settings, 2)
    assert seen is not None
    base = node_client_name(settings.prefix, settings.queue_name, "")
    assert sorted(seen["names"]) == [f"{base}proc-one", f"{base}proc-two"], seen
    listing = await redis_client.client_list()
    assert count_workers(listing, settings.prefix, settings.queue_name) == seen["count"] == 2
