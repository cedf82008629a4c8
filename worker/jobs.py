"""Listing, filtering, paginating and exporting jobs, straight from BullMQ's Redis keys.

Unfiltered pages are O(page): the state sets are ranged by position (LRANGE / ZRANGE) and the page's
hashes read in one pipeline. Filters on the job data (connector, connectorId, orgId, text) or creation
time scan the selected states in chunks of :data:`CHUNK` jobs, filtered inside Redis (:data:`SCAN_CHUNK`,
one call per chunk; only candidates come back), so their cost grows with the number of jobs in those
states (about 0.5 s per 100,000); narrow with ``state`` when the queue is large.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from worker.connections import RedisClient
from worker.logs import get_logger
from worker.models import JobStatus, State, normalize_connector
from worker.status import JOB_FIELDS, READ_MAX_BYTES, Keys, loads, read_heads, to_status, whole
from worker.stuck import is_stuck

log = get_logger(__name__)

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
    #: Text the job's data (as stored, JSON) must contain, ASCII letters in either case.
    text: str | None = None

    @property
    def needs_scan(self) -> bool:
        """True when the filter looks inside job hashes (not just at state sets)."""
        return any(
            v is not None
            for v in (
                self.connector,
                self.connector_id,
                self.org_id,
                self.created_after,
                self.created_before,
                self.text,
            )
        )

    def matches(self, data: Any, timestamp: int, raw: str | None = None) -> bool:
        """Does a job with this data, creation time (ms) and stored data text (``raw``) match?"""
        checks = []
        if self.text:  # case-insensitive for ASCII letters, as the scan in Redis compares
            checks.append(self.text.encode().lower() in (raw or "").encode("utf-8", "surrogateescape").lower())
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
    if not items:
        return []
    pipe = client.pipeline(transaction=False)
    read_heads(pipe, [keys.job(job_id) for job_id, _ in items])
    for job_id, state in items:
        if state in (State.ACTIVE, State.STUCK):
            pipe.exists(keys.lock(job_id))
    rows, *locks = await pipe.execute()
    held = iter(locks)
    out = []
    for (job_id, listed), fields in zip(items, rows, strict=True):
        state = _active_state(next(held)) if listed in (State.ACTIVE, State.STUCK) else listed
        if fields[JOB_FIELDS.index("timestamp")] is not None:  # removed between the range and the read
            out.append(to_status(job_id, fields, state))
    return out


def _active_state(lock: Any) -> State:
    return State.STUCK if is_stuck(in_active=True, lock_exists=bool(lock)) else State.ACTIVE


def _millis(value: str) -> int:
    return whole(value) or 0


def _decode(raw: str | None) -> Any:
    try:
        return loads(raw) if raw else None
    except (ValueError, RecursionError):  # unreadable data matches no data filter (and fails nothing)
        return None


# One chunk of a state's ids, filtered in Redis: only candidates come back, as id, data, timestamp triples,
# after the total number of ids read. The checks never reject a job that JobFilter.matches accepts (a
# connector name with non-ASCII bytes, or data cjson cannot decode, is passed through), so Python re-checks
# the few candidates with the exact rule. KEYS[1]: the state's list or zset; ARGV: range kind, start, stop,
# job key prefix, then the filter: text (lower case), created after / before (ms), connector (normalised),
# connectorId, orgId ('' = not filtered), the largest data read (larger data matches no data filter).
SCAN_CHUNK = """
local kind, start, stop, base = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local text, after, before = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local connector, cid, org, bound = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local ids
if kind == 'list' then ids = redis.call('LRANGE', KEYS[1], start, stop)
elseif kind == 'zrev' then ids = redis.call('ZREVRANGE', KEYS[1], start, stop)
else ids = redis.call('ZRANGE', KEYS[1], start, stop) end
local ws = '[%s\\28-\\31]+'
local out = {#ids}
for _, id in ipairs(ids) do
  local raw, ts = '', tonumber(redis.call('HGET', base .. id, 'timestamp'))
  if redis.call('HSTRLEN', base .. id, 'data') <= bound then raw = redis.call('HGET', base .. id, 'data') or '' end
  if ts and (ts ~= ts or ts == math.huge or ts == -math.huge) then ts = nil end  -- inf / nan: no readable time
  local ok = true
  if (after or before) and ts == nil then ok = false end  -- no readable creation time: no time filter matches
  if ok and after and ts < after then ok = false end
  if ok and before and ts > before then ok = false end
  if ok and text ~= '' and not string.find(string.lower(raw), text, 1, true) then ok = false end
  if ok and (connector ~= '' or cid ~= '' or org ~= '') then
    local decoded, d = pcall(cjson.decode, raw)
    if decoded and type(d) ~= 'table' then ok = false
    elseif decoded then
      if cid ~= '' and d['connectorId'] ~= cid then ok = false end
      if org ~= '' and d['orgId'] ~= org then ok = false end
      local c = d['connector']
      if ok and connector ~= '' and type(c) == 'string' and not string.find(c, '[\\128-\\255]') then
        c = string.gsub(string.gsub(string.gsub(string.lower(c), '^' .. ws, ''), ws .. '$', ''), ws, '-')
        if c ~= connector then ok = false end
      end
    end
  end
  if ok then out[#out + 1] = id; out[#out + 1] = raw; out[#out + 1] = ts or 0 end
end
return out
"""


def _scan_args(src: _Source, keys: Keys, flt: JobFilter, start: int) -> list[str | int | float]:
    kind = "zrev" if src.zset and src.newest_first else "zset" if src.zset else "list"
    after = flt.created_after.timestamp() * 1000 if flt.created_after else ""
    before = flt.created_before.timestamp() * 1000 if flt.created_before else ""
    return [
        kind, start, start + CHUNK - 1, keys.key(""), (flt.text or "").encode().lower().decode(), after, before,
        normalize_connector(flt.connector) if flt.connector else "", flt.connector_id or "", flt.org_id or "",
        READ_MAX_BYTES,
    ]  # fmt: skip


async def _scan(client: RedisClient, keys: Keys, flt: JobFilter) -> AsyncIterator[tuple[str, State]]:
    """Every (id, state) matching ``flt``, in listing order, read and filtered in Redis a chunk at a time."""
    sources = await _sources(client, keys, _dedupe_active(flt, [flt.state] if flt.state else ALL_STATES))
    for src in sources:
        start = 0
        while True:
            count, *flat = await client.eval(SCAN_CHUNK, 1, src.key, *_scan_args(src, keys, flt, start))
            start += int(count)
            found = [(str(i), str(raw), str(ts)) for i, raw, ts in zip(flat[::3], flat[1::3], flat[2::3], strict=True)]
            found = [(i, raw, ts) for i, raw, ts in found if flt.matches(_decode(raw), _millis(ts), raw or None)]
            locks: list[Any] = []
            if found and src.state in (State.ACTIVE, State.STUCK):
                pipe = client.pipeline(transaction=False)
                for job_id, _, _ in found:
                    pipe.exists(keys.lock(job_id))
                locks = await pipe.execute()
            for n, (job_id, _, _) in enumerate(found):
                state = _active_state(locks[n]) if locks else src.state
                if flt.state is None or state == flt.state or src.state not in (State.ACTIVE, State.STUCK):
                    yield job_id, state
            if int(count) < CHUNK:
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
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else _cell(v) for v in row])
    return buf.getvalue()


#: A spreadsheet reads a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet will not evaluate: formula-looking text gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


async def export(client: RedisClient, keys: Keys, flt: JobFilter, fmt: str) -> AsyncIterator[str]:
    """Stream every matching job as CSV (header first) or as one JSON array, piece by piece."""
    if fmt == "csv":
        yield ",".join(CSV_COLUMNS) + "\n"
        try:
            async for status in iter_statuses(client, keys, flt):
                yield csv_row(status)
        except Exception as exc:  # headers are sent: the failure goes in the body, where a reader sees it
            log.error("export.failed", format="csv", error=str(exc), error_type=type(exc).__name__)
            yield f"# EXPORT INCOMPLETE: {type(exc).__name__}; the rows above are not all matching jobs\n"
        return
    yield "["
    first = True
    try:
        async for status in iter_statuses(client, keys, flt):
            yield ("" if first else ",") + status.model_dump_json(by_alias=True)
            first = False
    except Exception as exc:
        log.error("export.failed", format="json", error=str(exc), error_type=type(exc).__name__)
        failure = {"error": {"status": 500, "message": f"export incomplete: {type(exc).__name__}"}}
        yield ("" if first else ",") + json.dumps(failure)
    yield "]\n"


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
