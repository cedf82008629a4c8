"""What the job page shows beyond the JobStatus: options, return value, stack traces, who processed it.

Big values never reach the page whole (bull-board #368: a huge return value freezes the page):
one Lua call returns each field's length and at most :data:`HEAD_BYTES` of it, so Redis sends
little whatever the job holds; the page folds what it cut and links to the whole value as text.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from worker.connections import RedisClient
from worker.status import Keys

HEAD_BYTES = 32_768
#: Values longer than this start folded on the page.
FOLD_BYTES = 2_048
#: ``pb`` and ``stc`` are the names BullMQ's Lua writes for processedBy and the stalled counter.
FIELDS = ("data", "opts", "returnvalue", "stacktrace", "pb", "stc")
#: Fields whose whole stored text can be downloaded (``/ui/jobs/<id>/raw/<field>``).
RAW_FIELDS = ("data", "opts", "returnvalue", "stacktrace")

#: Lua: the first ``n`` bytes of ``v``, cut back to a whole UTF-8 character (replies must decode).
UTF8_HEAD = """
local function head(v, n)
  if string.len(v) <= n then return v end
  local k = n
  while k > 0 and string.byte(v, k + 1) >= 128 and string.byte(v, k + 1) < 192 do k = k - 1 end
  return string.sub(v, 1, k)
end
"""

_HEADS = (
    UTF8_HEAD
    + """
local out = {}
for i, name in ipairs(ARGV) do
  if i > 1 then
    local v = redis.call('HGET', KEYS[1], name)
    if v then out[#out + 1] = {name, string.len(v), head(v, tonumber(ARGV[1]))} end
  end
end
return out
"""
)


@dataclass(frozen=True)
class Value:
    """One stored field: its text (pretty JSON when it is JSON and whole), size, and whether it was cut."""

    text: str
    size: int
    cut: bool

    @property
    def folded(self) -> bool:
        """Should the page show it collapsed?"""
        return self.size > FOLD_BYTES


def _pretty(head: str, cut: bool) -> str:
    if cut:
        return head
    try:
        return json.dumps(json.loads(head), indent=2, ensure_ascii=False)
    except ValueError:
        return head


def _stack(head: str, cut: bool) -> list[str]:
    if not cut:
        try:
            frames = json.loads(head)
        except ValueError:
            frames = None
        if isinstance(frames, list):
            return [str(frame) for frame in reversed(frames) if frame]  # the last attempt first
    return [head] if head else []


@dataclass(frozen=True)
class Detail:
    """A job's fields beyond its JobStatus."""

    values: dict[str, Value]
    stack: list[str]
    processed_by: str | None
    stalled: int

    def skipped(self, progress: object) -> tuple[dict[str, int], bool]:
        """What the crawl did not fetch by reason, and whether that truncated it: from the return value when
        it is whole, else from the last progress object (a running job's)."""
        value = self.values.get("returnvalue")
        reported: object = None
        if value is not None and not value.cut:
            with contextlib.suppress(ValueError):
                reported = json.loads(value.text)
        if not isinstance(reported, dict) or not isinstance(reported.get("skipped"), dict):
            reported = progress
        if not isinstance(reported, dict) or not isinstance(reported.get("skipped"), dict):
            return {}, False
        counts = {str(k): v for k, v in reported["skipped"].items() if isinstance(v, int) and not isinstance(v, bool)}
        return counts, reported.get("truncated") is True


def _stored_len(text: str) -> int:
    """The stored byte length of text read from Redis (bytes that were not UTF-8 came as surrogates)."""
    return len(text.encode("utf-8", "surrogateescape"))


async def read_detail(client: RedisClient, keys: Keys, job_id: str) -> Detail:
    """Heads of the job's big fields and the small ones (one round trip)."""
    rows: list[Any] = await client.eval(_HEADS, 1, keys.job(job_id), HEAD_BYTES, *FIELDS)
    found = {str(name): (int(size), str(head)) for name, size, head in rows}
    values = {
        name: Value(_pretty(head, size > _stored_len(head)), size, size > _stored_len(head))
        for name, (size, head) in found.items()
        if name in RAW_FIELDS
    }
    stack_size, stack_head = found.get("stacktrace", (0, ""))
    stalled = found.get("stc", (0, "0"))[1]
    return Detail(
        values=values,
        stack=_stack(stack_head, stack_size > _stored_len(stack_head)),
        processed_by=found.get("pb", (0, None))[1],
        stalled=int(stalled) if stalled.isdigit() else 0,
    )


async def read_raw(client: RedisClient, keys: Keys, job_id: str, field: str) -> str | None:
    """The whole stored text of one of :data:`RAW_FIELDS` (None when absent)."""
    value = await client.hget(keys.job(job_id), field)
    return None if value is None else str(value)
