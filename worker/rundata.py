"""A run's stored crawl state, read from Redis (the connector's side of ``worker.crawlstate``).

Keys: ``<prefix>:<queue>:cw:data:<org>:<connector>:<connectorId>:<runId>:<name>``, one Redis set,
list or hash per named structure. They are written only by the run's fenced commit
(``worker.runs``), expire with the run record, and are deleted when the run ends (carried maps
when the next run completes). Reads are chunked (SSCAN / LRANGE / HSCAN pages), so loading a large
crawl's state on resume never builds one huge reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from worker.connections import RedisClient

CHUNK = 5000


class RedisRunData:
    """:class:`worker.crawlstate.RunData` over Redis; ``key`` and ``previous_key`` name the structures."""

    def __init__(
        self,
        client: RedisClient,
        key: Callable[[str], str],
        previous_key: Callable[[str], str] | None,
    ) -> None:
        self._client = client
        self._key = key
        self._previous_key = previous_key

    async def members(self, name: str) -> set[str]:
        """Every member of the set ``name``."""
        found: set[str] = set()
        cursor = 0
        while True:
            reply: Any = await self._client.sscan(self._key(name), cursor, count=CHUNK)
            cursor, chunk = reply
            found.update(chunk)
            if not cursor:
                return found

    async def items(self, name: str) -> list[str]:
        """The queue ``name``, front first."""
        key, out = self._key(name), list[str]()
        while True:
            chunk: Any = await self._client.lrange(key, len(out), len(out) + CHUNK - 1)
            out.extend(chunk)
            if len(chunk) < CHUNK:
                return out

    async def mapping(self, name: str) -> dict[str, str]:
        """The whole map ``name``."""
        out: dict[str, str] = {}
        async for chunk in self.scan(name):
            out.update(chunk)
        return out

    async def fields(self, name: str) -> list[str]:
        """The field names of the map ``name``."""
        return [key async for chunk in self.scan(name) for key, _ in chunk]

    async def get(self, name: str, keys: Sequence[str], *, previous: bool = False) -> list[str | None]:
        """Values of ``keys`` in the map ``name`` (of the previous completed run with ``previous``)."""
        key = self._source(name, previous)
        if key is None or not keys:
            return [None] * len(keys)
        values: Any = await self._client.hmget(key, list(keys))
        return list(values)

    async def scan(self, name: str, *, previous: bool = False) -> AsyncIterator[list[tuple[str, str]]]:
        """The map ``name`` in chunks of (field, value) pairs."""
        key = self._source(name, previous)
        if key is None:
            return
        cursor = 0
        while True:
            reply: Any = await self._client.hscan(key, cursor, count=CHUNK)
            cursor, chunk = reply
            if chunk:
                yield list(chunk.items())
            if not cursor:
                return

    def _source(self, name: str, previous: bool) -> str | None:
        if not previous:
            return self._key(name)
        return self._previous_key(name) if self._previous_key is not None else None
