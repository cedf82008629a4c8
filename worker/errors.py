"""The one error hierarchy. Each branch says what happens to the job next.

- :class:`PermanentError`: the job fails now; no retry is spent on it (bad input, unknown
  connector, unconfigured instance, bad credentials).
- :class:`TransientError` (and any unexpected exception): the job's attempts and backoff apply.
- :class:`RetryLater`: the job goes back to delayed for ``delay_s`` without spending an attempt
  (a source's Retry-After, an instance already being crawled, a shutdown hand-off).

:func:`classify` decides a job's next step from any exception, once: the dispatcher logs and counts
by it, and the queue adapter (``worker.queue.consumer``) maps it onto bullmq's ``UnrecoverableError`` /
``DelayedError``.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from worker.labels import OTHER


class CrawlWorkerError(Exception):
    """Root of every error crawl-worker raises on purpose."""


class ConfigError(CrawlWorkerError):
    """Invalid settings or catalog: start-up stops with exit code 2."""


class PermanentError(CrawlWorkerError):
    """Fail the job now, without spending retries."""


class InvalidJobData(PermanentError):
    """The job's data does not match the crawl job contract."""


class UnknownConnector(PermanentError):
    """The job names a connector that is not installed."""


class UnconfiguredInstance(PermanentError):
    """The job's connectorId has no entry in the catalog."""


class InvalidConnectorConfig(PermanentError):
    """The catalog entry for the instance does not validate against the connector's config model."""


class CredentialsError(PermanentError):
    """Credentials are missing or were rejected by the source."""


class NoProgressError(PermanentError):
    """The run made no progress for too many consecutive attempts."""


class RunStateTooLarge(PermanentError):
    """A run's stored crawl state reached its cap (``run_state_max_mb``)."""


class RunTooLong(PermanentError):
    """A crawl ran past its time limit (``max_run_s``); its checkpoint is kept for the next job."""


class JobCancelled(PermanentError):
    """An operator cancelled the job (``crawl-worker jobs cancel``, the API, the dashboard)."""

    def __init__(self, message: str, *, discard_checkpoint: bool = False) -> None:
        super().__init__(message)
        self.discard_checkpoint = discard_checkpoint


class TransientError(CrawlWorkerError):
    """A failure worth retrying with backoff (network, 5xx, timeouts)."""


class RetryLater(CrawlWorkerError):
    """Come back after ``delay_s`` seconds without spending an attempt."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = max(0.0, delay_s)


class InstanceBusy(RetryLater):
    """Another job is already crawling this connector instance."""


class HandOff(RetryLater):
    """The worker is shutting down: the crawl saved its checkpoint and goes back to the queue now."""

    def __init__(self, message: str = "worker shutting down: crawl handed off at its checkpoint") -> None:
        super().__init__(message, 0.0)


class LeaseLost(CrawlWorkerError):
    """Another worker took over this instance (fencing): stop without writing."""


class SourceError(CrawlWorkerError):
    """A source failed or refused one item. Connectors turn these into item failures (or a retry-after) of
    the step; one that escaped a step would be retried like any transient failure."""


class FetchError(SourceError):
    """A page could not be fetched; ``retryable`` says whether a later run may succeed; ``skip`` (a reason of
    ``worker.skips``) says it is not a failure but an item passed over (an invalid redirect target, a
    Retry-After beyond every cap)."""

    def __init__(self, reason: str, *, retryable: bool = False, skip: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.skip = skip


class BlockedAddress(SourceError):
    """The URL's host is, or resolves to, an address crawls may not reach."""


class ComeBackLater(SourceError):
    """The server asked for a pause longer than we wait in place (Retry-After)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"server asked to retry after {seconds:.0f}s")
        self.seconds = seconds


class Refused(SourceError):
    """A path cannot be crawled as a file (not regular, too large, a link, or outside the root)."""


class TooLarge(Refused):
    """The file has more than ``max_size`` bytes."""

    def __init__(self, size: int | None, limit: int) -> None:
        told = f"{size} B" if size is not None else "it grew while read"
        super().__init__(f"larger than max_file_size ({told}; the limit is {limit} B)")


class RepeatError(CrawlWorkerError):
    """Repeat options that cannot produce a next tick (Node throws here too): the schedule ends, logged."""


class OperationError(CrawlWorkerError):
    """An operator's request on a job cannot be carried out (the API answers 404 / 409)."""


class JobNotFound(OperationError, LookupError):
    """No job with that id."""


class WrongState(OperationError, ValueError):
    """The job is not in a state the operation applies to."""


class Next(StrEnum):
    """What happens to a job after an exception."""

    FAIL = "fail"  # failed now, no attempts spent on it
    RETRY = "retry"  # the job's attempts and backoff apply (failed when none are left)
    LATER = "later"  # back to delayed for RetryLater.delay_s, no attempt spent
    ABANDON = "abandon"  # another worker owns the job now, or this one is being stopped: leave it alone


def classify(exc: BaseException) -> Next:
    """The one place that decides what an exception means for the job that raised it."""
    if isinstance(exc, LeaseLost | asyncio.CancelledError):
        return Next.ABANDON
    if isinstance(exc, RetryLater):
        return Next.LATER
    if isinstance(exc, PermanentError) or not isinstance(exc, Exception):
        return Next.FAIL
    return Next.RETRY


def error_class(exc: BaseException) -> str:
    """A bounded label for metrics: our own class names, else ``transient`` / ``other`` (OTHER)."""
    if isinstance(exc, CrawlWorkerError):
        return type(exc).__name__
    if isinstance(exc, (OSError, TimeoutError)):
        return "TransientError"
    return OTHER
