"""Live updates: BullMQ's own events stream (``<prefix>:<queue>:events``), read with XREAD and sent
to the browser as server-sent events. No page polls: a browser holds one stream, which blocks in
Redis until a worker (ours or Node's) writes an event.

Each SSE message is ``{event, jobId, state?, progress?, reason?}`` (never a return value: those
can be huge) with the stream entry id as its SSE id, so a reconnecting browser resumes where it
stopped (``Last-Event-ID``), and a page passes the id it was rendered at (``since``) so nothing
that happened between the render and the stream's start is missed.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from worker.connections import RedisClient
from worker.status import Keys, loads

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


async def stream(client: RedisClient, keys: Keys, since: str | None) -> AsyncIterator[str]:
    """Server-sent events from ``since`` (exclusive; None: from now) until the browser goes away."""
    last = entry_id(since) or await last_id(client, keys)
    yield "retry: 2000\n\n"
    while True:
        reply: Any = await client.xread({keys.key("events"): last}, count=BATCH, block=BLOCK_MS)
        if not reply:
            yield ": idle\n\n"  # keeps proxies from closing a quiet stream
            continue
        for _, entries in reply:
            for ident, fields in entries:
                last = str(ident)
                message = to_message(fields)
                if message is not None:
                    yield sse(last, message)
