"""robots.txt per origin for one crawl: fetched once (RFC 9309), Crawl-delay applied to the fetcher."""

from __future__ import annotations

from urllib.parse import urlsplit

from protego import Protego

from worker.errors import BlockedAddress, ComeBackLater, FetchError
from worker.web.fetch import Fetcher


class Robots:
    """The rules of every origin a crawl touches, loaded on first use."""

    def __init__(self, fetcher: Fetcher, user_agent: str) -> None:
        self._fetcher = fetcher
        self._user_agent = user_agent
        self._rules: dict[str, Protego | None] = {}

    async def allows(self, url: str) -> bool:
        """Whether robots.txt lets us fetch ``url``."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._rules:
            self._rules[origin] = await self._load(origin)
        rules = self._rules[origin]
        return rules is None or bool(rules.can_fetch(url, self._user_agent))

    async def _load(self, origin: str) -> Protego | None:
        """RFC 9309: 4xx means no rules; 5xx or unreachable means disallow everything."""
        try:
            response = await self._fetcher.get(f"{origin}/robots.txt", retries=1)
        except (FetchError, ComeBackLater, BlockedAddress):
            return Protego.parse("User-agent: *\nDisallow: /\n")
        if response.status >= 400:
            return None
        rules = Protego.parse(response.body.decode("utf-8", "replace"))
        delay = rules.crawl_delay(self._user_agent)
        if delay:
            self._fetcher.set_delay(origin, float(delay))
        return rules
