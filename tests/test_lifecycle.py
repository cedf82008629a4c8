"""Process lifecycle with real signals: drain on SIGTERM, stop on a second signal, exit codes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from bullmq import Queue

from tests.helpers import add_crawl, wait_for, wait_state
from tests.proc import Processes, write_catalog
from worker.settings import Settings

SLOW = {"connector": "mock", "config": {"items": 20, "step_size": 1, "step_delay_s": 0.15}}


@pytest.mark.slow
async def test_sigterm_mid_job_drains_and_exits_0(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """SIGTERM while a 3 s crawl runs: no new job is taken, the crawl finishes, the process exits 0."""
    settings = make_settings()
    catalog = write_catalog(tmp_path / "catalog.toml", {"slow": SLOW, "next": SLOW})
    proc = processes.crawler(settings, catalog, tmp_path, concurrency=1)
    job_id = await add_crawl(queue, "mock", "slow")
    await wait_state(queue, job_id, ["active"], timeout=20)
    await asyncio.sleep(0.5)
    queued = await add_crawl(queue, "mock", "next")
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert await queue.getJobState(job_id) == "completed"
    assert await queue.getJobState(queued) in ("waiting", "prioritized"), "a draining worker took a new job"


async def test_second_signal_stops_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """A second SIGTERM during the drain stops the process now with exit code 4, the job left to recovery."""
    settings = make_settings()
    long = {"connector": "mock", "config": {"items": 200, "step_size": 1, "step_delay_s": 0.1}}
    catalog = write_catalog(tmp_path / "catalog.toml", {"long": long})
    proc = processes.crawler(settings, catalog, tmp_path, drain_timeout_s=60)
    job_id = await add_crawl(queue, "mock", "long")
    await wait_state(queue, job_id, ["active"], timeout=20)
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert proc.poll() is None, "the first signal must drain, not exit"
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 15)
    assert code == 4
    assert await queue.getJobState(job_id) == "active"


@pytest.mark.slow
async def test_unreachable_redis_at_start_exits_3(tmp_path: Path, processes: Processes) -> None:
    """With no Redis at the configured address the worker gives up after its start-up timeout with exit 3."""
    proc = processes.worker(tmp_path / "worker.log", redis_url="redis://127.0.0.1:1/0", redis_startup_timeout_s=2)

    async def exited() -> bool:
        return proc.poll() is not None

    await wait_for(exited, timeout=45, what="worker to give up")
    assert proc.returncode == 3
    assert "redis.unreachable" in (tmp_path / "worker.log").read_text()
