"""Bad input never crashes the worker or loses a job: each malformed job fails at once with a clear reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.helpers import catalog_of, crawl_job, running_app, wait_state
from tests.proc import REPO
from worker.catalog import Catalog, InstanceEntry
from worker.dispatch import path_part
from worker.settings import Settings

GOOD = {"connector": "mock", "config": {"items": 3}}


def _data(**changes: Any) -> dict[str, Any]:
    _, data = crawl_job("mock", "good")
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return data


# name, data, expected fragment of failedReason
CASES: list[tuple[str, Any, str]] = [
    ("crawl-mock-good", _data(connectorId=...), "connectorId: Field required"),
    ("crawl-mock-good", _data(orgId=...), "orgId: Field required"),
    ("crawl-mock-good", _data(orgId={"id": 1}), "orgId: Input should be a valid string"),
    ("crawl-mock-good", _data(connector=""), "connector: String should have at least 1 character"),
    ("crawl-nope-good", _data(connector="nope"), "connector 'nope' is not installed (installed:"),
    ("crawl-mock-missing", _data(connectorId="missing"), "connectorId 'missing' is not configured"),
    ("crawl-mock-good", _data(metadata={"blob": "x" * 300_000}), "above job_data_max_bytes=200000"),
    ("crawl-mock-good", ["not", "an", "object"], "job data must be a JSON object, got array"),
    ("crawl-mock-good", "just a string", "job data must be a JSON object, got string"),
    ("crawl-mock-good", None, "job data must be a JSON object, got null"),
    ("crawl-mock-badcfg", _data(connectorId="badcfg"), "is not a valid mock config: items:"),
    ("crawl-mock-webcfg", _data(connectorId="webcfg"), "configured as connector 'filesystem', but the job says 'mock'"),
]


async def _add_all(queue: Queue, redis_client: Any, settings: Settings) -> tuple[list[str], str, str]:
    opts = {"attempts": 3, "backoff": {"type": "exponential", "delay": 1000}, "removeOnFail": False}
    ids = [str((await queue.add(name, data, opts)).id) for name, data, _ in CASES]
    corrupt = str((await queue.add("crawl-mock-good", _data(), opts)).id)
    await redis_client.hset(f"{settings.prefix}:{settings.queue_name}:{corrupt}", "data", "{not json at all")
    good_name, good_data = crawl_job("mock", "good")
    good = str((await queue.add(good_name, good_data, {**opts, "removeOnComplete": False})).id)
    return ids, corrupt, good


async def test_malformed_jobs_fail_fast_and_a_good_job_still_completes(
    make_settings: Callable[..., Settings], redis_client: Any, queue: Queue
) -> None:
    """Fourteen malformed jobs each fail on attempt 1 with a specific reason; the good job behind them completes."""
    settings = make_settings(job_data_max_bytes=200_000, concurrency=2)
    catalog = catalog_of(
        good=GOOD,
        badcfg={"connector": "mock", "config": {"items": "many"}},
        webcfg={"connector": "filesystem", "config": {"root": "/tmp"}},
    )
    ids, corrupt, good = await _add_all(queue, redis_client, settings)
    async with running_app(settings, catalog) as app:
        assert await wait_state(queue, good, ["completed", "failed"], timeout=30) == "completed"
        for job_id in [*ids, corrupt]:
            await wait_state(queue, job_id, ["failed"], timeout=10)
        assert app.queue_worker is not None
        assert app.queue_worker.active == 0
    for job_id, (_, _, expected) in zip(ids, CASES, strict=True):
        job = await queue.getJob(job_id)
        assert expected in job.failedReason, (job_id, job.failedReason)
        assert job.attemptsMade == 1, (job_id, job.failedReason)
        assert "<in-memory catalog>" not in job.failedReason, "no file of ours in what the producer reads"
        assert "instance(s)" not in job.failedReason
        for trace in job.stacktrace:  # module paths, not this machine's install paths
            assert str(REPO) not in trace
            assert "site-packages" not in trace
            assert 'File "/' not in trace
            assert "NoneType: None" not in trace
    raw = await redis_client.hgetall(f"{settings.prefix}:{settings.queue_name}:{corrupt}")
    assert "not valid JSON" in raw["failedReason"]
    assert raw["atm"] == "1"
    assert raw["data"] == "{not json at all", "the original payload is kept for inspection"


#: Fields the worker does not use, sent in every shape a producer might: none may fail the job.
LENIENT: list[tuple[str, Any]] = [
    ("crawl-mock-good", _data(timestamp="2026-08-22T10:00:00.000Z")),  # a JS Date, as PipesHub sends it
    ("crawl-mock-good", _data(timestamp="yesterday")),
    ("crawl-mock-good", _data(timestamp=...)),
    ("crawl-mock-good", _data(userId=...)),
    ("crawl-mock-good", _data(scheduleConfig={"isEnabled": True})),
    ("crawl-mock-good", _data(scheduleConfig={"scheduleType": "sometimes", "future": [1, 2]})),
    ("crawl-mock-good", _data(scheduleConfig={"scheduleType": "daily", "hour": 25})),
    ("crawl-mock-good", _data(scheduleConfig=None)),
    ("crawl-mock-good", _data(metadata="not an object", extra={"kept": True})),
    ("crawl-web-good", _data()),  # the name is not used: the data decides
    ("crawl-mock-good", _data(connectorId=42)),  # a number where PipesHub sends a string
]


async def test_fields_the_worker_does_not_use_never_fail_a_job(
    make_settings: Callable[..., Settings], redis_client: Any, queue: Queue
) -> None:
    """Odd timestamps, schedule configs, metadata and job names: every job completes on its first attempt."""
    settings = make_settings(concurrency=4)
    opts = {"attempts": 1, "removeOnComplete": False, "removeOnFail": False}
    catalog = Catalog.from_entries({"42": InstanceEntry(**GOOD)}, {"*": InstanceEntry(**GOOD)})
    ids = []
    for i, (name, data) in enumerate(LENIENT):
        own, job_name = data, name
        if data["connectorId"] != 42:  # one instance each: no waiting on another job's lease
            own = {**data, "connectorId": f"lenient-{i}"}
            job_name = name.replace("good", own["connectorId"])
        ids.append(str((await queue.add(job_name, own, opts)).id))
    async with running_app(settings, catalog):
        for job_id in ids:
            state = await wait_state(queue, job_id, ["completed", "failed"], timeout=20)
            assert state == "completed", (job_id, (await queue.getJob(job_id)).failedReason)
    kept = await queue.getJob(ids[8])
    assert kept.data["extra"] == {"kept": True}, "unknown keys are kept"


@pytest.mark.parametrize("value", ["../../etc", "a/b", "..", ".hidden", "x" * 300, "ok\x00", "ünï"])
def test_connector_ids_never_leave_the_data_directory(value: str, tmp_path: Path) -> None:
    """A connectorId from a catalog key becomes one directory name inside data_dir, whatever it holds."""
    part = path_part(value)
    assert "/" not in part
    assert not part.startswith(".")
    assert len(part) <= 100
    assert (tmp_path / part).resolve().parent == tmp_path.resolve()
    assert path_part("507f1f77bcf86cd799439011") == "507f1f77bcf86cd799439011", "ordinary ids stay readable"
