"""Where a log line is the behaviour (a failure the worker survives), the line is asserted with capture_logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from tests.redis_server import free_port
from worker.logs import reap, suppressed
from worker.runs import Lease, RunStore
from worker.settings import Settings
from worker.stats import StatsRecorder


def _nobody() -> aioredis.Redis:
    """A client of a port nobody listens on, that does not retry."""
    return aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


async def test_a_failed_stats_flush_is_logged_and_its_counts_kept(make_settings: Callable[..., Settings]) -> None:
    """Redis gone: the flush loop logs stats.flush_failed and keeps the pending counts for the next flush."""
    s = make_settings()
    down = _nobody()
    stats = StatsRecorder(down, prefix=s.prefix, queue=s.queue_name, retention_days=1)
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
    assert logs == [{"event": "sink.close_failed", "log_level": "warning", "error": "[Errno 5] Input/output error",
                     "error_type": "OSError", "sink": "jsonl", "logger_name": "worker"}]
