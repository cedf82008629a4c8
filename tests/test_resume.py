"""Resumable crawls and stuck-job recovery, with real processes, kill -9 and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from tests.connectors.site import Site, html, serve
from tests.helpers import RecordingSink, add_crawl, catalog_of, running_app, wait_for, wait_state
from tests.proc import Processes, write_catalog
from worker.settings import Settings

pytestmark = pytest.mark.slow

LOCK_MS, STALLED_MS = 5000, 1000


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    """Parsed JSON log lines of one event."""
    out = []
    for line in log.read_text().splitlines():
        if f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _jsonl(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in data_dir.rglob("documents.jsonl") for line in path.read_text().splitlines()]


def _ts(record: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def _worker(processes: Processes, settings: Settings, tmp_path: Path, name: str, catalog: Path, **extra: Any) -> Any:
    """A worker process named ``name`` (log ``<name>.log``) with the short lock and stalled check of these tests."""
    lock = {"lock_duration_ms": LOCK_MS, "stalled_interval_ms": STALLED_MS, "worker_name": name}
    return processes.crawler(settings, catalog, tmp_path, name, **{**lock, **extra})


async def _started(log: Path) -> None:
    async def check() -> bool:
        return log.exists() and bool(_events(log, "worker.started"))

    await wait_for(check, timeout=20, what=f"{log.name} to start")


async def _kill_9_and_resume(
    processes: Processes,
    queue: Queue,
    settings: Settings,
    *,
    tmp_path: Path,
    catalog: Path,
    connector: str,
    kill_after: int,
    expected: int,
    step: int,
) -> list[str]:
    """Crawl on a first worker, kill -9 it after ``kill_after`` documents, let a second resume; returns the ids.

    Asserts the resume came within the lock + stalled budget, from the checkpoint, lost nothing and
    replayed at most one step (``step`` documents).
    """
    first = _worker(processes, settings, tmp_path, "first", catalog, concurrency=1)
    await _started(tmp_path / "first.log")
    job_id = await add_crawl(queue, connector, "c", removeOnComplete=False)

    async def some_written() -> bool:
        return len(_jsonl(tmp_path / "data")) >= kill_after

    await wait_for(some_written, timeout=30, what=f"first worker to write {kill_after} documents")
    _worker(processes, settings, tmp_path, "second", catalog, concurrency=1)
    await _started(tmp_path / "second.log")
    before_kill = len(_jsonl(tmp_path / "data"))
    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.time()
    first.wait(5)
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "completed"
    resumed = _events(tmp_path / "second.log", "run.resumed")
    assert resumed, "the second worker started over instead of resuming"
    recovery_s = _ts(resumed[0]) - killed_at
    budget_s = (LOCK_MS + STALLED_MS) / 1000
    print(
        f"\nkill -9 -> resume: {recovery_s:.2f}s (lock {LOCK_MS} ms + stalled interval {STALLED_MS} ms "
        f"= {budget_s:.1f}s); {before_kill} documents written before the kill"
    )
    assert recovery_s <= budget_s
    assert resumed[0]["processed"] >= kill_after - step, "resume did not start from the checkpoint"
    ids = [line["id"] for line in _jsonl(tmp_path / "data")]
    assert len(set(ids)) == expected, "a document is missing"
    duplicates = len(ids) - len(set(ids))
    print(f"documents: {len(set(ids))} unique, {duplicates} duplicate lines (one step = {step})")
    assert duplicates <= step
    job = await queue.getJob(job_id)
    assert job.returnvalue["resumed"] is True
    return ids


async def test_kill_9_mid_crawl_resumes_from_checkpoint_on_another_worker(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """kill -9 during a 3,000-file crawl: another worker resumes from the checkpoint; every file arrives once."""
    root = tmp_path / "files"
    for i in range(3000):
        sub = root / f"d{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.txt").write_text(f"file {i}\n")
    config = {"root": str(root), "batch_size": 100, "max_files_per_second": 1000}
    catalog = write_catalog(tmp_path / "catalog.toml", {"c": {"connector": "filesystem", "config": config}})
    await _kill_9_and_resume(
        processes,
        queue,
        make_settings(),
        tmp_path=tmp_path,
        catalog=catalog,
        connector="filesystem",
        kill_after=600,
        expected=3000,
        step=100,
    )


async def test_kill_9_mid_web_crawl_resumes_from_its_frontier_and_loses_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """kill -9 mid 400-page web crawl: another worker resumes from its stored frontier; nothing lost, ≤ 1 step again."""
    pages = 400
    with serve(Site()) as site:
        site.routes.update(
            {
                f"/p/{i}": html(f"Page {i}", f"text {i}", tuple(f"/p/{j}" for j in (2 * i + 1, 2 * i + 2) if j < pages))
                for i in range(pages)
            }
        )
        config = {
            "start_urls": [f"{site.base}/p/0"],
            "max_depth": 20,
            "max_pages_per_pattern": 1000,
            "pages_per_step": 10,
            "per_host_concurrency": 2,
            "min_delay_s": 0.03,
            "obey_robots": False,
            "allowed_networks": ["127.0.0.0/8"],
        }
        catalog = write_catalog(tmp_path / "catalog.toml", {"c": {"connector": "web", "config": config}})
        await _kill_9_and_resume(
            processes,
            queue,
            make_settings(),
            tmp_path=tmp_path,
            catalog=catalog,
            connector="web",
            kill_after=100,
            expected=pages,
            step=10,
        )
        fetched = Counter(site.fetched())
    assert set(fetched) == {f"/p/{i}" for i in range(pages)}
    assert sum(n - 1 for n in fetched.values()) <= 10, "more than one step was fetched again"


async def test_sigterm_hands_off_the_crawl_to_another_worker_within_2s(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """SIGTERM with a 0.5 s drain deadline: the crawl is handed off, resumed elsewhere within 2 s, no attempt spent."""
    settings = make_settings()
    long = {"connector": "mock", "config": {"items": 400, "step_size": 5, "step_delay_s": 0.05}}
    catalog = write_catalog(tmp_path / "catalog.toml", {"long": long})
    first = _worker(processes, settings, tmp_path, "first", catalog, drain_timeout_s=0.5, handoff_timeout_s=5)
    await _started(tmp_path / "first.log")
    job_id = await add_crawl(queue, "mock", "long", removeOnComplete=False)
    await wait_state(queue, job_id, ["active"], timeout=20)
    _worker(processes, settings, tmp_path, "second", catalog)
    await _started(tmp_path / "second.log")
    await asyncio.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.wait, 20) == 0
    handed = _events(tmp_path / "first.log", "job.delayed")
    assert handed, "the first worker did not hand the crawl off"
    assert handed[0]["reason"] == "handoff"

    async def resumed() -> list[dict[str, Any]]:
        return _events(tmp_path / "second.log", "run.resumed")

    event = (await wait_for(resumed, timeout=10, what="the second worker to resume"))[0]
    gap_s = _ts(event) - _ts(handed[0])
    print(f"\nhand-off -> resume on the other worker: {gap_s:.3f}s")
    assert gap_s <= 2.0
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "completed"
    job = await queue.getJob(job_id)
    assert job.attemptsMade == 1, "the hand-off spent an attempt"
    assert job.returnvalue["documents"] == 400
    assert job.returnvalue["resumed"] is True


async def test_poison_job_fails_after_max_stalls_without_holding_up_others(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """A job that kills its worker every time fails with the stall-limit reason; the other jobs complete."""
    settings = make_settings()
    catalog = write_catalog(
        tmp_path / "catalog.toml",
        {
            "poison": {"connector": "mock", "config": {"items": 5, "kill_at_item": 0}},
            **{f"ok{i}": {"connector": "mock", "config": {"items": 5}} for i in range(6)},
        },
    )
    procs: list[Any] = []
    poison = await add_crawl(queue, "mock", "poison", removeOnFail=False)
    others = [await add_crawl(queue, "mock", f"ok{i}", removeOnComplete=False) for i in range(6)]
    deadline = time.monotonic() + 60
    restarts = 0
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.poll() is None]
        if not alive:  # a supervisor (systemd, Kubernetes) restarts the dead worker
            # concurrency 1: a process that dies takes down only the job it was running (with more
            # slots, every co-running job would stall too: that is what concurrency means).
            procs.append(
                _worker(processes, settings, tmp_path, f"w{restarts}", catalog, max_stalled_count=2, concurrency=1)
            )
            restarts += 1
        if await queue.getJobState(poison) == "failed":
            break
        await asyncio.sleep(0.2)
    job = await queue.getJob(poison)
    assert await queue.getJobState(poison) == "failed"
    assert "stalled more than allowable limit" in job.failedReason
    print(f"\npoison job failed after {restarts} worker starts: {job.failedReason}")
    for job_id in others:
        assert await wait_state(queue, job_id, ["completed", "failed"], timeout=30) == "completed"


async def test_two_jobs_for_one_instance_never_crawl_concurrently(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Two jobs for one connector instance on two workers: the second is deferred; sink batches never interleave."""
    settings_a = make_settings(duplicate_run_delay_s=0.5)
    settings_b = make_settings(duplicate_run_delay_s=0.5)
    sink = RecordingSink()
    catalog = catalog_of(same={"connector": "mock", "config": {"items": 20, "step_size": 2, "step_delay_s": 0.05}})
    async with running_app(settings_a, catalog, sink=sink), running_app(settings_b, catalog, sink=sink):
        first = await add_crawl(queue, "mock", "same", removeOnComplete=False)
        second = await add_crawl(queue, "mock", "same", removeOnComplete=False)
        for job_id in (first, second):
            assert await wait_state(queue, job_id, ["completed", "failed"], timeout=30) == "completed"
    runs: dict[str, list[float]] = {}
    for ts, instance, _ in sink.batches:
        runs.setdefault(instance.run_id, []).append(ts)
    assert len(runs) == 2
    (_, a_end), (b_start, _) = sorted((min(v), max(v)) for v in runs.values())
    assert a_end < b_start, "two runs of one instance overlapped"
    assert (await queue.getJob(second)).attemptsMade == 1, "deferring spent an attempt"


async def test_skip_policy_completes_the_duplicate_as_a_no_op(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, queue: Queue
) -> None:
    """With duplicate_run_policy=skip the second job for a busy instance completes at once as skipped."""
    settings = make_settings(duplicate_run_policy="skip", concurrency=2)
    catalog = catalog_of(same={"connector": "mock", "config": {"items": 20, "step_size": 2, "step_delay_s": 0.05}})
    lease_key = f"{settings.prefix}:{settings.queue_name}:cw:lease:org-1:mock:same"
    async with running_app(settings, catalog):
        first = await add_crawl(queue, "mock", "same", removeOnComplete=False)

        async def first_holds_the_instance() -> bool:
            return str(await redis_client.get(lease_key) or "").startswith(f"job:{first}|")

        await wait_for(first_holds_the_instance, interval=0.005, what="the first job to take the instance's lease")
        second = await add_crawl(queue, "mock", "same", removeOnComplete=False)
        await wait_state(queue, second, ["completed"])
        await wait_state(queue, first, ["completed"])
    assert (await queue.getJob(second)).returnvalue["status"] == "skipped"
    assert (await queue.getJob(first)).returnvalue["documents"] == 20


async def test_run_without_progress_fails_loudly(make_settings: Callable[..., Settings], queue: Queue) -> None:
    """A run that commits nothing in 2 consecutive resumed attempts fails with a no-progress reason."""
    settings = make_settings(max_no_progress_attempts=2)
    catalog = catalog_of(flaky={"connector": "mock", "config": {"items": 5, "transient_failures": 99}})
    async with running_app(settings, catalog):
        job_id = await add_crawl(
            queue, "mock", "flaky", attempts=6, backoff={"type": "fixed", "delay": 100}, removeOnFail=False
        )
        await wait_state(queue, job_id, ["failed"], timeout=30)
    job = await queue.getJob(job_id)
    assert "made no progress in 2 consecutive attempts" in job.failedReason
    assert job.attemptsMade == 3


async def test_progress_stays_monotonic_across_a_retry_later(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """A source's retry-later resumes the run's counters: progress never goes back, says resumed, spends no attempt."""
    settings = make_settings(progress_interval_s=0)
    catalog = catalog_of(
        c={"connector": "mock", "config": {"items": 40, "step_size": 5, "step_delay_s": 0.05, "retry_later_s": 1.0}}
    )
    seen: list[dict[str, Any]] = []
    async with running_app(settings, catalog):
        job_id = await add_crawl(queue, "mock", "c", removeOnComplete=False)

        async def finished() -> bool:
            job = await queue.getJob(job_id)
            if isinstance(job.progress, dict) and (not seen or seen[-1] != job.progress):
                seen.append(job.progress)
            return bool(await queue.getJobState(job_id) == "completed")

        await wait_for(finished, timeout=30, interval=0.02, what="the job to complete")
    job = await queue.getJob(job_id)
    percentages = [p["percentage"] for p in seen]
    assert percentages == sorted(percentages), percentages
    assert any(p.get("resumed") for p in seen), "progress never said resumed"
    assert job.progress["percentage"] == 100
    assert job.returnvalue["documents"] == 40
    assert job.attemptsMade == 1, "retry-later spent an attempt"
