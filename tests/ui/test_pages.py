"""Dashboard pages over HTTP: sign-in and cookies, CSP, CSRF, search and pagination, folding, groups, instances."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
import redis.asyncio as aioredis
from bullmq import Queue, Worker

from tests.api.conftest import ADMIN, READ, place_jobs
from tests.helpers import add_crawl, catalog_of, fail_jobs, running_app, wait_for, wait_state
from tests.ui.conftest import Manual, sign_in
from worker.models import ScheduleConfig, ScheduleType
from worker.operations import Operations
from worker.runs import Counters, RunRecord, dump_record
from worker.schedules import ScheduleRequest
from worker.settings import Settings
from worker.ui.render import CSP

PAGES = ("/ui/", "/ui/jobs", "/ui/jobs?state=failed", "/ui/instances", "/ui/failures")


async def test_pages_need_a_session_and_sign_in_sets_a_strict_cookie(site: httpx.AsyncClient) -> None:
    """No session: redirect to sign-in; a wrong token: 401; the right one: an HttpOnly, SameSite=Strict cookie."""
    answer = await site.get("/ui/jobs?state=failed")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Dfailed"
    form = await site.get("/ui/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    wrong = await site.post("/ui/login", data={"token": "nope", "login_csrf": token[1]})
    assert wrong.status_code == 401
    assert "cw_session" not in wrong.headers.get("set-cookie", "")
    token = re.search(r'name="login_csrf" value="([^"]+)"', wrong.text)  # each form has its own token
    assert token is not None
    good = await site.post("/ui/login", data={"token": READ, "login_csrf": token[1], "next": "//evil.example/"})
    assert good.status_code == 303
    assert good.headers["location"] == "/ui/"  # never redirected off the dashboard
    cookie = next(c for c in good.headers.get_list("set-cookie") if c.startswith("cw_session="))
    assert {"HttpOnly", "SameSite=strict", "Path=/ui"} <= {p.strip() for p in cookie.split(";")}
    assert "Secure" not in cookie
    assert (await site.get("/ui/jobs")).status_code == 200


async def test_sign_in_over_tls_sets_a_secure_cookie_and_needs_the_form_token(site: httpx.AsyncClient) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto from loopback) the cookie is Secure; no form token: 403."""
    tls = {"X-Forwarded-Proto": "https"}
    refused = await site.post("/ui/login", data={"token": ADMIN}, headers=tls)
    assert refused.status_code == 403
    form = await site.get("/ui/login", headers=tls)
    assert "Secure" in next(c for c in form.headers.get_list("set-cookie") if c.startswith("cw_login="))
    token = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert token is not None
    nonce = form.cookies["cw_login"]  # a Secure cookie: httpx keeps it off plain http, so send it by hand
    done = await site.post(
        "/ui/login", data={"token": ADMIN, "login_csrf": token[1]}, headers={**tls, "Cookie": f"cw_login={nonce}"}
    )
    assert done.status_code == 303
    assert "Secure" in next(c for c in done.headers.get_list("set-cookie") if c.startswith("cw_session="))


async def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(
    site: httpx.AsyncClient, queue: Queue, hand_worker: Worker
) -> None:
    """Each page is complete HTML with the CSP; it loads only /ui/static files and has no inline handlers."""
    placed = await place_jobs(queue, hand_worker)
    await sign_in(site, ADMIN)
    for path in (*PAGES, f"/ui/jobs/{placed.ids['failed']}", "/ui/login"):
        answer = await site.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-frame-options"] == "DENY"
        html = answer.text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/static/app.js" defer>'], path
        assert not re.search(r"\son[a-z]+=|\sstyle=", html), path


async def test_admin_actions_need_the_csrf_token_same_origin_and_a_confirmation(
    site: httpx.AsyncClient, queue: Queue, hand_worker: Worker
) -> None:
    """Admin POSTs without the CSRF token or from another origin get 403; the first valid POST only asks."""
    (failed,) = await fail_jobs(queue, hand_worker, [("mock", "c1")])
    csrf = await sign_in(site, ADMIN)
    assert (await site.post("/ui/actions/retry", data={"id": failed, "confirmed": "1"})).status_code == 403
    other = await site.post(
        "/ui/actions/retry", data={"csrf": csrf, "id": failed, "confirmed": "1"},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert other.status_code == 403
    ask = await site.post("/ui/actions/retry", data={"csrf": csrf, "id": failed})
    assert ask.status_code == 200
    assert f"Retry failed job {failed}" in ask.text
    assert await queue.getJobState(failed) == "failed"
    confirmed = {"csrf": csrf, "id": failed, "confirmed": "1"}
    done = await site.post("/ui/actions/retry", data={**confirmed, "back": "/ui/jobs"})
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/jobs"
    assert await queue.getJobState(failed) == "waiting"
    again = await site.post("/ui/actions/retry", data=confirmed)
    assert again.status_code == 409


async def test_jobs_page_searches_paginates_and_counts(site: httpx.AsyncClient, queue: Queue) -> None:
    """25 jobs: pages of 20 newest first with the total; search by connectorId, orgId, text in data, job id, dates."""
    ids = [
        await add_crawl(queue, "web" if i % 5 else "drive", f"site-{i}", org_id=f"org-{i % 2}", priority=0)
        for i in range(25)
    ]
    await sign_in(site, READ)

    async def listed(query: str) -> tuple[str, list[str]]:
        html = (await site.get(f"/ui/jobs?{query}")).text
        total = re.search(r"<strong data-total>(\d+)</strong>", html)
        assert total is not None, html
        return total[1], re.findall(r'<a href="/ui/jobs/([^"/]+)">', html)

    total, first = await listed("per=20")
    assert total == "25"
    assert first == ids[::-1][:20]
    assert (await listed("per=20&page=2"))[1] == ids[::-1][20:]
    assert (await listed("connectorId=site-7")) == ("1", [ids[7]])
    assert (await listed("connector=drive&orgId=org-0"))[1] == [ids[i] for i in (20, 10, 0)]
    assert (await listed("q=SITE-1"))[0] == "11"  # site-1, site-10 ... site-19: case-insensitive text
    assert (await listed(f"id={ids[3]}")) == ("1", [ids[3]])
    assert (await listed("before=2000-01-01T00:00"))[0] == "0"
    assert (await listed("after=2000-01-01"))[0] == "25"
    bad = await site.get("/ui/jobs?after=yesterday")
    assert bad.status_code == 200
    assert "is not a date" in bad.text


async def test_a_huge_return_value_is_folded_and_served_whole_as_text(site: httpx.AsyncClient, manual: Manual) -> None:
    """A 2 MB return value: the job page stays small and links to the whole value, served as inert text/plain."""
    job = await manual.take("big")
    big = {"pages": ["<b>é</b>" * 200] * 1200}
    await job.moveToCompleted(big, "t-big")
    await sign_in(site, READ)
    page = await site.get(f"/ui/jobs/{job.id}")
    assert len(page.text) < 100_000
    assert f'href="/ui/jobs/{job.id}/raw/returnvalue"' in page.text
    assert "&lt;b&gt;" in page.text
    raw = await site.get(f"/ui/jobs/{job.id}/raw/returnvalue")
    assert raw.headers["content-type"].startswith("text/plain")
    assert json.loads(raw.text) == big


async def test_the_job_page_shows_skips_from_the_return_value_and_inert_reasons(
    site: httpx.AsyncClient, manual: Manual
) -> None:
    """Skips come from the return value when progress is a plain number; a hostile reason renders as text."""
    job = await manual.take("skips")
    await job.updateProgress(100)
    result = {"documents": 3, "skipped": {"budget:max-pages": 2, "<b>x</b>": 1, "bad": "2"}, "truncated": True}
    await job.moveToCompleted(result, "t-skips")
    await sign_in(site, READ)
    page = (await site.get(f"/ui/jobs/{job.id}")).text
    section = page[page.index('id="skipped"') : page.index("</section>", page.index('id="skipped"'))]
    assert "3 not fetched; truncated" in section
    assert re.findall(r'<td class="mono">([^<]*)</td><td>(\d+)</td>', section) == [
        ("&lt;b&gt;x&lt;/b&gt;", "1"),
        ("budget:max-pages", "2"),
    ]


async def test_failures_group_by_root_error_class_and_retry_one_group(
    site: httpx.AsyncClient, ui_settings: Settings, queue: Queue
) -> None:
    """Failures group by root exception (CredentialsError, UnconfiguredInstance); "retry these" retries one group."""
    catalog = catalog_of(
        k1={"connector": "mock", "config": {"invalid_credentials": True}},
        k2={"connector": "mock", "config": {"invalid_credentials": True}},
    )
    async with running_app(ui_settings, catalog):
        ids = [await add_crawl(queue, "mock", cid, priority=0) for cid in ("k1", "k2", "nowhere")]
        for job_id in ids:
            await wait_state(queue, job_id, ["failed"])
    csrf = await sign_in(site, ADMIN)
    html = (await site.get("/ui/failures")).text
    groups = re.findall(r'count-badge">(\d+)</span> <span class="mono">([^<]+)</span>', html)
    assert groups == [("2", "CredentialsError"), ("1", "UnconfiguredInstance")]
    reason = "mock source rejected the credentials (401)"
    fields = {"csrf": csrf, "error_class": "CredentialsError", "pattern": reason}
    ask = await site.post("/ui/actions/retry-group", data=fields)
    assert "Retry 2 failed job(s)" in ask.text
    done = await site.post("/ui/actions/retry-group", data={**fields, "confirmed": "1"})
    assert done.status_code == 303
    assert [await queue.getJobState(i) for i in ids] == ["waiting", "waiting", "failed"]


async def test_instances_show_catalog_runs_resume_point_schedule_and_last_error(
    site: httpx.AsyncClient, ui_settings: Settings, queue: Queue, hand_worker: Worker, ops: Operations
) -> None:
    """An instance in the catalog with an interrupted run record, a schedule and a failed job shows all four."""
    (bad,) = await fail_jobs(queue, hand_worker, [("mock", "inst-1", "org-9")], reason="source said 503")
    record = RunRecord(
        run_id="run-42", status="interrupted", config_hash="h", checkpoint={"cursor": "page-17", "has_more": True},
        counters=Counters(documents=170), percentage=42.0, commits=17,
    )  # fmt: skip
    await ops.client.hset(f"bull:{ui_settings.queue_name}:cw:run:org-9:mock:inst-1", "record", dump_record(record))
    daily = ScheduleConfig(schedule_type=ScheduleType.DAILY, hour=2, minute=30)
    instance = {"connector": "mock", "connector_id": "inst-1", "org_id": "org-9", "user_id": "u"}
    await ops.upsert_schedule(ScheduleRequest(**instance, schedule_config=daily))
    catalog = '[instances."inst-1"]\nconnector = "mock"\n[instances."idle-2"]\nconnector = "web"\n'
    ui_settings.catalog_file.write_text(catalog)
    await sign_in(site, ADMIN)
    html = (await site.get("/ui/instances?q=inst-1")).text
    assert "inst-1" in html
    assert "idle-2" not in html
    assert "not in the catalog" not in html
    assert "170" in html
    assert "yes, from step 17 (42 %)" in html
    assert "cursor=page-17" in html
    assert "30 2 * * *" in html
    assert "source said 503" in html
    assert f'href="/ui/jobs/{bad}"' in html
    assert "idle-2" in (await site.get("/ui/instances")).text


async def test_the_event_stream_carries_progress_and_state_from_bullmqs_events(
    site: httpx.AsyncClient, manual: Manual
) -> None:
    """/ui/events relays a job's progress and completion from the events stream, without its return value."""
    await sign_in(site, READ)
    async with httpx.AsyncClient(base_url=site.base_url) as stranger:
        assert (await stranger.get("/ui/events")).status_code == 401
    lines: list[dict[str, object]] = []
    async with site.stream("GET", "/ui/events") as stream:
        job = await manual.take("live")
        await job.updateProgress({"percentage": 40, "current": 4, "total": 10})
        await job.moveToCompleted({"secret": "x" * 1000}, "t-live")
        deadline = time.monotonic() + 10
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                lines.append(json.loads(line[6:]))
            if any(m.get("event") == "completed" for m in lines) or time.monotonic() > deadline:
                break
    mine = [m for m in lines if m.get("jobId") == job.id]
    assert {"event": "progress", "jobId": job.id, "state": "active", "progress": 40.0} in mine
    assert {"event": "completed", "jobId": job.id, "state": "completed", "progress": 100.0} in mine
    assert "secret" not in json.dumps(lines)


@pytest.mark.slow
async def test_the_job_page_shows_who_processed_it_and_its_stalls_from_bullmqs_own_fields(
    site: httpx.AsyncClient, ui_settings: Settings, queue: Queue, redis_client: aioredis.Redis
) -> None:
    """BullMQ's Lua writes ``pb`` (processedBy) and ``stc`` (stalled counter): a job recovered once after its lock
    was lost shows the worker's name and "1 time(s)" (the page read ``processedBy`` / ``stalledCounter``)."""
    settings = ui_settings.model_copy(
        update={"worker_name": "page-worker-7", "lock_duration_ms": 5000, "stalled_interval_ms": 1000}
    )
    catalog = catalog_of(slow={"connector": "mock", "config": {"items": 2, "step_size": 1, "step_delay_s": 0.6}})
    job_id = await add_crawl(queue, "mock", "slow", removeOnComplete=False)
    async with running_app(settings, catalog):
        lock = f"bull:{settings.queue_name}:{job_id}:lock"
        await wait_for(lambda: redis_client.exists(lock), what="the job's lock")
        await redis_client.delete(lock)  # as if the worker had stalled: the stalled check recovers it
        assert await wait_state(queue, job_id, ["completed"], timeout=30) == "completed"
    stored = await redis_client.hmget(f"bull:{settings.queue_name}:{job_id}", "pb", "stc")
    assert stored == ["page-worker-7", "1"], "BullMQ's own field names"
    await sign_in(site, READ)
    html = (await site.get(f"/ui/jobs/{job_id}")).text
    assert re.search(r"<dt>processed by</dt><dd>page-worker-7</dd>", html)
    assert re.search(r"<dt>stalled</dt><dd>1 time\(s\)</dd>", html)


async def test_instances_served_by_a_connector_type_rule_say_so(
    site: httpx.AsyncClient, ui_settings: Settings, queue: Queue, hand_worker: Worker
) -> None:
    """A PipesHub type the "*" rule hands on is "served by the rule", not "not in the catalog"; a connector this
    worker runs itself, with no entry, is still not in the catalog (the "*" rule does not take it)."""
    await fail_jobs(queue, hand_worker, [("Confluence", "conf-1"), ("mock", "orphan-1")])
    ui_settings.catalog_file.write_text('[connector_types."*"]\nconnector = "pipeshub-sync"\n')
    await sign_in(site, ADMIN)
    html = (await site.get("/ui/instances")).text
    conf = html[html.index("conf-1") :].split("</header>")[0]
    orphan = html[html.index("orphan-1") :].split("</header>")[0]
    assert 'served by the [connector_types."*"] rule' in conf.replace("&#34;", '"').replace("&quot;", '"')
    assert "not in the catalog" not in conf
    assert "not in the catalog" in orphan
