"""robots.txt per origin for one crawl: fetched once (RFC 9309), Crawl-delay applied to the fetcher.

A Crawl-delay beyond ``max_crawl_delay_s`` is not obeyed by waiting: the whole origin is skipped
(``crawl-delay-too-long``), so no robots.txt can hold a crawl for longer than that per request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from protego import Protego

from worker.connectors.web.fetch import Fetcher
from worker.errors import BlockedAddress, ComeBackLater, FetchError


class Robots:
    """The rules of every origin a crawl touches, loaded on first use."""

    def __init__(self, fetcher: Fetcher, user_agent: str, max_crawl_delay_s: float = 30.0) -> None:
        self._fetcher = fetcher
        self._user_agent = user_agent
        self._max_delay = max_crawl_delay_s
        self._rules: dict[str, Protego | None] = {}
        self._too_slow: set[str] = set()

    async def why_not(self, url: str) -> str | None:
        """Why robots.txt keeps us from fetching ``url`` (``robots:disallowed``, ``crawl-delay-too-long``), or None."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._rules:
            self._rules[origin] = await self._load(origin)
        if origin in self._too_slow:
            return "crawl-delay-too-long"
        rules = self._rules[origin]
        return None if rules is None or rules.can_fetch(url, self._user_agent) else "robots:disallowed"

    async def _load(self, origin: str) -> Protego | None:
        """RFC 9309: 4xx means no rules; 5xx or unreachable means disallow everything."""
        try:
            response = await self._fetcher.get(f"{origin}/robots.txt", retries=1)
        except ComeBackLater:
            if self._fetcher.interrupt.is_set():  # handed off: nothing learnt, nothing kept
                raise
            return Protego.parse("User-agent: *\nDisallow: /\n")
        except (FetchError, BlockedAddress):
            return Protego.parse("User-agent: *\nDisallow: /\n")
        if response.status >= 400:
            return None
        rules = Protego.parse(response.body.decode("utf-8", "replace"))
        delay = rules.crawl_delay(self._user_agent)
        if delay and not float(delay) <= self._max_delay:  # NaN and inf included
            self._too_slow.add(origin)
        elif delay:
            self._fetcher.set_delay(origin, float(delay))
        return rules
