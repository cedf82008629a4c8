"""Test helpers: run the real App in-process, add producer-shaped jobs, wait for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from bullmq import Queue, Worker
from prometheus_client import CollectorRegistry

from worker.app import App
from worker.catalog import Catalog, InstanceEntry
from worker.documents import Document
from worker.models import CrawlingJobData
from worker.queue.producer import producer_job_options
from worker.settings import Settings
from worker.sinks.base import InstanceRef, Sink


def catalog_of(**instances: dict[str, Any]) -> Catalog:
    """A fixed catalog: connectorId -> {connector, config, ...}."""
    return Catalog.from_entries({cid: InstanceEntry(**entry) for cid, entry in instances.items()})


def crawl_job(connector: str, connector_id: str, org_id: str = "org-1") -> tuple[str, dict[str, Any]]:
    """(name, data) exactly as PipesHub's producer builds them."""
    return CrawlingJobData.for_instance(connector, connector_id, org_id=org_id, user_id="user-1").to_job()


def open_queue(settings: Settings) -> Queue:
    """A bullmq Queue on the test's queue (closed by the caller; a test takes the ``queue`` fixture instead)."""
    return Queue(settings.queue_name, {"connection": settings.redis_url, "prefix": settings.prefix})


@contextlib.asynccontextmanager
async def queue_and_hand_worker(settings: Settings) -> AsyncIterator[tuple[Queue, Worker]]:
    """A Queue and a Worker taking jobs only by hand, closed on exit (where the test's fixtures do not reach)."""
    queue = open_queue(settings)
    options = {"connection": settings.redis_url, "prefix": settings.prefix, "autorun": False}
    worker = Worker(settings.queue_name, None, options)
    try:
        yield queue, worker
    finally:
        await worker.close(force=True)
        await queue.close()


async def add_crawl(queue: Queue, connector: str, connector_id: str, *, org_id: str = "org-1", **opts: Any) -> str:
    """Add a PipesHub-shaped crawl job with the producer's options (overridable)."""
    name, data = crawl_job(connector, connector_id, org_id)
    options = {**producer_job_options(), **opts}
    job = await queue.add(name, data, options)
    return str(job.id)


async def fail_jobs(queue: Queue, worker: Worker, specs: Sequence[tuple[str, ...]], reason: str = "down") -> list[str]:
    """Add (connector, connectorId[, orgId]) jobs with one attempt and fail each through ``worker`` (taking by hand)."""
    ids = []
    for connector, cid, *org in specs:
        job_id = await add_crawl(queue, connector, cid, org_id=org[0] if org else "org-1", priority=0, attempts=1)
        job = await worker.getNextJob(f"t-{cid}")
        assert job.id == job_id
        await job.moveToFailed(RuntimeError(reason), f"t-{cid}")
        ids.append(job_id)
    return ids


async def wait_for(
    check: Callable[[], Awaitable[Any]], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_state(queue: Queue, job_id: str, states: Sequence[str], timeout: float = 20.0) -> str:
    """Wait until the job reaches one of ``states``; returns the state."""

    async def check() -> str | None:
        state = await queue.getJobState(job_id)
        return str(state) if state in states else None

    result: str = await wait_for(check, timeout, what=f"job {job_id} to reach {states}")
    return result


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings,
    catalog: Catalog,
    *,
    sink: Sink | None = None,
    registry: CollectorRegistry | None = None,
    wait_started: bool = True,
) -> AsyncIterator[App]:
    """Run the real worker App in this event loop; stop it gracefully on exit.

    The block starts once the app consumes jobs, or at once with ``wait_started=False`` (an app whose Redis is
    not there yet).
    """
    app = App(settings, metrics_registry=registry or CollectorRegistry(), catalog=catalog, sink=sink)
    started = asyncio.Event()

    async def mark(_: App) -> None:
        started.set()

    app.on_started.append(mark)
    task = asyncio.create_task(app.run())
    if wait_started:
        waiter = asyncio.create_task(started.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            raise AssertionError(f"worker exited during start-up with {task.result()}")
    try:
        yield app
    finally:
        app.request_stop()
        await asyncio.wait_for(task, timeout=60)


class RecordingSink(Sink):
    """A sink that records every batch with the time it arrived (for ordering assertions)."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, InstanceRef, list[Document]]] = []

    async def write(self, instance: InstanceRef, documents: Sequence[Document]) -> int:
        """Record the batch."""
        self.batches.append((time.monotonic(), instance, list(documents)))
        return len(documents)

    def ids(self) -> list[str]:
        """Every document id written, in order."""
        return [doc.id for _, _, docs in self.batches for doc in docs]
