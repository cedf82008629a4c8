"""The job API against non-finite numbers (``inf``, ``nan``, ``1e999``) in any stored job field."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pytest
import redis.asyncio as aioredis
from bullmq import Queue, Worker

from tests.api.conftest import ADMIN, READ, auth
from tests.helpers import add_crawl, fail_jobs
from tests.ui.conftest import sign_in

#: Stored fields that made the listing, the job, its logs, its removal, its retry and exports answer 500.
NON_FINITE: dict[str, dict[str, str]] = {
    "timestamp-inf": {"timestamp": "inf"},
    "timestamp-nan": {"timestamp": "nan"},
    "timestamp-1e999": {"timestamp": "1e999"},
    "processed-inf": {"processedOn": "-inf", "finishedOn": "Infinity"},
    "delay-inf": {"delay": "inf"},
    "attempts-inf": {"atm": "inf", "attemptsMade": "1e999"},
    "progress-inf": {"progress": '{"percentage": Infinity, "current": NaN, "total": 1e999}'},
    "progress-number": {"progress": "1e999"},
    "data-nan": {"data": '{"connector":"mock","connectorId":"n","orgId":"o","x":NaN,"y":1e999,"z":-Infinity}'},
}


@pytest.fixture
async def non_finite(queue: Queue, raw_redis: aioredis.Redis) -> dict[str, str]:
    """One waiting job per case in :data:`NON_FINITE`, plus a good one; ids by case."""
    ids = {}
    for case, fields in NON_FINITE.items():
        ids[case] = await add_crawl(queue, "mock", case)
        await raw_redis.hset(f"bull:{queue.name}:{ids[case]}", mapping=fields)  # type: ignore[arg-type]
    ids["good"] = await add_crawl(queue, "mock", "good")
    return ids


async def test_non_finite_fields_never_make_reads_answer_500(
    http: httpx.AsyncClient, non_finite: dict[str, str]
) -> None:
    """Listing (plain and filtered), each job, its logs and both exports answer 200 and show every job."""
    filters: list[dict[str, str | int]] = [
        {"limit": 100},
        {"limit": 100, "connector": "mock"},
        {"createdAfter": "2000-01-01T00:00:00Z"},
    ]
    for params in filters:
        listing = await http.get("/v1/jobs", params=params, headers=auth(READ))
        assert listing.status_code == 200, (params, listing.text[:300])
        assert {job["id"] for job in listing.json()["jobs"]} <= set(non_finite.values())
    plain = (await http.get("/v1/jobs", params={"limit": 100}, headers=auth(READ))).json()
    assert {job["id"] for job in plain["jobs"]} == set(non_finite.values())
    for case, job_id in non_finite.items():
        one = await http.get(f"/v1/jobs/{job_id}", headers=auth(READ))
        assert one.status_code == 200, (case, one.text[:300])
        json.loads(one.text)  # strict JSON: no Infinity / NaN tokens
        logs = await http.get(f"/v1/jobs/{job_id}/logs", headers=auth(READ))
        assert logs.status_code == 200, (case, logs.text[:300])
    inf = (await http.get(f"/v1/jobs/{non_finite['timestamp-inf']}", headers=auth(READ))).json()
    assert inf["timestamp"] == 0, "an unreadable time reads as unknown"
    exported = await http.get("/v1/jobs/export", params={"fmt": "json"}, headers=auth(READ))
    assert "export incomplete" not in exported.text
    assert {job["id"] for job in json.loads(exported.text)} == set(non_finite.values())
    text = (await http.get("/v1/jobs/export", params={"fmt": "csv"}, headers=auth(READ))).text
    assert "EXPORT INCOMPLETE" not in text
    assert len(list(csv.reader(io.StringIO(text)))) == len(non_finite) + 1


async def test_a_job_with_non_finite_fields_can_be_removed_and_retried(
    http: httpx.AsyncClient, queue: Queue, hand_worker: Worker, raw_redis: aioredis.Redis
) -> None:
    """Removal removes such a job; retry of a failed one answers (retried or refused), never 500."""
    waiting = await add_crawl(queue, "mock", "rm")
    await raw_redis.hset(f"bull:{queue.name}:{waiting}", "timestamp", "inf")
    removed = await http.delete(f"/v1/jobs/{waiting}", headers=auth(ADMIN))
    assert removed.status_code == 200, removed.text
    assert not await raw_redis.exists(f"bull:{queue.name}:{waiting}")
    (failed,) = await fail_jobs(queue, hand_worker, [("mock", "rt")])
    await raw_redis.hset(f"bull:{queue.name}:{failed}", mapping={"timestamp": "inf", "finishedOn": "nan"})
    await sign_in(http, READ)
    for page in (f"/ui/jobs/{failed}", "/ui/jobs", "/ui/failures", "/ui/instances"):
        shown = await http.get(page)
        assert shown.status_code == 200, (page, shown.text[:300])
    retried = await http.post(f"/v1/jobs/{failed}/retry", headers=auth(ADMIN))
    assert retried.status_code in (200, 409), retried.text
    bulk = await http.post("/v1/jobs/retry-failed", headers=auth(ADMIN))
    assert bulk.status_code == 200, bulk.text
    gone = await http.delete(f"/v1/jobs/{failed}", headers=auth(ADMIN))
    assert gone.status_code == 200, gone.text
