"""Queue state for Prometheus at a cost that does not grow with the queue, shared across replicas.

Per queue, one computation is two pipelined round trips of O(1) commands (LLEN / ZCARD / HGET /
LINDEX / ZRANGE 0 0 / LRANGE of at most ``max_stuck_checked`` active ids, CLIENT LIST), then one
EXISTS per checked active job for the stuck rule of :mod:`worker.stuck`. No SCAN, no per-job
reads beyond the two oldest waiting jobs. So a queue of 10 jobs and one of 1,000,000 cost the same.

The result is cached twice so N replicas do not mean N times the load:
- in Redis: a JSON snapshot (``<prefix>:<queue>:crawl-worker:queue-stats``, ``PX`` a few TTLs) and a
  ``SET NX PX`` lock, so within one TTL only one replica computes and the others read the snapshot
  with a single GET;
- in the process: a scrape within the TTL of the last one costs no Redis call at all.

``refresh()`` is async and runs before each scrape (``worker/http.py``); ``collect()`` is the
synchronous prometheus-client hook and only reads the last snapshot.

States are disjoint, so ``sum by (queue)`` is the total: ``waiting`` (wait list + prioritized set,
where jobs with a priority live), ``paused`` (the same jobs when the queue's meta says paused, plus
the legacy ``paused`` list), ``active``, ``stuck`` (active with an expired lock; also counted in
``active``, so leave it out of sums), ``delayed``, ``failed``, ``completed`` (both capped by
removeOnFail / removeOnComplete: use the worker's counters for rates).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.connections import RedisClient
from worker.logs import get_logger
from worker.stuck import DEFAULT_MAX_CHECKED, lock_key, stuck_from_exists

log = get_logger(__name__)

STATES = ("waiting", "paused", "active", "stuck", "delayed", "failed", "completed")
SNAPSHOT_SUFFIX = "crawl-worker:queue-stats"


@dataclass
class QueueState:
    """One queue's numbers at ``at`` (seconds since the epoch)."""

    at: float
    jobs: dict[str, int]
    oldest_waiting_ms: int | None = None
    workers: int | None = None
    checked_active: int = 0

    def oldest_age_s(self, now: float) -> float:
        """Age of the oldest waiting job (0 when none waits)."""
        if self.oldest_waiting_ms is None:
            return 0.0
        return max(0.0, now - self.oldest_waiting_ms / 1000)


@dataclass
class _Stats:
    duration_s: float = 0.0
    errors: int = 0
    last_success: float = 0.0
    computed: int = 0
    shared_hits: int = 0
    commands: int = 0
    states: dict[str, QueueState] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerInfo:
    """One connected worker of a queue, from CLIENT LIST: its name, address and connection age."""

    name: str
    addr: str
    age_s: int


def list_workers(client_list: str | list[dict[str, Any]], prefix: str, queue: str) -> list[WorkerInfo]:
    """Connected workers of ``queue`` in a CLIENT LIST reply, oldest first, as Node's ``getWorkers()`` lists them.

    Node BullMQ names one connection per worker (its blocking one) ``<prefix>:<base64(queue)>``, or
    ``...:w:<name>`` for a named worker; crawl-worker names one connection per process the same way
    (``worker/queue/producer.py``).
    """
    base = f"{prefix}:{base64.b64encode(queue.encode()).decode()}"
    entries = client_list if isinstance(client_list, list) else _parse_client_list(client_list)
    found = []
    for entry in entries:
        name = str(entry.get("name") or "")
        if name == base or name.startswith(f"{base}:w:"):
            short = name[len(base) + 3 :] if name != base else "(unnamed)"
            found.append(WorkerInfo(short, str(entry.get("addr") or ""), _int(entry.get("age"))))
    return sorted(found, key=lambda w: -w.age_s)


def count_workers(client_list: str | list[dict[str, Any]], prefix: str, queue: str) -> int:
    """Connected workers of ``queue`` in a CLIENT LIST reply, counted as Node's ``getWorkersCount()`` counts."""
    return len(list_workers(client_list, prefix, queue))


def _parse_client_list(text: str) -> list[dict[str, Any]]:
    return [dict(part.split("=", 1) for part in line.split() if "=" in part) for line in text.splitlines()]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else 0


class QueueStatsCollector(Collector):
    """Queue gauges for ``queues``, computed at most once per ``cache_s`` across all replicas."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        queues: Sequence[str],
        cache_s: float,
        max_stuck_checked: int = DEFAULT_MAX_CHECKED,
        refresh_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._queues = tuple(queues)
        self._cache_s = cache_s
        self._max_checked = max_stuck_checked
        self._timeout = refresh_timeout_s
        self._stats = _Stats()
        self._lock = asyncio.Lock()

    @property
    def last_commands(self) -> int:
        """Redis commands the last ``refresh()`` sent (pipelined commands counted one by one)."""
        return self._stats.commands

    def snapshot(self, queue: str) -> QueueState | None:
        """The last known state of ``queue``."""
        return self._stats.states.get(queue)

    def _key(self, queue: str) -> str:
        return f"{self._prefix}:{queue}:{SNAPSHOT_SUFFIX}"

    async def refresh(self) -> None:
        """Bring every queue's snapshot up to date; errors are counted, never raised."""
        async with self._lock:
            started = time.monotonic()
            self._stats.commands = 0
            try:
                await asyncio.wait_for(self._refresh_all(), timeout=self._timeout)
            except Exception as exc:  # a scrape must never fail because of the collector: count and log it
                self._stats.errors += 1
                log.warning("queue_stats.failed", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__)
            else:
                self._stats.last_success = time.time()
            self._stats.duration_s = time.monotonic() - started

    async def _refresh_all(self) -> None:
        for queue in self._queues:
            known = self._stats.states.get(queue)
            if known is not None and time.time() - known.at < self._cache_s:
                continue  # fresh in this process: no Redis call
            self._stats.states[queue] = await self._refresh_one(queue)

    async def _refresh_one(self, queue: str) -> QueueState:
        if self._cache_s <= 0:
            return await self.compute(queue)
        key = self._key(queue)
        self._stats.commands += 1
        shared = await self._client.get(key)
        cached = _decode(shared)
        if cached is not None and time.time() - cached.at < self._cache_s:
            self._stats.shared_hits += 1
            return cached
        ttl_ms = max(1, round(self._cache_s * 1000))
        self._stats.commands += 1
        if not await self._client.set(f"{key}:lock", "1", nx=True, px=ttl_ms) and cached is not None:
            self._stats.shared_hits += 1
            return cached  # another replica is computing; its result is at most one TTL away
        state = await self.compute(queue)
        self._stats.commands += 1
        await self._client.set(key, json.dumps(asdict(state)), px=ttl_ms * 4)
        return state

    async def compute(self, queue: str) -> QueueState:
        """Read ``queue``'s state from Redis now (no cache): two pipelined round trips."""
        base = f"{self._prefix}:{queue}"
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(f"{base}:meta", "paused")
        pipe.llen(f"{base}:wait")
        pipe.zcard(f"{base}:prioritized")
        pipe.llen(f"{base}:paused")
        pipe.llen(f"{base}:active")
        pipe.zcard(f"{base}:delayed")
        pipe.zcard(f"{base}:failed")
        pipe.zcard(f"{base}:completed")
        pipe.lindex(f"{base}:wait", -1)  # LPUSH adds at the head: the tail waited longest
        pipe.zrange(f"{base}:prioritized", 0, 0)  # next prioritized job (oldest of the top priority)
        pipe.lrange(f"{base}:active", -self._max_checked, -1)  # the oldest active jobs
        pipe.client_list()
        replies = await pipe.execute(raise_on_error=False)
        self._stats.commands += len(replies)
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                raise reply
        paused_flag, wait, prioritized, legacy_paused, active, delayed, failed, completed = replies[:8]
        oldest_wait, oldest_prioritized, active_ids, clients = replies[8:]
        is_paused = paused_flag in {"1", 1, b"1"}
        queued = _int(wait) + _int(prioritized)
        ids = [str(job_id) for job_id in active_ids]
        candidates = [str(job_id) for job_id in (oldest_wait, *oldest_prioritized) if job_id]

        pipe = self._client.pipeline(transaction=False)
        for job_id in candidates:
            pipe.hmget(f"{base}:{job_id}", "timestamp", "delay")
        for job_id in ids:
            pipe.exists(lock_key(self._prefix, queue, job_id))
        second = await pipe.execute() if candidates or ids else []
        self._stats.commands += len(second)
        due = [_int(ts) + _int(delay) for ts, delay in second[: len(candidates)] if ts is not None]
        stuck = stuck_from_exists(ids, second[len(candidates) :])
        self._stats.computed += 1
        return QueueState(
            at=time.time(),
            jobs={
                "waiting": 0 if is_paused else queued,
                "paused": _int(legacy_paused) + (queued if is_paused else 0),
                "active": _int(active),
                "stuck": len(stuck),
                "delayed": _int(delayed),
                "failed": _int(failed),
                "completed": _int(completed),
            },
            oldest_waiting_ms=min(due) if due else None,
            workers=None if isinstance(clients, Exception) else count_workers(clients, self._prefix, queue),
            checked_active=len(ids),
        )

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the last snapshot (prometheus-client calls this on every scrape)."""
        now = time.time()
        stale_after = max(60.0, self._cache_s * 10)
        jobs = GaugeMetricFamily(
            "crawl_worker_queue_jobs",
            "Jobs in the queue by state (stuck jobs are also active).",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "crawl_worker_queue_oldest_waiting_age_seconds",
            "Age of the oldest job waiting to run, since it was due (0 when none waits).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "crawl_worker_queue_workers", "Workers connected to Redis for the queue (any language).", labels=["queue"]
        )
        for queue, state in self._stats.states.items():
            if now - state.at > stale_after:
                continue  # no numbers beat stale numbers: the last-success metric tells why
            for name in STATES:
                jobs.add_metric([queue, name], state.jobs.get(name, 0))
            oldest.add_metric([queue], state.oldest_age_s(now))
            if state.workers is not None:
                workers.add_metric([queue], state.workers)
        yield from (jobs, oldest, workers)
        yield from self._self_metrics()

    def _self_metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "crawl_worker_queue_collector_duration_seconds",
            "How long the last queue-state refresh took (cache hits included).",
            value=self._stats.duration_s,
        )
        yield CounterMetricFamily(
            "crawl_worker_queue_collector_errors", "Queue-state refreshes that failed.", value=self._stats.errors
        )
        yield GaugeMetricFamily(
            "crawl_worker_queue_collector_last_success_timestamp_seconds",
            "When the queue state was last refreshed successfully.",
            value=self._stats.last_success,
        )


def _decode(raw: Any) -> QueueState | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return QueueState(**data)
    except (TypeError, ValueError):
        return None
