"""A BullMQ job hash -> :class:`JobStatus`, and where a job is -> its :class:`State`.

Reads Redis directly (no bullmq import): one pipeline per job, or per page of jobs.
BullMQ keeps jobs in ``wait`` / ``paused`` (lists), ``prioritized`` (zset, still waiting),
``active`` (list), ``delayed``, ``completed``, ``failed`` (zsets); ``meta`` has ``paused``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from worker.connections import RedisClient
from worker.models import CrawlingJobData, JobStatus, State
from worker.stuck import is_stuck, lock_key

JOB_FIELDS = (
    "name", "data", "progress", "delay", "timestamp", "attemptsMade", "atm",
    "finishedOn", "processedOn", "failedReason",
)  # fmt: skip


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one BullMQ queue."""

    prefix: str
    queue: str

    def key(self, suffix: str) -> str:
        """``<prefix>:<queue>:<suffix>``."""
        return f"{self.prefix}:{self.queue}:{suffix}"

    def job(self, job_id: str) -> str:
        """The job's hash."""
        return self.key(job_id)

    def lock(self, job_id: str) -> str:
        """The job's lock key."""
        return lock_key(self.prefix, self.queue, job_id)


#: Key suffixes BullMQ uses for the queue itself: never job ids (``DELETE /v1/jobs/meta`` must not un-pause it).
RESERVED_IDS = frozenset({
    "meta", "id", "wait", "paused", "active", "prioritized", "delayed", "completed", "failed", "events",
    "marker", "stalled", "stalled-check", "limiter", "pc", "repeat", "metrics",
})  # fmt: skip
#: Kept from a job's data when it cannot be read, so the page says what is there without shipping all of it.
RAW_PREVIEW = 2000
#: The largest field a read takes whole; a larger one comes back as its first :data:`RAW_PREVIEW` bytes.
READ_MAX_BYTES = 1_048_576

# The fields of job hashes, each sized (HSTRLEN, O(1)) before it is read: one row per KEYS entry, the
# fields in ARGV[3..] order (nil when absent), then ``name=bytes,...`` for those over ARGV[1] bytes, whose
# value is only their first ARGV[2] bytes (a 64 MB progress never leaves Redis whole).
_HEADS = """
local bound, preview = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local row, over = {}, {}
  for j = 3, #ARGV do
    local size = redis.call('HSTRLEN', key, ARGV[j])
    if size > bound then
      row[j - 2] = string.sub(redis.call('HGET', key, ARGV[j]), 1, preview)
      over[#over + 1] = ARGV[j] .. '=' .. size
    else
      row[j - 2] = redis.call('HGET', key, ARGV[j])
    end
  end
  row[#ARGV - 1] = table.concat(over, ',')
  out[i] = row
end
return out
"""


# KEYS[1]: a job hash; ARGV[1]: a bound in bytes. The fields over it, as field, size pairs (sized, never read).
_OVERSIZED = """
local out = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local size = redis.call('HSTRLEN', KEYS[1], field)
  if size > tonumber(ARGV[1]) then out[#out + 1] = field; out[#out + 1] = size end
end
return out
"""


async def oversized(client: RedisClient, keys: Keys, job_id: str, bound: int) -> dict[str, int]:
    """The fields of a job hash larger than ``bound`` bytes, by size (what bullmq's Job would read whole)."""
    flat = await client.eval(_OVERSIZED, 1, keys.job(job_id), bound)
    return {str(name): int(size) for name, size in zip(flat[::2], flat[1::2], strict=True)}


def read_heads(target: Any, keys: Sequence[str]) -> Any:
    """Queue (on a pipeline) or run the bounded read of :data:`JOB_FIELDS` of ``keys``: rows of the fields'
    values, then the oversized fields (``name=bytes,...``)."""
    return target.eval(_HEADS, len(keys), *keys, READ_MAX_BYTES, RAW_PREVIEW, *JOB_FIELDS)


def not_a_job_id(job_id: str) -> bool:
    """Ids that name the queue's own keys (or a job's logs and lock) rather than a job."""
    return job_id in RESERVED_IDS or job_id.endswith((":logs", ":lock")) or job_id.startswith(("cw:", "stats:"))


def text(value: str | None) -> str | None:
    """A string read from Redis made safe to serialise: bytes that were not UTF-8 (read as lone
    surrogates) become U+FFFD instead of failing the whole response."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def whole(value: str | None) -> int | None:
    """A stored number as an integer; None when it is missing, not a number or not finite (``inf``, ``nan``)."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def loads(raw: str) -> Any:
    """``json.loads`` where non-finite numbers (``NaN``, ``Infinity``, ``1e999``) read as null: what is read
    here is served as strict JSON, which has no such numbers."""
    return json.loads(raw, parse_float=_finite, parse_constant=lambda _: None)


def _json(value: str | None) -> Any:
    value = text(value)
    if value is None:
        return None
    try:
        return loads(value)
    except (ValueError, RecursionError):
        return value


def parse_data(raw: str | None) -> CrawlingJobData | dict[str, Any]:
    """The job data as CrawlingJobData when it is valid, else the raw object (never fails).

    Data that is not JSON (or nested too deeply to read) comes back as ``{"unreadable": reason,
    "preview": <its first characters>}``.
    """
    raw = text(raw)
    if raw is None:
        return {}
    try:
        value = loads(raw)
    except RecursionError:
        return {"unreadable": "nested too deeply to read", "preview": raw[:RAW_PREVIEW]}
    except ValueError:
        return {"unreadable": "not valid JSON", "preview": raw[:RAW_PREVIEW]}
    if not isinstance(value, dict):
        return {"value": value} if value is not None else {}
    try:
        return CrawlingJobData.model_validate(value)
    except ValidationError:
        return value


def _oversized(row: Sequence[str | None]) -> dict[str, str]:
    over = row[len(JOB_FIELDS)] if len(row) > len(JOB_FIELDS) else None
    return dict(item.rsplit("=", 1) for item in str(over or "").split(",") if "=" in item)


def to_status(job_id: str, fields: Sequence[str | None], state: State) -> JobStatus:
    """Build a JobStatus from the values of :data:`JOB_FIELDS` (an HMGET, or a row of :func:`read_heads`,
    whose oversized fields are shown as such: data as unreadable with a preview, progress as none)."""
    over = _oversized(fields)
    f = dict(zip(JOB_FIELDS, fields[: len(JOB_FIELDS)], strict=True))
    progress = None if "progress" in over else _json(f["progress"])
    if not isinstance(progress, int | float | dict):
        progress = None
    data: CrawlingJobData | dict[str, Any]
    if "data" in over:
        data = {"unreadable": f"{over['data']} bytes, too large to read", "preview": text(f["data"]) or ""}
    else:
        data = parse_data(f["data"])
    reason = text(f["failedReason"]) or None
    if reason and "failedReason" in over:
        reason += f"... ({over['failedReason']} bytes)"
    return JobStatus(
        id=job_id,
        name=text(f["name"]) or "",
        data=data,
        progress=progress,
        delay=whole(f["delay"]),
        timestamp=whole(f["timestamp"]) or 0,
        attempts_made=whole(f["attemptsMade"]) or whole(f["atm"]) or 0,
        finished_on=whole(f["finishedOn"]),
        processed_on=whole(f["processedOn"]),
        failed_reason=reason,
        state=state,
    )


_ORDER = (("completed", State.COMPLETED), ("failed", State.FAILED), ("delayed", State.DELAYED))


def state_of(where: Mapping[str, bool], *, queue_paused: bool, lock_exists: bool) -> State | None:
    """Map where a job was found to its State (None: not in any state set)."""
    for name, state in _ORDER:
        if where.get(name):
            return state
    if where.get("active"):
        return State.STUCK if is_stuck(in_active=True, lock_exists=lock_exists) else State.ACTIVE
    if where.get("paused") or (queue_paused and (where.get("wait") or where.get("prioritized"))):
        return State.PAUSED
    return State.WAITING if where.get("wait") or where.get("prioritized") else None


async def get_status(client: RedisClient, keys: Keys, job_id: str) -> JobStatus | None:
    """One job's status in one round trip, or None when there is no such job (only a hash with a
    ``timestamp``, as BullMQ writes every job, is one: the queue's own keys are not jobs)."""
    if not_a_job_id(job_id):
        return None
    pipe = client.pipeline(transaction=False)
    read_heads(pipe, [keys.job(job_id)])
    pipe.hexists(keys.job(job_id), "timestamp")
    for zset in ("completed", "failed", "delayed", "prioritized"):
        pipe.zscore(keys.key(zset), job_id)
    for lst in ("active", "wait", "paused"):
        pipe.lpos(keys.key(lst), job_id)
    pipe.exists(keys.lock(job_id))
    pipe.hget(keys.key("meta"), "paused")
    rows, exists, *found, lock, paused = await pipe.execute(raise_on_error=False)
    if isinstance(rows, Exception) or isinstance(exists, Exception) or not exists:  # WRONGTYPE: not a hash
        return None
    fields = rows[0]
    names = ("completed", "failed", "delayed", "prioritized", "active", "wait", "paused")
    where = {name: value is not None for name, value in zip(names, found, strict=True)}
    state = state_of(where, queue_paused=bool(paused), lock_exists=bool(lock)) or State.WAITING
    return to_status(job_id, fields, state)


async def get_logs(client: RedisClient, keys: Keys, job_id: str, limit: int = 1000) -> list[str]:
    """The job's log lines (oldest first, the last ``limit``)."""
    lines = await client.lrange(keys.key(f"{job_id}:logs"), -limit, -1)
    return [text(str(line)) or "" for line in lines]
