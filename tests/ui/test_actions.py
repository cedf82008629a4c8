"""Dashboard actions end to end over HTTP: each asks first, then does what it said."""

from __future__ import annotations

import httpx
from bullmq import Queue

from tests.api.conftest import ADMIN
from tests.helpers import add_crawl
from tests.ui.conftest import sign_in
from worker.operations import Operations


async def confirm(site: httpx.AsyncClient, csrf: str, name: str, fields: dict[str, str]) -> None:
    """POST an action, check that it only asked, then confirm it."""
    ask = await site.post(f"/ui/actions/{name}", data={"csrf": csrf, **fields})
    assert ask.status_code == 200, ask.text
    assert 'id="confirm"' in ask.text
    done = await site.post(f"/ui/actions/{name}", data={"csrf": csrf, "confirmed": "1", **fields})
    assert done.status_code == 303, done.text
    assert "cw_flash=" in done.headers.get("set-cookie", "")


async def test_promote_remove_clean_pause_and_resume(site: httpx.AsyncClient, queue: Queue) -> None:
    """Run a delayed job now, remove a waiting one, clean completed jobs, pause and resume the queue."""
    delayed = await add_crawl(queue, "mock", "later", delay=600_000, priority=0)
    waiting = await add_crawl(queue, "mock", "gone", priority=0)
    csrf = await sign_in(site, ADMIN)
    await confirm(site, csrf, "promote", {"id": delayed})
    assert await queue.getJobState(delayed) == "waiting"
    await confirm(site, csrf, "remove", {"id": waiting})
    assert await queue.getJob(waiting) is None
    await confirm(site, csrf, "pause", {})
    assert await queue.isPaused()
    assert "paused" in (await site.get("/ui/")).text
    await confirm(site, csrf, "resume", {})
    assert not await queue.isPaused()
    await confirm(site, csrf, "clean", {"state": "wait", "older_than_hours": "0", "limit": "10"})
    assert await queue.getJob(delayed) is None
    bad = await site.post("/ui/actions/clean", data={"csrf": csrf, "state": "active"})
    assert bad.status_code == 422


async def test_set_edit_and_disable_a_schedule_from_the_instances_page(
    site: httpx.AsyncClient, ops: Operations
) -> None:
    """schedule-set creates an instance's BullMQ job scheduler, a second one edits it, schedule-disable removes it."""
    csrf = await sign_in(site, ADMIN)
    instance = {"connector": "web", "connectorId": "site-9", "orgId": "org-9", "userId": "u-9"}
    await confirm(site, csrf, "schedule-set", {**instance, "scheduleType": "daily", "hour": "3", "minute": "15"})
    (made,) = await ops.schedules()
    assert (made["id"], made["pattern"], made["orgId"]) == ("crawl-web-site-9", "15 3 * * *", "org-9")
    page = (await site.get("/ui/instances?q=site-9")).text
    assert "15 3 * * *" in page
    assert 'value="u-9"' in page  # the edit form is filled from the schedule
    edit = {**instance, "scheduleType": "weekly", "hour": "4", "minute": "0", "daysOfWeek": "1,3"}
    await confirm(site, csrf, "schedule-set", edit)
    assert [s["pattern"] for s in await ops.schedules()] == ["0 4 * * 1,3"]
    wrong = await site.post(
        "/ui/actions/schedule-set", data={"csrf": csrf, **instance, "scheduleType": "custom", "confirmed": "1"}
    )
    assert wrong.status_code == 422
    await confirm(site, csrf, "schedule-disable", {"connector": "web", "connectorId": "site-9"})
    assert await ops.schedules() == []
