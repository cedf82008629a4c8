"""The dashboard in real headless Chromium: live progress, retries from the page, read-only sessions, inert job data."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue, Worker

from tests.api.conftest import ADMIN, READ, serve
from tests.connectors.test_traps import crawl_trap_site
from tests.helpers import add_crawl, catalog_of, fail_jobs, running_app, wait_state
from tests.proc import Processes, write_catalog
from tests.ui.browser import chromium
from tests.ui.conftest import Manual
from worker.catalog import Catalog
from worker.settings import Settings

pytestmark = pytest.mark.browser
XSS_IMG = "<img src=x onerror=\"window.__xss='img'\">"
XSS_SCRIPT = "<script>window.__xss='script'</script>"
#: The page's width and the elements that stick out past the screen's right edge.
WIDER_THAN_SCREEN = """(() => {
  const w = document.documentElement.clientWidth;
  const out = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1);
  return [document.documentElement.scrollWidth, out.slice(0, 5).map(e => e.tagName + '.' + e.className)];
})()"""


@contextlib.asynccontextmanager
async def dashboard(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    """The served dashboard's base URL and a fresh browser page (desktop size)."""
    async with serve(settings) as client, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        yield str(client.base_url).rstrip("/"), page


async def sign_in(page: Any, base: str, token: str, target: str = "/ui/") -> None:
    """Sign in through the form, landing on ``target``."""
    await page.goto(f"{base}{target}")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{target}")


async def until(page: Any, expression: str, timeout: float = 20.0) -> Any:
    """Poll a JS expression in the page until it is truthy (the page's CSP forbids eval'd predicates)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await page.evaluate(expression)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        await asyncio.sleep(0.02)
    return value


async def test_progress_moves_live_while_the_job_runs(ui_settings: Settings, queue: Queue) -> None:
    """The job page shows waiting, then active with progress rising, then completed, without reloading."""
    catalog = catalog_of(slow={"connector": "mock", "config": {"items": 10, "step_size": 1, "step_delay_s": 0.2}})
    job_id = await add_crawl(queue, "mock", "slow")
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, ADMIN, f"/ui/jobs/{job_id}")
        state = page.locator(f"[data-state-of='{job_id}']").first
        assert await state.text_content() == "waiting"
        await page.wait_for_selector("#live:not([hidden])")
        await page.evaluate("window.__same_page = true")
        bar = f"document.querySelector(\"progress[data-progress-of='{job_id}']\")"
        async with running_app(ui_settings, catalog):
            await until(page, f"{bar}.value > 0 && {bar}.value < 100")
            assert await state.text_content() == "active"
            first = await page.evaluate(f"{bar}.value")
            await until(page, f"{bar}.value > {first} && {bar}.value < 100")
            await until(page, f"document.querySelector(\"[data-state-of='{job_id}']\").textContent === 'completed'")
        assert await page.evaluate(f"{bar}.value") == 100
        assert await page.evaluate("window.__same_page") is True  # never reloaded


async def test_a_failed_job_is_retried_from_its_page_and_completes(
    ui_settings: Settings, queue: Queue, tmp_path: Path
) -> None:
    """A job failed for a missing catalog entry; the entry is added, Retry + Confirm on its page, it completes."""
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text("")
    async with running_app(ui_settings, Catalog.load(catalog_file)):
        job_id = await add_crawl(queue, "mock", "late")
        await wait_state(queue, job_id, ["failed"])
        catalog_file.write_text('[instances."late"]\nconnector = "mock"\nconfig = { items = 3 }\n')
        async with dashboard(ui_settings) as (base, page):
            await sign_in(page, base, ADMIN, f"/ui/jobs/{job_id}")
            assert "is not configured" in (await page.text_content("p.reason") or "")
            await page.click("button[data-action=retry]")
            assert "Retry failed job" in (await page.text_content(".confirm-text") or "")
            await page.click("#confirm")
            await page.wait_for_url(f"**/ui/jobs/{job_id}")
            assert "is waiting again" in (await page.text_content(".flash") or "")
            await wait_state(queue, job_id, ["completed"])
            await until(page, f"document.querySelector(\"[data-state-of='{job_id}']\").textContent === 'completed'")


async def test_retry_all_failed_with_a_filter_retries_exactly_the_matching_jobs(
    ui_settings: Settings, queue: Queue, hand_worker: Worker
) -> None:
    """Failed jobs filtered by orgId on the jobs page: "retry all" moves those two back to waiting, not the third."""
    specs = [("mock", "x1", "org-a"), ("mock", "x2", "org-a"), ("mock", "y1", "org-b")]
    a1, a2, b1 = await fail_jobs(queue, hand_worker, specs)
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, ADMIN, "/ui/jobs?state=failed&orgId=org-a")
        assert await page.text_content("[data-total]") == "2"
        await page.click("button[data-action=retry-failed]")
        assert "Retry 2 failed job(s) matching orgId = 'org-a'" in (await page.text_content(".confirm-text") or "")
        await page.click("#confirm")
        await page.wait_for_url("**/ui/jobs?state=failed&orgId=org-a")
        assert "Retried 2 failed job(s)" in (await page.text_content(".flash") or "")
    states = {job_id: await queue.getJobState(job_id) for job_id in (a1, a2, b1)}
    assert states == {a1: "waiting", a2: "waiting", b1: "failed"}


async def test_a_read_session_sees_no_action_and_a_forged_action_gets_403(
    ui_settings: Settings, queue: Queue, hand_worker: Worker
) -> None:
    """Signed in with the read token: no action form on any page; a hand-made retry POST is refused with 403."""
    (failed,) = await fail_jobs(queue, hand_worker, [("mock", "r1", "org-r")])
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, READ)
        for target in ("/ui/", f"/ui/jobs/{failed}", "/ui/jobs?state=failed", "/ui/failures", "/ui/instances"):
            await page.goto(f"{base}{target}")
            assert await page.locator("form[action^='/ui/actions/'], [data-action]").count() == 0, target
        csrf = await page.get_attribute("form[action='/ui/logout'] input[name=csrf]", "value")
        forged = {"csrf": csrf or "", "id": failed, "confirmed": "1"}
        answer = await page.request.post(f"{base}/ui/actions/retry", form=forged)
        assert answer.status == 403
        assert "read-only" in await answer.text()
        answer = await page.request.post(f"{base}/ui/actions/pause", form={"confirmed": "1"})
        assert answer.status == 403
    assert await queue.getJobState(failed) == "failed"
    assert not await queue.isPaused()


async def test_markup_in_job_data_logs_and_reasons_renders_as_inert_text(ui_settings: Settings, manual: Manual) -> None:
    """<img onerror> and <script> in connectorId, metadata, a log line and failedReason show as text; nothing runs."""
    job = await manual.take(XSS_SCRIPT, connector=XSS_IMG, extra={"metadata": {"title": XSS_IMG + XSS_SCRIPT}})
    await job.log(f"fetched {XSS_SCRIPT} {XSS_IMG}")
    await job.moveToFailed(RuntimeError(f"bad page {XSS_IMG}"), f"t-{XSS_SCRIPT}")
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, ADMIN)
        for target in (f"/ui/jobs/{job.id}", "/ui/jobs", "/ui/failures", "/ui/instances", "/ui/jobs?q=onerror"):
            await page.goto(f"{base}{target}")
            await asyncio.sleep(0.2)  # an injected onerror would have fired by now
            assert await page.evaluate("window.__xss") is None, target
            assert await page.locator("img, main script").count() == 0, target
            assert "<img src=x onerror=" in (await page.text_content("main") or ""), target


async def test_pages_read_with_javascript_off_and_fit_a_phone(ui_settings: Settings, manual: Manual) -> None:
    """At 390 px with JavaScript off every page shows its jobs and nothing runs wider than the screen."""
    job = await manual.take("phone")
    await job.updateProgress({"percentage": 30, "current": 3, "total": 10})
    async with serve(ui_settings) as client, chromium() as browser:
        base = str(client.base_url).rstrip("/")
        context = await browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": 390, "height": 844}, java_script_enabled=False, is_mobile=True
        )
        page = await context.new_page()
        await sign_in(page, base, READ)
        for target in ("/ui/", "/ui/jobs", f"/ui/jobs/{job.id}", "/ui/instances", "/ui/failures"):
            await page.goto(f"{base}{target}")
            if target != "/ui/failures":
                bar = page.locator(f"[data-progress-of='{job.id}']").first
                assert float(await bar.get_attribute("value") or 0) == 30, target
            width, wider = await page.evaluate(WIDER_THAN_SCREEN)
            assert width <= 390, (target, width, wider)
        await context.close()


async def test_the_job_and_instances_pages_show_what_a_trap_crawl_skipped(ui_settings: Settings, queue: Queue) -> None:
    """The job page lists the skip counts by reason and says truncated; the instances page shows the same."""
    job_id, _ = await crawl_trap_site(ui_settings, queue)
    skipped = (await queue.getJob(job_id)).returnvalue["skipped"]
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, READ, f"/ui/jobs/{job_id}")
        rows = await page.locator("#skipped table tr").all_inner_texts()
        shown = {reason: int(count) for reason, count in (row.split("\t") for row in rows)}
        assert shown == skipped
        assert "truncated" in (await page.locator("#skipped h2").inner_text())
        await page.goto(f"{base}/ui/instances?q=site")
        listed = await page.locator("dd.skipped").first.inner_text()
        assert all(f"{reason} {count}" in listed for reason, count in skipped.items())
        assert "(truncated)" in listed


async def test_a_running_crawl_on_another_process_is_cancelled_from_its_page(
    ui_settings: Settings, queue: Queue, tmp_path: Path, processes: Processes
) -> None:
    """Cancel + Confirm on a running crawl's page: its worker process stops it within 5 s; the page shows failed,
    cancelled by dashboard, one attempt."""
    slow = {"connector": "mock", "config": {"items": 100_000, "step_size": 1, "step_delay_s": 0.05}}
    catalog = write_catalog(tmp_path / "catalog.toml", {"runaway": slow})
    processes.crawler(ui_settings, catalog, tmp_path)
    job_id = await add_crawl(queue, "mock", "runaway")
    await wait_state(queue, job_id, ["active"])
    async with dashboard(ui_settings) as (base, page):
        await sign_in(page, base, ADMIN, f"/ui/jobs/{job_id}")
        await page.click("button[data-action=cancel]")
        assert "its checkpoint is kept" in (await page.text_content(".confirm-text") or "")
        await page.click("#confirm")
        since = time.monotonic()
        await page.wait_for_url(f"**/ui/jobs/{job_id}")
        assert "its worker stops it within seconds" in (await page.text_content(".flash") or "")
        await wait_state(queue, job_id, ["failed"], timeout=10)
        assert time.monotonic() - since < 5.0
        await until(page, f"document.querySelector(\"[data-state-of='{job_id}']\").textContent === 'failed'")
    job = await Queue.getJob(queue, job_id)
    assert (job.failedReason, job.attemptsMade) == ("cancelled by dashboard", 1)
