"""Listing: every filter, pagination with totals, and streamed CSV / JSON export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from bullmq import Queue

from tests.api.conftest import READ, Placed, auth
from tests.helpers import add_crawl
from worker.jobs import JobFilter
from worker.models import CrawlingJobData, State
from worker.operations import Operations
from worker.queue.producer import producer_job_options


async def test_filter_by_each_state(placed: Placed, ops: Operations) -> None:
    """state=X returns exactly the jobs in X (prioritized counted as waiting)."""
    expect = {
        State.ACTIVE: {placed.ids["active"]},
        State.STUCK: {placed.ids["stuck"]},
        State.COMPLETED: {placed.ids["completed"]},
        State.FAILED: {placed.ids["failed"]},
        State.WAITING: {placed.ids["waiting"], placed.ids["prioritized"]},
        State.DELAYED: {placed.ids["delayed"]},
        State.PAUSED: set(),
    }
    for state, ids in expect.items():
        page = await ops.page(JobFilter(state=state), limit=50, offset=0)
        assert {j.id for j in page.jobs} == ids, state
        assert page.total == len(ids)
        assert all(j.state == state for j in page.jobs)
    everything = await ops.page(JobFilter(), limit=50, offset=0)
    assert everything.total == 7
    assert {j.id for j in everything.jobs} == set(placed.ids.values())


async def test_filter_by_connector_connector_id_org_and_created_time(queue: Queue, ops: Operations) -> None:
    """connector, connectorId, orgId, createdAfter and createdBefore each narrow the result, combined with AND."""
    now = datetime.now(UTC)
    ids = {}
    for connector, cid, org, age_h in [
        ("web", "w1", "org-a", 0),
        ("web", "w2", "org-b", 30),
        ("Google Drive", "g1", "org-a", 50),
    ]:
        name, data = CrawlingJobData.for_instance(connector, cid, org_id=org, user_id="u").to_job()
        job = await queue.add(name, data, producer_job_options())
        ids[cid] = str(job.id)
        ts = int((now - timedelta(hours=age_h)).timestamp() * 1000)
        await ops.client.hset(f"bull:{ops.keys.queue}:{job.id}", "timestamp", ts)

    async def found(**kw: object) -> set[str]:
        page = await ops.page(JobFilter(**kw), limit=50, offset=0)
        assert page.total == len(page.jobs)
        return {j.id for j in page.jobs if j.id}

    assert await found(connector="web") == {ids["w1"], ids["w2"]}
    assert await found(connector="google drive") == {ids["g1"]}
    assert await found(connector_id="w2") == {ids["w2"]}
    assert await found(org_id="org-a") == {ids["w1"], ids["g1"]}
    assert await found(created_after=now - timedelta(hours=40)) == {ids["w1"], ids["w2"]}
    assert await found(created_before=now - timedelta(hours=10)) == {ids["w2"], ids["g1"]}
    assert await found(connector="web", org_id="org-a") == {ids["w1"]}
    assert await found(state=State.FAILED, connector="web") == set()


async def test_pagination_limit_offset_total(queue: Queue, ops: Operations) -> None:
    """Pages do not overlap, cover every job once, and report the same total (plain and filtered paths)."""
    added = {await add_crawl(queue, "web", f"c{i}", priority=0) for i in range(23)}
    added |= {await add_crawl(queue, "web", f"d{i}", delay=600_000) for i in range(7)}
    for flt in (JobFilter(), JobFilter(connector="web")):
        seen: list[str] = []
        for offset in range(0, 40, 10):
            page = await ops.page(flt, limit=10, offset=offset)
            assert page.total == 30
            seen += [j.id for j in page.jobs if j.id]
        assert len(seen) == 30
        assert set(seen) == added


async def test_http_list_with_filters_and_bad_input(placed: Placed, http: httpx.AsyncClient) -> None:
    """GET /v1/jobs takes camelCase filters; bad values answer 422 with a JSON message."""
    resp = await http.get("/v1/jobs", params={"connector": "web", "limit": 1}, headers=auth(READ))
    body = resp.json()
    assert resp.status_code == 200
    assert body["total"] == 2
    assert len(body["jobs"]) == 1
    assert body["jobs"][0]["data"]["connector"] == "web"
    resp = await http.get("/v1/jobs", params={"connectorId": "f1", "state": "failed"}, headers=auth(READ))
    assert [j["id"] for j in resp.json()["jobs"]] == [placed.ids["failed"]]
    for bad in ({"state": "sleeping"}, {"limit": 0}, {"createdAfter": "yesterday"}, {"offset": -1}):
        resp = await http.get("/v1/jobs", params=bad, headers=auth(READ))
        assert resp.status_code == 422, bad
        assert resp.json()["error"]["message"]


async def test_export_csv_and_json_stream_every_match(placed: Placed, http: httpx.AsyncClient) -> None:
    """Export streams all matching jobs: CSV with a header row, JSON as an array of JobStatus."""
    async with http.stream("GET", "/v1/jobs/export", params={"fmt": "csv"}, headers=auth(READ)) as resp:
        assert resp.headers["content-type"].startswith("text/csv")
        text = "".join([chunk async for chunk in resp.aiter_text()])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["id"] for r in rows} == set(placed.ids.values())
    failed = next(r for r in rows if r["id"] == placed.ids["failed"])
    assert failed["state"] == "failed"
    assert failed["failedReason"] == "boom: source unreachable"
    assert failed["connectorId"] == "f1"
    resp = await http.get("/v1/jobs/export", params={"fmt": "json", "connector": "web"}, headers=auth(READ))
    jobs = json.loads(resp.text)
    assert sorted(j["id"] for j in jobs) == sorted([placed.ids["prioritized"], placed.ids["delayed"]])
    assert all("attemptsMade" in j for j in jobs)


def _loads(raw: str) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


TRICKY_CONNECTORS = [
    "web", "Web", "  WEB ", "google drive", "Google\tDrive", "google\x1cdrive", "google\u00a0drive", "Ünicode",
    "ünicode", "K", "\u212a",
]  # fmt: skip


async def test_the_scan_in_redis_finds_exactly_what_the_python_rule_accepts(ops: Operations) -> None:
    """Filters run in Redis (Lua) give the same jobs as JobFilter.matches on every job, tricky data included."""
    raw_data: list[Any] = [
        {"connector": name, "connectorId": f"c{i}", "orgId": "Org-1" if i % 2 else "org-1", "note": "Crème brûlée"}
        for i, name in enumerate(TRICKY_CONNECTORS)
    ]
    raw_data += [{"connector": 5, "connectorId": 7}, {"connectorId": None}, [1, 2], {"deep": "[" * 3}]
    ids = []
    for i, data in enumerate(raw_data):
        job_id = f"t{i}"
        await ops.client.hset(
            ops.keys.job(job_id), mapping={"data": json.dumps(data, ensure_ascii=i % 2 == 0), "timestamp": 1000 + i}
        )
        await ops.client.lpush(ops.keys.key("wait"), job_id)
        ids.append(job_id)
    await ops.client.hset(ops.keys.job("bad-json"), mapping={"data": "{not json", "timestamp": 5})
    await ops.client.lpush(ops.keys.key("wait"), "bad-json")
    filters = [JobFilter(connector=name) for name in [*TRICKY_CONNECTORS, "5", "google-drive", "k"]]
    filters += [JobFilter(connector_id=cid) for cid in ("c1", "7", "C1")]
    filters += [JobFilter(org_id=org) for org in ("org-1", "Org-1")]
    filters += [JobFilter(text=text) for text in ("crème", "CRÈME", "drive", "not json", '"c1"', "ünicode")]
    window = {"created_after": datetime.fromtimestamp(1.005, UTC), "created_before": datetime.fromtimestamp(1.008, UTC)}
    filters.append(JobFilter(**window))
    stored: dict[str, Any] = {  # [data, timestamp] as decoded text
        job_id: await ops.client.hmget(ops.keys.job(job_id), ["data", "timestamp"]) for job_id in [*ids, "bad-json"]
    }
    for flt in filters:
        page = await ops.page(flt, limit=100, offset=0)
        expected = {job_id for job_id, (raw, ts) in stored.items() if flt.matches(_loads(raw), int(ts), raw)}
        assert {job.id for job in page.jobs} == expected, flt
        assert page.total == len(expected), flt
