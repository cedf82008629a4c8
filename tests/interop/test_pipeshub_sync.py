"""The pipeshub-sync connector: PipesHub's sync event, read back as PipesHub's Python consumer reads it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from bullmq import Queue
from pydantic import BaseModel, JsonValue

from tests.helpers import crawl_job, running_app, wait_for, wait_state
from tests.interop.pipeshub import aproducer
from tests.proc import Processes
from tests.redis_procs import REDIS_CLI, spawn
from tests.redis_server import free_port
from worker.catalog import Catalog, InstanceEntry
from worker.settings import Settings
from worker.sync_events import SyncEventPublisher, event_type, sync_event

pytestmark = pytest.mark.node

#: A stream entry as a decoding client reads it: (id, fields).
Entry = tuple[str, dict[str, str]]
GROUP = "connector-service"  # a consumer group, as PipesHub's connector service reads the stream


class StreamMessage(BaseModel):
    """PipesHub's ``app.services.messaging.config.StreamMessage`` (what its consumer builds from an entry)."""

    eventType: str  # noqa: N815 - PipesHub's field names
    payload: dict[str, JsonValue]
    timestamp: int | None = None
    requestId: str | None = None  # noqa: N815


def decode_like_pipeshub(fields: dict[str, str]) -> StreamMessage:
    """PipesHub's RedisStreamsConsumer: read ``value``, ``json.loads`` it (twice if it was a string)."""
    raw = json.loads(fields["value"])
    if isinstance(raw, str):
        raw = json.loads(raw)
    return StreamMessage(**raw)


@pytest.fixture
def stream_redis(tmp_path: Path, processes: Processes) -> tuple[int, Path]:
    """A private redis-server for the sync-events stream (PipesHub's may be another Redis than the queue's)."""
    port = free_port()
    processes.adopt(spawn(tmp_path / "stream-redis", ["--port", str(port)], port))
    return port, tmp_path / "stream-redis"


@pytest.fixture
async def stream_client(stream_redis: tuple[int, Path]) -> AsyncIterator[aioredis.Redis]:
    """A client of the stream Redis, with PipesHub's consumer group created on ``sync-events``."""
    client = aioredis.Redis(port=stream_redis[0], decode_responses=True)
    await client.xgroup_create("sync-events", GROUP, id="0", mkstream=True)
    yield client
    await client.aclose()


async def _read_group(client: aioredis.Redis) -> list[Entry]:
    reply = await client.xreadgroup(GROUP, "reader-1", {"sync-events": ">"}, count=100)
    streams = cast(list[tuple[str, list[Entry]]], reply)
    return [(entry_id, fields) for _, entries in streams for entry_id, fields in entries]


def _delegating_catalog() -> Catalog:
    """No instance for any connectorId; every connector type goes to pipeshub-sync (the catalog rule)."""
    return Catalog.from_entries({}, {"*": InstanceEntry(connector="pipeshub-sync")})


async def test_a_delegated_job_publishes_the_event_pipeshubs_consumer_reads(
    make_settings: Callable[..., Settings], stream_redis: tuple[int, Path], stream_client: aioredis.Redis, queue: Queue
) -> None:
    """Confluence, routed by the "*" rule: one event on sync-events, decoded as PipesHub does; Local FS is a no-op."""
    settings = make_settings(sync_events_redis_url=f"redis://127.0.0.1:{stream_redis[0]}/0")
    name, data = crawl_job("Confluence", "conf-1", org_id="org-77")
    job = await queue.add(name, data, {"attempts": 3, "removeOnComplete": False})
    fs_name, fs_data = crawl_job("Local FS", "desk-1", org_id="org-77")
    fs_job = await queue.add(fs_name, fs_data, {"attempts": 3, "removeOnComplete": False})
    async with running_app(settings, _delegating_catalog()):
        assert await wait_state(queue, job.id, ["completed", "failed"]) == "completed"
        assert await wait_state(queue, fs_job.id, ["completed", "failed"]) == "completed"
    entries = await _read_group(stream_client)
    assert len(entries) == 1, entries
    entry_id, fields = entries[0]
    message = decode_like_pipeshub(fields)
    assert message.eventType == "confluence.resync"
    assert {k: message.payload[k] for k in ("orgId", "connector", "connectorId", "origin")} == {
        "orgId": "org-77",
        "connector": "Confluence",
        "connectorId": "conf-1",
        "origin": "CONNECTOR",
    }
    assert fields["key"] == "confluence.resync"
    assert json.loads(fields["headers"]) == {"eventType": "confluence.resync", "timestamp": str(message.timestamp)}
    done = await queue.getJob(job.id)
    assert done.returnvalue["details"]["published"] == {
        "stream": "sync-events",
        "id": entry_id,
        "eventType": "confluence.resync",
    }
    skipped = await queue.getJob(fs_job.id)
    assert "desktop client" in skipped.returnvalue["details"]["skipped"]


async def test_with_the_stream_redis_down_the_job_retries_with_backoff_and_publishes_once_when_it_is_back(
    make_settings: Callable[..., Settings],
    stream_redis: tuple[int, Path],
    queue: Queue,
    processes: Processes,
    make_redis: Callable[..., aioredis.Redis],
) -> None:
    """Stream Redis stopped: attempts fail as transient and back off; Redis back: the job completes, one event."""
    port, workdir = stream_redis
    settings = make_settings(sync_events_redis_url=f"redis://127.0.0.1:{port}/0", sync_events_maxlen=1000)
    down = await asyncio.create_subprocess_exec(REDIS_CLI, "-p", str(port), "shutdown", "nosave")
    await down.wait()
    name, data = crawl_job("SharePoint Online", "sp-1")
    opts = {"attempts": 4, "backoff": {"type": "exponential", "delay": 1000}, "removeOnComplete": False}
    job = await queue.add(name, data, opts)
    async with running_app(settings, _delegating_catalog()):

        async def retried() -> Any:
            found = await queue.getJob(job.id)
            return found if found.attemptsMade >= 1 else None

        failed_once = await wait_for(retried, timeout=20, what="a failed attempt")
        assert "cannot publish sharepointonline.resync to stream 'sync-events'" in failed_once.failedReason
        assert await queue.getJobState(job.id) in {"delayed", "waiting", "active"}
        processes.adopt(spawn(workdir, ["--port", str(port)], port))
        client = make_redis(f"redis://127.0.0.1:{port}/0", decode_responses=True)
        await client.xgroup_create("sync-events", GROUP, id="0", mkstream=True)
        assert await wait_state(queue, job.id, ["completed", "failed"], timeout=30) == "completed"
        entries = await _read_group(client)
        assert len(entries) == 1
        assert decode_like_pipeshub(entries[0][1]).eventType == "sharepointonline.resync"
    done = await queue.getJob(job.id)
    assert done.attemptsMade >= 2


async def test_one_job_publishes_once_however_often_it_runs(stream_client: aioredis.Redis) -> None:
    """The same job key twice (a retry after a lost completion): one stream entry, the same id, marked duplicate."""
    pool = stream_client.connection_pool.connection_kwargs
    publisher = SyncEventPublisher(
        aioredis.Redis(port=pool["port"], decode_responses=True), stream="sync-events", maxlen=100, dedup_ttl_s=60
    )
    event = sync_event("org-1", "Jira", "jira-1", now_ms=1_700_000_000_000)
    first = await publisher.publish(event, job_key="7@1700000000000")
    again = await publisher.publish(event, job_key="7@1700000000000")
    other = await publisher.publish(event, job_key="8@1700000000001")
    await publisher.aclose()
    assert (first.duplicate, again.duplicate, again.entry_id) == (False, True, first.entry_id)
    assert other.entry_id != first.entry_id
    assert await stream_client.xlen("sync-events") == 2


@pytest.fixture
async def stream(queue_name: str, redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A sync-events stream of this test's own on the test Redis; it and its dedup keys are deleted afterwards."""
    stream = f"{queue_name}-sync-events"
    yield stream
    await redis_client.delete(stream, *[k async for k in redis_client.scan_iter(f"{{{stream}}}:*")])


async def test_the_event_is_byte_for_byte_what_pipeshubs_node_producer_writes(
    redis_url: str, redis_client: aioredis.Redis, stream: str
) -> None:
    """Same org, connector, id and clock: our stream fields equal those of PipesHub's publishEvent + XADD."""
    for connector in ("Confluence Data Center", "Drive", "Ünïcode Wiki"):
        now = 1_790_000_000_123
        node_id = await aproducer(
            redis_url,
            stream,
            "-",
            "publish",
            {
                "orgId": "org-9",
                "connector": connector,
                "connectorId": "id-9",
                "now": now,
            },
        )
        publisher = SyncEventPublisher(redis_client, stream=stream, maxlen=500_000, dedup_ttl_s=60)
        ours = await publisher.publish(sync_event("org-9", connector, "id-9", now_ms=now), job_key=f"{connector}@1")
        entries = dict(cast(list[Entry], await redis_client.xrange(stream)))
        assert entries[ours.entry_id] == entries[node_id], connector
        assert ours.event_type == event_type(connector)
