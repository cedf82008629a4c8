"""The job API against malformed jobs, queue keys posing as job ids, formula cells and unauthenticated bodies."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from bullmq import Queue, Worker
from redis.typing import EncodableT, FieldT

from tests.api.conftest import ADMIN, READ, auth
from tests.helpers import add_crawl, fail_jobs
from worker import jobs
from worker.models import JobStatus

#: Stored fields that used to make listings, single reads and exports answer 500.
BROKEN: dict[str, dict[FieldT, EncodableT]] = {
    "utf8-data": {"data": b'{"connector":"mock","connectorId":"u","orgId":"o","x":"\xff"}'},
    "deep-data": {"data": "[" * 100_000 + "]" * 100_000},
    "utf8-name": {"name": b"crawl-\xfe\xff"},
    "bad-progress": {"progress": "{half"},
    "bad-timestamp": {"timestamp": "yesterday"},
}


@pytest.fixture
async def broken(queue: Queue, raw_redis: aioredis.Redis) -> dict[str, str]:
    """One job per corruption in :data:`BROKEN`, plus a good one; ids by case."""
    ids = {}
    for case, fields in BROKEN.items():
        ids[case] = await add_crawl(queue, "mock", case)
        await raw_redis.hset(f"bull:{queue.name}:{ids[case]}", mapping=fields)
    ids["good"] = await add_crawl(queue, "mock", "good")
    return ids


async def test_malformed_jobs_never_make_reads_answer_500(http: httpx.AsyncClient, broken: dict[str, str]) -> None:
    """Listing, each single read and both exports answer 200 and account for every job."""
    listing = await http.get("/v1/jobs", params={"limit": 100}, headers=auth(READ))
    assert listing.status_code == 200, listing.text
    assert {job["id"] for job in listing.json()["jobs"]} == set(broken.values())
    for case, job_id in broken.items():
        one = await http.get(f"/v1/jobs/{job_id}", headers=auth(READ))
        assert one.status_code == 200, (case, one.text[:300])
    deep = (await http.get(f"/v1/jobs/{broken['deep-data']}", headers=auth(READ))).json()
    assert deep["data"]["unreadable"] == "nested too deeply to read"
    assert len(deep["data"]["preview"]) <= 2000
    utf8 = (await http.get(f"/v1/jobs/{broken['utf8-data']}", headers=auth(READ))).json()
    assert utf8["data"]["x"] == "\ufffd", "bytes that are not UTF-8 show as U+FFFD"
    exported = await http.get("/v1/jobs/export", params={"fmt": "json"}, headers=auth(READ))
    assert {job["id"] for job in json.loads(exported.text)} == set(broken.values())
    rows = list(
        csv.reader(io.StringIO((await http.get("/v1/jobs/export", params={"fmt": "csv"}, headers=auth(READ))).text))
    )
    assert len(rows) == len(broken) + 1


async def test_csv_export_does_not_write_formulas(http: httpx.AsyncClient, queue: Queue) -> None:
    """Cells starting with = + - @ (CSV injection) are written as text, with a leading apostrophe."""
    for payload in ("=cmd|' /C calc'!A0", '=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"):
        await queue.add("crawl-x", {"connector": payload, "connectorId": "c", "orgId": "o"}, {})
    text = (await http.get("/v1/jobs/export", params={"fmt": "csv"}, headers=auth(READ))).text
    cells = [row[3] for row in list(csv.reader(io.StringIO(text)))[1:]]
    assert sorted(cells) == sorted(["'=cmd|' /C calc'!A0", '\'=HYPERLINK("http://x")', "'+1+1", "'-2+3", "'@SUM(A1)"])


async def test_a_broken_export_says_so_in_its_body(
    http: httpx.AsyncClient, broken: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the headers went out ends the JSON array with an error entry and the CSV with a marker."""
    real = jobs.iter_statuses

    async def failing(*args: Any, **kwargs: Any) -> AsyncIterator[JobStatus]:
        async for status in real(*args, **kwargs):
            yield status
            raise ConnectionError("redis went away")

    monkeypatch.setattr(jobs, "iter_statuses", failing)
    body = json.loads((await http.get("/v1/jobs/export", params={"fmt": "json"}, headers=auth(READ))).text)
    assert body[-1] == {"error": {"status": 500, "message": "export incomplete: ConnectionError"}}
    assert len(body) == 2
    text = (await http.get("/v1/jobs/export", params={"fmt": "csv"}, headers=auth(READ))).text
    assert text.rstrip().endswith("# EXPORT INCOMPLETE: ConnectionError; the rows above are not all matching jobs")
    assert broken


@pytest.mark.parametrize("key", ["meta", "wait", "id", "events", "active", "1:logs", "1:lock"])
async def test_the_queues_own_keys_are_not_jobs(http: httpx.AsyncClient, queue: Queue, key: str) -> None:
    """GET and DELETE of a queue key (meta, wait, ...) answer 404; DELETE /v1/jobs/meta leaves a paused queue paused."""
    await add_crawl(queue, "mock", "m")
    await queue.pause()
    assert (await http.get(f"/v1/jobs/{key}", headers=auth(READ))).status_code == 404
    assert (await http.delete(f"/v1/jobs/{key}", headers=auth(ADMIN))).status_code == 404
    assert (await http.post(f"/v1/jobs/{key}/retry", headers=auth(ADMIN))).status_code == 404
    assert await queue.isPaused()


async def _raw_request(port: int, head: str) -> bytes:
    """Send only the request head (the promised body never comes); return the status line, or b"" on timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readline(), timeout=5)
        except TimeoutError:
            return b""
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("token", "length", "status"),
    [
        ("", 100_000_000, b"401"),
        ("wrong-token", 100_000_000, b"401"),
        (ADMIN, 100_000_000, b"413"),
        ("wrong-token", 10, b"401"),
    ],
)
async def test_a_body_is_not_read_before_the_token_and_size_are_checked(
    http: httpx.AsyncClient, token: str, length: int, status: bytes
) -> None:
    """A write with a bad token, or a 100 MB body, is answered at once: the server never waits for the body."""
    port = http.base_url.port
    assert port is not None
    head = (
        f"PUT /v1/schedules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n"
    )
    line = await _raw_request(port, head)
    assert line.split(b" ")[1:2] == [status], line


async def test_oversized_fields_are_read_as_heads(
    http: httpx.AsyncClient, queue: Queue, raw_redis: aioredis.Redis
) -> None:
    """A 64 MB progress, 2 MB data and failedReason: the job, the listing and the export answer with heads only."""
    job_id = await add_crawl(queue, "mock", "huge")
    fields: dict[FieldT, EncodableT] = {
        "progress": b"[" + b"0," * (32 << 20) + b"0]",
        "data": b'{"x":"' + b"y" * (2 << 20) + b'"}',
        "failedReason": "z" * (2 << 20),
    }
    await raw_redis.hset(f"bull:{queue.name}:{job_id}", mapping=fields)
    one = await http.get(f"/v1/jobs/{job_id}", headers=auth(READ))
    assert one.status_code == 200, one.text[:300]
    assert len(one.content) < 10_000, "heads only"
    job = one.json()
    assert job["progress"] is None
    assert job["data"]["unreadable"] == f"{(2 << 20) + 8} bytes, too large to read"
    assert job["data"]["preview"].startswith('{"x":"yyy')
    assert job["failedReason"].endswith(f"... ({2 << 20} bytes)")
    for path, params in (("/v1/jobs", {}), ("/v1/jobs", {"connector": "mock"}), ("/v1/jobs/export", {})):
        answer = await http.get(path, params=params, headers=auth(READ))
        assert answer.status_code == 200, (path, answer.text[:300])
        assert len(answer.content) < 10_000, (path, len(answer.content))


async def test_retry_and_promote_refuse_a_job_too_large_to_read(
    http: httpx.AsyncClient, queue: Queue, hand_worker: Worker, raw_redis: aioredis.Redis
) -> None:
    """A failed job with a 64 MB opts: retry answers 409 naming the field at once (never read whole); remove works."""
    (failed,) = await fail_jobs(queue, hand_worker, [("mock", "big")])
    await raw_redis.hset(f"bull:{queue.name}:{failed}", "opts", b'{"pad":[' + b"0," * (32 << 20) + b"0]}")
    started = time.monotonic()
    retried = await http.post(f"/v1/jobs/{failed}/retry", headers=auth(ADMIN))
    assert retried.status_code == 409, retried.text
    assert "opts (67108875 bytes)" in retried.json()["error"]["message"]
    assert time.monotonic() - started < 1.0
    bulk = await http.post("/v1/jobs/retry-failed", headers=auth(ADMIN))
    assert bulk.json()["count"] == 0, bulk.text
    assert (await http.delete(f"/v1/jobs/{failed}", headers=auth(ADMIN))).status_code == 200
