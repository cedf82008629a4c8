"""At most one deferred job per connector instance (the ``defer`` duplicate-run policy).

A job for an instance that another job is crawling goes back to delayed without spending an attempt. Left
at that, every schedule tick and every repeated enqueue while a long crawl runs adds one more deferred job,
each re-deferred for ever (2,027 in 15 s from one flooding schedule). So an instance has one deferral slot:
the first busy job takes it and is deferred; a busy job that finds the slot held by another job still
waiting its turn is a duplicate, and completes as skipped, ``superseded``. The slot frees itself when its
holder takes the instance's lease (it crawls), finishes, is removed, or after the slot's TTL.
"""

from __future__ import annotations

from worker.connections import RedisClient

# KEYS: the slot, the instance's lease. ARGV: job id, TTL (ms), the queue's key prefix (``<prefix>:<queue>:``).
# The holder keeps the slot while it waits its turn: its job exists, is not finished, and is not the job
# crawling the instance (lease tokens start with ``job:<id>|``). Returns that holder's id, else takes the slot.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local state = redis.call('HMGET', ARGV[3] .. holder, 'timestamp', 'finishedOn')
  local lease = redis.call('GET', KEYS[2]) or ''
  if state[1] and not state[2] and string.sub(lease, 1, #holder + 5) ~= 'job:' .. holder .. '|' then
    return holder
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""


class Deferrals:
    """The deferral slots of one queue's connector instances."""

    def __init__(self, client: RedisClient, *, prefix: str, queue: str, delay_s: float) -> None:
        self._base = f"{prefix}:{queue}"
        self._ttl_ms = max(int(delay_s * 3000), 10_000)  # outlives the delay (and a slow pickup after it)
        self._claim = client.register_script(_CLAIM)

    async def claim(self, instance: str, job_id: str) -> str | None:
        """Take the instance's slot for ``job_id`` (None: deferred), or the id of the job that holds it."""
        keys = [f"{self._base}:cw:deferred:{instance}", f"{self._base}:cw:lease:{instance}"]
        holder = await self._claim(keys=keys, args=[job_id, self._ttl_ms, f"{self._base}:"])
        return None if holder is None else str(holder.decode() if isinstance(holder, bytes) else holder)
