"""Cancel a job from outside (``crawl-worker jobs cancel``, ``POST /v1/jobs/{id}/cancel``, the dashboard).

A job that waits its turn (waiting, paused, prioritized, delayed) is failed in one Lua call, with a ``failed``
event, as BullMQ fails a job. An active job belongs to a worker, which alone may fail it: the request is a
key (``<prefix>:<queue>:cw:cancel:<id>``, who asked and whether to discard the checkpoint) plus a message on
``<prefix>:<queue>:cw:cancel``. Every worker listens (:class:`CancelListener`); the one running the job
stops its crawl within one step (a step is cut short), keeps or discards the checkpoint as asked, and fails
the job, without retries, with ``cancelled by <who>``. A worker also looks for the keys of its running
jobs every :data:`POLL_S` seconds, for a message it missed (it took the job just after the message).
Nothing here imports bullmq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.connections import RedisClient
from worker.handler import CancelSignal, cancel_reason
from worker.logs import get_logger
from worker.status import Keys

log = get_logger(__name__)

#: How often a worker looks for cancel requests of its running jobs (a missed message is seen this late).
POLL_S = 2.0
#: How long a cancel request for an active job waits for its worker.
REQUEST_TTL_S = 86_400

# KEYS: job hash, wait, paused, prioritized, delayed, completed, failed, events, meta, cancel key.
# ARGV: job id, failedReason, now (ms), request (JSON), request TTL (s), channel.
# Returns the job's state before: a waiting one ('waiting' / 'paused' / 'prioritized' / 'delayed') is failed
# now; 'active' is signalled to its worker; 'completed' / 'failed' are left alone; 'missing'.
_REQUEST = """
local id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('ZSCORE', KEYS[6], id) then return 'completed' end
if redis.call('ZSCORE', KEYS[7], id) then return 'failed' end
local prev
if redis.call('LREM', KEYS[2], 0, id) > 0 then prev = 'waiting'
elseif redis.call('LREM', KEYS[3], 0, id) > 0 then prev = 'paused'
elseif redis.call('ZREM', KEYS[4], id) > 0 then prev = 'prioritized'
elseif redis.call('ZREM', KEYS[5], id) > 0 then prev = 'delayed' end
if prev then
  redis.call('ZADD', KEYS[7], ARGV[3], id)
  redis.call('HSET', KEYS[1], 'failedReason', ARGV[2], 'finishedOn', ARGV[3])
  local max_events = tonumber(redis.call('HGET', KEYS[9], 'opts.maxLenEvents')) or 10000
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', max_events, '*', 'event', 'failed', 'jobId', id,
    'failedReason', ARGV[2], 'prev', prev)
  return prev
end
redis.call('SET', KEYS[10], ARGV[4], 'EX', ARGV[5])
redis.call('PUBLISH', ARGV[6], id)
return 'active'
"""


@dataclass(frozen=True)
class CancelResult:
    """What a cancel request did: the job's state before, and whether it was failed now or signalled."""

    id: str
    state: str

    @property
    def done(self) -> str:
        """``failed`` (a waiting job, failed now), ``signalled`` (its worker stops it), or ``none``."""
        if self.state == "active":
            return "signalled"
        return "none" if self.state in ("completed", "failed", "missing") else "failed"


def cancel_key(keys: Keys, job_id: str) -> str:
    """The key that holds a cancel request for an active job."""
    return keys.key(f"cw:cancel:{job_id}")


def channel(keys: Keys) -> str:
    """The channel on which cancel requests are announced to the workers."""
    return keys.key("cw:cancel")


async def request_cancel(client: RedisClient, keys: Keys, job_id: str, *, by: str, discard: bool) -> CancelResult:
    """Cancel ``job_id``: fail it now if it waits its turn, else ask its worker to stop it."""
    payload = json.dumps({"by": by, "discard": discard, "at": time.time()})
    job_keys = [keys.job(job_id)]
    job_keys += [keys.key(s) for s in ("wait", "paused", "prioritized", "delayed", "completed", "failed", "events")]
    job_keys += [keys.key("meta"), cancel_key(keys, job_id)]
    args: list[str | int] = [job_id, cancel_reason(by), int(time.time() * 1000), payload, REQUEST_TTL_S, channel(keys)]
    state = await client.eval(_REQUEST, len(job_keys), *job_keys, *args)
    result = CancelResult(job_id, state.decode() if isinstance(state, bytes) else str(state))
    log.info("job.cancel_requested", job_id=job_id, by=by, discard_checkpoint=discard, state=result.state)
    return result


def _parse(raw: Any) -> tuple[str, bool] | None:
    try:
        request = json.loads(raw)
        return str(request["by"]), bool(request.get("discard"))
    except (ValueError, TypeError, KeyError):
        return None


class CancelListener:
    """A worker's ear for cancel requests: the channel, and a poll of its running jobs' keys.

    ``running`` gives the signal of a job this worker runs (None for others). Owns ``client`` (a
    connection of its own, for the subscription)."""

    def __init__(self, client: RedisClient, keys: Keys, running: Callable[[], dict[str, CancelSignal]]) -> None:
        self._client = client
        self._keys = keys
        self._running = running
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen in the background until :meth:`close`."""
        self._task = asyncio.create_task(self._run(), name="cancel-listener")

    async def _run(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(channel(self._keys))
                    message = await pubsub.get_message(timeout=POLL_S)
                    wanted = [str(message["data"])] if message else []
                    await self._apply(wanted or list(self._running()))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: try again after a pause; a missed request is polled
                    log.warning("cancel.listen_failed", error=str(exc), error_type=type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await pubsub.reset()
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    await asyncio.sleep(POLL_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _apply(self, job_ids: list[str]) -> None:
        """Signal each of ``job_ids`` this worker runs and has a cancel request for (the request is taken)."""
        running = self._running()
        mine = [job_id for job_id in job_ids if job_id in running]
        if not mine:
            return
        pipe = self._client.pipeline(transaction=False)
        for job_id in mine:
            pipe.getdel(cancel_key(self._keys, job_id))
        for job_id, raw in zip(mine, await pipe.execute(), strict=True):
            request = _parse(raw) if raw else None
            if request is not None and (signal := running.get(job_id)) is not None:
                log.info("job.cancelling", job_id=job_id, by=request[0], discard_checkpoint=request[1])
                signal.set(*request)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._client.aclose()
