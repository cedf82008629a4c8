"""Fixtures for the dashboard tests: the API app (dashboard included) on a loopback port, signed-in clients."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from bullmq import Job, Queue, Worker

from tests.api.conftest import ADMIN, READ, serve
from tests.helpers import crawl_job
from worker.queue.producer import producer_job_options
from worker.settings import Settings


@pytest.fixture
def ui_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings with both tokens, progress written at once."""
    return make_settings(api_read_token=READ, api_admin_token=ADMIN, progress_interval_s=0)


@dataclass
class Manual:
    """A queue and a worker that fetches jobs by hand (``getNextJob``), to leave jobs in chosen states."""

    queue: Queue
    worker: Worker

    async def take(self, connector_id: str, connector: str = "mock", extra: dict[str, Any] | None = None) -> Job:
        """Add a crawl job (priority 0, one attempt, ``extra`` merged into its data) and fetch it: it is active."""
        name, data = crawl_job(connector, connector_id)
        opts = {**producer_job_options(), "priority": 0, "attempts": 1}
        job = await self.queue.add(name, {**data, **(extra or {})}, opts)
        fetched = await self.worker.getNextJob(f"t-{connector_id}")
        assert fetched is not None
        assert fetched.id == job.id
        return fetched


@pytest.fixture
def manual(queue: Queue, hand_worker: Worker) -> Manual:
    """A :class:`Manual` on this test's queue (both closed by their fixtures)."""
    return Manual(queue, hand_worker)


@pytest.fixture
async def site(ui_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the served app (not signed in)."""
    async with serve(ui_settings) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign ``client`` in through the form; returns the session's CSRF token."""
    form = await client.get("/ui/login")
    login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    assert login_csrf is not None
    done = await client.post("/ui/login", data={"token": token, "login_csrf": login_csrf[1], "next": "/ui/"})
    assert done.status_code == 303, done.text
    page = await client.get("/ui/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf[1]
