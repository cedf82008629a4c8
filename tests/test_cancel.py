"""Cancel from outside: a running crawl on another process stops within 5 s and fails with who cancelled it,
without further attempts; a waiting or delayed job fails at once with a ``failed`` event."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from tests.api.conftest import ADMIN, auth, serve
from tests.connectors.site import Site, html
from tests.connectors.site import serve as serve_site
from tests.helpers import add_crawl, wait_for, wait_state
from tests.proc import Processes, run_cli, write_catalog
from tests.ui.conftest import sign_in
from worker.settings import Settings

MOCK = {"connector": "mock", "config": {"items": 100_000, "step_size": 1, "step_delay_s": 0.05}}
LIMIT_S = 5.0


def _endless(path: str) -> tuple[int, dict[str, str], bytes] | None:
    """Page n links to pages n+1 and n+2, for ever (answering takes 50 ms, as a slow site does)."""
    found = re.fullmatch(r"/p(\d+)\.html", path)
    if found is None:
        return None
    time.sleep(0.05)
    n = int(found[1])
    return html(f"page {n}", "text", links=(f"/p{n + 1}.html", f"/p{n + 2}.html"))


@pytest.fixture
def site() -> Iterator[Site]:
    """An endless website on a loopback port."""
    with serve_site(Site(fallback=_endless)) as served:
        yield served


@pytest.fixture
def catalog(tmp_path: Path, site: Site) -> Path:
    """Two mock instances and two web instances crawling the endless site."""
    web = {
        "connector": "web",
        "config": {
            "start_urls": [f"{site.base}/p0.html"],
            "allowed_networks": ["127.0.0.0/8"],
            "max_pages": 100_000,
            "max_depth": 100_000,
            "obey_robots": False,
        },
    }
    return write_catalog(tmp_path / "catalog.toml", {"mock-a": MOCK, "mock-b": MOCK, "web-a": web, "web-b": web})


async def _running(queue: Queue, job_id: str, client: aioredis.Redis) -> None:
    """Wait until ``job_id`` is active and has reported progress (its crawl is under way)."""
    await wait_state(queue, job_id, ["active"], timeout=20)
    await wait_for(lambda: client.hget(f"bull:{queue.name}:{job_id}", "progress"), timeout=20, what="progress")


async def _ended_by(queue: Queue, job_id: str, client: aioredis.Redis, who: str, since: float) -> None:
    """The job failed within LIMIT_S of ``since``, cancelled by ``who`` (a pattern), on its first attempt, for good."""
    assert await wait_state(queue, job_id, ["failed", "completed"], timeout=LIMIT_S + 5) == "failed"
    took = time.monotonic() - since
    assert took < LIMIT_S, f"{job_id} ended {took:.1f} s after the cancel"
    stored = cast("dict[str, str]", await client.hgetall(f"bull:{queue.name}:{job_id}"))
    assert re.fullmatch(f"cancelled by {who}", stored["failedReason"]), stored["failedReason"]
    assert stored["atm"] == "1", "one attempt, none spent after the cancel"
    assert await client.zscore(f"bull:{queue.name}:failed", job_id) is not None, "failed for good, not retried"


async def test_running_crawls_on_another_process_are_cancelled_from_cli_api_and_dashboard(
    make_settings: Callable[..., Settings],
    catalog: Path,
    queue: Queue,
    processes: Processes,
    redis_client: aioredis.Redis,
) -> None:
    """A mock and a web crawl cancelled with ``crawl-worker jobs cancel``, the API and the dashboard: each ends
    within 5 s with its canceller in failedReason; attemptsMade stays 1 (attempts 3)."""
    settings = make_settings(api_read_token="r" * 16, api_admin_token=ADMIN)
    processes.crawler(settings, catalog, catalog.parent, concurrency=4)
    ids = {cid: await add_crawl(queue, cid.split("-")[0], cid) for cid in ("mock-a", "web-a", "mock-b", "web-b")}
    for job_id in ids.values():
        await _running(queue, job_id, redis_client)
    common = {"redis_url": settings.redis_url, "queue_name": settings.queue_name}
    for cid, discard in (("mock-a", ()), ("web-a", ("--discard-checkpoint",))):
        since = time.monotonic()
        done = await asyncio.to_thread(run_cli, "jobs", "cancel", ids[cid], *discard, **common)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["action"] == "signalled"
        await _ended_by(queue, ids[cid], redis_client, r"cli:[^@\s]+@\S+", since)  # cli:<user>@<host>
    async with serve(settings) as http:
        since = time.monotonic()
        answer = await http.post(f"/v1/jobs/{ids['mock-b']}/cancel", headers=auth(ADMIN))
        assert answer.json() == {"id": ids["mock-b"], "state": "active", "action": "signalled"}, answer.text
        await _ended_by(queue, ids["mock-b"], redis_client, "api", since)
        csrf = await sign_in(http, ADMIN)
        page = (await http.get(f"/ui/jobs/{ids['web-b']}")).text
        assert 'data-action="cancel"' in page, "the job page has the cancel button"
        since = time.monotonic()
        form = {"csrf": csrf, "id": ids["web-b"], "confirmed": "1"}
        posted = await http.post("/ui/actions/cancel", data=form)
        assert posted.status_code in (200, 303), posted.text[:300]
        await _ended_by(queue, ids["web-b"], redis_client, "dashboard", since)
    kept = await _record(redis_client, queue.name, "mock", "mock-a")
    assert kept["status"] == "interrupted", "kept: the next run resumes"
    assert kept["checkpoint"]["next_item"] > 0
    dropped = await _record(redis_client, queue.name, "web", "web-a")
    assert (dropped["status"], dropped["checkpoint"]) == ("abandoned", None), "discarded: the next run starts fresh"


async def _record(client: aioredis.Redis, queue: str, connector: str, connector_id: str) -> Any:
    raw = await client.hget(f"bull:{queue}:cw:run:org-1:{connector}:{connector_id}", "record")
    return json.loads(str(raw))


async def test_waiting_and_delayed_jobs_fail_at_once_with_a_failed_event(
    make_settings: Callable[..., Settings], queue: Queue, redis_client: aioredis.Redis
) -> None:
    """No worker runs: a waiting and a delayed job are failed by the request itself, each with a failed event;
    a completed one is refused (409), an unknown one is 404; cancel-matching takes what the filter selects."""
    settings = make_settings(api_read_token="r" * 16, api_admin_token=ADMIN)
    waiting = await add_crawl(queue, "mock", "w1")
    delayed = await add_crawl(queue, "mock", "d1", delay=600_000)
    others = [await add_crawl(queue, "mock", f"m{i}") for i in range(3)]
    other_org = await add_crawl(queue, "mock", "x1", org_id="org-2")
    async with serve(settings) as http:
        for job_id, before in ((waiting, "prioritized"), (delayed, "delayed")):
            answer = await http.post(f"/v1/jobs/{job_id}/cancel", headers=auth(ADMIN))
            assert answer.json() == {"id": job_id, "state": before, "action": "failed"}, answer.text
            job: Any = (await http.get(f"/v1/jobs/{job_id}", headers=auth(ADMIN))).json()
            assert (job["state"], job["failedReason"]) == ("failed", "cancelled by api")
        again = await http.post(f"/v1/jobs/{waiting}/cancel", headers=auth(ADMIN))
        assert again.status_code == 409, again.text
        assert (await http.post("/v1/jobs/nope/cancel", headers=auth(ADMIN))).status_code == 404
        matching = await http.post("/v1/jobs/cancel", params={"orgId": "org-1"}, headers=auth(ADMIN))
        assert sorted(matching.json()["ids"]) == sorted(others), matching.text
    events = cast("list[tuple[str, dict[str, str]]]", await redis_client.xrange(f"bull:{queue.name}:events"))
    failed = [fields["jobId"] for _, fields in events if fields.get("event") == "failed"]
    assert sorted(failed) == sorted([waiting, delayed, *others])
    assert await queue.getJobState(other_org) in ("waiting", "prioritized"), "outside the filter: left alone"
