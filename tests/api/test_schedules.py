"""Schedules from PipesHub scheduleConfig as BullMQ job schedulers: create, update, list, remove, bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import ADMIN, READ, auth
from worker.jobs import JobFilter
from worker.models import ScheduleConfig, State
from worker.operations import Operations
from worker.schedules import cron_of, repeat_of


@pytest.mark.parametrize(
    ("config", "cron"),
    [
        ({"scheduleType": "hourly", "minute": 15}, "15 * * * *"),
        ({"scheduleType": "hourly", "interval": 6}, "0 */6 * * *"),
        ({"scheduleType": "daily", "hour": 2, "minute": 30}, "30 2 * * *"),
        ({"scheduleType": "weekly", "hour": 9, "daysOfWeek": [5, 1]}, "0 9 * * 1,5"),
        ({"scheduleType": "monthly", "dayOfMonth": 15, "hour": 3}, "0 3 15 * *"),
        ({"scheduleType": "custom", "cronExpression": "*/10 * * * *"}, "*/10 * * * *"),
    ],
)
def test_schedule_config_to_cron(config: dict[str, object], cron: str) -> None:
    """Each scheduleType maps to the cron pattern it means."""
    assert cron_of(ScheduleConfig.model_validate(config)) == cron


def test_interval_schedules_repeat_every_n_minutes_in_their_zone() -> None:
    """PipesHub's reconcile shape (fields nested in an inner scheduleConfig) repeats every intervalMinutes."""
    cfg = ScheduleConfig.model_validate(
        {
            "scheduleType": "interval",
            "isEnabled": True,
            "createdBy": "a" * 24,
            "scheduleConfig": {"intervalMinutes": 45, "timezone": "Asia/Tokyo"},
        }
    )
    assert repeat_of(cfg) == {"every": 45 * 60_000, "tz": "Asia/Tokyo"}


async def test_create_update_list_remove_over_http(http: httpx.AsyncClient, ops: Operations) -> None:
    """PUT creates a scheduler whose next job is PipesHub-shaped; PUT again updates it; DELETE removes it."""
    body = {
        "connector": "web",
        "connectorId": "site-1",
        "orgId": "org-1",
        "userId": "u-1",
        "scheduleConfig": {"scheduleType": "daily", "hour": 2, "minute": 30, "timezone": "Europe/Berlin"},
    }
    resp = await http.put("/v1/schedules", json=body, headers=auth(ADMIN))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": "crawl-web-site-1", "enabled": True, "pattern": "30 2 * * *", "tz": "Europe/Berlin"}
    listed = (await http.get("/v1/schedules", headers=auth(READ))).json()
    assert [(s["id"], s["pattern"], s["tz"]) for s in listed] == [("crawl-web-site-1", "30 2 * * *", "Europe/Berlin")]
    assert listed[0]["next"] > 0
    delayed = (await ops.page(JobFilter(state=State.DELAYED), limit=10, offset=0)).jobs
    assert len(delayed) == 1
    job = delayed[0]
    assert job.name == "crawl-web-site-1"
    wire = job.model_dump(mode="json", by_alias=True)["data"]
    assert (wire["connector"], wire["connectorId"], wire["orgId"], wire["userId"]) == ("web", "site-1", "org-1", "u-1")
    assert wire["scheduleConfig"]["scheduleType"] == "daily"
    body["scheduleConfig"] = {"scheduleType": "weekly", "daysOfWeek": [1], "hour": 4}
    assert (await http.put("/v1/schedules", json=body, headers=auth(ADMIN))).json()["pattern"] == "0 4 * * 1"
    listed = (await http.get("/v1/schedules", headers=auth(READ))).json()
    assert [s["pattern"] for s in listed] == ["0 4 * * 1"]
    resp = await http.delete("/v1/schedules/web/site-1", headers=auth(ADMIN))
    assert resp.json() == {"removed": True}
    assert (await http.get("/v1/schedules", headers=auth(READ))).json() == []
    assert (await http.delete("/v1/schedules/web/site-1", headers=auth(ADMIN))).json() == {"removed": False}


async def test_disabled_config_removes_and_bad_configs_are_422(http: httpx.AsyncClient) -> None:
    """isEnabled=false removes the schedule; bad cron, unknown timezone and 'once' answer 422 with a message."""
    base = {"connector": "web", "connectorId": "s2", "orgId": "o", "userId": "u"}
    ok = {**base, "scheduleConfig": {"scheduleType": "hourly"}}
    assert (await http.put("/v1/schedules", json=ok, headers=auth(ADMIN))).status_code == 200
    off = {**base, "scheduleConfig": {"scheduleType": "hourly", "isEnabled": False}}
    assert (await http.put("/v1/schedules", json=off, headers=auth(ADMIN))).json() == {
        "id": "crawl-web-s2",
        "enabled": False,
    }
    assert (await http.get("/v1/schedules", headers=auth(READ))).json() == []
    for cfg, words in [
        ({"scheduleType": "custom", "cronExpression": "every day"}, "invalid cron"),
        ({"scheduleType": "daily", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"scheduleType": "once"}, "not recurring"),
        ({"scheduleType": "custom"}, "needs a cronExpression"),
        ({"scheduleType": "custom", "cronExpression": "* * * * * *"}, "invalid cron"),  # every second
        ({"scheduleType": "custom", "cronExpression": "0 0 31 2 *"}, "never fires"),
        ({"scheduleType": "hourly", "interval": 1000}, "interval"),
        ({"scheduleType": "weekly", "daysOfWeek": [], "hour": 4}, "at least one day"),
        ({"scheduleType": "weekly", "hour": 4}, "needs daysOfWeek"),
        ({"scheduleType": "interval", "scheduleConfig": {"timezone": "UTC"}}, "intervalMinutes"),
    ]:
        resp = await http.put("/v1/schedules", json={**base, "scheduleConfig": cfg}, headers=auth(ADMIN))
        assert resp.status_code == 422, cfg
        assert words in resp.json()["error"]["message"], (cfg, resp.json())
    forged = {**ok, "connectorId": 's2\n{"event":"forged"}'}
    assert (await http.put("/v1/schedules", json=forged, headers=auth(ADMIN))).status_code == 422
    assert (await http.put("/v1/schedules", json=ok, headers=auth(READ))).status_code == 403
