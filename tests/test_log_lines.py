"""Where a log line is the behaviour (a failure the worker survives), the line is asserted with capture_logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from bullmq import Queue
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from tests.helpers import add_crawl, catalog_of, running_app, wait_state
from tests.redis_server import free_port
from worker.connections import AutoPipeline
from worker.logs import reap, suppressed
from worker.runs import Lease, RunRecord, RunStore
from worker.settings import Settings
from worker.stats import StatsRecorder


def _nobody() -> aioredis.Redis:
    """A client of a port nobody listens on, that does not retry."""
    return aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


async def test_a_failed_stats_flush_is_logged_and_its_counts_kept(make_settings: Callable[..., Settings]) -> None:
    """Redis gone: the flush loop logs stats.flush_failed and keeps the pending counts for the next flush."""
    s = make_settings()
    down = _nobody()
    stats = StatsRecorder(down, prefix=s.prefix, queue=s.queue_name, retention_days=1, connectors=["mock"])
    stats.record("mock", "completed", 1.0)
    with capture_logs() as logs:
        task = asyncio.create_task(stats.run(interval_s=0.01))
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if any(line["event"] == "stats.flush_failed" for line in logs):
                break
        task.cancel()
        await reap(task, "stats.loop_failed")
    await down.aclose()
    failed = [line for line in logs if line["event"] == "stats.flush_failed"]
    assert failed, logs
    assert failed[0]["log_level"] == "warning"
    assert failed[0]["error_type"] == "ConnectionError"
    assert sum(stats._pending.values()) > 0, "the counts wait for the next flush"


async def test_a_failed_lease_renewal_is_logged(make_settings: Callable[..., Settings]) -> None:
    """Redis gone while leases are held: lease.renew_failed is logged with how many leases it was renewing."""
    s = make_settings()
    down = _nobody()
    store = RunStore(down, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    store.hold(Lease(key="org:mock:x", token="t", epoch=1))
    with capture_logs() as logs:
        await store.renew_held()
    await down.aclose()
    assert [(line["event"], line["leases"]) for line in logs if line["event"] == "lease.renew_failed"] == [
        ("lease.renew_failed", 1)
    ]


def test_suppressed_errors_are_never_silent() -> None:
    """suppressed() swallows an Exception but logs it, with the fields given."""
    with capture_logs() as logs, suppressed("sink.close_failed", sink="jsonl"):
        raise OSError(5, "Input/output error")
    assert logs == [
        {
            "event": "sink.close_failed",
            "log_level": "warning",
            "error": "[Errno 5] Input/output error",
            "error_type": "OSError",
            "sink": "jsonl",
            "logger_name": "worker",
        }
    ]


async def test_a_fenced_off_final_save_is_logged(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """A run's last write refused by the fence (a newer epoch holds the instance) is logged as run.final_save_failed."""
    s = make_settings()
    store = RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    old = await store.acquire("org:mock:x", "job:1|w|a", takeover_prefix="job:1|")
    assert old is not None
    assert await store.acquire("org:mock:x", "job:1|w|a", takeover_prefix="job:1|") is not None  # a newer epoch
    call = store.save_call(old, RunRecord(run_id="r1", config_hash="h"), release=True)
    assert call.on_reply is not None
    (reply,) = await AutoPipeline(redis_client).execute([call])
    with capture_logs() as logs:
        call.on_reply(reply)
    assert [(line["event"], line["log_level"], line["instance"]) for line in logs] == [
        ("run.final_save_failed", "warning", "org:mock:x")
    ]
    assert "a newer epoch took over" in logs[0]["error"]


async def test_a_drain_past_its_deadline_hands_the_running_job_off_and_says_so(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """Drain deadline passed with a crawl running: shutdown.handoff names one active job; the worker stops drained."""
    settings = make_settings(drain_timeout_s=0.2, handoff_timeout_s=10)
    slow = {"connector": "mock", "config": {"items": 100, "step_size": 1, "step_delay_s": 0.1}}
    with capture_logs() as logs:
        async with running_app(settings, catalog_of(slow=slow)):
            job_id = await add_crawl(queue, "mock", "slow")
            await wait_state(queue, job_id, ["active"])
    assert [(line["active"], line["timeout_s"]) for line in logs if line["event"] == "shutdown.handoff"] == [(1, 10)]
    assert [line["drained"] for line in logs if line["event"] == "worker.stopped"] == [True]


async def test_progress_writes_are_debug_lines_and_state_changes_info(
    make_settings: Callable[..., Settings], queue: Queue
) -> None:
    """A crawl writing progress every step logs it at debug; info carries only its state changes (completed)."""
    settings = make_settings(progress_interval_s=0)
    catalog = catalog_of(c={"connector": "mock", "config": {"items": 8, "step_size": 1, "step_delay_s": 0.01}})
    with capture_logs() as logs:
        async with running_app(settings, catalog):
            job_id = await add_crawl(queue, "mock", "c")
            assert await wait_state(queue, job_id, ["completed"]) == "completed"
    progress = [line for line in logs if line["event"] == "job.progress"]
    assert len(progress) >= 5, "every step's progress was written"
    assert {line["log_level"] for line in progress} == {"debug"}
    info = [line["event"] for line in logs if line["log_level"] == "info" and line.get("job_id") == job_id]
    assert info == ["job.completed"], info
