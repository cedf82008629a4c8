"""The ``web`` connector: a polite, resumable, incremental website crawler.

Each step fetches up to ``pages_per_step`` pages off the frontier (concurrently, within the
per-host limits), parses the HTML ones in a worker thread (lexbor releases the GIL, and the event
loop stays free for other crawls and the lease keeper) and returns their documents. The frontier,
seen set, page states and skip reasons live in the run's stored state (``frontier``),
which grows by what each step added; the checkpoint keeps counters. A crash replays at most one step.

Order of checks for every discovered URL: validity (``invalid-url``), length (over-long URLs are dropped
before they are stored anywhere), seen (a learned session token left out of the key), http(s) and trap
guards (``traps``), host scope (host and port), path scope, include / exclude patterns, depth (these in
``scope``), page budget, robots.txt (and its Crawl-delay cap); the address guard runs on every request. Every URL
not fetched is counted by reason (``worker.skips``) in the step's ``skipped`` counts, and kept (bounded)
in the ``skipped`` map.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

import aiohttp

from worker.connectors.base import Checkpoint, Connector, ConnectorContext, StepResult
from worker.connectors.web.config import WebConfig
from worker.connectors.web.fetch import Fetcher, Politeness, Response, pinned_client
from worker.connectors.web.frontier import PAGES, SKIPPED, Frontier, PageState
from worker.connectors.web.html import TEXT_TYPES, Prepared, mime_type, prepare, to_prepare
from worker.connectors.web.robots import Robots
from worker.connectors.web.scope import Scope
from worker.connectors.web.sitemaps import parse_sitemap
from worker.connectors.web.ssrf import AddressGuard, system_resolver
from worker.connectors.web.urls import has_session_id, resolve, url_key, valid
from worker.documents import Document, ItemFailure, content_hash, stable_id
from worker.errors import BlockedAddress, ComeBackLater, FetchError, InvalidConnectorConfig
from worker.logs import reap

MAX_SKIPPED_KEPT = 5000
GONE = frozenset({404, 410})
MAX_LINKS_KEPT = 500

__all__ = ["WebCheckpoint", "WebConfig", "WebConnector"]


#: A fetched batch: URL keys, the last run's page states, fetch results, each response prepared by id(response).
_Result: TypeAlias = "Response | ItemFailure | ComeBackLater | None"
_Fetched = tuple[list[str], list[str | None], list[_Result], dict[int, Prepared]]


class WebCheckpoint(Checkpoint):
    """Counters of a crawl in progress; the frontier and seen set are in the run's stored state."""

    schema_version = 2

    started: bool = False
    fetched: int = 0
    skipped_kept: int = 0
    budget_hit: bool = False


class WebConnector(Connector[WebConfig, WebCheckpoint]):
    """Crawls websites from start URLs and sitemaps."""

    config_model = WebConfig
    checkpoint_model = WebCheckpoint
    carried = frozenset({PAGES, SKIPPED})

    def __init__(self, config: WebConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self._client: aiohttp.ClientSession | None = None
        self._fetcher: Fetcher | None = None
        self._robots: Robots | None = None
        self._state: Frontier | None = None
        self._cp = WebCheckpoint()
        self._stats: Counter[str] = Counter()
        self._skipped: Counter[str] = Counter()  # this step's skips by reason
        self._scoped: Scope | None = None  # made with the frontier, whose pattern counts its trap guards share
        self._session_fetched: set[str] = set()  # keys (session token left out) fetched by this attempt
        self._canonical: dict[str, str] = {}  # document id -> canonical key, within a step
        self._ahead: tuple[list[tuple[str, int]], asyncio.Future[_Fetched]] | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    async def validate(self) -> None:
        """At least one start URL or sitemap."""
        if not self.config.start_urls and not self.config.sitemaps:
            raise InvalidConnectorConfig("web connector needs start_urls or sitemaps")

    def _fetch(self) -> Fetcher:
        if self._fetcher is None:
            c = self.config
            politeness = Politeness(
                per_host_concurrency=c.per_host_concurrency,
                min_delay_s=c.min_delay_s,
                retries=c.retries,
                backoff_s=c.backoff_s,
                max_retry_after_s=c.max_retry_after_s,
                max_come_back_s=c.max_come_back_s,
                max_redirects=c.max_redirects,
                max_body_bytes=c.max_body_bytes,
                timeout_s=c.timeout_s,
            )
            guard = AddressGuard(c.allowed_networks, self.context.resolver or system_resolver)
            self._client = pinned_client(guard, c.user_agent)
            self._fetcher = Fetcher(self._client, guard, politeness, self.context.handoff)
        return self._fetcher

    async def aclose(self) -> None:
        """Stop fetching ahead; close the HTTP client."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            await reap(self._ahead[1], "web.fetch_ahead_failed")
            self._ahead = None
        if self._client is not None:
            await self._client.close()

    # --- scope ---------------------------------------------------------------------------------
    def _scope(self) -> Scope:
        if self._scoped is None:
            assert self._state is not None
            self._scoped = Scope(self.config, self._state.patterns)
        return self._scoped

    def _count(self, reason: str, count: int = 1) -> None:
        """Count skips that have no URL key to keep (invalid URLs, unreadable frontier items)."""
        if count:
            self._skipped[reason] += count
            self._stats["skipped_" + reason.split(":", 1)[0].replace("-", "_")] += count

    def _skip(self, key: str, reason: str) -> None:
        self._count(reason)
        if self._cp.skipped_kept < MAX_SKIPPED_KEPT and len(key) <= self.config.max_url_length:
            assert self._state is not None
            self._state.record_skip(key, reason)
            self._cp.skipped_kept += 1

    def _enqueue(self, url: str, depth: int, key: str | None = None) -> None:
        if len(url) > self.config.max_url_length:  # dropped before it is stored anywhere
            self._count("trap:url-too-long")
            return
        assert self._state is not None
        session_key = self._scope().traps.session_key(url)
        key = session_key or key or url_key(url)
        assert key is not None
        if not self._state.mark_seen(key):
            if session_key is not None or has_session_id(url):  # the same page under another session id
                self._count("trap:session-id")
            return
        why = self._scope().why_not(url, depth)
        if why:
            self._skip(key, why)
            return
        self._state.push(url, depth, self._scope().traps.counted(url))

    # --- steps ---------------------------------------------------------------------------------
    async def _start(self, failures: list[ItemFailure]) -> None:
        for url in self.config.start_urls:
            self._enqueue(url, 0)
        pending = list(self.config.sitemaps)
        done: set[str] = set()
        while pending:
            sitemap = pending.pop(0)
            if sitemap in done or len(done) >= 100:
                continue
            done.add(sitemap)
            try:
                response = await self._fetch().get(sitemap)
                if response.status >= 400:
                    raise FetchError(f"HTTP {response.status}")
                found = parse_sitemap(response.body)
            except (FetchError, BlockedAddress, ComeBackLater, ValueError) as exc:
                failures.append(ItemFailure(source=sitemap, reason=f"sitemap: {exc}"))
                continue
            pending.extend(found.sitemaps)
            for page in found.pages:
                page_url, invalid = resolve(page, sitemap)
                if page_url:
                    self._enqueue(page_url, 0)
                self._count("invalid-url", invalid)
        self._cp.started = True

    async def run_step(self, checkpoint: WebCheckpoint) -> StepResult[WebCheckpoint]:
        """Fetch the next pages of the frontier."""
        if self._state is None:
            self._state = Frontier()
            if checkpoint.started:  # a resumed attempt: read the stored state once
                self._count("invalid-url", await self._state.load(self.data))
        state = self._state
        self._cp = cp = checkpoint.model_copy()
        failures: list[ItemFailure] = []
        if not cp.started:
            await self._start(failures)
        batch = state.take(self._step_size(cp))
        documents, later, retry_after = await self._results(batch, await self._fetched(batch), failures)
        state.put_back(later)
        cp.fetched += len(batch) - len(later)
        if state.queue and cp.fetched >= self.config.max_pages:
            cp.budget_hit = True
            for url, _ in state.clear():
                self._skip(url_key(url), "budget:max-pages")
        cp.has_more = bool(state.queue)
        if not cp.has_more and not cp.budget_hit:  # only a crawl that saw everything can tell what disappeared
            documents += await self._tombstones()
        stats = {**self._stats, **{f"fetches_{k}": v for k, v in self._fetch().statuses.items()}}
        skipped = dict(self._skipped)
        self._skipped.clear()
        self._stats.clear()  # counted from here on (the next batch's early fetches included): the next step's
        self._fetch().statuses.clear()
        out: StepResult[WebCheckpoint] = StepResult(
            documents=documents,
            failures=failures,
            checkpoint=cp,
            processed=len(batch) - len(later),
            total=cp.fetched + len(state.queue),
            stats=stats,
            skipped=skipped,
            retry_after_s=retry_after,
            changes=state.changes(),
        )
        if cp.has_more and retry_after is None:
            self._fetch_ahead(cp)
        return out

    async def _results(
        self, batch: list[tuple[str, int]], fetched: _Fetched, failures: list[ItemFailure]
    ) -> tuple[list[Document], list[tuple[str, int]], float | None]:
        """Documents of a fetched batch (failures appended), the pages to come back to, and when."""
        keys, before, results, prepared = fetched
        documents: list[Document] = []
        requested: dict[str, str | None] = {}  # document id -> the last run's state of the URL fetched
        later: list[tuple[str, int]] = []
        retry_after: float | None = None
        for (url, depth), key, raw, result in zip(batch, keys, before, results, strict=True):
            if isinstance(result, ComeBackLater):
                later.append((url, depth))
                retry_after = max(retry_after or 0.0, result.seconds)
            elif isinstance(result, ItemFailure):
                failures.append(result)
            elif isinstance(result, Response):
                item = self._outcome(key, raw, result, depth, prepared.get(id(result), Prepared()))
                if isinstance(item, Document):
                    documents.append(item)
                    requested[item.id] = raw if stable_id(key) == item.id else None
                elif isinstance(item, ItemFailure):
                    failures.append(item)
        return await self._changed(documents, requested), later, retry_after

    async def _fetched(self, batch: list[tuple[str, int]]) -> _Fetched:
        """``batch`` fetched and parsed: by the fetch started ahead, if it took these pages."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == batch:  # fetched while the runner committed the last step
            return await ahead[1]
        if ahead is not None:
            ahead[1].cancel()
        return await self._fetch_batch(batch)

    def _robots_rules(self) -> Robots:
        if self._robots is None:
            self._robots = Robots(self._fetch(), self.config.user_agent, self.config.max_crawl_delay_s)
        return self._robots

    def _step_size(self, cp: WebCheckpoint) -> int:
        return min(self.config.pages_per_step, max(0, self.config.max_pages - cp.fetched))

    def _fetch_ahead(self, cp: WebCheckpoint) -> None:
        """Start fetching and parsing the next step's pages now, while the runner writes and commits this one.

        Its side effects (skips, carried page states) are recorded into the next step's changes, which
        takes exactly these pages off the frontier; if it never comes, nothing was committed.
        """
        assert self._state is not None
        batch = list(itertools.islice(self._state.queue, self._step_size(cp)))
        if batch:
            self._ahead = (batch, asyncio.ensure_future(self._fetch_batch(batch)))

    async def _fetch_batch(self, batch: list[tuple[str, int]]) -> _Fetched:
        """Fetch ``batch`` (conditionally where the last run saw a page) and parse its HTML in a thread."""
        keys = [url_key(url) for url, _ in batch]
        before = await self.data.get(PAGES, keys, previous=True)
        fetched = await asyncio.gather(
            *(self._get(url, depth, key, raw) for (url, depth), key, raw in zip(batch, keys, before, strict=True))
        )
        html, binary = to_prepare([r for r in fetched if isinstance(r, Response)])
        # parsing and blob files off the event loop: other jobs and the lock keeper share it
        if html or binary:
            data_dir, limit = Path(self.context.data_dir), self.config.max_url_length
            prepared = await asyncio.to_thread(prepare, html, binary, data_dir, limit)
        else:
            prepared = {}
        return keys, before, fetched, prepared

    async def _changed(self, documents: list[Document], requested: dict[str, str | None]) -> list[Document]:
        """Drop documents whose content hash is the one the last run saw (looked up by canonical key)."""
        other = [doc for doc in documents if requested[doc.id] is None]
        found = await self.data.get(PAGES, [self._canonical[doc.id] for doc in other], previous=True)
        by_canonical = dict(zip((doc.id for doc in other), found, strict=True))
        out = []
        for doc in documents:
            raw = requested[doc.id] or by_canonical.get(doc.id)
            if raw is not None and PageState.load(raw).hash == doc.content_hash:
                self._stats["unchanged"] += 1
            else:
                out.append(doc)
        self._canonical.clear()
        return out

    async def _tombstones(self) -> list[Document]:
        assert self._state is not None
        out = []
        async for chunk in self.data.scan(PAGES, previous=True):
            for key, raw in chunk:
                if not self._state.has_page(key):
                    out.append(Document.tombstone(PageState.load(raw).url, stable_id(key)))
        out.sort(key=lambda doc: doc.id)
        return out

    async def _admit(self, url: str, key: str) -> Literal[True] | ItemFailure | ComeBackLater | None:
        """The checks a URL passes right before its request: True, or what ``_get`` returns instead."""
        why = None if valid(url) else "invalid-url"  # a stored frontier of an earlier version may hold one
        session_key = self._scope().traps.session_key(url) if why is None else None  # learned since it was queued
        if session_key is not None:
            if session_key in self._session_fetched:
                why = "trap:session-id"
            self._session_fetched.add(session_key)
        if why is None:
            try:
                await self._fetch().guard.check(url)  # before robots.txt: a refused host gets no request at all
            except BlockedAddress as exc:
                self._skip(key, "blocked:address")
                return ItemFailure(source=url, reason=str(exc))
            try:
                why = await self._robots_rules().why_not(url) if self.config.obey_robots else None
            except ComeBackLater as exc:  # handed off while robots.txt was on its way
                return exc
        if why:
            self._skip(key, why)
            return None
        return True

    async def _get(
        self, url: str, depth: int, key: str, raw: str | None
    ) -> Response | ItemFailure | ComeBackLater | None:
        """Fetch one page (conditionally, if the last run saw it); None when it is skipped."""
        assert self._state is not None
        admitted = await self._admit(url, key)
        if admitted is not True:
            return admitted
        headers: dict[str, str] = {}
        before = PageState.load(raw) if raw else None
        if before and before.etag:
            headers["If-None-Match"] = before.etag
        if before and before.last_modified:
            headers["If-Modified-Since"] = before.last_modified

        def redirect_ok(target: str) -> str | None:
            return self._scope().why_not(target, depth) if urlsplit(target).hostname else "no host"

        try:
            return await self._fetch().get(url, headers, redirect_ok)
        except ComeBackLater as exc:
            return exc
        except BlockedAddress as exc:
            self._skip(key, "blocked:address")
            return ItemFailure(source=url, reason=str(exc))
        except FetchError as exc:
            if exc.skip is not None:
                self._skip(key, exc.skip)
                return None
            if exc.retryable and raw is not None:
                self._state.record_page(key, raw)  # a passing failure is not a deletion
            return ItemFailure(source=url, reason=exc.reason, retryable=exc.retryable)

    def _outcome(
        self, key: str, raw: str | None, response: Response, depth: int, prepared: Prepared
    ) -> Document | ItemFailure | None:
        assert self._state is not None
        if response.status == 304 and raw is not None:
            self._state.record_page(key, raw)
            self._stats["unchanged"] += 1
            for link in PageState.load(raw).links:
                self._enqueue(link, depth + 1)  # beyond max_depth: counted as skipped
            return None
        if response.status >= 400:
            if response.status not in GONE and raw is not None:
                self._state.record_page(key, raw)  # only 404 / 410 say a page is gone
            return ItemFailure(source=response.url, reason=f"HTTP {response.status}")
        return self._document(key, response, depth, prepared)

    def _document(self, key: str, response: Response, depth: int, prepared: Prepared) -> Document | None:
        state = self._state
        assert state is not None
        final_key = url_key(response.url) if response.redirects else key
        if final_key != key:  # a redirect landed on another page
            state.mark_seen(final_key)
        mime = mime_type(response)
        digest = content_hash(response.body)
        title: str | None = None
        text: str | None = None
        content_ref: str | None = None
        canonical_key = final_key
        kept: list[str] = []
        if prepared.parsed is not None:
            page, links = prepared.parsed
            title, text = page.title, page.text
            self._count("invalid-url", page.invalid_links)
            self._count("trap:url-too-long", page.long_links)
            flag = self._scope().traps.learn(response.url, f"{title}\n{text}")
            if flag is not None:  # two session tokens, one page: that token is left out of keys from now on
                state.count(flag)
            if page.canonical and self._scope().why_not(page.canonical, depth) is None:
                canonical_key = url_key(page.canonical)
            for link, link_key in links:
                self._enqueue(link, depth + 1, link_key)  # beyond max_depth: counted as skipped
                if len(kept) < MAX_LINKS_KEPT and self._scope().static_why_not(link) is None:
                    kept.append(link)  # followed again when the page answers 304 next run
        elif mime.startswith(TEXT_TYPES):
            text = response.body.decode("utf-8", "replace")
        else:
            content_ref = prepared.blob
        if state.has_page(canonical_key):  # another URL of this run already gave this page
            self._stats["duplicate"] += 1
            return None
        state.mark_seen(canonical_key)
        headers = response.headers
        page_state = PageState(response.url, headers.get("etag"), headers.get("last-modified"), digest, kept)
        state.record_page(canonical_key, page_state)
        self._canonical[stable_id(canonical_key)] = canonical_key
        return Document(
            id=stable_id(canonical_key),
            source=response.url,
            mime_type=mime,
            title=title,
            text=text,
            content_ref=content_ref,
            content_hash=digest,
            size=len(response.body),
            metadata={"status": response.status, "depth": depth, "redirects": response.redirects},
            fetched_at=time.time(),
        )
