"""Live updates: BullMQ's own events stream (``<prefix>:<queue>:events``), read with XREAD and sent
to the browser as server-sent events. No page polls: a browser holds one stream, which blocks in
Redis until a worker (ours or Node's) writes an event.

Each SSE message is ``{event, jobId, state?, progress?, reason?}`` (never a return value: those
can be huge) with the stream entry id as its SSE id, so a reconnecting browser resumes where it
stopped (``Last-Event-ID``), and a page passes the id it was rendered at (``since``) so nothing
that happened between the render and the stream's start is missed.

One :class:`Hub` per process reads the events stream for every open browser stream: one blocking
XREAD on its own connection, fanned out to each stream's queue. Open streams therefore never hold
the API's Redis connections, however many there are; the hub caps them per process and per
session, and a session that signs out has its streams ended at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from worker.connections import RedisClient
from worker.logs import get_logger
from worker.status import Keys, loads

log = get_logger(__name__)

BLOCK_MS = 15_000
BATCH = 200
REASON_CHARS = 300
#: The state a job is in after each BullMQ event that moves it.
STATE_AFTER = {
    "added": "waiting",
    "waiting": "waiting",
    "active": "active",
    "progress": "active",
    "completed": "completed",
    "failed": "failed",
    "delayed": "delayed",
    "stalled": "waiting",
    "removed": "removed",
}
#: Open streams at most, per process and per signed-in session.
MAX_STREAMS = 32
MAX_STREAMS_PER_SESSION = 4
#: Messages a slow browser may lag behind before its stream is ended (it reconnects from its last id).
QUEUE_DEPTH = 1000
#: Entries read back (in batches of BATCH) for a stream that resumes from an id: older gaps are skipped.
CATCH_UP_BATCHES = 10
IDLE_S = 15.0
QUEUE_EVENTS = {"paused": True, "resumed": False}
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def percentage(progress: Any) -> float | None:
    """The percentage of a progress value: a number 0-100, or an object's ``percentage``."""
    value = progress.get("percentage") if isinstance(progress, dict) else progress
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(min(max(value, 0), 100))
    return None


def to_message(fields: Mapping[str, str]) -> dict[str, Any] | None:
    """The browser's message for one stream entry (None: nothing a page shows)."""
    event = fields.get("event", "")
    if event in QUEUE_EVENTS:
        return {"event": event, "paused": QUEUE_EVENTS[event]}
    job_id = fields.get("jobId")
    if not job_id or event not in STATE_AFTER:
        return None
    message: dict[str, Any] = {"event": event, "jobId": job_id, "state": STATE_AFTER[event]}
    if event == "progress":
        try:
            message["progress"] = percentage(loads(fields.get("data", "null")))
        except ValueError:
            return None
    elif event == "completed":
        message["progress"] = 100.0
    elif event == "failed":
        message["reason"] = fields.get("failedReason", "")[:REASON_CHARS]
    return message


def entry_id(value: str | None) -> str | None:
    """``value`` if it is a stream entry id, else None."""
    return value if value and _ENTRY_ID.match(value) else None


async def last_id(client: RedisClient, keys: Keys) -> str:
    """The id of the stream's newest entry ("0-0" when it is empty): where a page's updates start."""
    newest = await client.xrevrange(keys.key("events"), count=1)
    return str(newest[0][0]) if newest else "0-0"


def sse(ident: str, message: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"id: {ident}\ndata: {json.dumps(message, separators=(',', ':'))}\n\n"


def _order(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


#: Put on a stream's queue to end it (sign-out, server shutdown, lagging too far behind).
Item = tuple[str, dict[str, Any]]
END: Item = ("", {})


class Subscription:
    """One open browser stream: the session it belongs to and its queue of (entry id, message)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_DEPTH + 1)
        self.ended = False

    def put(self, item: Item) -> None:
        """Queue ``item``; a stream too far behind is ended (its browser resumes from its last id)."""
        if self.ended:
            return
        if self.queue.qsize() >= QUEUE_DEPTH:
            self.end()
            return
        self.queue.put_nowait(item)

    def end(self) -> None:
        """End the stream after what it has queued (one place is always kept for the end marker)."""
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(END)


class Hub:
    """Every open stream of one process, fed by one XREAD on a connection of its own.

    ``open`` reserves a place synchronously (no await between the check and the count, so 100
    simultaneous requests cannot all pass the cap); the reader task runs while a stream is open.
    """

    def __init__(
        self,
        connect: Callable[[], RedisClient],
        keys: Keys,
        *,
        max_streams: int = MAX_STREAMS,
        per_session: int = MAX_STREAMS_PER_SESSION,
    ) -> None:
        self._connect = connect
        self._client: RedisClient | None = None
        self._keys = keys
        self.max_streams = max_streams
        self.per_session = per_session
        self._subs: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None

    @property
    def open_count(self) -> int:
        """Streams open now."""
        return len(self._subs)

    def open(self, owner: str) -> Subscription | str:
        """A new subscription for session ``owner``, or why not (a cap is reached)."""
        if len(self._subs) >= self.max_streams:
            return f"too many live streams open ({self.max_streams}); reload later"
        if sum(1 for sub in self._subs if sub.owner == owner) >= self.per_session:
            return f"this session has {self.per_session} live streams open already; close a tab"
        sub = Subscription(owner)
        self._subs.add(sub)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="ui-events-reader")
        return sub

    def close(self, sub: Subscription) -> None:
        """Forget a stream (its browser went away or it ended)."""
        self._subs.discard(sub)

    def end_session(self, owner: str) -> int:
        """End every stream of session ``owner`` (it signed out); how many there were."""
        mine = [sub for sub in self._subs if sub.owner == owner]
        for sub in mine:
            sub.end()
        return len(mine)

    async def aclose(self) -> None:
        """End every stream, stop the reader, close its connection."""
        for sub in list(self._subs):
            sub.end()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _read(self) -> None:
        if self._client is None:
            self._client = self._connect()
        client, key = self._client, self._keys.key("events")
        last: str | None = None
        while self._subs:
            try:
                if last is None:
                    last = await last_id(client, self._keys)
                reply: Any = await client.xread({key: last}, count=BATCH, block=BLOCK_MS)
            except Exception as exc:  # Redis away: the streams idle, the reader retries
                log.warning("ui.events_read_failed", error_type=type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for _, entries in reply or ():
                for ident, fields in entries:
                    last = str(ident)
                    message = to_message(fields)
                    if message is not None:
                        for sub in list(self._subs):
                            sub.put((last, message))


async def stream(
    client: RedisClient,
    keys: Keys,
    since: str | None,
    sub: Subscription,
    hub: Hub,
    *,
    alive: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[str]:
    """Server-sent events after ``since`` (exclusive; None: from now) until the browser goes away or the
    stream is ended. What happened since ``since`` is read once with XRANGE, then the hub's feed follows."""
    try:
        yield "retry: 2000\n\n"
        last = entry_id(since)
        for _ in range(CATCH_UP_BATCHES if last is not None else 0):
            missed: Any = await client.xrange(keys.key("events"), min=f"({last}", count=BATCH)
            for ident, fields in missed:
                last = str(ident)
                message = to_message(fields)
                if message is not None:
                    yield sse(last, message)
            if len(missed) < BATCH:
                break
        while True:
            try:
                ident, fed = await asyncio.wait_for(sub.queue.get(), timeout=IDLE_S)
            except TimeoutError:
                if alive is not None and not await alive():
                    return
                yield ": idle\n\n"  # keeps proxies from closing a quiet stream
                continue
            if not ident:
                return
            if last is not None and _order(ident) <= _order(last):
                continue  # already sent from the catch-up read
            last = ident
            yield sse(ident, fed)
    finally:
        hub.close(sub)
