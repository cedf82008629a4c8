"""Fixtures for the job API tests: jobs placed in every BullMQ state, and the API on a real loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from bullmq import Queue, Worker

from tests.helpers import add_crawl
from worker.api import create_app
from worker.serving import bind, serving
from worker.settings import Settings

READ, ADMIN = "read-token-0123456789", "admin-token-0123456789"


@dataclass
class Placed:
    """Job ids by the state they were put in."""

    ids: dict[str, str] = field(default_factory=dict)


async def place_jobs(queue: Queue, worker: Worker) -> Placed:
    """One job in each state: active, stuck (lock deleted), completed, failed, waiting, prioritized, delayed.

    ``worker`` (on ``queue``'s queue) takes jobs only by hand; both stay open for the caller to close.
    """
    placed = Placed()

    async def fetch(connector_id: str, **opts: Any) -> Any:
        job_id = await add_crawl(queue, "mock", connector_id, priority=0, **opts)
        job = await worker.getNextJob(f"token-{connector_id}")
        assert job is not None
        assert job.id == job_id
        return job

    active = await fetch("a1")
    await active.updateProgress({"percentage": 50, "current": 5, "total": 10})
    await active.log("fetched page 1")
    placed.ids["active"] = active.id
    stuck = await fetch("s1")
    placed.ids["stuck"] = stuck.id
    await queue.client.delete(queue.toKey(f"{stuck.id}:lock"))
    done = await fetch("c1")
    await done.moveToCompleted({"documents": 3}, "token-c1")
    placed.ids["completed"] = done.id
    bad = await fetch("f1", attempts=1)
    await bad.moveToFailed(RuntimeError("boom: source unreachable"), "token-f1")
    placed.ids["failed"] = bad.id
    placed.ids["waiting"] = await add_crawl(queue, "mock", "w1", priority=0)
    placed.ids["prioritized"] = await add_crawl(queue, "web", "p1")
    placed.ids["delayed"] = await add_crawl(queue, "web", "d1", delay=600_000)
    return placed


@pytest.fixture
async def placed(queue: Queue, hand_worker: Worker) -> Placed:
    """Jobs in every state on this test's queue."""
    return await place_jobs(queue, hand_worker)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app served by uvicorn on a free loopback port; yields a client for it."""
    async with (
        serving(create_app(settings), bind("127.0.0.1", 0)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        yield client


@pytest.fixture
async def http(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API on this test's queue (no token attached)."""
    async with serve(make_settings(api_read_token=READ, api_admin_token=ADMIN)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}
