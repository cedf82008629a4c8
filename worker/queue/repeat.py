"""The next tick of a repeating job, computed as Node BullMQ 5.56's worker computes it.

PipesHub's producer (Node ``bullmq`` 5.56.1) adds scheduled crawls with ``queue.add(name, data,
{repeat})``. In BullMQ the *worker* creates the next tick when it takes one: Node 5.56's
``Worker.nextJobFromJobData`` calls ``JobScheduler.upsertJobScheduler(job.repeatJobKey,
job.opts.repeat, job.name, job.data, job.opts, {override: false, producerId: job.id})``, which
computes the next time and options in JavaScript and sends them to the ``updateJobScheduler``
script. The Python port (3.4.4) does the same step with Node 6's script, which takes the next
tick's data from the scheduler record only: a 5.x repeatable job keeps none there, so every tick
after the first got ``data: {}`` and the schedule silently broke. This module is that JavaScript,
ported line for line (``dist/esm/classes/job-scheduler.js`` of bullmq 5.56.1); ``worker/queue/producer.py``
sends the result with 5.56.1's own script (``worker/queue/lua/update_job_scheduler_5_56.lua``).

Options are handled in their stored form (short keys such as ``kl``, ``de``, as in the job hash),
which Node's ``optsFromJSON`` / ``optsAsJSON`` round trip leaves unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from worker.errors import RepeatError
from worker.models import epoch_ms

#: Node BullMQ 5.56.1's ``updateJobScheduler-12`` script (MIT), loaded by the queue adapter.
UPDATE_JOB_SCHEDULER_LUA = Path(__file__).with_name("lua") / "update_job_scheduler_5_56.lua"


@dataclass(frozen=True)
class NextTick:
    """The next tick of a schedule: its time, its id, and its options (stored form)."""

    scheduler_id: str
    next_millis: int
    opts: dict[str, Any]

    @property
    def job_id(self) -> str:
        """``repeat:<schedulerId>:<nextMillis>``, the id Node gives the next tick."""
        return f"repeat:{self.scheduler_id}:{self.next_millis}"


def cron_next(pattern: str, millis: int, repeat: dict[str, Any]) -> int | None:
    """Node's ``defaultRepeatStrategy``: the first time after ``millis`` that ``pattern`` matches in
    ``tz`` (cron-parser 4 semantics: day-of-month OR day-of-week, a 6-field pattern starts with
    seconds); None past ``endDate``; now when ``immediately``."""
    tz_name = repeat.get("tz") or None
    try:
        zone = ZoneInfo(tz_name) if tz_name and not repeat.get("utc") else UTC
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RepeatError(f"unknown timezone {tz_name!r}") from exc
    try:
        start = datetime.fromtimestamp(millis / 1000, tz=zone)
        following: datetime = croniter(pattern, start, second_at_beginning=True).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
        raise RepeatError(f"invalid cron pattern {pattern!r}: {exc}") from exc
    next_millis = int(following.timestamp() * 1000)
    end = epoch_ms(repeat.get("endDate"))
    if end is not None and next_millis > end:
        return None  # cron-parser: "Out of the timespan range", which Node reads as no next time
    return next_millis


#: The longest ``every`` a schedule may have (ten years): beyond it the next time overflows what Redis and
#: msgpack hold (``every: 1e300``), and no crawl schedule needs it.
MAX_EVERY_MS = 10 * 366 * 24 * 3600 * 1000


#: The largest magnitude a repeat number may have: JavaScript's safe integers (what BullMQ computes with).
MAX_SAFE = 2**53


def _is_number(value: Any) -> bool:
    """A finite JSON number within JavaScript's safe integers (booleans count as 0 / 1, as JavaScript's
    arithmetic reads them)."""
    return isinstance(value, int | float) and math.isfinite(value) and abs(value) <= MAX_SAFE


def options_problem(opts: dict[str, Any]) -> str | None:
    """Why a tick's repeat options (``opts.repeat`` and ``opts.prevMillis``) cannot be computed with, in the
    producer's terms; None when they can. BullMQ writes numbers where numbers go; anything else (``every:
    "abc"``, ``[1]``, ``1e300``, ``count: "3"``, ``tz: 5``) fails the tick at once instead of raising in the
    worker's loop on every pickup."""
    repeat = opts.get("repeat")
    if not isinstance(repeat, dict):
        return None
    every = repeat.get("every")
    if every is not None and every is not False:
        if not isinstance(every, int | float) or not math.isfinite(every) or every < 0:
            return f"job option repeat.every must be a number of milliseconds, got {_shown(every)}"
        if every > MAX_EVERY_MS:
            return f"job option repeat.every is {every:g} ms, above the longest schedule ({MAX_EVERY_MS} ms)"
    numbers = {f"repeat.{key}": repeat.get(key) for key in ("count", "limit", "offset")}
    numbers["prevMillis"] = opts.get("prevMillis")
    for name, value in numbers.items():
        if value is not None and not _is_number(value):
            return f"job option {name} must be a number, got {_shown(value)}"
    for key in ("startDate", "endDate"):
        when = epoch_ms(repeat.get(key))
        if when is not None and abs(when) > MAX_SAFE:
            return f"job option repeat.{key} is out of range, got {_shown(repeat.get(key))}"
    strings = {key: repeat.get(key) for key in ("pattern", "tz")}
    wrong = next(
        (key for key, value in strings.items() if value not in (None, "") and not isinstance(value, str)), None
    )
    return None if wrong is None else f"job option repeat.{wrong} must be a string, got {_shown(strings[wrong])}"


def _shown(value: Any) -> str:
    kind = "string" if isinstance(value, str) else "array" if isinstance(value, list) else type(value).__name__
    kind = {"dict": "object", "float": "number", "int": "number", "NoneType": "null"}.get(kind, kind)
    return f"{kind} {str(value)[:40]!r}"


def next_tick(
    scheduler_id: str, name: str, opts: dict[str, Any], now_ms: int, *, min_every_ms: int = 0
) -> NextTick | None:
    """``JobScheduler.upsertJobScheduler(id, opts.repeat, name, data, opts, {override: false})`` of
    Node BullMQ 5.56.1, up to the script call: None when the schedule has no next tick (``limit``
    reached, past ``endDate``, or no next cron time). ``opts`` are the current tick's options. An
    ``every`` below ``min_every_ms`` is computed as ``min_every_ms`` (a schedule may not flood the queue).
    Options that are not what BullMQ writes raise RepeatError (:func:`options_problem`)."""
    del name  # Node passes it to the repeat strategy, whose default ignores it
    if problem := options_problem(opts):
        raise RepeatError(problem)
    repeat: dict[str, Any] = dict(opts.get("repeat") or {})
    every, limit, pattern, offset = (
        repeat.get("every"),
        repeat.get("limit"),
        repeat.get("pattern"),
        repeat.get("offset"),
    )
    if pattern and every:
        raise RepeatError("both .pattern and .every options are defined for this repeatable job")
    if not pattern and not every:
        raise RepeatError("either .pattern or .every options must be defined for this repeatable job")
    if repeat.get("immediately") and repeat.get("startDate"):
        raise RepeatError("both .immediately and .startDate options are defined for this repeatable job")
    iteration_count = repeat["count"] + 1 if repeat.get("count") else 1
    if limit is not None and iteration_count > limit:
        return None
    now = now_ms
    end = epoch_ms(repeat.get("endDate"))
    if repeat.get("endDate") and end is not None and now > end:
        return None
    prev_millis = opts.get("prevMillis") or 0
    now = now if prev_millis < now else prev_millis
    filtered = {k: v for k, v in repeat.items() if k not in ("startDate", "immediately")}
    start_millis = now
    if repeat.get("startDate"):
        start = epoch_ms(repeat["startDate"])
        if start is not None:
            start_millis = start if start > now else now
    next_millis: int | None
    new_offset: float | None = None
    if every:
        interval = max(float(every), float(min_every_ms))
        next_millis, new_offset = _every_next(interval, start_millis, offset, bool(prev_millis or offset))
    else:
        next_millis = int(now) if repeat.get("immediately") else cron_next(str(pattern), now, repeat)
        if next_millis is not None and next_millis < now:
            next_millis = now
    if not next_millis:
        return None
    merged = _next_job_opts(
        opts,
        filtered,
        next_millis=next_millis,
        scheduler_id=scheduler_id,
        count=iteration_count,
        offset=new_offset,
        now_ms=now_ms,
    )
    return NextTick(scheduler_id, next_millis, merged)


def _every_next(every: float, start_millis: int, offset: Any, advance: bool) -> tuple[int, float]:
    """The slot arithmetic of ``every``: the next slot after ``start_millis`` (or the current one for a
    first tick) and the schedule's offset within a slot (kept once set)."""
    prev_slot = math.floor((start_millis - (offset or 0)) / every) * every
    has_offset = isinstance(offset, int | float) and not isinstance(offset, bool)
    new_offset = float(offset) if has_offset else start_millis - prev_slot
    return int(prev_slot + every if advance else prev_slot), new_offset


def _next_job_opts(
    opts: dict[str, Any],
    repeat: dict[str, Any],
    *,
    next_millis: int,
    scheduler_id: str,
    count: int,
    offset: float | None,
    now_ms: int,
) -> dict[str, Any]:
    """``JobScheduler.getNextJobOpts``: the current options with the next id, delay and repeat state."""
    delay = round(next_millis + (offset or 0) - now_ms)
    merged: dict[str, Any] = {
        **opts,
        "repeat": repeat,
        "jobId": f"repeat:{scheduler_id}:{next_millis}",
        "delay": max(delay, 0),
        "timestamp": now_ms,
        "prevMillis": next_millis,
        "repeatJobKey": scheduler_id,
    }
    end = repeat.get("endDate")
    merged["repeat"] = {
        **repeat,
        "offset": int(offset) if isinstance(offset, float) and offset.is_integer() else offset,
        "count": count,
        "endDate": epoch_ms(end) if end else None,
    }
    # Node drops undefined values when it packs options (``optsAsJSON`` skips them; msgpack has no undefined)
    if merged["repeat"]["endDate"] is None:
        del merged["repeat"]["endDate"]
    return merged
