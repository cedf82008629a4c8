"""Is the queue where the worker listens? A prefix mismatch, found before it silently costs a day.

BullMQ keys are ``<prefix>:<queue>:<suffix>``. PipesHub's older producer writes under ``bull``, its newer
crawling queue under ``{crawling}`` (or ``{<namespace>-crawling}``). A worker set to another prefix than its
producer listens on a queue nothing writes to, with no error anywhere. So at start-up (log
``queue.prefix_mismatch``) and in ``crawl-worker check`` (exit 1): when the configured queue has no keys of
BullMQ's under the configured prefix but the same queue name has them under another prefix, that is said,
naming the ``prefix`` setting. Found with the usual prefixes first, then a bounded SCAN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.connections import RedisClient

#: Keys BullMQ keeps for a queue that has been used (meta, the id counter, the event stream, job sets).
QUEUE_SUFFIXES = ("meta", "id", "events", "wait", "delayed", "prioritized", "repeat", "completed", "failed", "active")
#: Prefixes producers commonly use, looked at first.
KNOWN = ("bull", "{bull}", "{crawling}")
#: The SCAN for other prefixes reads at most this many keys (start-up stays quick on a big Redis).
SCAN_LIMIT = 200_000
_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True)
class PrefixCheck:
    """Where the queue's keys are: under the configured prefix, and under which others."""

    prefix: str
    queue: str
    found_here: bool
    elsewhere: tuple[str, ...]

    @property
    def mismatch(self) -> bool:
        """Nothing under the configured prefix, something under another."""
        return not self.found_here and bool(self.elsewhere)

    def message(self) -> str:
        """What to do, naming the setting."""
        others = ", ".join(repr(p) for p in self.elsewhere)
        return (
            f"queue {self.queue!r} has no keys under prefix {self.prefix!r} but has under {others}: "
            f"set prefix (CRAWL_WORKER_PREFIX) to the producer's, or this worker listens where nothing is written"
        )


async def _exists(client: RedisClient, prefix: str, queue: str) -> bool:
    pipe = client.pipeline(transaction=False)
    for suffix in QUEUE_SUFFIXES:
        pipe.exists(f"{prefix}:{queue}:{suffix}")
    return any(await pipe.execute())


async def _scan(client: RedisClient, queue: str) -> set[str]:
    """Prefixes under which ``queue`` has BullMQ keys, from a SCAN of at most :data:`SCAN_LIMIT` keys."""
    found: set[str] = set()
    tails = tuple(f":{queue}:{suffix}" for suffix in QUEUE_SUFFIXES)
    pattern = "*:" + _GLOB.sub(r"\\\1", queue) + ":*"
    cursor, read = 0, 0
    while True:
        cursor, keys = await client.scan(cursor, match=pattern, count=1000)
        read += 1000
        for raw in keys:
            key = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            for tail in tails:
                if key.endswith(tail):
                    found.add(key[: -len(tail)])
        if not cursor or read >= SCAN_LIMIT:
            return found


async def check_prefix(client: RedisClient, prefix: str, queue: str, *, scan: bool = True) -> PrefixCheck:
    """Look for ``queue`` under ``prefix`` and, when it is not there, under other prefixes."""
    if await _exists(client, prefix, queue):
        return PrefixCheck(prefix, queue, True, ())
    elsewhere = {known for known in KNOWN if known != prefix and await _exists(client, known, queue)}
    if scan and not elsewhere:
        elsewhere = await _scan(client, queue) - {prefix}
    return PrefixCheck(prefix, queue, False, tuple(sorted(elsewhere)))
