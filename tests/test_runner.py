"""The runner's resume decisions, without a worker process: resume, start fresh, give up after no progress."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis

from tests.helpers import RecordingSink
from worker.connections import AutoPipeline
from worker.connectors.base import Checkpoint, Connector, ConnectorConfig, ConnectorContext, StepResult
from worker.documents import Document, content_hash, stable_id
from worker.errors import NoProgressError, TransientError
from worker.progress import ProgressReporter
from worker.runner import CrawlRequest, Runner, lease_token
from worker.runs import RunStore
from worker.settings import Settings


class CountConfig(ConnectorConfig):
    """Emit ``items`` documents, one a step; fail on reaching ``fail_at`` while ``failures`` last."""

    items: int = 4
    fail_at: int = -1


class CountCheckpoint(Checkpoint):
    """The next item."""

    next_item: int = 0


class CountConnector(Connector[CountConfig, CountCheckpoint]):
    """A connector whose failures the test scripts through a shared counter."""

    config_model = CountConfig
    checkpoint_model = CountCheckpoint
    failures: ClassVar[list[int]] = []

    async def run_step(self, checkpoint: CountCheckpoint) -> StepResult[CountCheckpoint]:
        """One document a step; raise TransientError at ``fail_at`` while failures are scripted."""
        i = checkpoint.next_item
        if i == self.config.fail_at and self.failures:
            self.failures.pop()
            raise TransientError(f"scripted failure at item {i}")
        text = f"item {i}"
        doc = Document(
            id=stable_id(f"count://{i}"),
            source=f"count://{i}",
            mime_type="text/plain",
            title=text,
            text=text,
            content_hash=content_hash(text.encode()),
            size=len(text),
        )
        following = CountCheckpoint(next_item=i + 1, has_more=i + 1 < self.config.items)
        return StepResult(documents=[doc], checkpoint=following, processed=1, total=self.config.items)


async def _progress(_: float | dict[str, Any]) -> None:
    return None


async def _attempt(
    runner: Runner, client: aioredis.Redis, config: CountConfig, attempt: int, *, config_hash: str = "h1"
) -> Any:
    """One attempt of job 'j' on instance org:count:c; its final write sent as the adapter would."""
    request = CrawlRequest(
        org_id="org",
        connector="count",
        connector_id="c",
        config_hash=config_hash,
        job_id="j",
        attempt=attempt,
        lease_token=lease_token("j", f"holder-{attempt}"),
    )
    connector = CountConnector(config, ConnectorContext(connector_id="c", org_id="org", data_dir=Path("/nonexistent")))
    result = await runner.run(request, connector, ProgressReporter(_progress, interval_s=0), asyncio.Event())
    await AutoPipeline(client).execute([result.final_save])
    return result.outcome


@pytest.fixture
def runner(make_settings: Callable[..., Settings], redis_client: aioredis.Redis) -> Runner:
    """A runner on a real run store, a recording sink, at most 2 attempts without progress."""
    s = make_settings()
    store = RunStore(redis_client, prefix=s.prefix, queue=s.queue_name, lease_ms=5000, retention_s=60)
    return Runner(store, RecordingSink(), None, max_no_progress_attempts=2, busy_delay_s=1)


async def test_an_interrupted_run_resumes_where_it_stopped(runner: Runner, redis_client: aioredis.Redis) -> None:
    """Failing at item 2 then retrying: the retry resumes (items 2 and 3 only), the next job starts fresh."""
    CountConnector.failures[:] = [1]
    with pytest.raises(TransientError):
        await _attempt(runner, redis_client, CountConfig(fail_at=2), attempt=1)
    resumed = await _attempt(runner, redis_client, CountConfig(fail_at=2), attempt=2)
    assert (resumed.resumed, resumed.steps, resumed.documents) == (True, 4, 4)
    sink = runner.sink
    assert isinstance(sink, RecordingSink)
    assert sink.ids().count(stable_id("count://2")) == 1, "the failed step was never committed, so never replayed twice"
    fresh = await _attempt(runner, redis_client, CountConfig(fail_at=2), attempt=1)
    assert (fresh.resumed, fresh.steps) == (False, 4), "a completed run is not resumed: the next one starts over"


async def test_a_changed_configuration_starts_fresh(runner: Runner, redis_client: aioredis.Redis) -> None:
    """An interrupted run whose instance config changed since is not resumed."""
    CountConnector.failures[:] = [1]
    with pytest.raises(TransientError):
        await _attempt(runner, redis_client, CountConfig(fail_at=1), attempt=1)
    again = await _attempt(runner, redis_client, CountConfig(fail_at=1), attempt=2, config_hash="h2")
    assert (again.resumed, again.steps) == (False, 4)


async def test_attempts_without_progress_end_the_run_loudly(runner: Runner, redis_client: aioredis.Redis) -> None:
    """The same step failing on every resumed attempt: after max_no_progress_attempts the run gives up."""
    CountConnector.failures[:] = [1, 1, 1, 1]
    for attempt in (1, 2, 3):  # the first commits item 0; the next two resume and commit nothing
        with pytest.raises(TransientError):
            await _attempt(runner, redis_client, CountConfig(fail_at=1), attempt=attempt)
    with pytest.raises(NoProgressError, match="made no progress in 2 consecutive attempts"):
        await _attempt(runner, redis_client, CountConfig(fail_at=1), attempt=4)
