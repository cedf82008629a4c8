"""Observability fixtures: Redis clients that count the commands they send."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from tests.observability.prometheus_server import PrometheusServer, fast_rules


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
def make_counting_client(redis_url: str, make_redis: Callable[..., aioredis.Redis]) -> Callable[[], CountingRedis]:
    """Open decoded clients of the test Redis that count the commands they send; every one is closed after."""

    def factory() -> CountingRedis:
        client = make_redis(redis_url, CountingRedis, decode_responses=True)
        assert isinstance(client, CountingRedis)  # from_url is annotated to return the base class
        return client

    return factory


@pytest.fixture
def counting_client(make_counting_client: Callable[[], CountingRedis]) -> CountingRedis:
    """A decoded client that counts the Redis commands it sends, closed after the test."""
    return make_counting_client()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], PrometheusServer]]:
    """Start Prometheus scraping the targets given, with the fast alert rules; every one is stopped after the test."""
    started: list[PrometheusServer] = []

    def factory(targets: list[str]) -> PrometheusServer:
        server = PrometheusServer(tmp_path / f"prometheus-{len(started)}", targets, fast_rules(tmp_path / "rules.yml"))
        started.append(server)
        server.start()
        return server

    yield factory
    for server in started:
        server.stop()
