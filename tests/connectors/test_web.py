"""The web connector against a real fixture site on 127.0.0.1: scope, politeness, traps, incremental runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.connectors.site import Reply, Site, gz, html, serve, sitemap, slow
from tests.helpers import RecordingSink, add_crawl, catalog_of, running_app, wait_state
from worker.connectors.base import ConnectorContext
from worker.connectors.web.connector import WebConfig, WebConnector
from worker.connectors.web.urls import host_port, in_host_scope, url_key
from worker.crawlstate import MemoryRunData
from worker.documents import Document, ItemFailure, stable_id
from worker.settings import Settings

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
XML = {"Content-Type": "application/xml"}
GZIP = {"Content-Type": "application/gzip"}
HOME_LINKS = (
    "/about",
    "/about/",
    "/about#team",
    "/about?utm_source=news&utm_medium=mail",
    "/private/secret",
    "/redirect-1",
    "/loop-a",
    "/limited",
    "/flaky",
    "/slow",
    "/calendar?month=1",
    "/doc.pdf",
    "/huge",
    "http://example.org/outside",
)


def _once_then(first: Reply, then: Reply) -> Callable[[int, dict[str, str]], Reply]:
    return lambda n, _: first if n == 1 else then


def _calendar(month: int) -> Reply:
    return html(f"Calendar {month}", f"events of month {month}", (f"/calendar?month={month + 1}",))


def _etagged(body: Reply, etag: str) -> Callable[[int, dict[str, str]], Reply]:
    def route(_: int, headers: dict[str, str]) -> Reply:
        if headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        status, head, content = body
        return status, {**head, "ETag": etag}, content

    return route


def build(site: Site) -> None:
    """The fixture site's routes (absolute URLs need the base, known once it is served)."""
    b = site.base
    site.routes.update(
        {
            "/robots.txt": (
                200,
                {"Content-Type": "text/plain"},
                b"User-agent: *\nDisallow: /private\nCrawl-delay: 0.02\n",
            ),
            "/": _etagged(html("Home", "welcome", HOME_LINKS), '"home-v1"'),
            "/about": html("About", "about us v1", ("/canonical-dup",)),
            "/canonical-dup": html("About (print)", "about us v1", head=f'<link rel="canonical" href="{b}/about">'),
            "/private/secret": html("Secret"),
            "/redirect-1": (301, {"Location": "/redirect-2"}, b""),
            "/redirect-2": (302, {"Location": f"{b}/landing"}, b""),
            "/landing": html("Landing", "you made it"),
            "/loop-a": (302, {"Location": "/loop-b"}, b""),
            "/loop-b": (302, {"Location": "/loop-a"}, b""),
            "/limited": _once_then((429, {"Retry-After": "1"}, b"slow down"), html("Limited", "patience")),
            "/flaky": _once_then((500, {}, b"oops"), html("Flaky", "second time lucky")),
            "/slow": slow(1.0, html("Slow")),
            "/doc.pdf": (200, {"Content-Type": "application/pdf"}, PDF),
            "/huge": (200, {"Content-Type": "text/html"}, b"<html><body>" + b"x" * 300_000 + b"</body></html>"),
            "/sitemap_index.xml": (200, XML, sitemap([f"{b}/sitemap-pages.xml.gz"], index=True)),
            "/sitemap-pages.xml.gz": (200, GZIP, gz(sitemap([f"{b}/from-sitemap", f"{b}/about"]))),
            "/from-sitemap": html("From the sitemap", "listed only in sitemap.xml.gz"),
            **{f"/calendar?month={m}": _calendar(m) for m in range(1, 40)},
        }
    )


def config(site: Site, **overrides: Any) -> WebConfig:
    """The crawl configuration the tests use (loopback allowed, short timeouts)."""
    values: dict[str, Any] = {
        "start_urls": [f"{site.base}/"],
        "sitemaps": [f"{site.base}/sitemap_index.xml"],
        "max_depth": 10,
        "max_pages_per_pattern": 5,
        "timeout_s": 0.4,
        "retries": 1,
        "backoff_s": 0.05,
        "max_retry_after_s": 5,
        "max_body_bytes": 100_000,
        "allowed_networks": ["127.0.0.0/8"],
    }
    values.update(overrides)
    return WebConfig(**values)


async def crawl(
    cfg: WebConfig, data_dir: Path, data: MemoryRunData | None = None, connector: WebConnector | None = None
) -> tuple[MemoryRunData, list[Document], list[ItemFailure], Counter[str]]:
    """Run the connector step by step to the end, as the runner does (state changes applied, run completed).

    ``data`` carries the previous run's state into an incremental run; it is returned completed.
    """
    conn = connector or WebConnector(cfg, ConnectorContext(connector_id="site", org_id="org", data_dir=data_dir))
    data = data or MemoryRunData(WebConnector.carried)
    conn.bind(data)
    checkpoint = conn.initial_checkpoint(None)
    docs: list[Document] = []
    failures: list[ItemFailure] = []
    stats: Counter[str] = Counter()
    async with aclosing(conn):
        while checkpoint.has_more:
            step = await conn.run_step(checkpoint)
            data.apply(step.changes)
            docs += step.documents
            failures += step.failures
            stats.update(step.stats)
            assert step.retry_after_s is None
            checkpoint = step.checkpoint
    data.complete()
    return data, docs, failures, stats


def _path(url: str) -> str:
    return url.split("/", 3)[3] if url.count("/") >= 3 else ""


async def test_first_crawl_fetches_emits_and_skips_exactly_what_it_should(tmp_path: Path) -> None:
    """Robots, sitemaps (.gz index), duplicates, redirects, loop, 429, flaky 500, timeout, trap, PDF, oversize."""
    with serve(Site()) as site:
        build(site)
        data, docs, failures, stats = await crawl(config(site), tmp_path)

    fetched = Counter(site.fetched())
    assert fetched["/about"] == 1, "URL variants of /about were fetched more than once"
    for path in ("/about/", "/about?utm_source=news&utm_medium=mail", "/private/secret", "/calendar?month=6"):
        assert path not in fetched, f"{path} should not have been requested"
    assert fetched["/limited"] == 2  # 429 with Retry-After: 1, then 200
    assert fetched["/flaky"] == 2  # 500, then 200
    assert fetched["/slow"] == 2  # timed out twice (1 retry)
    assert [p for p in site.fetched() if p.startswith("/redirect")] == ["/redirect-1", "/redirect-2"]
    assert {f"/calendar?month={m}" for m in range(1, 6)} <= set(fetched)
    assert fetched["/sitemap-pages.xml.gz"] == 1
    assert fetched["/from-sitemap"] == 1

    emitted = {_path(d.source) for d in docs}
    assert emitted == {
        "",
        "about",
        "landing",
        "limited",
        "flaky",
        "doc.pdf",
        "from-sitemap",
        *{f"calendar?month={m}" for m in range(1, 6)},
    }
    assert len(docs) == len({d.id for d in docs}), "a page was emitted twice"
    about = next(d for d in docs if d.source.endswith("/about"))
    assert about.title == "About"
    assert "about us v1" in (about.text or "")
    assert about.id == stable_id(url_key(f"{site.base}/about"))
    pdf = next(d for d in docs if d.source.endswith("/doc.pdf"))
    assert pdf.mime_type == "application/pdf"
    assert pdf.text is None
    assert Path(pdf.content_ref or "").read_bytes() == PDF
    landing = next(d for d in docs if d.source.endswith("/landing"))
    assert landing.metadata["redirects"] == [f"{site.base}/redirect-1", f"{site.base}/redirect-2"]

    reasons = {_path(f.source): f.reason for f in failures}
    assert "redirect loop" in reasons["loop-a"]
    assert "TimeoutException" in reasons["slow"] or "Timeout" in reasons["slow"]
    assert "max_body_bytes" in reasons["huge"]
    assert set(reasons) == {"loop-a", "slow", "huge"}

    skipped = data.previous["skipped"]
    assert skipped[url_key(f"{site.base}/private/secret")] == "robots:disallowed"
    assert skipped[url_key(f"{site.base}/calendar?month=6")] == "trap:pattern-budget"
    assert skipped[url_key("http://example.org/outside")] == "out-of-scope:host"
    assert stats["skipped_robots"] == 1
    assert stats["skipped_trap"] == 1
    assert stats["fetches_2xx"] >= 12
    assert stats["fetches_5xx"] == 1
    assert stats["duplicate"] == 1  # /canonical-dup names /about as canonical


@pytest.mark.slow
async def test_second_run_emits_only_changes_and_deletions(tmp_path: Path) -> None:
    """Run 2 after edits: the changed page, a tombstone for the removed one; 304 and same-hash pages skipped."""
    with serve(Site()) as site:
        build(site)
        first, _, _, _ = await crawl(config(site), tmp_path)
        site.routes["/about"] = html("About", "about us v2", ("/canonical-dup",))
        del site.routes["/from-sitemap"]
        site.log.clear()
        _, docs, _, stats = await crawl(config(site), tmp_path, data=first)
        home_requests = [p for p in site.log if p == "/"]

    changed = [d for d in docs if not d.deleted]
    deleted = [d for d in docs if d.deleted]
    assert [d.source.rsplit("/", 1)[1] for d in changed] == ["about"]
    assert changed[0].text is not None
    assert "v2" in changed[0].text
    assert [d.source.rsplit("/", 1)[1] for d in deleted] == ["from-sitemap"]
    assert deleted[0].id == stable_id(url_key(f"{site.base}/from-sitemap"))
    assert home_requests == ["/"]
    assert stats["unchanged"] >= 8  # home answered 304; the others had the same content hash


async def test_long_retry_after_sends_the_job_back_without_losing_the_page(tmp_path: Path) -> None:
    """503 with Retry-After: 120 ends the step with retry_after_s and keeps the page in the frontier."""
    with serve(Site()) as site:
        build(site)
        site.routes["/busy"] = (503, {"Retry-After": "120"}, b"maintenance")
        conn = WebConnector(
            config(site, start_urls=[f"{site.base}/busy"], sitemaps=[]),
            ConnectorContext(connector_id="site", org_id="org", data_dir=tmp_path),
        )
        data = MemoryRunData()
        async with aclosing(conn):
            step = await conn.run_step(conn.initial_checkpoint(None))
        data.apply(step.changes)
    assert step.retry_after_s == 120
    assert step.checkpoint.has_more
    assert data.queues["frontier"] == [f"0 {site.base}/busy"]
    assert step.failures == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://intranet.test:{port}/", "loopback"),
    ],
)
async def test_address_guard_refuses_internal_targets_without_a_request(tmp_path: Path, url: str, why: str) -> None:
    """Metadata, private and a name resolving to 127.0.0.1 are refused when loopback is not allowed."""
    with serve(Site()) as site:
        build(site)
        port = site.base.rsplit(":", 1)[1]

        async def resolver(host: str, _: int) -> list[str]:
            assert host == "intranet.test"
            return ["127.0.0.1"]

        conn = WebConnector(
            WebConfig(start_urls=[url.format(port=port)], timeout_s=1),
            ConnectorContext(connector_id="ssrf", org_id="org", data_dir=tmp_path, resolver=resolver),
        )
        _, docs, failures, stats = await crawl(conn.config, tmp_path, connector=conn)
        requests = list(site.log)
    assert docs == []
    assert len(failures) == 1
    assert why in failures[0].reason
    assert stats["skipped_blocked"] == 1
    assert requests == [], "a request reached the loopback server"


async def test_redirect_into_a_private_address_is_refused(tmp_path: Path) -> None:
    """A public-looking page that redirects to 169.254.169.254 is not followed."""
    with serve(Site()) as site:
        build(site)
        site.routes["/to-metadata"] = (302, {"Location": "http://169.254.169.254/latest/"}, b"")
        cfg = config(site, start_urls=[f"{site.base}/to-metadata"], sitemaps=[], same_host=False)
        _, docs, failures, _ = await crawl(cfg, tmp_path)
    assert docs == []
    assert "link-local" in failures[0].reason


async def test_web_crawl_runs_end_to_end_through_the_worker(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """A PipesHub-shaped job for a web instance crawls the fixture site and reports fetch metrics."""
    sink = RecordingSink()
    with serve(Site()) as site:
        build(site)
        cfg = config(site).model_dump(mode="json")
        settings = make_settings(progress_interval_s=0)
        async with running_app(settings, catalog_of(site={"connector": "web", "config": cfg}), sink=sink) as app:
            job_id = await add_crawl(queue, "web", "site")
            assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "completed"
            registry = app.metrics_registry
        job = await queue.getJob(job_id)
    assert job.returnvalue["documents"] == 12
    assert job.returnvalue["failures"] == 3
    assert job.progress["percentage"] == 100
    assert len(set(sink.ids())) == 12
    ok = registry.get_sample_value(
        "crawl_worker_fetches_total", {"queue": settings.queue_name, "connector": "web", "status_class": "2xx"}
    )
    assert ok is not None
    assert ok >= 12


def test_same_host_means_same_host_and_port() -> None:
    """Another port on the same host is another site; default ports and www. are not."""
    roots = {host_port("http://www.example.com/")}
    assert in_host_scope("http://example.com:80/a", roots, allow_subdomains=False)
    assert not in_host_scope("http://example.com:8080/a", roots, allow_subdomains=False)
    assert not in_host_scope("http://example.com:99999/a", roots, allow_subdomains=False)
    assert in_host_scope("http://a.example.com/", roots, allow_subdomains=True)
    assert not in_host_scope("http://a.example.com:81/", roots, allow_subdomains=True)
