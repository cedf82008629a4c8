"""The dispatcher without a worker process: routing, outcomes, counting, and the one error classifier."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from tests.helpers import RecordingSink, crawl_job
from worker.catalog import Catalog, InstanceEntry
from worker.connectors.registry import build_registry
from worker.dispatch import Dispatcher
from worker.errors import (
    CredentialsError,
    HandOff,
    InstanceBusy,
    InvalidJobData,
    LeaseLost,
    Next,
    TransientError,
    UnconfiguredInstance,
    UnknownConnector,
    classify,
)
from worker.handler import ActiveJob
from worker.metrics import Metrics
from worker.runner import Runner
from worker.runs import RunStore
from worker.settings import Settings

MOCK = {"connector": "mock", "config": {"items": 5, "step_size": 2}}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InvalidJobData("x"), Next.FAIL),
        (CredentialsError("x"), Next.FAIL),
        (TransientError("x"), Next.RETRY),
        (OSError("disk"), Next.RETRY),
        (KeyError("bug"), Next.RETRY),
        (InstanceBusy("x", 30), Next.LATER),
        (HandOff(), Next.LATER),
        (LeaseLost("x"), Next.ABANDON),
        (asyncio.CancelledError(), Next.ABANDON),
        (SystemExit(), Next.FAIL),
    ],
)
def test_every_exception_has_one_next_step(exc: BaseException, expected: Next) -> None:
    """Permanent errors fail now, transient and unknown ones retry, RetryLater waits, lost leases abandon."""
    assert classify(exc) is expected


def _dispatcher(
    settings: Settings, client: aioredis.Redis, catalog: Catalog, registry: CollectorRegistry
) -> Dispatcher:
    connectors = build_registry()
    metrics = Metrics(
        registry,
        queue=settings.queue_name,
        connectors=connectors.names(),
        duration_buckets=settings.duration_buckets,
        wait_buckets=settings.wait_buckets,
    )
    store = RunStore(client, prefix=settings.prefix, queue=settings.queue_name, lease_ms=5000, retention_s=60)
    runner = Runner(store, RecordingSink(), metrics, max_no_progress_attempts=3, busy_delay_s=1)
    return Dispatcher(
        settings, registry=connectors, catalog=catalog, runner=runner, metrics=metrics, lookup_env=lambda _: None
    )


def _job(connector: str, connector_id: str, job_id: str = "1", data: Any = None) -> ActiveJob:
    name, payload = crawl_job(connector, connector_id)

    async def progress(_: float | dict[str, Any]) -> None:
        return None

    return ActiveJob(
        id=job_id,
        name=name,
        data=payload if data is None else data,
        attempts_made=0,
        max_attempts=3,
        timestamp_ms=0,
        delay_ms=0,
        update_progress=progress,
    )


async def test_a_job_is_counted_completed_only_once_its_completion_is_committed(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """process() returns the outcome; the completed counter moves when the adapter says Redis stored it."""
    settings = make_settings()
    registry = CollectorRegistry()
    dispatcher = _dispatcher(settings, redis_client, Catalog.from_entries({"m": InstanceEntry(**MOCK)}), registry)
    done = await dispatcher.process(_job("mock", "m"))
    assert done.result["documents"] == 5
    assert done.result["steps"] == 3
    labels = {"queue": settings.queue_name, "connector": "mock"}
    assert (registry.get_sample_value("crawl_worker_jobs_completed_total", labels) or 0) == 0
    done.committed()
    assert registry.get_sample_value("crawl_worker_jobs_completed_total", labels) == 1


REFUSALS: list[tuple[ActiveJob, type[Exception], str]] = [
    (_job("nope", "m"), UnknownConnector, "connector 'nope' is not installed"),
    (_job("nope", "elsewhere"), UnknownConnector, "no [connector_types] rule"),
    (_job("web", "m"), UnconfiguredInstance, "configured as connector 'mock', but the job says 'web'"),
    (_job("mock", "m", data=["not", "an", "object"]), InvalidJobData, "got array"),
]


@pytest.mark.parametrize(("job", "error", "words"), REFUSALS)
async def test_routing_refusals_are_permanent_and_say_why(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    job: ActiveJob,
    error: type[Exception],
    words: str,
) -> None:
    """Unknown connectors, mismatched instances and bad data raise permanent errors that name the problem."""
    dispatcher = _dispatcher(
        make_settings(), redis_client, Catalog.from_entries({"m": InstanceEntry(**MOCK)}), CollectorRegistry()
    )
    with pytest.raises(error) as raised:
        await dispatcher.process(job)
    assert words in str(raised.value)
    assert classify(raised.value) is Next.FAIL


async def test_a_connector_type_rule_serves_ids_without_an_instance(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """A '*' rule routes an uninstalled type (PipesHub's 'Confluence') to the connector it names."""
    catalog = Catalog.from_entries({}, {"*": InstanceEntry(**MOCK)})
    dispatcher = _dispatcher(make_settings(), redis_client, catalog, CollectorRegistry())
    done = await dispatcher.process(_job("Confluence", "any-id"))
    assert (done.result["connector"], done.result["connector_id"], done.result["documents"]) == (
        "confluence",
        "any-id",
        5,
    )


async def test_the_any_type_rule_does_not_swallow_a_connector_this_worker_runs(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis
) -> None:
    """A "*" rule handing types on to another connector leaves our own connectors' unknown ids unconfigured."""
    catalog = Catalog.from_entries({}, {"*": InstanceEntry(connector="pipeshub-sync")})
    dispatcher = _dispatcher(make_settings(), redis_client, catalog, CollectorRegistry())
    with pytest.raises(UnconfiguredInstance) as raised:
        await dispatcher.process(_job("mock", "x"))
    assert "connector 'mock' runs in this worker" in str(raised.value)
    assert classify(raised.value) is Next.FAIL


@pytest.mark.parametrize("connector", [" ", "\t", "a\nb", "a\u200bb", "Confluence\u2028", "\x00"])
async def test_a_connector_name_that_shows_nothing_or_hides_something_is_invalid_job_data(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, connector: str
) -> None:
    """Before it becomes an event name (``" ".resync``, ``"a\\nb.resync"``) it fails the job, no retry spent."""
    catalog = Catalog.from_entries({}, {"*": InstanceEntry(connector="pipeshub-sync")})
    dispatcher = _dispatcher(make_settings(), redis_client, catalog, CollectorRegistry())
    data = {"connector": connector, "connectorId": "c1", "orgId": "o1"}
    with pytest.raises(InvalidJobData, match="connector name"):
        await dispatcher.process(_job("x", "c1", data=data))
