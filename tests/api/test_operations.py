"""Operations: retry, retry-failed by filter, promote, remove, pause/resume, clean; Node BullMQ sees each effect."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from bullmq import Queue, Worker

from tests.api.conftest import ADMIN, READ, Placed, auth
from tests.helpers import fail_jobs
from worker.errors import WrongState
from worker.jobs import JobFilter
from worker.operations import Operations
from worker.settings import Settings

INTEROP = Path(__file__).resolve().parents[1] / "interop"


def node_call(settings: Settings, *args: str) -> Any:
    """Run one tests/interop/node_client.mjs command; parse its JSON output."""
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "bullmq").is_dir():
        pytest.fail("node and tests/interop/node_modules are required (make node)")
    out = subprocess.run(
        [node, "node_client.mjs", settings.redis_url, settings.queue_name, *args],
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.node
async def test_node_sees_retry_promote_pause_remove(
    placed: Placed, http: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    """Our HTTP retry / promote / remove / pause change what Node's getJob().getState() and isPaused() report."""
    settings = make_settings()
    ids = placed.ids
    three = f"{ids['failed']},{ids['delayed']},{ids['waiting']}"
    before = await asyncio.to_thread(node_call, settings, "states", three)
    assert before == {ids["failed"]: "failed", ids["delayed"]: "delayed", ids["waiting"]: "waiting"}
    admin = auth(ADMIN)
    resp = await http.post(f"/v1/jobs/{ids['failed']}/retry", headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "waiting"
    assert (await http.post(f"/v1/jobs/{ids['delayed']}/promote", headers=admin)).json()["state"] == "waiting"
    assert (await http.delete(f"/v1/jobs/{ids['waiting']}", headers=admin)).json() == {
        "id": ids["waiting"],
        "removed": True,
    }
    after = await asyncio.to_thread(node_call, settings, "states", three)
    # the delayed job has the producer's priority 5: Node calls it prioritized, the status API says waiting
    assert after == {ids["failed"]: "waiting", ids["delayed"]: "prioritized", ids["waiting"]: None}
    assert (await http.post("/v1/queue/pause", headers=admin)).json()["paused"] is True
    assert await asyncio.to_thread(node_call, settings, "ispaused") is True
    # Node 6 keeps waiting jobs of a paused queue in ``wait`` (getState: waiting); the status API says paused
    assert (await http.get(f"/v1/jobs/{ids['failed']}", headers=admin)).json()["state"] == "paused"
    assert (await http.post("/v1/queue/resume", headers=admin)).json()["paused"] is False
    assert await asyncio.to_thread(node_call, settings, "ispaused") is False


async def test_wrong_state_operations_answer_409(placed: Placed, http: httpx.AsyncClient) -> None:
    """Retrying a non-failed job, promoting a non-delayed job, removing a locked active job: 409, JSON."""
    admin = auth(ADMIN)
    for path in (f"/v1/jobs/{placed.ids['completed']}/retry", f"/v1/jobs/{placed.ids['waiting']}/promote"):
        resp = await http.post(path, headers=admin)
        assert resp.status_code == 409, path
        assert "only" in resp.json()["error"]["message"]
    resp = await http.delete(f"/v1/jobs/{placed.ids['active']}", headers=admin)
    assert resp.status_code == 409
    assert (await http.post("/v1/jobs/nope/retry", headers=admin)).status_code == 404


async def test_retry_failed_only_touches_matching_failed_jobs(
    queue: Queue, hand_worker: Worker, ops: Operations
) -> None:
    """retry-failed with connector=web retries the failed web jobs and leaves the failed drive job failed."""
    web1, web2, drive = await fail_jobs(queue, hand_worker, [("web", "a"), ("web", "b"), ("drive", "c")])
    retried = await ops.retry_failed(JobFilter(connector="web"))
    assert sorted(retried) == sorted([web1, web2])
    assert (await ops.get(web1))[0].state.value == "waiting"
    assert (await ops.get(drive))[0].state.value == "failed"
    assert await ops.retry_failed(JobFilter(connector="web")) == []
    with pytest.raises(WrongState):
        await ops.retry(web1)


async def test_clean_by_state_and_age(queue: Queue, hand_worker: Worker, http: httpx.AsyncClient) -> None:
    """clean removes failed jobs older than the grace period only; read tokens cannot clean."""
    ids = await fail_jobs(queue, hand_worker, [("web", "old1"), ("web", "old2")])
    resp = await http.post("/v1/queue/clean", params={"state": "failed", "olderThanMs": 3_600_000}, headers=auth(ADMIN))
    assert resp.json() == {"count": 0, "ids": []}
    assert (await http.post("/v1/queue/clean", params={"state": "failed"}, headers=auth(READ))).status_code == 403
    await asyncio.sleep(0.02)
    resp = await http.post("/v1/queue/clean", params={"state": "failed", "olderThanMs": 1}, headers=auth(ADMIN))
    assert sorted(resp.json()["ids"]) == sorted(ids)
    assert (await http.get(f"/v1/jobs/{ids[0]}", headers=auth(READ))).status_code == 404
    resp = await http.post("/v1/queue/clean", params={"state": "active"}, headers=auth(ADMIN))
    assert resp.status_code == 422
