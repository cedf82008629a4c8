"""Run records, leases and fencing epochs, in Redis, per connector instance (not per job id).

Retries keep the job id, schedule ticks get new ids and ``removeOnComplete: 10`` prunes old
jobs, so the state that lets a crawl resume lives under the instance:

- ``<prefix>:<queue>:cw:run:<org>:<connector>:<connectorId>`` — a hash: ``epoch`` and ``record``
  (JSON :class:`RunRecord`), expiring after the retention period;
- ``<prefix>:<queue>:cw:lease:<org>:<connector>:<connectorId>`` — the lease token, with a TTL,
  renewed alongside the job's lock (all of a process's leases in one call, like bullmq's locks);
- ``<prefix>:<queue>:cw:data:<org>:<connector>:<connectorId>:<runId>:<name>`` — what grows with a
  crawl (frontier, seen set, page and file states: ``worker.crawlstate``), written incrementally by
  the same fenced call as the record, expiring with it, deleted when the run ends.

Taking the lease bumps the epoch; every write is fenced by (lease token, epoch) in one Lua
call, so a worker that lost the instance to another can never overwrite its checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

from worker import skips
from worker.connections import AutoPipeline, RedisClient, ScriptCall
from worker.crawlstate import PUSH_FRONT, StateChanges
from worker.errors import LeaseLost
from worker.logs import get_logger
from worker.rundata import RedisRunData

log = get_logger(__name__)

RunStatus = Literal["running", "interrupted", "completed", "abandoned"]

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and string.sub(cur, 1, #ARGV[4]) ~= ARGV[4] then return {-1} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {epoch, redis.call('HGET', KEYS[2], 'record')}
"""

# Renews many leases at once: KEYS are lease keys, ARGV their tokens in order, then the TTL in ms.
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then out[i] = redis.call('PEXPIRE', key, ARGV[#ARGV]) else out[i] = 0 end
end
return out
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The fenced commit of a step: the run record plus the step's state changes, in one call.
# KEYS: lease, run hash, then the data keys the ops name, then keys to expire, then keys to delete.
# ARGV: token, epoch, record JSON, TTL s, release (1/0), number of ops, number of keys to expire,
# number of keys to delete, then each op as: code, KEYS index, argument count, arguments.
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[2], 'epoch')) ~= tonumber(ARGV[2]) then return -1 end
local ttl = ARGV[4]
local i = 9
for _ = 1, tonumber(ARGV[6]) do
  local code, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  i = i + 3
  if code == 'pop' then
    redis.call('LTRIM', key, ARGV[i], -1)
  elseif code == 'del' then
    redis.call('DEL', key)
  elseif code == 'incr' then
    for j = i, i + n - 1, 2 do redis.call('HINCRBY', key, ARGV[j], ARGV[j + 1]) end
  else
    for j = i, i + n - 1, 1000 do redis.call(code, key, unpack(ARGV, j, math.min(j + 999, i + n - 1))) end
  end
  i = i + n
end
local expire, delete = tonumber(ARGV[7]), tonumber(ARGV[8])
for k = #KEYS - delete - expire + 1, #KEYS - delete do redis.call('EXPIRE', KEYS[k], ttl) end
for k = #KEYS - delete + 1, #KEYS do redis.call('DEL', KEYS[k]) end
redis.call('HSET', KEYS[2], 'record', ARGV[3])
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[5] == '1' then redis.call('DEL', KEYS[1]) end
return 1
"""


@dataclass
class Counters:
    """Cumulative counters of one run (they survive retries, so progress stays monotonic)."""

    processed: int = 0
    documents: int = 0
    written: int = 0
    deleted: int = 0
    bytes: int = 0
    failures: int = 0
    steps: int = 0
    #: Items not fetched, by reason (``worker.skips``).
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class RunRecord:
    """Everything needed to resume or continue a connector instance's crawl.

    A plain dataclass whose state changes are its methods (the runner calls them, step by step); it is
    validated when read back from Redis (:func:`load_record`) and written as JSON (:func:`dump_record`).
    """

    run_id: str
    status: RunStatus = "running"
    config_hash: str
    checkpoint_version: int = 1
    checkpoint: dict[str, Any] | None = None
    counters: Counters = field(default_factory=Counters)
    total: int | None = None
    percentage: float = 0.0
    commits: int = 0
    commits_at_start: int = 0
    no_progress_attempts: int = 0
    attempts: int = 0
    job_id: str | None = None
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    #: When the job running this record first ran it (its attempts and hand-offs count toward ``max_run_s``).
    job_started_at: float = field(default_factory=time.time)
    last_completed_checkpoint: dict[str, Any] | None = None
    last_completed_version: int | None = None
    last_completed_at: float | None = None
    #: Names of the structures this run has stored (``worker.crawlstate``), and what they hold in all.
    state_names: list[str] = field(default_factory=list)
    state_size: int = 0
    #: The last completed run whose carried structures the next run reads as ``previous``.
    last_completed_run_id: str | None = None
    last_completed_names: list[str] = field(default_factory=list)

    # --- every change of a run's state, in the order a run goes through them -----------------------

    def resumable(self, config_hash: str, version: int) -> bool:
        """An unfinished run of the same configuration and checkpoint schema, with a checkpoint to resume."""
        return (
            self.status in ("running", "interrupted")
            and self.checkpoint is not None
            and self.config_hash == config_hash
            and self.checkpoint_version == version
        )

    def count_resume(self) -> int:
        """Another attempt resumes this run: its count of consecutive attempts without a commit."""
        progressed = self.commits > self.commits_at_start
        self.no_progress_attempts = 0 if progressed else self.no_progress_attempts + 1
        return self.no_progress_attempts

    def previous(self, config_hash: str, version: int) -> dict[str, Any] | None:
        """The last completed run's final checkpoint, if the next run may start from it (incremental)."""
        if self.config_hash == config_hash and self.last_completed_version == version:
            return self.last_completed_checkpoint
        return None

    def successor(self, run_id: str, config_hash: str, version: int, *, incremental: bool) -> RunRecord:
        """A fresh run after this record; it inherits the last completed run when it crawls incrementally."""
        fresh = RunRecord(run_id=run_id, config_hash=config_hash, checkpoint_version=version)
        if incremental:
            fresh.last_completed_checkpoint = self.last_completed_checkpoint
            fresh.last_completed_version = self.last_completed_version
            fresh.last_completed_at = self.last_completed_at
            fresh.last_completed_run_id = self.last_completed_run_id
            fresh.last_completed_names = self.last_completed_names
        return fresh

    def start_attempt(self, job_id: str, checkpoint: dict[str, Any] | None = None) -> None:
        """An attempt of ``job_id`` runs this record (from ``checkpoint`` when the run is new)."""
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self.status = "running"
        self.commits_at_start = self.commits
        self.attempts += 1
        if job_id != self.job_id:
            self.job_started_at = time.time()
        self.job_id = job_id

    def commit_step(self, step: Any, written: int, checkpoint: dict[str, Any]) -> None:
        """A step's documents, counters and stored-state growth, and the checkpoint after it."""
        c = self.counters
        c.processed += step.processed
        c.documents += len(step.documents)
        c.written += written
        c.deleted += sum(doc.deleted for doc in step.documents)
        c.bytes += sum(doc.size for doc in step.documents)
        c.failures += len(step.failures)
        c.steps += 1
        if step.skipped:
            c.skipped = skips.merged(c.skipped, step.skipped)
        self.commits += 1
        self.state_size += step.changes.size
        self.state_names.extend(sorted(step.changes.names() - set(self.state_names)))
        if step.total is not None:
            self.total = max(step.total, c.processed)
        self.checkpoint = checkpoint

    def interrupt(self) -> None:
        """The attempt stopped between commits: the next one resumes from the checkpoint."""
        self.status = "interrupted"

    def abandon(self) -> list[str]:
        """The run is given up (no progress, state past its cap): the next one starts fresh. Returns the
        names of its stored structures, to delete."""
        self.status = "abandoned"
        names, self.state_names, self.checkpoint = self.state_names, [], None
        return names

    def complete(self, carried: frozenset[str]) -> tuple[list[str], list[str]]:
        """The run finished: its checkpoint becomes the last completed one, its ``carried`` structures are
        kept for the next run. Returns (its structures to delete, the previous completed run's to delete)."""
        kept = [name for name in self.state_names if name in carried]
        dropped = [name for name in self.state_names if name not in carried]
        replaced = self.last_completed_names if self.last_completed_run_id not in (None, self.run_id) else []
        self.status = "completed"
        self.last_completed_checkpoint = self.checkpoint
        self.last_completed_version = self.checkpoint_version
        self.last_completed_at = time.time()
        self.last_completed_run_id, self.last_completed_names = self.run_id, kept
        self.checkpoint, self.state_names = None, []
        return dropped, replaced


_RECORD = TypeAdapter(RunRecord)


def load_record(raw: str | bytes) -> RunRecord:
    """A stored run record, validated."""
    return _RECORD.validate_json(raw)


def dump_record(record: RunRecord) -> str:
    """A run record as stored (JSON)."""
    return _RECORD.dump_json(record).decode()


@dataclass(frozen=True)
class Lease:
    """Exclusive right to crawl one instance: a token and the epoch it was granted at."""

    key: str
    token: str
    epoch: int
    #: The run record as it was when the lease was granted (read atomically with the epoch bump).
    record_json: str | None = field(default=None, repr=False, compare=False)

    def record(self) -> RunRecord | None:
        """The instance's run record at acquisition, if one was stored."""
        return load_record(self.record_json) if self.record_json else None


class RunStore:
    """Reads and writes run records and leases for one queue."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        queue: str,
        lease_ms: int,
        retention_s: int,
        autopipeline: AutoPipeline | None = None,
    ) -> None:
        self._client = client
        self._autopipeline = autopipeline or AutoPipeline(client)
        self._base = f"{prefix}:{queue}:cw"
        self.lease_ms = lease_ms
        self._retention_s = retention_s
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._save = client.register_script(_SAVE)
        self._held: dict[str, tuple[Lease, asyncio.Event]] = {}

    def _keys(self, instance: str) -> list[str]:
        return [f"{self._base}:lease:{instance}", f"{self._base}:run:{instance}"]

    async def acquire(self, instance: str, token: str, *, takeover_prefix: str | None = None) -> Lease | None:
        """Take the instance's lease (bumping its epoch), or None if another holder has it.

        A holder whose token starts with ``takeover_prefix`` is taken over: that is an earlier
        attempt of the same job, which lost its BullMQ lock to us (stalled and recovered), so it
        is dead or fenced off by the new epoch.
        """
        args: list[str | int] = [token, self.lease_ms, self._retention_s, takeover_prefix or token]
        (reply,) = await self._autopipeline.execute([ScriptCall(self._acquire, self._keys(instance), args)])
        if isinstance(reply, Exception):
            raise reply
        epoch = int(reply[0])
        if epoch < 0:
            return None
        return Lease(instance, token, epoch, reply[1] if len(reply) > 1 and reply[1] else None)

    def hold(self, lease: Lease) -> asyncio.Event:
        """Keep ``lease`` renewed (by :meth:`keep_leases`) until :meth:`drop`; the event is set if it is lost."""
        lost = asyncio.Event()
        self._held[lease.token] = (lease, lost)
        return lost

    def drop(self, lease: Lease) -> None:
        """Stop renewing ``lease``."""
        self._held.pop(lease.token, None)

    async def keep_leases(self) -> None:
        """Renew every held lease every third of its TTL, in one round trip, until cancelled."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            await self.renew_held()

    async def renew_held(self) -> None:
        """Renew the held leases now; flag and forget the ones that were lost (expired and taken, or released)."""
        held = list(self._held.values())
        if not held:
            return
        keys = [self._keys(lease.key)[0] for lease, _ in held]
        try:
            renewed = await self._renew(keys=keys, args=[*(lease.token for lease, _ in held), self.lease_ms])
        except Exception as exc:  # Redis blip: try again next round, the TTL has slack
            log.warning("lease.renew_failed", error=str(exc), leases=len(held))
            return
        for (lease, lost), ok in zip(held, renewed, strict=True):
            if not ok:
                lost.set()
                self.drop(lease)

    async def release(self, lease: Lease) -> None:
        """Give the lease back (only if still ours)."""
        await self._release(keys=self._keys(lease.key)[:1], args=[lease.token])

    async def holder(self, instance: str) -> str | None:
        """The token currently holding the instance, if any."""
        value = await self._client.get(self._keys(instance)[0])
        return None if value is None else str(value)

    async def load(self, instance: str) -> RunRecord | None:
        """The instance's run record, if one is stored."""
        raw = await self._client.hget(self._keys(instance)[1], "record")
        return load_record(raw) if raw else None

    def data_key(self, instance: str, run_id: str, name: str) -> str:
        """The Redis key of the structure ``name`` of run ``run_id`` of ``instance``."""
        return f"{self._base}:data:{instance}:{run_id}:{name}"

    def run_data(self, instance: str, record: RunRecord) -> RedisRunData:
        """What the connector reads of ``record``'s stored state (and of the last completed run's)."""
        done = record.last_completed_run_id
        return RedisRunData(
            self._client,
            lambda name: self.data_key(instance, record.run_id, name),
            None if done is None else lambda name: self.data_key(instance, done, name),
        )

    async def save(
        self, lease: Lease, record: RunRecord, changes: StateChanges | None = None, *, delete: Sequence[str] = ()
    ) -> None:
        """Write ``record`` (and ``changes``) if ``lease`` still holds the instance at its epoch; else LeaseLost.

        ``delete`` names whole keys to drop in the same call (data of a run that ends or is replaced).
        """
        keys, args = self._save_args(lease, record, changes, delete)
        _check_save(lease, int(await self._save(keys=keys, args=args)))

    def save_call(
        self,
        lease: Lease,
        record: RunRecord,
        *,
        release: bool = False,
        changes: StateChanges | None = None,
        delete: Sequence[str] = (),
    ) -> ScriptCall:
        """The fenced write of ``record`` as a call for a pipeline (``release`` also gives the lease back).

        The run's last write goes out this way, in the round trip that completes the job; a fenced-off
        reply is logged (the job completed, another holder owns the instance's record now).
        """

        def on_reply(reply: Any) -> None:
            try:
                if isinstance(reply, BaseException):
                    raise reply
                _check_save(lease, int(reply))
            except Exception as exc:
                log.warning("run.final_save_failed", error=str(exc), instance=lease.key)

        keys, args = self._save_args(lease, record, changes, delete, release)
        return ScriptCall(self._save, keys, args, on_reply)

    def _save_args(
        self,
        lease: Lease,
        record: RunRecord,
        changes: StateChanges | None,
        delete: Sequence[str],
        release: bool = False,
    ) -> tuple[list[str], list[str | int]]:
        record.updated_at = time.time()
        keys = self._keys(lease.key)
        ops: list[str | int] = []
        if changes:
            index: dict[str, int] = {}
            for op in changes.ops:
                if op.name not in index:
                    keys.append(self.data_key(lease.key, record.run_id, op.name))
                    index[op.name] = len(keys)
                args = op.args[::-1] if op.code == PUSH_FRONT else op.args  # LPUSH reverses
                ops += [op.code, index[op.name], len(args), *args]
        dropped = set(delete)
        expire = [k for k in self.kept_keys(lease.key, record) if k not in dropped]
        keys += [*expire, *delete]
        head: list[str | int] = [
            lease.token,
            lease.epoch,
            dump_record(record),
            self._retention_s,
            int(release),
            len(changes.ops) if changes else 0,
            len(expire),
            len(delete),
        ]
        return keys, head + ops

    def kept_keys(self, instance: str, record: RunRecord) -> list[str]:
        """Every data key ``record`` refers to: its run's structures and the last completed run's carried ones."""
        keys = [self.data_key(instance, record.run_id, name) for name in record.state_names]
        if record.last_completed_run_id is not None:
            done = record.last_completed_run_id
            keys += [self.data_key(instance, done, name) for name in record.last_completed_names]
        return keys


def _check_save(lease: Lease, result: int) -> None:
    if result != 1:
        reason = "lease expired or taken" if result == 0 else "a newer epoch took over"
        raise LeaseLost(f"instance {lease.key}: {reason}; this worker stops without writing")
