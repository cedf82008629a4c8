"""The error breakdown: failed jobs grouped by error class and reason, and the ids of one group.

A failed job's *error class* is the root exception of its last attempt's stack trace (the first
exception a Python traceback prints, e.g. ``CredentialsError`` under bullmq's ``UnrecoverableError``;
``Error`` or ``TypeError`` for a Node worker's job). Its *reason* is the failedReason with the parts
that differ from job to job (quoted names, long numbers, hex ids) folded, so one cause makes one
group. One Lua call per :data:`CHUNK` jobs reads only what grouping needs (the stack trace is parsed
in Redis and never sent), and the page groups the newest :data:`SCAN_LIMIT` failed jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from worker.connections import RedisClient
from worker.status import Keys, whole
from worker.ui.detail import UTF8_HEAD

CHUNK = 500
SCAN_LIMIT = 10_000
SAMPLES = 5
REASON_CHARS = 300

# KEYS: job hashes. Returns, per job, {failedReason head, root error class, data.connector, finishedOn}.
_READ = (
    UTF8_HEAD
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'failedReason', 'stacktrace', 'data', 'finishedOn')
  local cls = ''
  if v[2] then
    local ok, st = pcall(cjson.decode, v[2])
    if ok and type(st) == 'table' and type(st[#st]) == 'string' then
      for line in string.gmatch(st[#st], '[^\\n]+') do
        if not (string.find(line, '^%s') or string.find(line, '^Traceback') or string.find(line, '^During handling')
                or string.find(line, '^The above exception')) then
          cls = string.match(line, '^([%w_%.%$]+)') or ''
          break
        end
      end
    end
  end
  local connector = ''
  if v[3] then
    local ok, d = pcall(cjson.decode, v[3])
    if ok and type(d) == 'table' and type(d['connector']) == 'string' then connector = d['connector'] end
  end
  out[i] = {head(v[1] or '', tonumber(ARGV[1])), cls, connector, v[4] or ''}
end
return out
"""
)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_HEX = re.compile(r"\b[0-9a-fA-F-]*[0-9][0-9a-fA-F-]*[a-fA-F][0-9a-fA-F-]{6,}\b|\b[0-9a-fA-F]{12,}\b")
_LONG_NUMBER = re.compile(r"\d{4,}(?:\.\d+)?")


def reason_pattern(reason: str) -> str:
    """A failedReason with its per-job parts folded: quoted text, hex ids and numbers of 4+ digits."""
    folded = _QUOTED.sub("'…'", reason)
    folded = _HEX.sub("…", folded)
    return _LONG_NUMBER.sub("N", folded)[:REASON_CHARS]


def class_name(raw: str) -> str:
    """The short class name of a stack trace's root exception (``worker.errors.X`` -> ``X``)."""
    return raw.rsplit(".", 1)[-1] if raw else "(no stack trace)"


@dataclass
class FailureGroup:
    """Failed jobs with one error class and reason pattern."""

    error_class: str
    pattern: str
    example: str
    count: int = 0
    newest_ms: int = 0
    connectors: set[str] = field(default_factory=set)
    sample_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Breakdown:
    """The groups (largest first), how many failed jobs were read, and how many there are."""

    groups: list[FailureGroup]
    scanned: int
    total: int


async def _read(client: RedisClient, keys: Keys, ids: list[str]) -> list[tuple[str, str, str, str, int]]:
    """(id, error class, failedReason head, connector, finishedOn) for each of ``ids`` (one Lua call)."""
    rows = await client.eval(_READ, len(ids), *(keys.job(i) for i in ids), REASON_CHARS)
    out = []
    for job_id, (reason, cls, connector, finished) in zip(ids, rows, strict=True):
        finished_ms = whole(str(finished)) or 0
        out.append((job_id, class_name(str(cls)), str(reason), str(connector), finished_ms))
    return out


async def _chunks(client: RedisClient, keys: Keys, limit: int | None) -> list[list[str]]:
    stop = -1 if limit is None else limit - 1
    ids = [str(i) for i in await client.zrevrange(keys.key("failed"), 0, stop)]
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


async def breakdown(client: RedisClient, keys: Keys, limit: int = SCAN_LIMIT) -> Breakdown:
    """The newest ``limit`` failed jobs grouped by (error class, reason pattern), largest group first."""
    groups: dict[tuple[str, str], FailureGroup] = {}
    scanned = 0
    for chunk in await _chunks(client, keys, limit):
        for job_id, cls, reason, connector, finished_ms in await _read(client, keys, chunk):
            pattern = reason_pattern(reason)
            group = groups.get((cls, pattern))
            if group is None:
                group = groups[cls, pattern] = FailureGroup(cls, pattern, reason)
            group.count += 1
            group.newest_ms = max(group.newest_ms, finished_ms)
            if connector:
                group.connectors.add(connector)
            if len(group.sample_ids) < SAMPLES:
                group.sample_ids.append(job_id)
            scanned += 1
    total = int(await client.zcard(keys.key("failed")))
    ordered = sorted(groups.values(), key=lambda g: (-g.count, -g.newest_ms))
    return Breakdown(ordered, scanned, total)


async def group_ids(client: RedisClient, keys: Keys, error_class: str, pattern: str) -> list[str]:
    """Every failed job (not only the newest) in the group (``error_class``, ``pattern``)."""
    out = []
    for chunk in await _chunks(client, keys, None):
        for job_id, cls, reason, _, _ in await _read(client, keys, chunk):
            if cls == error_class and reason_pattern(reason) == pattern:
                out.append(job_id)
    return out
