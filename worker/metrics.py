"""Prometheus metrics recorded inside the worker, on an injected registry.

Counters are monotonic (unlike exporters that read BullMQ's capped completed/failed sets).
Labels are bounded: queue, connector *type* (unknown names become ``other``), outcome and our
own error class names; never a job name, connectorId, pod or host (the scrape target has those).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker import __version__
from worker.labels import OTHER

ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class Metrics:
    """Every metric the worker records itself. One instance per process, built at start-up."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        queue: str,
        connectors: Iterable[str],
        duration_buckets: Iterable[float],
        wait_buckets: Iterable[float],
    ) -> None:
        self.queue = queue
        self._known = frozenset(connectors)
        q, c = "queue", "connector"
        self.jobs_started = Counter(
            "crawl_worker_jobs_started_total", "Jobs this worker started processing.", [q, c], registry=registry
        )
        self.jobs_completed = Counter(
            "crawl_worker_jobs_completed_total", "Jobs that completed.", [q, c], registry=registry
        )
        self.jobs_failed = Counter(
            "crawl_worker_jobs_failed_total",
            "Jobs moved to failed (no attempts left, or a permanent error).",
            [q, c, "error_class"],
            registry=registry,
        )
        self.jobs_retried = Counter(
            "crawl_worker_jobs_retried_total",
            "Failed attempts that will be retried with backoff.",
            [q, c, "error_class"],
            registry=registry,
        )
        self.jobs_delayed = Counter(
            "crawl_worker_jobs_delayed_total",
            "Jobs sent back to delayed without spending an attempt.",
            [q, c, "reason"],
            registry=registry,
        )
        self.jobs_stalled = Counter(
            "crawl_worker_jobs_stalled_recovered_total",
            "Stalled jobs (lock expired) this worker moved back to wait.",
            [q],
            registry=registry,
        )
        self.jobs_resumed = Counter(
            "crawl_worker_jobs_resumed_total", "Runs resumed from a checkpoint.", [q, c], registry=registry
        )
        self.documents = Counter(
            "crawl_worker_documents_total", "Documents delivered to the sink.", [q, c], registry=registry
        )
        self.documents_deleted = Counter(
            "crawl_worker_documents_deleted_total", "Deletion tombstones delivered.", [q, c], registry=registry
        )
        self.document_bytes = Counter(
            "crawl_worker_document_bytes_total", "Bytes of documents delivered.", [q, c], registry=registry
        )
        self.item_failures = Counter(
            "crawl_worker_item_failures_total", "Items a crawl could not fetch.", [q, c], registry=registry
        )
        self.fetches = Counter(
            "crawl_worker_fetches_total",
            "Source fetches (HTTP requests, file reads) by status class.",
            [q, c, "status_class"],
            registry=registry,
        )
        self.skipped_items = Counter(
            "crawl_worker_skipped_total",
            "Items (URLs, files) a crawl did not fetch, by reason (a fixed set, see worker/skips.py).",
            [q, c, "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "crawl_worker_job_duration_seconds",
            "Processing time of one attempt.",
            [q, c, "outcome"],
            buckets=tuple(duration_buckets),
            registry=registry,
        )
        self.queue_wait = Histogram(
            "crawl_worker_job_queue_wait_seconds",
            "Time from when a job was due (timestamp + delay) to its first processing.",
            [q, c],
            buckets=tuple(wait_buckets),
            registry=registry,
        )
        self.attempts = Histogram(
            "crawl_worker_job_attempts",
            "Attempts a job took when it finished (completed or failed).",
            [q, c],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self.active = Gauge("crawl_worker_active_jobs", "Jobs in progress in this process.", [q], registry=registry)
        self.slots = Gauge(
            "crawl_worker_concurrency_slots", "Jobs this process may run at once.", [q], registry=registry
        )
        self.last_success = Gauge(
            "crawl_worker_last_success_timestamp_seconds",
            "When a crawl of this connector type last completed.",
            [q, c],
            registry=registry,
        )
        self.draining = Gauge("crawl_worker_draining", "1 while the worker drains for shutdown.", registry=registry)
        build = Gauge(
            "crawl_worker_build_info",
            "Version information (value is always 1).",
            ["version", "bullmq", "python"],
            registry=registry,
        )
        build.labels(__version__, _package_version("bullmq"), platform.python_version()).set(1)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._active = self.active.labels(queue)
        self._active.set(0)
        self.jobs_stalled.labels(queue)  # present at 0 from the start, so dashboards and rates see it
        for label in sorted(self._known):  # likewise per connector, so the job path can skip adding zeros
            for metric in (self.documents, self.documents_deleted, self.document_bytes, self.item_failures):
                self._child(metric, label)

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(queue, *labels)``, looked up once per label set (labels are bounded)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.queue, *labels)
        return child

    def connector_label(self, connector: str) -> str:
        """Bounded connector label: installed or configured names, else ``other``."""
        return connector if connector in self._known else OTHER

    def job_started(self, connector: str, queue_wait_s: float | None) -> None:
        """A job started an attempt; the first attempt also records its queue wait."""
        label = self.connector_label(connector)
        self._child(self.jobs_started, label).inc()
        if queue_wait_s is not None:
            self._child(self.queue_wait, label).observe(max(0.0, queue_wait_s))
        self._active.inc()

    def job_finished(
        self,
        connector: str,
        outcome: str,
        duration_s: float,
        *,
        error_class: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """An attempt ended. ``outcome``: completed, failed, retried, delayed or handed_off."""
        label = self.connector_label(connector)
        self._active.dec()
        self._child(self.duration, label, outcome).observe(duration_s)
        if outcome == "completed":
            self._child(self.jobs_completed, label).inc()
            self._child(self.last_success, label).set(time.time())
        elif outcome == "failed":
            self._child(self.jobs_failed, label, error_class or OTHER).inc()
        elif outcome == "retried":
            self._child(self.jobs_retried, label, error_class or OTHER).inc()
        if attempts is not None and outcome in {"completed", "failed"}:
            self._child(self.attempts, label).observe(attempts)

    def job_delayed(self, connector: str, reason: str) -> None:
        """A job went back to delayed without spending an attempt (``reason`` is bounded)."""
        self._child(self.jobs_delayed, self.connector_label(connector), reason).inc()

    def job_failed_before_start(self, error_class: str) -> None:
        """A job failed before its connector was known (undecodable data)."""
        self._child(self.jobs_failed, OTHER, error_class).inc()

    def stalled_recovered(self, count: int = 1) -> None:
        """This worker's stalled check moved ``count`` jobs back to wait."""
        self._child(self.jobs_stalled).inc(count)

    def run_resumed(self, connector: str) -> None:
        """A run resumed from its checkpoint."""
        self._child(self.jobs_resumed, self.connector_label(connector)).inc()

    def step_committed(self, connector: str, documents: int, deleted: int, size: int, failures: int) -> None:
        """One step's documents reached the sink."""
        label = self.connector_label(connector)
        for metric, value in (
            (self.documents, documents),
            (self.documents_deleted, deleted),
            (self.document_bytes, size),
            (self.item_failures, failures),
        ):
            if value:
                self._child(metric, label).inc(value)

    def fetched(self, connector: str, status_class: str, count: int = 1) -> None:
        """Source fetches by status class (``2xx``..``5xx``, ``error``)."""
        self._child(self.fetches, self.connector_label(connector), status_class).inc(count)

    def skipped(self, connector: str, reason: str, count: int = 1) -> None:
        """Items a crawl did not fetch, by reason (``reason`` is bounded by ``worker.skips``)."""
        self._child(self.skipped_items, self.connector_label(connector), reason).inc(count)

    def set_slots(self, slots: int) -> None:
        """The process's concurrency."""
        self._child(self.slots).set(slots)
