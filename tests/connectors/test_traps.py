"""Every crawl ends and says what it skipped: numbered sites crawled whole, real traps cut and counted,
capped waits, invalid URLs skipped (links, sitemaps, redirects, a stored frontier), on a real loopback site."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from tests.connectors.site import Reply, Site, html, serve, sitemap
from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from worker import skips
from worker.connectors.base import ConnectorContext
from worker.connectors.web.connector import WebCheckpoint, WebConfig, WebConnector
from worker.connectors.web.frontier import FRONTIER
from worker.connectors.web.traps import TrapLimits, Traps, calendar_template, looks_like_token
from worker.connectors.web.urls import (
    absolute,
    has_session_id,
    host_port,
    in_host_scope,
    pattern_key,
    resolve,
    trap_reason,
    under_path,
    url_key,
    valid,
)
from worker.crawlstate import MemoryRunData, StateChanges
from worker.documents import Document
from worker.settings import Settings

PAGE = {"Content-Type": "text/html; charset=utf-8"}


def bad_link(site: Site) -> str:
    """``http://x\\@127.0.0.1:<port>/elsewhere``: in scope, and no URL a request can be made to."""
    return site.base.replace("http://", "http://x\\@") + "/elsewhere"


def page(title: str, links: list[tuple[str, str]]) -> Reply:
    """An HTML page whose link texts are ``text`` (not the URL: session tokens stay out of the text)."""
    anchors = "".join(f'<a href="{href}">{text}</a> ' for href, text in links)
    return 200, PAGE, f"<html><head><title>{title}</title></head><body>{anchors}</body></html>".encode()


def defaults(site: Site, **overrides: Any) -> WebConfig:
    """Default settings, except that loopback is allowed."""
    return WebConfig(**{"start_urls": [f"{site.base}/"], "allowed_networks": ["127.0.0.0/8"], **overrides})


async def crawl(
    cfg: WebConfig, data_dir: Path, data: MemoryRunData | None = None, checkpoint: WebCheckpoint | None = None
) -> tuple[list[Document], Counter[str], int]:
    """Run the connector to the end as the runner does; (documents, skipped by reason, steps)."""
    conn = WebConnector(cfg, ConnectorContext(connector_id="site", org_id="org", data_dir=data_dir))
    data = data or MemoryRunData(WebConnector.carried)
    conn.bind(data)
    cp = checkpoint or conn.initial_checkpoint(None)
    docs: list[Document] = []
    skipped: Counter[str] = Counter()
    steps = 0
    async with aclosing(conn):
        while cp.has_more:
            step = await conn.run_step(cp)
            data.apply(step.changes)
            docs += step.documents
            skipped.update(step.skipped)
            cp = step.checkpoint
            steps += 1
    return docs, skipped, steps


def flat(site: Site) -> None:
    """``/p0.html`` links ``/p1.html`` ... ``/p399.html``; every page links home and to its neighbours."""
    for n in range(400):
        links = [(f"/p{m}.html", f"page {m}") for m in range(1, 400)] if n == 0 else []
        links += [("/p0.html", "home"), (f"/p{(n + 1) % 400}.html", "next")]
        site.routes[f"/p{n}.html"] = page(f"Page {n}", links)


def trap_site(site: Site) -> None:
    """An infinite calendar, a session id in every link, ``a/b/a/b/...`` paths and faceted navigation."""
    facets = [f"f{i}" for i in range(12)]

    def generated(path: str) -> Reply | None:
        if path.startswith("/calendar/"):
            year, month = map(int, path.removeprefix("/calendar/").split("-"))
            before = f"{year - (month == 1)}-{(month - 2) % 12 + 1:02d}"
            after = f"{year + (month == 12)}-{month % 12 + 1:02d}"
            return page(f"{year}-{month}", [(f"/calendar/{before}", "previous"), (f"/calendar/{after}", "next")])
        if path.startswith("/s/"):  # every answer links with a fresh session token
            name = path.rsplit("/", 1)[1]
            token = secrets.token_hex(16)
            return page(f"Session page {name}", [(f"/s/{token}/page{k}", f"page {k}") for k in range(1, 6)])
        if path.startswith("/loop/"):
            return page("Loop", [("a/", "a"), ("b/", "b")])
        if path.startswith("/shop"):
            pairs = [f"{a}=1&{b}=1" for i, a in enumerate(facets) for b in facets[i + 1 :]]
            return page("Shop", [(f"/shop?{q}", q) for q in pairs])
        return None

    site.fallback = generated
    start = [("/calendar/2024-05", "calendar"), (f"/s/{secrets.token_hex(16)}/page1", "s"), ("/loop/", "loop")]
    site.routes["/"] = page("Home", [*start, ("/shop?f0=1", "shop")])


async def test_flat_numbered_site_is_crawled_completely_with_defaults(tmp_path: Path) -> None:
    """/p0.html ... /p399.html with max_pages 400 and every other setting default: 400 documents, nothing cut."""
    with serve(Site()) as site:
        flat(site)
        docs, skipped, _ = await crawl(defaults(site, start_urls=[f"{site.base}/p0.html"], max_pages=400), tmp_path)
    assert len({d.source for d in docs}) == 400
    assert not skips.truncates(skipped), skipped


async def test_trap_site_ends_in_bounded_pages_and_names_every_trap(tmp_path: Path) -> None:
    """Calendar, session ids, a/b/a/b paths and facets: the crawl ends well inside its budget, each trap counted."""
    started = time.monotonic()
    with serve(Site()) as site:
        trap_site(site)
        docs, skipped, _ = await crawl(defaults(site, max_depth=100_000, max_pages=100_000), tmp_path)
        requests = len(site.fetched())
    assert {"trap:calendar", "trap:session-id", "trap:repeated-path-segment", "trap:query-permutations"} <= set(
        skipped
    ), skipped
    assert skips.truncates(skipped)
    assert len(docs) < 300, f"{len(docs)} pages: a trap was not cut"
    assert requests < 300
    assert 190 <= sum(1 for d in docs if "/calendar/" in d.source) <= 200
    assert sum(1 for d in docs if "/s/" in d.source) <= 12
    assert time.monotonic() - started < 60


async def test_numbered_urls_are_no_trap_and_traps_are() -> None:
    """Numbers, slugs and ?page=N are ordinary; dates, session tokens and key-set growth are what is counted."""
    traps = Traps(TrapLimits(max_pages_per_calendar=2, max_query_variants=2), Counter())
    for n in range(50):
        for url in (f"http://h/posts/{n}", f"http://h/docs/page-{n}", f"http://h/list?page={n}"):
            assert traps.why_not(url) is None
            for entry in traps.counted(url):
                traps.counts[entry] += 1
    assert calendar_template("http://h/posts/123") is None
    assert calendar_template("http://h/blog/2024/05/") == calendar_template("http://h/blog/2023/11/")
    assert calendar_template("http://h/ev?month=5&year=2024") == calendar_template("http://h/ev?year=1999&month=12")
    for url in ("http://h/cal/2024-05-01", "http://h/cal/2024-05-02"):
        traps.counts.update(traps.counted(url))
    assert traps.why_not("http://h/cal/2024-05-03") == "trap:calendar"
    for url in ("http://h/f?a=1", "http://h/f?b=1"):
        traps.counts.update(traps.counted(url))
    assert traps.why_not("http://h/f?a=2") is None  # a known key set: values are free
    assert traps.why_not("http://h/f?a=1&b=1") == "trap:query-permutations"
    assert traps.why_not("http://h/a/b/a/b/a/") == "trap:repeated-path-segment"
    assert looks_like_token("0f3a9c2b7e1d4a6f8b0c2e4d6f8a0b1c")
    assert looks_like_token("(S(lit3py55t21z5v55vlm25s55))")
    assert not looks_like_token("getting-started-with-the-api")
    assert not looks_like_token("20240517")
    assert url_key("http://h/p;jsessionid=ABC123?x=1&PHPSESSID=9") == url_key("http://h/p?x=1")
    assert has_session_id("http://h/p?sid=7")
    assert not has_session_id("http://h/p?side=7")


async def test_huge_crawl_delay_skips_the_host_instead_of_waiting(tmp_path: Path) -> None:
    """robots.txt ``Crawl-delay: 100000000``: the host is skipped at once (crawl-delay-too-long), nothing hangs."""
    with serve(Site()) as site:
        site.routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nCrawl-delay: 100000000\n")
        site.routes["/"] = html("Home", links=("/a", "/b"))
        started = time.monotonic()
        docs, skipped, _ = await crawl(defaults(site), tmp_path)
    assert time.monotonic() - started < 10
    assert docs == []
    assert skipped["crawl-delay-too-long"] == 1
    assert skips.truncates(skipped)


async def test_a_hand_off_ends_a_crawl_delay_wait_at_once(tmp_path: Path) -> None:
    """Waiting out a 20 s Crawl-delay, the step ends as soon as the job is handed off; the pages stay queued."""
    handoff = asyncio.Event()
    context = ConnectorContext(connector_id="site", org_id="org", data_dir=tmp_path, handoff=handoff)
    with serve(Site()) as site:
        site.routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nCrawl-delay: 20\n")
        site.routes["/"] = html("Home", links=("/a", "/b"))
        conn = WebConnector(defaults(site), context)
        async with aclosing(conn):
            first = await conn.run_step(conn.initial_checkpoint(None))  # "/" at once; /a waits 20 s
            asyncio.get_running_loop().call_later(0.3, handoff.set)
            started = time.monotonic()
            second = await conn.run_step(first.checkpoint)
            elapsed = time.monotonic() - started
    assert elapsed < 5
    assert second.retry_after_s == 0
    assert second.checkpoint.has_more
    assert second.documents == []
    assert "/a" not in site.fetched()


async def test_retry_after_beyond_every_cap_skips_the_page(tmp_path: Path) -> None:
    """A 429 asking for 10^8 s skips the page (retry-after-too-long) instead of sending the job away for years."""
    with serve(Site()) as site:
        site.routes["/"] = html("Home", links=("/busy",))
        site.routes["/busy"] = (429, {"Retry-After": "100000000"}, b"later")
        docs, skipped, _ = await crawl(defaults(site), tmp_path)
    assert [d.title for d in docs] == ["Home"]
    assert skipped["retry-after-too-long"] == 1


async def test_invalid_urls_are_skipped_in_links_sitemaps_and_redirects(tmp_path: Path) -> None:
    """``http://x\\@host/`` and friends in links, a sitemap and a Location header are counted as invalid-url;
    an over-long link as trap:url-too-long."""
    with serve(Site()) as site:
        b, bad_url = site.base, bad_link(site)
        bad = (bad_url, "http://127.0.0.1:99999/", "http://[::1/", "http://a\x01b/", "/ok", "/" + "x" * 3000)
        site.routes["/"] = html("Home", links=(*bad, "/moved"))
        site.routes["/ok"] = html("OK")
        site.routes["/moved"] = (302, {"Location": bad_url}, b"")
        site.routes["/sitemap.xml"] = (200, {"Content-Type": "application/xml"}, sitemap([bad_url, f"{b}/ok"]))
        docs, skipped, _ = await crawl(defaults(site, sitemaps=[f"{b}/sitemap.xml"]), tmp_path)
    assert sorted(d.title or "" for d in docs) == ["Home", "OK"]
    assert skipped["invalid-url"] == 4 + 1 + 1  # four links (the control character one included), sitemap, Location
    assert skipped["trap:url-too-long"] == 1  # dropped while parsing, counted all the same
    assert set(skipped) == {"invalid-url", "trap:url-too-long"}


async def test_a_stored_frontier_with_an_invalid_url_resumes_to_the_end(tmp_path: Path) -> None:
    """A resumed crawl whose stored frontier holds ``http://x\\@host/`` (and a mangled item) completes."""
    with serve(Site()) as site:
        site.routes["/"] = html("Home")
        data = MemoryRunData(WebConnector.carried)
        stored = StateChanges()
        stored.push(FRONTIER, [f"1 {bad_link(site)}", "x garbage", f"0 {site.base}/"])
        data.apply(stored)
        docs, skipped, _ = await crawl(defaults(site), tmp_path, data, WebCheckpoint(started=True))
    assert [d.title for d in docs] == ["Home"]
    assert skipped["invalid-url"] == 2


async def run_job(settings: Settings, queue: Queue, site: Site, **config: Any) -> tuple[str, CollectorRegistry]:
    """Crawl ``site`` as a PipesHub-shaped job through the real worker; (job id, the worker's metrics)."""
    cfg = defaults(site, **config).model_dump(mode="json")
    registry = CollectorRegistry()
    async with running_app(settings, catalog_of(site={"connector": "web", "config": cfg}), registry=registry):
        job_id = await add_crawl(queue, "web", "site")
        assert await wait_state(queue, job_id, ["completed", "failed"], timeout=90) == "completed"
    return job_id, registry


async def crawl_trap_site(settings: Settings, queue: Queue) -> tuple[str, CollectorRegistry]:
    """The trap site crawled through the worker with no depth or page limit to speak of."""
    with serve(Site()) as site:
        trap_site(site)
        return await run_job(settings, queue, site, max_depth=100_000, max_pages=100_000)


def skipped_metric(registry: CollectorRegistry, settings: Settings, reason: str) -> float:
    """``crawl_worker_skipped_total`` of the web connector for ``reason``."""
    labels = {"queue": settings.queue_name, "connector": "web", "reason": reason}
    return registry.get_sample_value("crawl_worker_skipped_total", labels) or 0.0


async def test_a_trap_crawl_job_reports_its_skips_everywhere(make_settings: Any, queue: Queue) -> None:
    """Return value, progress, the job's log line, the metric and one crawl.truncated warning agree."""
    settings = make_settings(progress_interval_s=0)
    with capture_logs() as logs:
        job_id, registry = await crawl_trap_site(settings, queue)
    job = await queue.getJob(job_id)
    result = job.returnvalue
    assert result["truncated"] is True
    skipped = result["skipped"]
    assert {"trap:calendar", "trap:session-id", "trap:repeated-path-segment", "trap:query-permutations"} <= set(skipped)
    assert job.progress["skipped"] == skipped
    assert job.progress["truncated"] is True
    (line,) = (await queue.getJobLogs(job_id))["logs"]
    assert line.startswith(f"completed: {result['documents']} documents, {result['failures']} failures, ")
    assert f"{sum(skipped.values())} skipped (" in line
    assert all(f"{reason} {count}" in line for reason, count in skipped.items())
    assert line.endswith("truncated: a budget, limit or trap guard cut the crawl short")
    for reason, count in skipped.items():
        assert skipped_metric(registry, settings, reason) == count
    warnings = [e for e in logs if e["event"] == "crawl.truncated"]
    assert len(warnings) == 1
    assert warnings[0]["skipped"] == skipped


async def test_a_flat_site_job_completes_untruncated(make_settings: Any, queue: Queue) -> None:
    """The flat 400-page site through the worker: 400 documents, truncated false, no trap skip."""
    settings = make_settings()
    with serve(Site()) as site:
        flat(site)
        job_id, _ = await run_job(settings, queue, site, start_urls=[f"{site.base}/p0.html"], max_pages=400)
    result = (await queue.getJob(job_id)).returnvalue
    assert result["documents"] == 400
    assert result["truncated"] is False
    assert not any(reason.startswith("trap:") for reason in result["skipped"])


async def test_huge_crawl_delay_and_bad_links_end_the_job_promptly(make_settings: Any, queue: Queue) -> None:
    """Crawl-delay 10^8 on one host and a ``\\@`` link on the other: the job completes within 30 s, both counted."""
    settings = make_settings()
    with serve(Site()) as slow, serve(Site()) as site:
        slow.routes["/robots.txt"] = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nCrawl-delay: 100000000\n")
        slow.routes["/"] = html("Slow home")
        site.routes["/"] = html("Home", links=(bad_link(site),))
        started = time.monotonic()
        job_id, _ = await run_job(settings, queue, site, start_urls=[f"{site.base}/", f"{slow.base}/"])
        elapsed = time.monotonic() - started
    result = (await queue.getJob(job_id)).returnvalue
    assert elapsed < 30
    assert result["documents"] == 1
    assert result["skipped"] == {"crawl-delay-too-long": 1, "invalid-url": 1}
    assert result["truncated"] is True


@pytest.mark.slow
async def test_a_resumed_job_whose_stored_frontier_holds_an_invalid_url_completes(
    make_settings: Any, queue: Queue, redis_client: Any
) -> None:
    """The job comes back for a Retry-After; an invalid URL put in its frontier in Redis is skipped on resume."""
    settings = make_settings()
    with serve(Site()) as site:
        later = [(429, {"Retry-After": "3"}, b"later"), html("Later")]
        site.routes["/"] = html("Home", links=("/later",))
        site.routes["/later"] = lambda n, _: later[min(n, 2) - 1]
        cfg = defaults(site, max_retry_after_s=1).model_dump(mode="json")
        async with running_app(settings, catalog_of(site={"connector": "web", "config": cfg})):
            job_id = await add_crawl(queue, "web", "site")
            assert await wait_state(queue, job_id, ["delayed"], timeout=30) == "delayed"
            pattern = f"{settings.prefix}:{settings.queue_name}:cw:data:*:frontier"
            (frontier,) = [key async for key in redis_client.scan_iter(match=pattern)]
            await redis_client.lpush(frontier, f"1 {bad_link(site)}")
            assert await wait_state(queue, job_id, ["completed", "failed"], timeout=30) == "completed"
    result = (await queue.getJob(job_id)).returnvalue
    assert result["resumed"] is True
    assert result["documents"] == 2
    assert result["skipped"] == {"invalid-url": 1}


@settings(max_examples=400, deadline=None)
@given(st.text(), st.text(alphabet=st.sampled_from("htps:/[]@\\%?#;=:.0123456789x \x00\u00e9-")))
def test_url_helpers_never_raise(text: str, urlish: str) -> None:
    """Whatever a page, a sitemap or a stored frontier holds, the URL helpers answer instead of raising."""
    traps = Traps(TrapLimits(max_pages_per_pattern=3), Counter())
    for raw in (text, urlish, "http://" + urlish, "https://h/" + urlish, "http://[" + urlish):
        resolve(raw, "http://h/")
        absolute(raw, "http://h/")
        for url in (raw, "http://h/" + raw):
            valid(url)
            url_key(url)
            pattern_key(url)
            host_port(url)
            has_session_id(url)
            trap_reason(url, max_length=100, max_segments=5, max_query_params=3)
            in_host_scope(url, {"h"}, allow_subdomains=True)
            under_path(url, ["http://h/a"])
            calendar_template(url)
            traps.why_not(url)
            traps.counted(url)
            traps.session_key(url)
            traps.learn(url, "text")
