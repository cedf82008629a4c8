"""JobStatus: every state (incl. paused and stuck) and the camelCase JSON shape, field by field."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import ADMIN, READ, Placed, auth
from worker.operations import Operations

# The seed's table (shared/seeds/jobstatus.md): wire name -> (required, allowed JSON types)
SEED = {
    "id": (False, (str, type(None))),
    "name": (True, (str,)),
    "data": (True, (dict,)),
    "progress": (False, (int, float, dict, type(None))),
    "delay": (False, (int, type(None))),
    "timestamp": (True, (int,)),
    "attemptsMade": (True, (int,)),
    "finishedOn": (False, (int, type(None))),
    "processedOn": (False, (int, type(None))),
    "failedReason": (False, (str, type(None))),
    "state": (True, (str,)),
}
STATES = {"waiting", "active", "completed", "failed", "delayed", "paused", "stuck"}


async def test_every_state_is_reported(placed: Placed, ops: Operations) -> None:
    """Active, stuck (lock gone), completed, failed, waiting, prioritized (= waiting) and delayed map as specified."""
    expect = {
        "active": "active",
        "stuck": "stuck",
        "completed": "completed",
        "failed": "failed",
        "waiting": "waiting",
        "prioritized": "waiting",
        "delayed": "delayed",
    }
    for placed_as, state in expect.items():
        status, _ = await ops.get(placed.ids[placed_as])
        assert status.state.value == state, placed_as


async def test_paused_queue_reports_waiting_jobs_as_paused(placed: Placed, ops: Operations) -> None:
    """After a pause, waiting and prioritized jobs are 'paused'; after resume, 'waiting' again; others unchanged."""
    await ops.pause()
    for placed_as in ("waiting", "prioritized"):
        assert (await ops.get(placed.ids[placed_as]))[0].state.value == "paused"
    assert (await ops.get(placed.ids["delayed"]))[0].state.value == "delayed"
    assert (await ops.get(placed.ids["active"]))[0].state.value == "active"
    counts = (await ops.queue_info())["counts"]
    assert counts["paused"] == 2
    assert counts["waiting"] == 0
    await ops.resume()
    assert (await ops.get(placed.ids["waiting"]))[0].state.value == "waiting"


def check_shape(body: dict[str, Any]) -> None:
    """Assert one JobStatus JSON object against the seed's table."""
    assert set(body) == set(SEED), set(body) ^ set(SEED)
    for name, (required, types) in SEED.items():
        value = body[name]
        if required:
            assert value is not None, name
        assert isinstance(value, types), (name, value)
        assert not isinstance(value, bool), name
    assert body["state"] in STATES
    assert {"connector", "connectorId", "scheduleConfig", "orgId", "userId", "timestamp"} <= set(body["data"])
    assert body["name"] == f"crawl-{body['data']['connector']}-{body['data']['connectorId']}"


async def test_json_shape_matches_seed_field_by_field(placed: Placed, http: httpx.AsyncClient) -> None:
    """GET /v1/jobs/{id} returns exactly the seed's camelCase fields, with the seed's types, for every state."""
    for placed_as, job_id in placed.ids.items():
        resp = await http.get(f"/v1/jobs/{job_id}", headers=auth(READ))
        assert resp.status_code == 200, (placed_as, resp.text)
        check_shape(resp.json())
    active = (await http.get(f"/v1/jobs/{placed.ids['active']}", headers=auth(READ))).json()
    assert active["progress"] == {"percentage": 50, "current": 5, "total": 10}
    assert active["processedOn"] >= active["timestamp"]
    assert active["finishedOn"] is None
    failed = (await http.get(f"/v1/jobs/{placed.ids['failed']}", headers=auth(ADMIN))).json()
    assert failed["failedReason"] == "boom: source unreachable"
    assert failed["attemptsMade"] == 1
    assert failed["finishedOn"] >= failed["processedOn"]
    delayed = (await http.get(f"/v1/jobs/{placed.ids['delayed']}", headers=auth(READ))).json()
    assert delayed["delay"] == 600_000
    assert delayed["data"]["scheduleConfig"]["scheduleType"] == "hourly"
    logs = (await http.get(f"/v1/jobs/{placed.ids['active']}/logs", headers=auth(READ))).json()
    assert logs == {"id": placed.ids["active"], "logs": ["fetched page 1"]}


async def test_missing_job_is_a_json_404(http: httpx.AsyncClient) -> None:
    """An unknown id answers 404 with a JSON error message."""
    resp = await http.get("/v1/jobs/does-not-exist", headers=auth(READ))
    assert resp.status_code == 404
    assert "not found" in resp.json()["error"]["message"]
