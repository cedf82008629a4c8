"""The sink's disk fills mid-crawl: the job retries and completes only with every document stored once."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
from bullmq import Queue

from tests.helpers import add_crawl, wait_for, wait_state
from tests.proc import Processes, write_catalog
from worker.settings import Settings

pytestmark = pytest.mark.slow

ITEMS = 300


async def test_a_full_disk_mid_crawl_loses_and_duplicates_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """RLIMIT_FSIZE stops the JSONL file at 30 kB (EFBIG mid-write); lifted, the retry ends with 300 docs, once each."""
    settings = make_settings()
    catalog = write_catalog(
        tmp_path / "catalog.toml",
        {
            "big": {"connector": "mock", "config": {"items": ITEMS, "step_size": 50, "step_delay_s": 0.05}},
        },
    )
    proc = processes.crawler(settings, catalog, tmp_path, log_level="warning", worker_name="disk-full")
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (30_000, resource.RLIM_INFINITY))
    job_id = await add_crawl(
        queue, "mock", "big", attempts=6, backoff={"type": "fixed", "delay": 500}, removeOnComplete=False
    )

    async def failed_once() -> str | None:
        job = await queue.getJob(job_id)
        return job.failedReason if job.attemptsMade >= 1 else None

    reason = await wait_for(failed_once, timeout=30, what="an attempt that hits the file size limit")
    assert "sink could not store 50 documents: File too large" in reason
    assert str(tmp_path) not in reason
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "completed"
    done = await queue.getJob(job_id)
    assert done.returnvalue["documents"] == ITEMS
    (jsonl,) = (tmp_path / "data").rglob("documents.jsonl")
    ids = [json.loads(line)["id"] for line in jsonl.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == ITEMS, "every document exactly once"
