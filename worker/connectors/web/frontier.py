"""A web crawl's growing state: frontier, seen set, trap-pattern counts, page states, skip reasons.

The connector works on the copy in memory; every change a step makes is also buffered and handed
to the runner as that step's :class:`StateChanges`, so the stored state grows by what the step
added (``worker.crawlstate``), never by rewriting the crawl. Stored structures:

- ``frontier`` (queue): ``"<depth> <url>"`` items, front first;
- ``seen`` (set): 64-bit digests of URL keys (16 hex characters), whatever the URL's length;
- ``patterns`` (map): trap-guard counts (``worker.connectors.web.traps``): pages per calendar template, query-key
  sets per path, learned session-token positions, pages per digit-free template (opt-in);
- ``pages`` (map, carried to the next run): URL key -> page state, for conditional requests,
  unchanged-content checks and deletions;
- ``skipped`` (map, carried for inspection): URL key -> why it was not fetched (bounded).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker.crawlstate import RunData, StateChanges

FRONTIER, SEEN, PATTERNS, PAGES, SKIPPED = "frontier", "seen", "patterns", "pages", "skipped"


def digest(key: str) -> str:
    """The seen-set member of a URL key: 8 bytes of BLAKE2b as hex (collisions: ~1 in 10^8 at 600k URLs)."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass
class PageState:
    """What a run saw of one page: validators for conditional requests, its content hash and out-links."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    hash: str | None = None
    links: list[str] = field(default_factory=list)

    def dump(self) -> str:
        """The stored form (a compact JSON array)."""
        return json.dumps([self.url, self.etag, self.last_modified, self.hash, self.links], separators=(",", ":"))

    @classmethod
    def load(cls, raw: str) -> PageState:
        """Read the stored form."""
        url, etag, last_modified, hash_, links = json.loads(raw)
        return cls(url, etag, last_modified, hash_, links)


class Frontier:
    """The crawl's state in memory, plus the changes of the step in progress."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, int]] = deque()
        # digests as ints in memory (36 bytes each against 65 for their hex form): 100,000 URLs, ~6 MB less
        self.seen: set[int] = set()
        self.patterns: Counter[str] = Counter()
        self.done: set[int] = set()  # digests of the keys in this run's page states
        self._begin()

    def _begin(self) -> None:
        self._queue_ops = StateChanges()  # in call order: a step can push, pop, push again, put back
        self._new_seen: list[str] = []
        self._new_patterns: Counter[str] = Counter()
        self._pages: dict[str, str] = {}
        self._skipped: dict[str, str] = {}

    async def load(self, data: RunData) -> int:
        """Read a resumed run's stored state (once per attempt); returns how many frontier items could not
        be read (left out: an earlier version may have stored what this one refuses)."""
        bad = 0
        for item in await data.items(FRONTIER):
            depth, _, url = item.partition(" ")
            if not depth.isdigit() or not url:
                bad += 1
                continue
            self.queue.append((url, int(depth)))
        self.seen = {int(member, 16) for member in await data.members(SEEN)}
        self.patterns.clear()  # in place: the trap guards count in this very Counter
        self.patterns.update({k: int(v) for k, v in (await data.mapping(PATTERNS)).items()})
        self.done = {int(digest(key), 16) for key in await data.fields(PAGES)}
        return bad

    def mark_seen(self, key: str) -> bool:
        """Record ``key`` as seen; False if it already was."""
        member = digest(key)
        number = int(member, 16)
        if number in self.seen:
            return False
        self.seen.add(number)
        self._new_seen.append(member)
        return True

    def push(self, url: str, depth: int, patterns: Iterable[str] = ()) -> None:
        """Append ``url`` to the frontier and count it in the trap guards' ``patterns``."""
        self.queue.append((url, depth))
        self._queue_ops.push(FRONTIER, (f"{depth} {url}",))
        for pattern in patterns:
            self.count(pattern)

    def count(self, pattern: str) -> None:
        """Add one to a trap guard's count."""
        self.patterns[pattern] += 1
        self._new_patterns[pattern] += 1

    def take(self, count: int) -> list[tuple[str, int]]:
        """The next ``count`` URLs, off the front."""
        batch = [self.queue.popleft() for _ in range(min(count, len(self.queue)))]
        self._queue_ops.pop(FRONTIER, len(batch))
        return batch

    def put_back(self, items: list[tuple[str, int]]) -> None:
        """Return ``items`` to the front, in order (the server asked us to come back later)."""
        self.queue.extendleft(reversed(items))
        self._queue_ops.push_front(FRONTIER, [f"{depth} {url}" for url, depth in items])

    def clear(self) -> list[tuple[str, int]]:
        """Empty the frontier (page budget reached); returns what it held."""
        left = list(self.queue)
        self.queue.clear()
        self._queue_ops.clear(FRONTIER)
        return left

    def record_page(self, key: str, state: PageState | str) -> None:
        """This run's state of the page ``key`` (a PageState, or one already in stored form)."""
        self.done.add(int(digest(key), 16))
        self._pages[key] = state if isinstance(state, str) else state.dump()

    def has_page(self, key: str) -> bool:
        """Whether this run already recorded the page ``key``."""
        return int(digest(key), 16) in self.done

    def record_skip(self, key: str, reason: str) -> None:
        """Keep why ``key`` was skipped."""
        self._skipped[key] = reason

    def changes(self) -> StateChanges:
        """The step's changes, in the order that reproduces the memory copy; then a new step begins."""
        out = self._queue_ops
        out.add(SEEN, self._new_seen)
        out.incr(PATTERNS, self._new_patterns)
        out.put(PAGES, self._pages)
        out.put(SKIPPED, self._skipped)
        self._begin()
        return out
