"""Listing, filtering, paginating and exporting jobs, straight from BullMQ's Redis keys.

Unfiltered pages are O(page): the state sets are ranged by position (LRANGE / ZRANGE) and the page's
hashes read in one pipeline. Filters on the job data (connector, connectorId, orgId) or creation time
scan the selected states in chunks of :data:`CHUNK` jobs (two fields per job), so their cost grows with
the number of jobs in those states; narrow with ``state`` when the queue is large.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from worker.connections import RedisClient
from worker.models import JobStatus, State, normalize_connector
from worker.status import JOB_FIELDS, Keys, to_status
from worker.stuck import is_stuck

CHUNK = 1000
ALL_STATES = (State.ACTIVE, State.STUCK, State.WAITING, State.PAUSED, State.DELAYED, State.COMPLETED, State.FAILED)


class JobFilter(BaseModel):
    """Which jobs to select. Every field is optional; all given fields must match."""

    state: State | None = None
    connector: str | None = None
    connector_id: str | None = None
    org_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Text the job's data (as stored, JSON) must contain, case-insensitive.
    text: str | None = None

    @property
    def needs_scan(self) -> bool:
        """True when the filter looks inside job hashes (not just at state sets)."""
        return any(
            v is not None
            for v in (
                self.connector, self.connector_id, self.org_id, self.created_after, self.created_before, self.text
            )
        )

    def matches(self, data: Any, timestamp: int, raw: str | None = None) -> bool:
        """Does a job with this data, creation time (ms) and stored data text (``raw``) match?"""
        checks = []
        if self.text:
            checks.append(self.text.casefold() in (raw or "").casefold())
        if self.created_after is not None:
            checks.append(timestamp >= self.created_after.timestamp() * 1000)
        if self.created_before is not None:
            checks.append(timestamp <= self.created_before.timestamp() * 1000)
        if self.connector or self.connector_id or self.org_id:
            data = data if isinstance(data, dict) else {}
            if self.connector:
                found = normalize_connector(str(data.get("connector", "")))
                checks.append(found == normalize_connector(self.connector))
            if self.connector_id:
                checks.append(data.get("connectorId") == self.connector_id)
            if self.org_id:
                checks.append(data.get("orgId") == self.org_id)
        return all(checks)


class JobPage(BaseModel):
    """One page of a listing."""

    jobs: list[JobStatus]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class _Source:
    key: str
    zset: bool
    newest_first: bool
    state: State


async def _sources(client: RedisClient, keys: Keys, states: Sequence[State]) -> list[_Source]:
    paused = bool(await client.hget(keys.key("meta"), "paused"))
    waiting_state = State.PAUSED if paused else State.WAITING
    out: list[_Source] = []
    for state in states:
        if state in (State.ACTIVE, State.STUCK):
            out.append(_Source(keys.key("active"), zset=False, newest_first=False, state=state))
        elif state == State.PAUSED:
            out.append(_Source(keys.key("paused"), zset=False, newest_first=False, state=State.PAUSED))
        if state == waiting_state:
            out.append(_Source(keys.key("wait"), zset=False, newest_first=False, state=state))
            out.append(_Source(keys.key("prioritized"), zset=True, newest_first=False, state=state))
        elif state in (State.DELAYED, State.COMPLETED, State.FAILED):
            out.append(_Source(keys.key(state.value), zset=True, newest_first=state != State.DELAYED, state=state))
    return out


async def _count(client: RedisClient, sources: Sequence[_Source]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for src in sources:
        pipe.zcard(src.key) if src.zset else pipe.llen(src.key)
    return [int(n) for n in await pipe.execute()]


def _range(pipe: Any, src: _Source, start: int, stop: int) -> None:
    if not src.zset:
        pipe.lrange(src.key, start, stop)
    elif src.newest_first:
        pipe.zrevrange(src.key, start, stop)
    else:
        pipe.zrange(src.key, start, stop)


async def _statuses(client: RedisClient, keys: Keys, items: Sequence[tuple[str, State]]) -> list[JobStatus]:
    pipe = client.pipeline(transaction=False)
    for job_id, state in items:
        pipe.hmget(keys.job(job_id), list(JOB_FIELDS))
        if state in (State.ACTIVE, State.STUCK):
            pipe.exists(keys.lock(job_id))
    results = iter(await pipe.execute())
    out = []
    for job_id, listed in items:
        fields = next(results)
        state = _active_state(next(results)) if listed in (State.ACTIVE, State.STUCK) else listed
        if fields[JOB_FIELDS.index("timestamp")] is not None:  # removed between the range and the read
            out.append(to_status(job_id, fields, state))
    return out


def _active_state(lock: Any) -> State:
    return State.STUCK if is_stuck(in_active=True, lock_exists=bool(lock)) else State.ACTIVE


def _decode(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def _scan(client: RedisClient, keys: Keys, flt: JobFilter) -> AsyncIterator[tuple[str, State]]:
    """Every (id, state) matching ``flt``, in listing order, read in chunks."""
    sources = await _sources(client, keys, _dedupe_active(flt, [flt.state] if flt.state else ALL_STATES))
    for src in sources:
        start = 0
        while True:
            pipe = client.pipeline(transaction=False)
            _range(pipe, src, start, start + CHUNK - 1)
            (ids,) = await pipe.execute()
            if not ids:
                break
            start += len(ids)
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(keys.job(job_id), ["data", "timestamp"])
                if src.state in (State.ACTIVE, State.STUCK):
                    pipe.exists(keys.lock(job_id))
            results = iter(await pipe.execute())
            for job_id in ids:
                raw, ts = next(results)
                state = src.state
                if state in (State.ACTIVE, State.STUCK):
                    state = _active_state(next(results))
                    if flt.state is not None and state != flt.state:
                        continue
                if ts is not None and flt.matches(_decode(raw), int(float(ts)), raw):
                    yield job_id, state
            if len(ids) < CHUNK:
                break


def _dedupe_active(flt: JobFilter, states: Sequence[State]) -> list[State]:
    """The unfiltered listing must not read ``active`` twice (ACTIVE and STUCK share it)."""
    return [s for s in states if not (flt.state is None and s == State.STUCK)]


async def list_jobs(client: RedisClient, keys: Keys, flt: JobFilter, *, limit: int, offset: int) -> JobPage:
    """One page of jobs matching ``flt`` with the total count."""
    states = _dedupe_active(flt, [flt.state] if flt.state else ALL_STATES)
    if flt.needs_scan or flt.state in (State.ACTIVE, State.STUCK):
        matched: list[tuple[str, State]] = []
        total = 0
        async for item in _scan(client, keys, flt):
            if offset <= total < offset + limit:
                matched.append(item)
            total += 1
        return JobPage(jobs=await _statuses(client, keys, matched), total=total, limit=limit, offset=offset)
    sources = await _sources(client, keys, states)
    counts = await _count(client, sources)
    pipe = client.pipeline(transaction=False)
    wanted: list[_Source] = []
    pos = 0
    for src, count in zip(sources, counts, strict=True):
        lo, hi = max(offset - pos, 0), min(offset + limit - pos, count)
        if lo < hi:
            _range(pipe, src, lo, hi - 1)
            wanted.append(src)
        pos += count
    items: list[tuple[str, State]] = []
    for src, ids in zip(wanted, await pipe.execute() if wanted else [], strict=True):
        items.extend((job_id, src.state) for job_id in ids)
    return JobPage(jobs=await _statuses(client, keys, items), total=sum(counts), limit=limit, offset=offset)


async def iter_statuses(client: RedisClient, keys: Keys, flt: JobFilter) -> AsyncIterator[JobStatus]:
    """Every matching job's status, read a chunk at a time (bounded memory)."""
    chunk: list[tuple[str, State]] = []
    scan_filter = flt
    async for item in _scan(client, keys, scan_filter):
        chunk.append(item)
        if len(chunk) >= CHUNK:
            for status in await _statuses(client, keys, chunk):
                yield status
            chunk = []
    for status in await _statuses(client, keys, chunk):
        yield status


CSV_COLUMNS = (
    "id", "name", "state", "connector", "connectorId", "orgId", "timestamp", "processedOn", "finishedOn",
    "attemptsMade", "delay", "progress", "failedReason",
)  # fmt: skip


def csv_row(status: JobStatus) -> str:
    """One CSV line (with header columns :data:`CSV_COLUMNS`)."""
    wire = status.model_dump(mode="json", by_alias=True)
    data = wire["data"] if isinstance(wire["data"], dict) else {}
    progress = wire["progress"]
    row = [
        wire["id"], wire["name"], wire["state"], data.get("connector"), data.get("connectorId"), data.get("orgId"),
        wire["timestamp"], wire["processedOn"], wire["finishedOn"], wire["attemptsMade"], wire["delay"],
        json.dumps(progress) if isinstance(progress, dict) else progress, wire["failedReason"],
    ]  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in row])
    return buf.getvalue()


async def export(client: RedisClient, keys: Keys, flt: JobFilter, fmt: str) -> AsyncIterator[str]:
    """Stream every matching job as CSV (header first) or as one JSON array, piece by piece."""
    if fmt == "csv":
        yield ",".join(CSV_COLUMNS) + "\n"
        async for status in iter_statuses(client, keys, flt):
            yield csv_row(status)
        return
    yield "["
    first = True
    async for status in iter_statuses(client, keys, flt):
        yield ("" if first else ",") + status.model_dump_json(by_alias=True)
        first = False
    yield "]\n"


class Pagination(BaseModel):
    """limit / offset of a listing."""

    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)


async def current_counts(client: RedisClient, keys: Keys) -> dict[str, int]:
    """How many jobs are in each state now (stuck counted from the active jobs' locks)."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.key("meta"), "paused")
    for name in ("wait", "prioritized", "paused"):
        pipe.zcard(keys.key(name)) if name == "prioritized" else pipe.llen(keys.key(name))
    for name in ("delayed", "completed", "failed"):
        pipe.zcard(keys.key(name))
    pipe.lrange(keys.key("active"), 0, -1)
    paused, wait, prio, paused_list, delayed, completed, failed, active_ids = await pipe.execute()
    pipe = client.pipeline(transaction=False)
    for job_id in active_ids:
        pipe.exists(keys.lock(job_id))
    locks = await pipe.execute() if active_ids else []
    stuck = sum(1 for lock in locks if is_stuck(in_active=True, lock_exists=bool(lock)))
    waiting = int(wait) + int(prio)
    return {
        "waiting": 0 if paused else waiting,
        "paused": int(paused_list) + (waiting if paused else 0),
        "active": len(active_ids) - stuck,
        "stuck": stuck,
        "delayed": int(delayed),
        "completed": int(completed),
        "failed": int(failed),
    }
