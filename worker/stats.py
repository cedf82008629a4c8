"""Per-minute and per-hour job aggregates in Redis, and the statistics read from them.

Each finished job (completed or failed for good) is counted in memory and added, by a flush every
second (one pipeline for all the jobs of that second), to two hashes:
``<prefix>:<queue>:stats:m:<unix minute>`` and ``<prefix>:<queue>:stats:h:<unix hour>``, fields
``c:<connector>`` / ``f:<connector>`` (counts), ``t:<connector>`` (processing ms sum) and ``b:<i>``
(histogram of processing time over :data:`BUCKETS_MS`, for p95). Both expire after
``stats_retention_days``, so memory is bounded by connectors x buckets, whatever removeOnComplete keeps.
A read takes whole hours from the hour hashes and the leading partial hour from minute hashes:
at most 720 + 59 hashes for 30 days, summed by one Lua script (one round trip).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel

from worker.connections import RedisClient
from worker.labels import OTHER
from worker.logs import get_logger

log = get_logger(__name__)

# Sums every bucket hash server-side and returns one flat [field, total, ...] list: the read is one
# round trip with a small reply, whatever the number of buckets (KEYS share the prefix's hash tag).
SUM_BUCKETS = """
local totals, order = {}, {}
for _, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local f = flat[i]
    if totals[f] == nil then totals[f] = 0; order[#order + 1] = f end
    totals[f] = totals[f] + tonumber(flat[i + 1])
  end
end
local out = {}
for _, f in ipairs(order) do out[#out + 1] = f; out[#out + 1] = string.format('%.0f', totals[f]) end
return out
"""
BUCKETS_MS = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000)


class Period(StrEnum):
    """The periods statistics are served for."""

    H1 = "1h"
    H24 = "24h"
    D7 = "7d"
    D30 = "30d"

    @property
    def minutes(self) -> int:
        """Length in minutes."""
        return {"1h": 60, "24h": 1440, "7d": 10080, "30d": 43200}[self.value]


def bucket_index(duration_ms: float) -> int:
    """The histogram bucket of a processing time (the last index is 'above every bound')."""
    for i, bound in enumerate(BUCKETS_MS):
        if duration_ms <= bound:
            return i
    return len(BUCKETS_MS)


class ConnectorStats(BaseModel):
    """One connector's share of a period."""

    connector: str
    job_count: int
    completed: int
    failed: int
    success_rate: float | None


class JobStats(BaseModel):
    """Statistics for a period (the jobs guide's shape, for crawl jobs)."""

    period: str
    total_jobs: int
    completed_jobs: int
    failed_jobs: int
    success_rate: float | None
    avg_processing_time_ms: float | None
    p95_processing_time_ms: int | None
    by_connector: list[ConnectorStats]
    by_status: dict[str, int]


def _keys(prefix: str, queue: str, now_s: float) -> tuple[str, str]:
    minute = int(now_s // 60)
    return f"{prefix}:{queue}:stats:m:{minute}", f"{prefix}:{queue}:stats:h:{minute // 60}"


class StatsRecorder:
    """Counts finished jobs in memory and adds them to the buckets in one pipeline per flush.

    The job path only bumps in-process counters (no round trip); :meth:`run` flushes them every
    ``interval_s`` and the app flushes once more at shutdown. A failed flush keeps its counts for
    the next one, so a Redis blip delays statistics instead of losing them; a crash loses at most
    the last interval's.
    """

    def __init__(
        self, client: RedisClient, *, prefix: str, queue: str, retention_days: int, connectors: Iterable[str]
    ) -> None:
        self._client = client
        #: the names a field may carry (as the metric labels): a job's own connector name is untrusted input
        self._known = frozenset(connectors)
        self._prefix = prefix
        self._queue = queue
        self._ttl_s = retention_days * 86400
        #: (unix minute, field) -> increment not yet written
        self._pending: defaultdict[tuple[int, str], int] = defaultdict(int)

    def record(self, connector: str, outcome: str, duration_s: float, now_s: float | None = None) -> None:
        """Count one finished job (``outcome`` completed or failed) in its minute; written by the next flush."""
        ms = max(duration_s * 1000, 0.0)
        minute = int((time.time() if now_s is None else now_s) // 60)
        pending = self._pending
        connector = connector if connector in self._known else OTHER
        pending[minute, f"{'c' if outcome == 'completed' else 'f'}:{connector}"] += 1
        pending[minute, f"t:{connector}"] += round(ms)
        pending[minute, f"b:{bucket_index(ms)}"] += 1

    async def add(self, connector: str, outcome: str, duration_s: float, now_s: float | None = None) -> None:
        """Count one finished job and write it now."""
        self.record(connector, outcome, duration_s, now_s)
        await self.flush()

    async def flush(self) -> None:
        """Write every pending count to its minute and hour hashes (one pipeline)."""
        pending, self._pending = self._pending, defaultdict(int)
        if not pending:
            return
        pipe = self._client.pipeline(transaction=False)
        keys: set[str] = set()
        for (minute, field), count in pending.items():
            for key in _keys(self._prefix, self._queue, minute * 60):
                pipe.hincrby(key, field, count)
                keys.add(key)
        for key in keys:
            pipe.expire(key, self._ttl_s)
        try:
            await pipe.execute()
        except BaseException:
            for item, count in pending.items():  # keep them for the next flush
                self._pending[item] += count
            raise

    async def run(self, interval_s: float = 1.0) -> None:
        """Flush every ``interval_s`` until cancelled (errors are logged, counts kept)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("stats.flush_failed", error=str(exc), error_type=type(exc).__name__)


def _p95(hist: dict[int, int]) -> int | None:
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = 0.95 * total, 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= rank:
            return BUCKETS_MS[i] if i < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
    return None  # pragma: no cover - the loop always reaches the rank


async def read_stats(
    client: RedisClient,
    *,
    prefix: str,
    queue: str,
    period: Period,
    by_status: dict[str, int] | None = None,
    now_s: float | None = None,
) -> JobStats:
    """Statistics for the last ``period`` (up to now) from the minute/hour buckets."""
    now_min = int((time.time() if now_s is None else now_s) // 60)
    first_min = now_min - period.minutes + 1
    first_hour = -(-first_min // 60)  # the first hour that starts inside the window
    keys = [f"{prefix}:{queue}:stats:m:{m}" for m in range(first_min, min(first_hour * 60, now_min + 1))]
    keys += [f"{prefix}:{queue}:stats:h:{h}" for h in range(first_hour, now_min // 60 + 1)]
    flat = await client.eval(SUM_BUCKETS, len(keys), *keys)
    completed: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    time_sum = 0
    hist: dict[int, int] = defaultdict(int)
    for field, value in zip(flat[::2], flat[1::2], strict=True):
        kind, _, name = field.partition(":")
        if kind == "c":
            completed[name] += int(value)
        elif kind == "f":
            failed[name] += int(value)
        elif kind == "t":
            time_sum += int(value)
        elif kind == "b":
            hist[int(name)] += int(value)
    done, fail = sum(completed.values()), sum(failed.values())
    total = done + fail
    connectors = sorted(set(completed) | set(failed))
    return JobStats(
        period=period.value,
        total_jobs=total,
        completed_jobs=done,
        failed_jobs=fail,
        success_rate=round(done / total, 4) if total else None,
        avg_processing_time_ms=round(time_sum / total, 1) if total else None,
        p95_processing_time_ms=_p95(hist),
        by_connector=[
            ConnectorStats(
                connector=name,
                job_count=completed[name] + failed[name],
                completed=completed[name],
                failed=failed[name],
                success_rate=round(completed[name] / (completed[name] + failed[name]), 4),
            )
            for name in connectors
        ],
        by_status={"completed": done, "failed": fail, **(by_status or {})},
    )
