"""PipesHub's real producer (its scheduleJob / reconcile code path on Node bullmq 5.56.1 and 6.x) against our worker.

The oracle for repeat ticks is a Node worker of the producer's own version, run on a twin queue: the
next tick our worker creates must be the tick that worker creates (same id, name, data and options).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from tests.conftest import delete_keys
from tests.helpers import running_app, wait_for, wait_state
from tests.interop.pipeshub import PACKAGES, aproducer, delayed_ticks, job_hash, members, tick_millis
from tests.proc import Processes
from worker.catalog import Catalog, InstanceEntry
from worker.settings import Settings

pytestmark = pytest.mark.node

OWNER = "5f1e0c2b9d3a4e5f6a7b8c9d"  # a Mongo ObjectId, as PipesHub's createdBy / userId are
ORG = "6a0f1e2d3c4b5a6978877665"


def _typed(schedule: dict[str, Any]) -> dict[str, Any]:
    """A scheduleConfig as PipesHub stores it: the typed schedule plus its base fields."""
    return {"isEnabled": True, "createdBy": OWNER, "lastUpdatedBy": OWNER, **schedule}


def _scenarios() -> list[dict[str, Any]]:
    """One scheduleJob call per schedule type PipesHub has (interval comes through the reconcile path)."""
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        {
            "connector": "Drive",
            "connectorId": "c-hourly",
            "scheduleConfig": _typed(
                {"scheduleType": "hourly", "minute": 7, "interval": 2, "timezone": "Asia/Kolkata"}
            ),
        },
        {
            "connector": "SharePoint Online",
            "connectorId": "c-daily",
            "scheduleConfig": _typed(
                {"scheduleType": "daily", "hour": 3, "minute": 15, "timezone": "America/New_York"}
            ),
        },
        {
            "connector": "Confluence Data Center",
            "connectorId": "c-weekly",
            "scheduleConfig": _typed(
                {
                    "scheduleType": "weekly",
                    "daysOfWeek": [1, 3, 5],
                    "hour": 9,
                    "minute": 30,
                    "timezone": "Europe/Berlin",
                }
            ),
        },
        {
            "connector": "Jira",
            "connectorId": "c-monthly",
            "scheduleConfig": _typed({"scheduleType": "monthly", "dayOfMonth": 31, "hour": 23, "minute": 45}),
        },
        {
            "connector": "Slack",
            "connectorId": "c-custom",
            "scheduleConfig": _typed(
                {
                    "scheduleType": "custom",
                    "cronExpression": "*/20 8-18 * * 1-5",
                    "timezone": "Australia/Sydney",
                    "description": "office hours",
                }
            ),
        },
        {
            "connector": "Gmail",
            "connectorId": "c-once",
            "scheduleConfig": _typed({"scheduleType": "once", "scheduleConfig": {"scheduledTime": in_an_hour}}),
        },
    ]


def _route_all_to_mock() -> Catalog:
    """Every connector type PipesHub schedules is crawled by the mock connector (a catalog rule)."""
    return Catalog.from_entries({}, {"*": InstanceEntry(connector="mock", config={"items": 2})})


async def _reconcile(
    redis_url: str, queue: str, connector: str, connector_id: str, package: str = "bullmq5", **extra: Any
) -> dict[str, Any]:
    """PipesHub's connector-reconcile path (an ``interval`` schedule, 1 minute unless ``extra`` says otherwise)."""
    args = {"connector": connector, "connectorId": connector_id, "orgId": ORG, "ownerUserId": OWNER}
    added: dict[str, Any] = await aproducer(
        redis_url, queue, package, "reconcile", {**args, "intervalMinutes": 1, **extra}
    )
    return added


@pytest.fixture
def twin(redis_url: str, queue_name: str) -> Iterator[str]:
    """A second queue for the Node oracle worker; its keys are deleted afterwards."""
    name = f"{queue_name}-node"
    yield name
    delete_keys(redis_url, "bull", name)


async def _schedule_everything(redis_url: str, queue: str, package: str) -> list[dict[str, Any]]:
    """PipesHub's scheduleJob for every schedule type, then its reconcile path's interval job."""
    calls = [{**s, "orgId": ORG, "userId": OWNER} for s in _scenarios()]
    added: list[dict[str, Any]] = await aproducer(redis_url, queue, package, "schedule", calls)
    added.append(
        await _reconcile(
            redis_url, queue, "Notion", "c-interval", package=package, intervalMinutes=30, timezone="Asia/Tokyo"
        )
    )
    return added


def _comparable(tick: dict[str, Any]) -> dict[str, Any]:
    """A tick's hash without what depends on the moment it or its schedule was made (times, and so the id)."""
    opts = {k: v for k, v in tick["opts"].items() if k not in ("timestamp", "delay", "prevMillis", "jobId")}
    data = {k: v for k, v in tick["data"].items() if k != "timestamp"}
    return {"name": tick["name"], "data": data, "opts": opts, "rjk": tick.get("rjk")}


@pytest.mark.parametrize("package", PACKAGES)
async def test_every_schedule_type_is_accepted_and_its_next_tick_is_the_one_node_makes(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, package: str, twin: str, queue: Queue
) -> None:
    """All 7 schedule types from PipesHub's producer complete on our worker; each next tick equals a Node worker's."""
    settings = make_settings()
    queue_name = settings.queue_name
    ours = await _schedule_everything(settings.redis_url, queue_name, package)
    theirs = await _schedule_everything(settings.redis_url, twin, package)
    assert len(ours) == 7
    for name in (queue_name, twin):  # run the first ticks now (the cron ones are hours away)
        for job_id in await members(redis_client, f"bull:{name}:delayed"):
            await redis_client.zadd(f"bull:{name}:delayed", {job_id: 0})  # due: the worker promotes it
    node = asyncio.create_task(aproducer(settings.redis_url, twin, package, "work", {"count": 7, "timeoutMs": 30000}))
    async with running_app(settings, _route_all_to_mock()):
        for added in ours:
            assert await wait_state(queue, added["jobId"], ["completed", "failed"], timeout=30) == "completed"
    assert len(await node) == 7
    for added in ours:
        done = await queue.getJob(added["jobId"])
        assert done.returnvalue["documents"] == 2, added
        assert done.data["orgId"] == ORG
        assert done.data["timestamp"].endswith("Z"), "the producer's Date arrives as an ISO string"
    mine = sorted(await delayed_ticks(redis_client, queue_name))
    node_ticks = sorted(await delayed_ticks(redis_client, twin))
    assert len(mine) == len(node_ticks) == 6, (mine, node_ticks)  # one next tick per repeating schedule
    for added_ours, added_theirs in zip(ours, theirs, strict=True):
        if added_ours["repeat"] is None:
            continue
        key_ours = added_ours["jobId"].rsplit(":", 1)[0]
        key_theirs = added_theirs["jobId"].rsplit(":", 1)[0]
        (next_ours,) = [t for t in mine if t.startswith(key_ours + ":")]
        (next_theirs,) = [t for t in node_ticks if t.startswith(key_theirs + ":")]
        step_ours = tick_millis(next_ours) - tick_millis(added_ours["jobId"])
        step_theirs = tick_millis(next_theirs) - tick_millis(added_theirs["jobId"])
        assert step_ours == step_theirs > 0, (added_ours, next_ours, next_theirs)
        tick_ours = await job_hash(redis_client, queue_name, next_ours)
        tick_theirs = await job_hash(redis_client, twin, next_theirs)
        first = await job_hash(redis_client, queue_name, added_ours["jobId"])
        assert tick_ours["data"] == first["data"], "the next tick carries the producer's data"
        assert _comparable(tick_ours) == _comparable(tick_theirs), next_ours
        assert tick_ours["opts"]["jobId"] == next_ours
        if package == "bullmq5":  # 5.x keeps the tick time there; 6.x's script decides it (and ignores it)
            assert tick_ours["opts"]["prevMillis"] == tick_millis(next_ours)
        made_at = tick_ours["opts"]["timestamp"]
        assert abs(made_at + int(tick_ours["delay"]) - tick_millis(next_ours)) < 100, "due at its tick time"


@pytest.mark.parametrize("package", PACKAGES)
async def test_a_repeat_every_1500_ms_runs_consecutive_ticks_with_the_producers_data(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, redis_url: str, package: str, queue: Queue
) -> None:
    """PipesHub's reconcile path with a 1.5 s interval: 3 consecutive ticks complete, each with the producer's data."""
    settings = make_settings(repeat_min_interval_s=0)  # a 1.5 s schedule, as sent
    added = await _reconcile(redis_url, settings.queue_name, "Confluence", "c-fast", package=package, everyMs=1500)
    first = await job_hash(redis_client, settings.queue_name, added["jobId"])
    key = added["jobId"].rsplit(":", 1)[0]

    async def completed_ticks() -> list[str]:
        done = await members(redis_client, f"bull:{settings.queue_name}:completed")
        return sorted((t for t in done if t.startswith(key + ":")), key=tick_millis)

    async with running_app(settings, _route_all_to_mock()):
        ticks = await wait_for(lambda: _at_least(completed_ticks, 3), timeout=20, what="3 completed ticks")
    assert [tick_millis(t) - tick_millis(ticks[0]) for t in ticks[:3]] == [0, 1500, 3000], "consecutive slots"
    for tick in ticks:
        stored = await job_hash(redis_client, settings.queue_name, tick)
        assert stored["data"] == first["data"], tick
        assert stored["data"]["scheduleConfig"]["scheduleType"] == "interval"
        assert json.loads(stored["returnvalue"])["documents"] == 2
    assert len(await delayed_ticks(redis_client, settings.queue_name, key + ":")) == 1


async def _at_least(check: Callable[[], Any], count: int) -> Any:
    found = await check()
    return found if len(found) >= count else None


async def _one_next_tick(client: aioredis.Redis, queue: str, key: str, current: str) -> str:
    """The single delayed next tick of schedule ``key`` (besides ``current``, which may be waiting on its backoff)."""
    ticks = [t for t in await delayed_ticks(client, queue, key + ":") if t != current]
    assert len(ticks) == 1, ticks
    return ticks[0]


@pytest.mark.parametrize(
    ("case", "config"),
    [
        ("fails", {"items": 2, "invalid_credentials": True}),
        ("retried", {"items": 2, "transient_failures": 1}),
    ],
)
async def test_a_failed_or_retried_tick_leaves_exactly_one_next_tick(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    case: str,
    config: dict[str, Any],
    queue: Queue,
) -> None:
    """A tick that fails for good, and one retried after a transient failure: one next tick, one interval later."""
    settings = make_settings()
    added = await _reconcile(settings.redis_url, settings.queue_name, "Box", f"c-{case}")
    tick, key = added["jobId"], added["jobId"].rsplit(":", 1)[0]
    await redis_client.zadd(f"bull:{settings.queue_name}:delayed", {tick: 0})  # due now (the producer's backoff stays)
    catalog = Catalog.from_entries({}, {"*": InstanceEntry(connector="mock", config=config)})
    async with running_app(settings, catalog):
        final = "failed" if case == "fails" else "completed"
        assert await wait_state(queue, tick, [final], timeout=20) == final
        job = await queue.getJob(tick)
        assert job.attemptsMade == (1 if case == "fails" else 2)
    following = await _one_next_tick(redis_client, settings.queue_name, key, tick)
    assert tick_millis(following) == tick_millis(tick) + 60_000
    assert (await job_hash(redis_client, settings.queue_name, following))["data"]["connector"] == "Box"


async def test_two_workers_racing_for_ticks_create_each_next_tick_once(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, redis_url: str
) -> None:
    """Two worker processes on one schedule: every tick runs once and each has exactly one successor."""
    settings = make_settings(concurrency=3, repeat_min_interval_s=0)  # a 1 s schedule, as sent
    added = await _reconcile(redis_url, settings.queue_name, "Dropbox", "c-race", everyMs=1000)
    key = added["jobId"].rsplit(":", 1)[0]
    other = make_settings(concurrency=3, repeat_min_interval_s=0)
    async with running_app(settings, _route_all_to_mock()), running_app(other, _route_all_to_mock()):
        await wait_for(
            lambda: _at_least(lambda: members(redis_client, f"bull:{settings.queue_name}:completed"), 4),
            timeout=20,
            what="4 completed ticks",
        )
    done = sorted(await members(redis_client, f"bull:{settings.queue_name}:completed"), key=tick_millis)
    slots = [tick_millis(t) for t in done]
    assert slots == sorted(set(slots)), "no tick ran twice"
    assert all(b - a == 1000 for a, b in itertools.pairwise(slots)), slots
    assert len(await delayed_ticks(redis_client, settings.queue_name, key + ":")) == 1


def _rule_catalog(path: Path, config: dict[str, Any]) -> Path:
    """A catalog file that routes every connector type to the mock connector with ``config``."""
    items = ", ".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
    path.write_text(f'[connector_types."*"]\nconnector = "mock"\nconfig = {{ {items} }}\n')
    return path


@pytest.mark.slow
async def test_a_tick_whose_worker_is_killed_mid_run_leaves_exactly_one_next_tick(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    tmp_path: Path,
    queue: Queue,
    processes: Processes,
) -> None:
    """kill -9 during a tick: one next tick exists before and after the tick is recovered and completed."""
    settings = make_settings()
    added = await _reconcile(settings.redis_url, settings.queue_name, "OneDrive", "c-killed")
    tick, key = added["jobId"], added["jobId"].rsplit(":", 1)[0]
    await redis_client.zadd(f"bull:{settings.queue_name}:delayed", {tick: 0})
    catalog = _rule_catalog(tmp_path / "catalog.toml", {"items": 6, "step_size": 1, "kill_at_item": 3})
    common = {
        "redis_url": settings.redis_url,
        "queue_name": settings.queue_name,
        "catalog_file": catalog,
        "data_dir": tmp_path / "data",
        "lock_duration_ms": 5000,
        "stalled_interval_ms": 1000,
    }
    first = processes.worker(tmp_path / "first.log", worker_name="first", **common)
    assert await asyncio.to_thread(first.wait, 30) == -9, "the mock connector kills its worker at item 3"
    following = await _one_next_tick(redis_client, settings.queue_name, key, tick)
    assert tick_millis(following) == tick_millis(tick) + 60_000
    _rule_catalog(catalog, {"items": 6, "step_size": 1})
    processes.worker(tmp_path / "second.log", worker_name="second", **common)
    assert await wait_state(queue, tick, ["completed"], timeout=30) == "completed"
    assert await _one_next_tick(redis_client, settings.queue_name, key, tick) == following
    assert (await job_hash(redis_client, settings.queue_name, tick)).get("nrjid") == following


async def test_limit_end_date_and_immediately_are_honoured(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, redis_url: str, queue: Queue
) -> None:
    """Node 5.56 repeat options: limit 3 runs 3 ticks, endDate stops the schedule, immediately runs the first now."""
    settings = make_settings(repeat_min_interval_s=0)  # 700 ms schedules, as sent
    queue_name = settings.queue_name
    data = {"connector": "Jira", "orgId": ORG, "userId": OWNER, "timestamp": "2026-08-22T10:00:00.000Z"}
    end = int(datetime.now(UTC).timestamp() * 1000) + 2500
    calls = {
        "limited": {"every": 700, "limit": 3},
        "ending": {"every": 700, "endDate": end},
        "now": {"pattern": "0 0 1 1 *", "tz": "Europe/Paris", "immediately": True},
    }
    added = {}
    for key, repeat in calls.items():
        job = {"name": f"crawl-jira-{key}", "data": {**data, "connectorId": key}, "opts": {"repeat": repeat}}
        added[key] = await aproducer(redis_url, queue_name, "bullmq5", "add", job)
    assert (await redis_client.hget(f"bull:{queue_name}:{added['now']['jobId']}", "delay")) == "0", "immediately"

    async def completed(key: str) -> list[str]:
        done = await members(redis_client, f"bull:{queue_name}:completed")
        return [t for t in done if t.startswith(added[key]["jobId"].rsplit(":", 1)[0] + ":")]

    async with running_app(settings, _route_all_to_mock()):
        await wait_for(lambda: _at_least(lambda: completed("limited"), 3), timeout=15, what="3 limited ticks")
        await wait_for(lambda: _at_least(lambda: completed("now"), 1), timeout=15, what="the immediate tick")
        await asyncio.sleep(max(0.0, end / 1000 - datetime.now(UTC).timestamp()) + 1.5)
    assert len(await completed("limited")) == 3
    key_limited = added["limited"]["jobId"].rsplit(":", 1)[0]
    assert await delayed_ticks(redis_client, queue_name, key_limited + ":") == [], "limit reached: no next tick"
    key_ending = added["ending"]["jobId"].rsplit(":", 1)[0]
    ran = [tick_millis(t) for t in await completed("ending")]
    assert len(ran) >= 2
    assert await delayed_ticks(redis_client, queue_name, key_ending + ":") == [], "past endDate: no next tick"
    (next_year,) = await delayed_ticks(redis_client, queue_name, added["now"]["jobId"].rsplit(":", 1)[0] + ":")
    paris_new_year = datetime(datetime.now(UTC).year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000 - 3_600_000
    assert tick_millis(next_year) == int(paris_new_year), "midnight, 1 January, in Paris"
