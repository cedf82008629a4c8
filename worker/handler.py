"""The contract between the queue adapter and the job stack: the job as the handler sees it, and its
completion. Types only, so what merely adds jobs (sinks, schedules, the API) imports no job stack."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from worker.connections import ScriptCall
from worker.progress import ProgressWriter


def cancel_reason(by: str) -> str:
    """The failedReason of a job an operator cancelled."""
    return f"cancelled by {by}"


@dataclass
class CancelSignal:
    """An operator's request to stop a running job (``worker.cancel``): who asked, and whether the run's
    checkpoint is to be discarded (the next run starts fresh) or kept (it resumes)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    by: str = ""
    discard_checkpoint: bool = False
    #: The crawl step under way, cancelled when the request arrives (the runner sets it).
    step: asyncio.Future[Any] | None = None

    def set(self, by: str, discard_checkpoint: bool) -> None:
        """The request arrived: the step under way is cut short."""
        self.by, self.discard_checkpoint = by, discard_checkpoint
        self.event.set()
        if self.step is not None:
            self.step.cancel()

    def is_set(self) -> bool:
        """Has the job been asked to stop?"""
        return self.event.is_set()


@dataclass
class ActiveJob:
    """A job being processed, as the queue adapter presents it."""

    id: str
    name: str
    data: Any
    attempts_made: int
    max_attempts: int
    timestamp_ms: int
    delay_ms: int
    update_progress: ProgressWriter
    handoff: asyncio.Event = field(default_factory=asyncio.Event)
    cancel: CancelSignal = field(default_factory=CancelSignal)
    #: Size of the data as stored (JSON, UTF-8), when the queue knows it; else measured from ``data``.
    data_bytes: int | None = None

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.attempts_made + 1


@dataclass(frozen=True)
class Completion:
    """A finished job: its JSON return value, plus the last progress and log line that the queue
    adapter writes in the same round trip as the completion itself."""

    result: dict[str, Any]
    progress: float | dict[str, Any] | None = None
    log: str | None = None
    #: Sent right after the completion, in the same round trip (the run record's last write).
    after: tuple[ScriptCall, ...] = ()
    #: Called once Redis has accepted the completion: what counts the job as completed (log, metrics, stats).
    on_committed: Callable[[], None] | None = None

    def committed(self) -> None:
        """The queue adapter's word that the completion is stored."""
        if self.on_committed is not None:
            self.on_committed()


#: What the queue adapter calls for each job.
Handler = Callable[[ActiveJob], Awaitable[Completion]]
