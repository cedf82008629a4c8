"""Polite HTTP fetching: per-host concurrency and delay, retries, Retry-After, redirects, size caps.

Built on aiohttp (measured against httpx in ``docs/benchmarks.md``: about a third of httpx's CPU per
request at crawl concurrency). Every request has one total deadline, ``timeout_s``, for connecting,
the headers and the whole body together, so a server that trickles bytes cannot hold a crawl.
Redirects are followed here, one hop at a time, so every hop passes the address guard and the
caller's scope check; bodies are streamed and cut at ``max_body_bytes``. The client (:func:`pinned_client`)
resolves host names only through the guard, so it connects to exactly the addresses the guard checked.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from worker.connectors.web.ssrf import AddressGuard, PinnedResolver
from worker.connectors.web.urls import resolve, valid
from worker.errors import BlockedAddress, ComeBackLater, FetchError

REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 503})


@dataclass
class Response:
    """A fetched page after redirects."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    redirects: list[str] = field(default_factory=list)


@dataclass
class _Host:
    slots: asyncio.Semaphore
    delay_s: float
    next_at: float = 0.0


@dataclass(frozen=True)
class Politeness:
    """How hard one crawl may hit one host, and how patient it is."""

    per_host_concurrency: int = 2
    min_delay_s: float = 0.0
    retries: int = 2
    backoff_s: float = 0.5
    max_retry_after_s: float = 30.0
    max_come_back_s: float = 3600.0
    max_redirects: int = 5
    max_body_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 15.0


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def pinned_client(guard: AddressGuard, user_agent: str) -> aiohttp.ClientSession:
    """An HTTP client that connects only to addresses ``guard`` checked (no DNS cache of its own, no proxy
    from the environment); the Fetcher sets one deadline per request."""
    return aiohttp.ClientSession(
        headers={"User-Agent": user_agent},
        connector=aiohttp.TCPConnector(limit=0, resolver=PinnedResolver(guard), use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )


def status_class(status: int) -> str:
    """``2xx`` .. ``5xx`` for metrics."""
    return f"{status // 100}xx"


class Fetcher:
    """Fetches URLs for one crawl. ``statuses`` counts responses by class (and ``error``)."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        guard: AddressGuard,
        politeness: Politeness,
        interrupt: asyncio.Event | None = None,
    ) -> None:
        self.client = client
        self.guard = guard
        self.p = politeness
        self.interrupt = interrupt or asyncio.Event()
        self.statuses: Counter[str] = Counter()
        self._hosts: dict[str, _Host] = {}

    def _host(self, url: str) -> _Host:
        netloc = urlsplit(url).netloc.lower()
        if netloc not in self._hosts:
            self._hosts[netloc] = _Host(asyncio.Semaphore(self.p.per_host_concurrency), self.p.min_delay_s)
        return self._hosts[netloc]

    def set_delay(self, url: str, delay_s: float) -> None:
        """Space requests to ``url``'s host by at least ``delay_s`` (robots.txt Crawl-delay)."""
        host = self._host(url)
        host.delay_s = max(self.p.min_delay_s, delay_s)
        if delay_s > 0:  # a Crawl-delay also means one request at a time
            host.slots = asyncio.Semaphore(1)

    async def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        allow_redirect: Callable[[str], str | None] = lambda _: None,
        *,
        retries: int | None = None,
    ) -> Response:
        """GET ``url`` with retries; raises FetchError, ComeBackLater or BlockedAddress."""
        attempts = (self.p.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._follow(url, headers or {}, allow_redirect)
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.statuses["error"] += 1
                if last:
                    timed_out = isinstance(exc, TimeoutError)
                    reason = f"no complete response within {self.p.timeout_s:g} s" if timed_out else exc
                    raise FetchError(f"{type(exc).__name__}: {reason}", retryable=True) from exc
                await self.pause(self.p.backoff_s * 2**attempt)
                continue
            if response.status in RETRY_STATUSES:
                wait = retry_after_s(response.headers)
                if wait is not None and not wait <= self.p.max_come_back_s:
                    raise FetchError(
                        f"HTTP {response.status} asked to retry after {wait:.0f} s (max_come_back_s "
                        f"{self.p.max_come_back_s:g})",
                        skip="retry-after-too-long",
                    )
                if wait is not None and wait > self.p.max_retry_after_s:
                    raise ComeBackLater(wait)
                if last:
                    raise FetchError(f"HTTP {response.status} after {attempts} attempts", retryable=True)
                await self.pause(wait if wait is not None else self.p.backoff_s * 2**attempt)
                continue
            if response.status >= 500:
                if last:
                    raise FetchError(f"HTTP {response.status} after {attempts} attempts", retryable=True)
                await self.pause(self.p.backoff_s * 2**attempt)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until the job is handed off (then ComeBackLater: the page goes back on the
        frontier and the step ends, so no wait outlives a shutdown)."""
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self.interrupt.wait()
        except TimeoutError:
            return
        raise ComeBackLater(0.0)

    async def _follow(
        self, url: str, headers: Mapping[str, str], allow_redirect: Callable[[str], str | None]
    ) -> Response:
        hops: list[str] = []
        current = url
        for _ in range(self.p.max_redirects + 1):
            if not valid(current):  # what a stored frontier of an earlier version may still hold
                raise FetchError(f"invalid URL {current!r}", skip="invalid-url")
            await self.guard.check(current)
            response = await self._request(current, headers)
            location = response.headers.get("location")
            if response.status not in REDIRECTS or not location:
                response.redirects = hops
                return response
            target, invalid = resolve(location, current)
            if target is None:
                skip = "invalid-url" if invalid else None
                raise FetchError(f"redirect to an unsupported location {location!r}", skip=skip)
            if target in hops or target == current:
                raise FetchError(f"redirect loop at {target}")
            why = allow_redirect(target)
            if why:
                raise FetchError(f"redirect to {target} refused: {why}")
            hops.append(current)
            current = target
        raise FetchError(f"more than {self.p.max_redirects} redirects")

    async def _request(self, url: str, headers: Mapping[str, str]) -> Response:
        host = self._host(url)
        async with host.slots:
            await self.pause(host.next_at - time.monotonic())
            try:
                async with asyncio.timeout(self.p.timeout_s):  # connect, headers and body: one deadline
                    return await self._exchange(url, headers)
            finally:
                host.next_at = time.monotonic() + host.delay_s

    async def _exchange(self, url: str, headers: Mapping[str, str]) -> Response:
        limit = self.p.max_body_bytes
        async with self.client.get(URL(url), headers=headers, allow_redirects=False) as r:
            self.statuses[status_class(r.status)] += 1
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise FetchError(f"body larger than max_body_bytes ({declared} B declared)")
            chunks, size = [], 0
            async for chunk in r.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise FetchError(f"body larger than max_body_bytes (> {limit} B)")
                chunks.append(chunk)
            return Response(url, r.status, r.headers, b"".join(chunks))


__all__ = [
    "BlockedAddress",
    "ComeBackLater",
    "FetchError",
    "Fetcher",
    "Politeness",
    "Response",
    "pinned_client",
    "retry_after_s",
]
