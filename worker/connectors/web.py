"""The ``web`` connector: a polite, resumable, incremental website crawler.

Each step fetches up to ``pages_per_step`` pages from the frontier (concurrently, within the
per-host limits) and returns their documents plus the new checkpoint: frontier, seen keys,
per-page validators and skip reasons. A crash replays at most one step.

Order of checks for every discovered URL: http(s) and trap guards, host scope, path scope,
include / exclude patterns, depth, page budget, robots.txt; the address guard runs on every
request. Why each URL was skipped is counted in the step's stats and kept (bounded) in the
checkpoint's ``skipped`` map, so an operator can see exactly what a crawl left out.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import re
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from protego import Protego
from pydantic import BaseModel, Field, field_validator

from worker import __version__
from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, ConnectorContext, StepResult
from worker.documents import Document, ItemFailure, content_hash, stable_id
from worker.errors import InvalidConnectorConfig
from worker.web.fetch import ComeBackLater, Fetcher, FetchError, Politeness, Response
from worker.web.html import parse
from worker.web.sitemaps import parse_sitemap
from worker.web.ssrf import AddressGuard, BlockedAddress, Resolver, system_resolver
from worker.web.urls import absolute, host_key, in_host_scope, pattern_key, trap_reason, under_path, url_key

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv")
MAX_SKIPPED_KEPT = 5000
GONE = frozenset({404, 410})
MAX_LINKS_KEPT = 500


def _charset(headers: httpx.Headers) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", headers.get("content-type", ""), re.IGNORECASE)
    if match:
        try:
            return codecs.lookup(match.group(1)).name
        except LookupError:
            pass
    return "utf-8"


class WebConfig(ConnectorConfig):
    """What to crawl and how politely."""

    start_urls: list[str] = Field(default_factory=list)
    sitemaps: list[str] = Field(default_factory=list, description="Sitemap or sitemap-index URLs (.gz accepted).")
    max_depth: int = Field(3, ge=0, description="Link hops from a start URL or sitemap entry.")
    max_pages: int = Field(1000, gt=0)
    same_host: bool = True
    allow_subdomains: bool = False
    restrict_to_start_path: bool = False
    include: list[str] = Field(default_factory=list, description="Regexes; a URL must match one (if any given).")
    exclude: list[str] = Field(default_factory=list, description="Regexes; a URL matching one is skipped.")
    obey_robots: bool = True
    user_agent: str = f"crawl-worker/{__version__}"
    per_host_concurrency: int = Field(2, gt=0)
    min_delay_s: float = Field(0.0, ge=0)
    timeout_s: float = Field(15.0, gt=0)
    retries: int = Field(2, ge=0, description="Per-page retries of timeouts, connection errors and 5xx.")
    backoff_s: float = Field(0.5, ge=0)
    max_retry_after_s: float = Field(30.0, ge=0, description="Longer Retry-After: the job goes back to delayed.")
    max_redirects: int = Field(5, ge=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_url_length: int = Field(2048, gt=0)
    max_path_segments: int = Field(16, gt=0)
    max_query_params: int = Field(8, ge=0)
    max_pages_per_pattern: int = Field(100, gt=0, description="Calendar-style trap guard (digits ignored).")
    pages_per_step: int = Field(20, gt=0)
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the private-address guard, e.g. 10.0.0.0/8."
    )

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            re.compile(pattern)
        return value

    @field_validator("start_urls", "sitemaps")
    @classmethod
    def _http(cls, value: list[str]) -> list[str]:
        for url in value:
            if absolute(url, url) is None:
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value


class PageState(BaseModel):
    """What a run saw of one page: validators for conditional requests, and its content hash."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    hash: str | None = None
    links: list[str] = Field(default_factory=list, description="Out-links, followed again when it answers 304.")


class WebCheckpoint(Checkpoint):
    """Frontier, dedup keys, page states and skip reasons of a crawl in progress."""

    schema_version = 1

    started: bool = False
    frontier: list[tuple[str, int]] = Field(default_factory=list)
    seen: list[str] = Field(default_factory=list)
    fetched: int = 0
    patterns: dict[str, int] = Field(default_factory=dict)
    previous: dict[str, PageState] = Field(default_factory=dict)
    current: dict[str, PageState] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)
    budget_hit: bool = False


class WebConnector(Connector[WebConfig, WebCheckpoint]):
    """Crawls websites from start URLs and sitemaps."""

    name = "web"
    config_model = WebConfig
    checkpoint_model = WebCheckpoint

    #: Tests inject a resolver (e.g. one mapping a name to 127.0.0.1) to exercise the address guard.
    resolver: Resolver = staticmethod(system_resolver)

    def __init__(self, config: WebConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        seeds = [*config.start_urls, *config.sitemaps]
        self._roots = {host_key(urlsplit(u).hostname or "") for u in seeds}
        self._prefixes = [url_key(u) for u in config.start_urls]
        self._include = [re.compile(p) for p in config.include]
        self._exclude = [re.compile(p) for p in config.exclude]
        self._client: httpx.AsyncClient | None = None
        self._fetcher: Fetcher | None = None
        self._robots: dict[str, Protego | None] = {}
        self._seen: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------
    async def validate(self) -> None:
        """At least one start URL or sitemap."""
        if not self.config.start_urls and not self.config.sitemaps:
            raise InvalidConnectorConfig("web connector needs start_urls or sitemaps")

    def _fetch(self) -> Fetcher:
        if self._fetcher is None:
            c = self.config
            self._client = httpx.AsyncClient(
                timeout=c.timeout_s, follow_redirects=False, headers={"User-Agent": c.user_agent}
            )
            politeness = Politeness(
                per_host_concurrency=c.per_host_concurrency, min_delay_s=c.min_delay_s, retries=c.retries,
                backoff_s=c.backoff_s, max_retry_after_s=c.max_retry_after_s, max_redirects=c.max_redirects,
                max_body_bytes=c.max_body_bytes,
            )
            self._fetcher = Fetcher(self._client, AddressGuard(c.allowed_networks, self.resolver), politeness)
        return self._fetcher

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()

    def initial_checkpoint(self, previous: WebCheckpoint | None) -> WebCheckpoint:
        """A new run keeps the last completed run's pages for conditional requests and deletions."""
        return WebCheckpoint(previous=previous.current if previous else {})

    # --- scope ---------------------------------------------------------------------------------
    def _why_not(self, url: str, depth: int, cp: WebCheckpoint) -> str | None:  # noqa: PLR0911 - one per check
        c = self.config
        trap = trap_reason(
            url, max_length=c.max_url_length, max_segments=c.max_path_segments, max_query_params=c.max_query_params
        )
        if trap:
            return trap
        if c.same_host and not in_host_scope(url, self._roots, allow_subdomains=c.allow_subdomains):
            return "out-of-scope:host"
        if c.restrict_to_start_path and self._prefixes and not under_path(url, self._prefixes):
            return "out-of-scope:path"
        if self._include and not any(p.search(url) for p in self._include):
            return "excluded:not-included"
        if any(p.search(url) for p in self._exclude):
            return "excluded:pattern"
        if depth > c.max_depth:
            return "out-of-scope:depth"
        if cp.patterns.get(pattern_key(url), 0) >= c.max_pages_per_pattern:
            return "trap:pattern-budget"
        return None

    def _skip(self, cp: WebCheckpoint, stats: Counter[str], url: str, reason: str) -> None:
        stats["skipped_" + reason.split(":", 1)[0].replace("-", "_")] += 1
        if len(cp.skipped) < MAX_SKIPPED_KEPT:
            cp.skipped[url_key(url)] = reason

    def _enqueue(self, cp: WebCheckpoint, stats: Counter[str], url: str, depth: int) -> None:
        key = url_key(url)
        if key in self._seen:
            return
        self._seen.add(key)
        cp.seen.append(key)
        why = self._why_not(url, depth, cp)
        if why:
            self._skip(cp, stats, url, why)
            return
        cp.patterns[pattern_key(url)] = cp.patterns.get(pattern_key(url), 0) + 1
        cp.frontier.append((url, depth))

    # --- robots --------------------------------------------------------------------------------
    async def _allowed_by_robots(self, url: str) -> bool:
        if not self.config.obey_robots:
            return True
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = await self._load_robots(origin)
        rules = self._robots[origin]
        return rules is None or bool(rules.can_fetch(url, self.config.user_agent))

    async def _load_robots(self, origin: str) -> Protego | None:
        """RFC 9309: 4xx means no rules; 5xx or unreachable means disallow everything."""
        fetcher = self._fetch()
        try:
            response = await fetcher.get(f"{origin}/robots.txt", retries=1)
        except (FetchError, ComeBackLater, BlockedAddress):
            return Protego.parse("User-agent: *\nDisallow: /\n")
        if response.status >= 400:
            return None
        rules = Protego.parse(response.body.decode("utf-8", "replace"))
        delay = rules.crawl_delay(self.config.user_agent)
        if delay:
            fetcher.set_delay(origin, float(delay))
        return rules

    # --- steps ---------------------------------------------------------------------------------
    async def _start(self, cp: WebCheckpoint, stats: Counter[str], failures: list[ItemFailure]) -> None:
        for url in self.config.start_urls:
            self._enqueue(cp, stats, url, 0)
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
                if absolute(page, sitemap):
                    self._enqueue(cp, stats, page, 0)
        cp.started = True

    async def run_step(self, checkpoint: WebCheckpoint) -> StepResult[WebCheckpoint]:
        """Fetch the next pages of the frontier."""
        cp = checkpoint.model_copy(deep=True)
        self._seen = set(cp.seen)
        stats: Counter[str] = Counter()
        failures: list[ItemFailure] = []
        if not cp.started:
            await self._start(cp, stats, failures)
        room = max(0, self.config.max_pages - cp.fetched)
        batch = cp.frontier[: min(self.config.pages_per_step, room)]
        del cp.frontier[: len(batch)]
        results = await asyncio.gather(*(self._page(cp, stats, url, depth) for url, depth in batch))
        documents: list[Document] = []
        later: list[tuple[str, int]] = []
        retry_after: float | None = None
        for (url, depth), result in zip(batch, results, strict=True):
            if isinstance(result, ComeBackLater):
                later.append((url, depth))
                retry_after = max(retry_after or 0.0, result.seconds)
            elif isinstance(result, ItemFailure):
                failures.append(result)
            elif isinstance(result, Document):
                documents.append(result)
        cp.frontier[:0] = later
        cp.fetched += len(batch) - len(later)
        if cp.frontier and cp.fetched >= self.config.max_pages:
            cp.budget_hit = True
            for url, _ in cp.frontier:
                self._skip(cp, stats, url, "budget:max-pages")
            cp.frontier.clear()
        cp.has_more = bool(cp.frontier)
        if not cp.has_more and not cp.budget_hit:
            # Only a crawl that saw everything in scope can tell what disappeared.
            documents.extend(
                Document.tombstone(state.url, stable_id(key))
                for key, state in sorted(cp.previous.items())
                if key not in cp.current
            )
        stats.update({f"fetches_{k}": v for k, v in self._fetch().statuses.items()})
        self._fetch().statuses.clear()
        return StepResult(
            documents=documents,
            failures=failures,
            checkpoint=cp,
            processed=len(batch) - len(later),
            total=cp.fetched + len(cp.frontier),
            stats=dict(stats),
            retry_after_s=retry_after,
        )

    async def _page(  # noqa: PLR0911, PLR0912 - one return per outcome
        self, cp: WebCheckpoint, stats: Counter[str], url: str, depth: int
    ) -> Document | ItemFailure | ComeBackLater | None:
        key = url_key(url)
        before = cp.previous.get(key)
        try:
            await self._fetch().guard.check(url)  # before robots.txt: a refused host gets no request at all
        except BlockedAddress as exc:
            self._skip(cp, stats, url, "blocked:address")
            return ItemFailure(source=url, reason=str(exc))
        if not await self._allowed_by_robots(url):
            self._skip(cp, stats, url, "robots:disallowed")
            return None
        headers: dict[str, str] = {}
        if before and before.etag:
            headers["If-None-Match"] = before.etag
        if before and before.last_modified:
            headers["If-Modified-Since"] = before.last_modified

        def redirect_ok(target: str) -> str | None:
            return self._why_not(target, depth, cp) if host_key(urlsplit(target).hostname or "") else "no host"

        try:
            response = await self._fetch().get(url, headers, redirect_ok)
        except ComeBackLater as exc:
            return exc
        except BlockedAddress as exc:
            self._skip(cp, stats, url, "blocked:address")
            return ItemFailure(source=url, reason=str(exc))
        except FetchError as exc:
            if exc.retryable and before is not None:
                cp.current[key] = before  # a passing failure is not a deletion
            return ItemFailure(source=url, reason=exc.reason, retryable=exc.retryable)
        if response.status == 304 and before is not None:
            cp.current[key] = before
            stats["unchanged"] += 1
            if depth < self.config.max_depth:
                for link in before.links:
                    self._enqueue(cp, stats, link, depth + 1)
            return None
        if response.status >= 400:
            if response.status not in GONE and before is not None:
                cp.current[key] = before  # only 404 / 410 say a page is gone
            return ItemFailure(source=url, reason=f"HTTP {response.status}")
        return self._document(cp, stats, key, response, depth)

    def _document(
        self, cp: WebCheckpoint, stats: Counter[str], key: str, response: Response, depth: int
    ) -> Document | None:
        final_key = url_key(response.url)
        if final_key != key and final_key not in self._seen:  # a redirect landed on another page
            self._seen.add(final_key)
            cp.seen.append(final_key)
        mime = response.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        digest = content_hash(response.body)
        title: str | None = None
        text: str | None = None
        content_ref: str | None = None
        canonical_key = final_key
        links: list[str] = []
        if mime in HTML_TYPES:
            page = parse(response.body.decode(_charset(response.headers), "replace"), response.url)
            title, text = page.title, page.text
            if page.canonical and self._why_not(page.canonical, depth, cp) is None:
                canonical_key = url_key(page.canonical)
            if not page.nofollow:
                links = list(dict.fromkeys(page.links))[:MAX_LINKS_KEPT]
            if depth < self.config.max_depth:
                for link in links:
                    self._enqueue(cp, stats, link, depth + 1)
        elif mime.startswith(TEXT_TYPES):
            text = response.body.decode("utf-8", "replace")
        else:
            content_ref = self._store_blob(response.body)
        if canonical_key in cp.current:  # another URL of this run already gave this page
            stats["duplicate"] += 1
            return None
        self._seen.add(canonical_key)
        before = cp.previous.get(canonical_key)
        cp.current[canonical_key] = PageState(
            url=response.url,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            hash=digest,
            links=links,
        )
        if before is not None and before.hash == digest:
            stats["unchanged"] += 1
            return None
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

    def _store_blob(self, body: bytes) -> str:
        """Binary content goes to the data directory by its hash; documents reference it."""
        name = hashlib.sha256(body).hexdigest()
        path = Path(self.context.data_dir) / "blobs" / name[:2] / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(path)
        return str(path)
