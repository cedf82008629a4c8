"""Throttled, monotonic progress reporting.

Connectors report ``current``/``total``; this turns it into ``job.updateProgress`` as the object
``{percentage, current, total, ...}`` (default) or a plain number 0-100 for consumers that
expect one. At most one write per ``interval_s`` (the first one interval after the start: a job
that finishes sooner writes only its last value) plus the last, which goes out with the job's
completion (see :meth:`ProgressReporter.finish`). The percentage never goes down (also across
retries, since ``current`` comes from checkpointed counters) and never reaches 100 before
:meth:`ProgressReporter.finish`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

ProgressWriter = Callable[[float | dict[str, Any]], Awaitable[None]]

#: The highest percentage reported while work remains.
MAX_BEFORE_DONE = 99.0


class ProgressReporter:
    """Reports one job's progress through ``write`` (``job.updateProgress``)."""

    def __init__(
        self,
        write: ProgressWriter,
        *,
        fmt: Literal["object", "number"] = "object",
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        floor: float = 0.0,
    ) -> None:
        self._write = write
        self._fmt = fmt
        self._interval = interval_s
        self._clock = clock
        self._next_write = clock() + interval_s  # the first write waits one interval, like every other
        self._percentage = max(0.0, min(floor, MAX_BEFORE_DONE))
        self._pending: dict[str, Any] | None = None
        self.writes = 0
        #: The value to write with the completion, once :meth:`finish` was called.
        self.final: float | dict[str, Any] | None = None

    @property
    def percentage(self) -> float:
        """The last percentage computed (reported or pending)."""
        return self._percentage

    def raise_floor(self, percentage: float) -> None:
        """Never report less than ``percentage`` (what an earlier attempt of the run reached)."""
        self._percentage = max(self._percentage, min(percentage, MAX_BEFORE_DONE))

    async def report(self, current: int, total: int | None, **extra: Any) -> None:
        """Record progress; writes now if the throttle window has passed."""
        if total:
            computed = min(100.0 * current / total, MAX_BEFORE_DONE)
            self._percentage = max(self._percentage, round(computed, 2))
        self._pending = {"percentage": self._percentage, "current": current, "total": total, **extra}
        now = self._clock()
        if now >= self._next_write:
            await self._flush(now)

    def finish(self, current: int, **extra: Any) -> float | dict[str, Any]:
        """The job is done: the 100 % value with the final counters, kept in :attr:`final`.

        It is not written here: the queue adapter writes it in the same round trip as the
        job's completion, so it is always the last progress a listener sees before ``completed``.
        """
        self._percentage = 100.0
        self._pending = None
        payload = {"percentage": 100.0, "current": current, "total": current, **extra}
        self.final = 100.0 if self._fmt == "number" else payload
        return self.final

    async def flush(self) -> None:
        """Write whatever is pending now (before a hand-off or a retry)."""
        if self._pending is not None:
            await self._flush(self._clock())

    async def _flush(self, now: float) -> None:
        payload = self._pending
        if payload is None:
            return
        self._pending = None
        self._next_write = now + self._interval
        self.writes += 1
        await self._write(payload["percentage"] if self._fmt == "number" else payload)
