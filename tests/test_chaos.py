"""Chaos: three worker processes, 200 crawls, a random worker SIGKILLed every few seconds and restarted."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.helpers import add_crawl
from tests.proc import Processes, write_catalog
from worker.settings import Settings

pytestmark = pytest.mark.slow

JOBS, WORKERS, KILL_EVERY_S, CHAOS_S, DEADLINE_S = 200, 3, 3.0, 30.0, 150.0


async def test_chaos_every_job_completes_none_lost(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """Kill -9 a random worker every 3 s for 30 s: all 200 jobs complete, none fail, none are lost."""
    rng = random.Random(42)
    settings = make_settings()
    instances: dict[str, dict[str, Any]] = {
        f"i{n:03d}": {
            "connector": "mock",
            "config": {"items": rng.randint(5, 80), "step_size": 5, "step_delay_s": rng.choice([0.02, 0.1, 0.2])},
        }
        for n in range(JOBS)
    }
    catalog = write_catalog(tmp_path / "catalog.toml", instances)
    common = {
        "redis_url": settings.redis_url,
        "queue_name": settings.queue_name,
        "catalog_file": catalog,
        "data_dir": tmp_path / "data",
        "concurrency": 4,
        "lock_duration_ms": 5000,
        "stalled_interval_ms": 1000,
        "max_stalled_count": 50,
        "log_level": "warning",
    }
    procs: dict[int, Any] = {}
    started = 0

    def spawn(slot: int) -> None:
        nonlocal started
        started += 1
        procs[slot] = processes.worker(tmp_path / f"w{slot}.log", worker_name=f"chaos-{slot}-{started}", **common)

    ids = [await add_crawl(queue, "mock", cid, removeOnComplete=False, removeOnFail=False) for cid in instances]
    for slot in range(WORKERS):
        spawn(slot)
    begin = time.monotonic()
    kills = 0
    next_kill = begin + KILL_EVERY_S
    while time.monotonic() - begin < DEADLINE_S:
        counts = await queue.getJobCounts("completed", "failed")
        if counts["completed"] + counts["failed"] >= JOBS:
            break
        now = time.monotonic()
        if now >= next_kill and now - begin < CHAOS_S:
            slot = rng.randrange(WORKERS)
            procs[slot].kill()
            procs[slot].wait(5)
            kills += 1
            spawn(slot)
            next_kill = now + KILL_EVERY_S
        await asyncio.sleep(0.25)
    elapsed = time.monotonic() - begin
    states = [await queue.getJobState(job_id) for job_id in ids]
    completed = states.count("completed")
    failed = states.count("failed")
    lost = JOBS - completed - failed - sum(s in ("active", "waiting", "delayed", "prioritized") for s in states)
    lines = [
        json.loads(line)
        for path in (tmp_path / "data").rglob("documents.jsonl")
        for line in path.read_text().splitlines()
    ]
    unique = len({(line["source"]) for line in lines})
    expected = sum(entry["config"]["items"] for entry in instances.values())
    dup_rate = (len(lines) - unique) / max(unique, 1)
    print(
        f"\nchaos: {kills} SIGKILLs in {CHAOS_S:.0f}s, {started} worker starts, {elapsed:.1f}s total; "
        f"jobs completed={completed} failed={failed} unfinished={JOBS - completed - failed} lost={lost}; "
        f"documents {unique}/{expected}, duplicate-document rate {dup_rate:.4%}"
    )
    assert kills >= 5
    assert failed == 0
    assert completed == JOBS
    assert unique == expected
