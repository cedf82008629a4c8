"""The downstream-queue sink: batches of documents as BullMQ jobs that a Node worker consumes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from tests.conftest import delete_keys
from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from worker.connections import make_client
from worker.documents import Document
from worker.queue.producer import JobQueue
from worker.settings import Settings
from worker.sinks.base import InstanceRef
from worker.sinks.bullmq_queue import BullmqQueueSink

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.node


@pytest.fixture
def sink_queue(redis_url: str, queue_name: str) -> Iterator[str]:
    """The downstream queue's name; its keys are deleted afterwards."""
    name = f"{queue_name}-docs"
    yield name
    delete_keys(redis_url, "bull", name)


async def test_a_node_worker_consumes_the_documents_a_crawl_sent_downstream(
    make_settings: Callable[..., Settings], sink_queue: str, queue: Queue
) -> None:
    """sink=queue: 10 documents in batches of 4 arrive as 3 jobs that a Node BullMQ worker processes."""
    node = shutil.which("node")
    assert node is not None
    settings = make_settings(sink="queue", sink_queue_name=sink_queue, sink_batch_size=4)
    async with running_app(settings, catalog_of(c1={"connector": "mock", "config": {"items": 10}})):
        job_id = await add_crawl(queue, "mock", "c1")
        assert await wait_state(queue, job_id, ["completed", "failed"]) == "completed"
    out = await asyncio.to_thread(
        subprocess.run,
        [node, "node_client.mjs", settings.redis_url, sink_queue, "consume", "3", "20000"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    jobs = json.loads(out.stdout.strip().splitlines()[-1])
    assert [len(j["data"]["documents"]) for j in jobs] == [4, 4, 2]
    assert {j["name"] for j in jobs} == {"documents-mock-c1"}
    assert all(j["data"]["connectorId"] == "c1" and j["data"]["orgId"] == "org-1" for j in jobs)
    ids = [d["id"] for j in jobs for d in j["data"]["documents"]]
    assert len(set(ids)) == 10
    first = jobs[0]["data"]["documents"][0]
    assert set(first) >= {"id", "source", "mime_type", "content_hash", "size", "fetched_at", "deleted"}


async def test_replaying_a_batch_adds_no_second_job(
    make_settings: Callable[..., Settings], sink_queue: str, redis_client: aioredis.Redis
) -> None:
    """Writing the same batch twice (a replayed step) leaves one job: the job id is the batch's hash."""
    settings = make_settings()
    sink = BullmqQueueSink(JobQueue(settings, make_client(settings), name=sink_queue), batch_size=100)
    instance = InstanceRef("org", "web", "site", "run-1")
    docs = [Document(id=f"d{i}", source=f"s{i}", content_hash=f"h{i}") for i in range(3)]
    async with aclosing(sink):
        await sink.write(instance, docs)
        await sink.write(instance, docs)
        changed = [docs[0].model_copy(update={"content_hash": "h0-v2"}), *docs[1:]]
        await sink.write(instance, changed)
    assert await redis_client.llen(f"bull:{sink_queue}:wait") == 2
