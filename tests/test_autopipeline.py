"""AutoPipeline: commands sent in the same event-loop turn share one round trip; each caller gets its replies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from worker.connections import AutoPipeline


class CountingRedis(aioredis.Redis):
    """A real client that counts the round trips it starts (pipelines and single commands)."""

    pipelines = 0
    singles = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """Count, then build the pipeline."""
        self.pipelines += 1
        return super().pipeline(transaction, shard_hint)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Count, then send the command."""
        self.singles += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


@pytest.fixture
async def counting(redis_url: str) -> Any:
    """A counting client, closed after the test."""
    client = CountingRedis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_callers_of_one_turn_share_one_round_trip_and_get_their_own_replies(
    counting: CountingRedis, queue_name: str
) -> None:
    """Ten concurrent callers: one pipeline; each gets its own replies, in order; an error stays with its caller."""
    pipe = AutoPipeline(counting)
    key = f"bull:{queue_name}:ap"

    async def caller(i: int) -> list[Any]:
        return await pipe.execute([("SET", f"{key}:{i}", f"v{i}"), ("GET", f"{key}:{i}")])

    async def failing() -> list[Any]:
        return await pipe.execute([("INCR", f"{key}:0")])  # a string, not a number

    results = await asyncio.gather(*(caller(i) for i in range(10)), failing())
    assert counting.pipelines == 1
    assert list(results[:10]) == [[True, f"v{i}"] for i in range(10)]
    assert isinstance(results[10][0], ResponseError)
    await counting.delete(*(f"{key}:{i}" for i in range(10)))


async def test_a_lone_caller_sends_its_command_without_a_pipeline(counting: CountingRedis) -> None:
    """One caller with one command: a plain command, no pipeline (also with batching off, as at concurrency 1)."""
    pipe = AutoPipeline(counting)
    assert await pipe.execute([("PING",)]) == [True]
    assert (counting.pipelines, counting.singles) == (0, 1)
    unbatched = AutoPipeline(counting, batching=False)
    assert await unbatched.execute([("PING",)]) == [True]
    assert await unbatched.execute([("PING",), ("PING",)]) == [True, True]
    assert (counting.pipelines, counting.singles) == (1, 2)


async def test_callers_that_joined_are_served_when_the_leader_is_cancelled(
    counting: CountingRedis, queue_name: str
) -> None:
    """The first caller of a turn is cancelled while it waits: the caller that joined still gets its reply."""
    pipe = AutoPipeline(counting)
    key = f"bull:{queue_name}:orphan"
    leader = asyncio.create_task(pipe.execute([("SET", key, "leader")]))
    follower = asyncio.create_task(pipe.execute([("SET", key, "follower"), ("GET", key)]))
    await asyncio.sleep(0)  # the leader took the lead and yielded; the follower joined
    leader.cancel()
    assert await asyncio.wait_for(follower, timeout=5) == [True, "follower"]
    with pytest.raises(asyncio.CancelledError):
        await leader
    await counting.delete(key)


async def test_a_round_trip_without_a_reply_times_out_as_a_whole() -> None:
    """A server that never answers: the batch fails with a Redis TimeoutError after timeout_s, not never."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # takes the command, never answers
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=None)  # no per-read timer
    pipe = AutoPipeline(client, timeout_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(RedisTimeoutError, match=r"no reply from Redis within 0\.3 s"):
            await pipe.execute([("PING",)])
        assert loop.time() - started < 2
    finally:
        await client.aclose()
        done.set()
        server.close()
        await server.wait_closed()
