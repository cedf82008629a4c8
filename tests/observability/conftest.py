"""Observability fixtures: a Redis client that counts the commands it sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline


class CountingPipeline(Pipeline):
    """A pipeline that adds the commands it flushes to its client's count."""

    counter: list[int]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Count every queued command, then send them."""
        self.counter[0] += len(self.command_stack)
        return await super().execute(raise_on_error)


class CountingRedis(aioredis.Redis):
    """An asyncio Redis client counting commands, pipelined ones one by one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter = [0]

    @property
    def commands(self) -> int:
        """Commands sent so far."""
        return self.counter[0]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Count one command, then send it."""
        self.counter[0] += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> CountingPipeline:
        """A counting pipeline sharing this client's pool and count."""
        pipe = CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.counter = self.counter
        return pipe


@pytest.fixture
async def counting_client(redis_url: str) -> AsyncIterator[CountingRedis]:
    """A decoded client that counts the Redis commands it sends."""
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    assert isinstance(client, CountingRedis)  # from_url is annotated to return the base class
    yield client
    await client.aclose()
