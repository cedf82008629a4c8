"""Process lifecycle: build the collaborators, start consuming, and shut down in order.

Shutdown (arq's drain flag, dramatiq's two-stage termination):
1. first SIGTERM/SIGINT: stop fetching; active jobs run on for up to ``drain_timeout_s``;
2. then every active crawl is asked to hand off: it stops at its next checkpoint and goes back
   to the queue at once without spending an attempt, so another replica resumes it in seconds;
3. after ``handoff_timeout_s`` what is still running is cancelled (recovered later as stalled);
4. a second signal skips straight to 3.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from worker.catalog import Catalog
from worker.connections import AutoPipeline, RedisClient, make_client, redact_url
from worker.connectors.registry import Registry, build_registry
from worker.deferrals import Deferrals
from worker.dispatch import Dispatcher
from worker.exits import RET_CONNECT, RET_FORCED, RET_OK
from worker.http import OpsServer, start_ops_server
from worker.logs import get_logger, reap, suppressed
from worker.metrics import Metrics
from worker.prefixes import check_prefix
from worker.queue.consumer import QueueWorker
from worker.runner import Runner
from worker.runs import RunStore
from worker.settings import Settings, environment_secret
from worker.sinks.base import Sink
from worker.sinks.factory import build_sink
from worker.stats import StatsRecorder
from worker.sync_events import SyncEventPublisher, build_publisher

log = get_logger(__name__)


StartHook = Callable[["App"], Awaitable[None]]


@dataclass
class App:
    """One worker process. Collaborators may be injected (tests); the rest are built from Settings."""

    settings: Settings
    #: where the worker's Prometheus metrics are registered (and scraped from)
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: the installed connectors (None: the built-in ones)
    connector_registry: Registry | None = None
    catalog: Catalog | None = None
    sink: Sink | None = None
    on_started: list[StartHook] = field(default_factory=list)
    on_draining: list[StartHook] = field(default_factory=list)  # called once when the drain starts

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.draining = False
        self.queue_worker: QueueWorker | None = None
        self.metrics: Metrics | None = None
        self.client: RedisClient | None = None
        self.ops: OpsServer | None = None  # /metrics, /healthz, /readyz

    def request_stop(self) -> None:
        """First call: graceful drain. Second call: stop now."""
        if self._stop.is_set():
            log.warning("shutdown.forced")
            self._force.set()
        else:
            log.info("shutdown.requested", drain_timeout_s=self.settings.drain_timeout_s)
            self._stop.set()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: Redis answers and the worker is not draining."""
        if self.draining:
            return False, "draining"
        if self.client is None or self.queue_worker is None:
            return False, "starting"
        try:
            await asyncio.wait_for(self.client.ping(), timeout=1.0)
        except (RedisError, OSError, TimeoutError) as exc:
            return False, f"redis unreachable: {type(exc).__name__}"
        return True, "ok"

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self.client = make_client(s)
        owned_sink: Sink | None = None
        stats: StatsRecorder | None = None
        sync_events: SyncEventPublisher | None = None
        background: list[asyncio.Task[None]] = []  # lease renewal, stats flushes
        # The job path's client reads replies without a per-read timer; its AutoPipeline bounds round trips.
        worker_client = make_client(s, max_connections=s.concurrency * 3 + 8, bounded_reads=False)
        try:
            # liveness during start-up
            self.ops = await start_ops_server(s, self.metrics_registry, self.client, self.ready)
            if not await self._wait_for_redis():
                return RET_CONNECT
            await self._check_prefix()
            connectors = self.connector_registry or build_registry()
            self.metrics = Metrics(
                self.metrics_registry,
                queue=s.queue_name,
                connectors=[*connectors.names(), *s.known_connectors],
                duration_buckets=s.duration_buckets,
                wait_buckets=s.wait_buckets,
            )
            self.metrics.set_slots(s.concurrency)
            sink = self.sink or build_sink(s)
            if self.sink is None:
                owned_sink = sink
            sync_events = build_publisher(s)
            self.queue_worker, store, stats = self._build(worker_client, connectors, sink, self.metrics, sync_events)
            background.append(asyncio.create_task(stats.run(), name="stats-flush"))
            background.append(asyncio.create_task(store.keep_leases(), name="lease-renewal"))
            await self.queue_worker.start()
            log.info(
                "worker.started",
                queue=s.queue_name,
                prefix=s.prefix,
                redis=redact_url(s.redis_url),
                concurrency=s.concurrency,
                connectors=connectors.names(),
                worker_name=s.worker_name,
                event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            )
            for hook in self.on_started:
                await hook(self)
            await self._stop.wait()
            return await self._shutdown(self.queue_worker)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self._close(background, stats, owned_sink, worker_client)
            if sync_events is not None:
                with suppressed("sync_events.close_failed"):
                    await sync_events.aclose()

    async def _check_prefix(self) -> None:
        """Warn when the queue's keys live under another prefix than ours (``worker/prefixes.py``)."""
        s = self.settings
        assert self.client is not None
        with suppressed("queue.prefix_check_failed"):
            found = await check_prefix(self.client, s.prefix, s.queue_name, scan=not s.redis_cluster)
            if found.mismatch:
                log.warning(
                    "queue.prefix_mismatch",
                    queue=s.queue_name,
                    prefix=s.prefix,
                    found=list(found.elsewhere),
                    setting="prefix",
                    message=found.message(),
                )

    def _build(
        self,
        worker_client: RedisClient,
        connectors: Registry,
        sink: Sink,
        metrics: Metrics,
        sync_events: SyncEventPublisher,
    ) -> tuple[QueueWorker, RunStore, StatsRecorder]:
        """The job path: queue worker -> dispatcher -> runner, with its run store and statistics."""
        s = self.settings
        assert self.client is not None
        # lease reads and completions share round trips
        autopipeline = AutoPipeline(worker_client, timeout_s=s.redis_socket_timeout_s, batching=s.concurrency > 1)
        store = RunStore(
            self.client,
            prefix=s.prefix,
            queue=s.queue_name,
            lease_ms=s.lock_duration_ms,
            retention_s=s.run_retention_days * 86400,
            autopipeline=autopipeline,
        )
        runner = Runner(
            store,
            sink,
            metrics,
            max_no_progress_attempts=s.max_no_progress_attempts,
            busy_delay_s=s.duplicate_run_delay_s,
            max_state_bytes=s.run_state_max_mb * 1024 * 1024,
            max_run_s=s.max_run_s,
        )
        stats = StatsRecorder(
            self.client,
            prefix=s.prefix,
            queue=s.queue_name,
            retention_days=s.stats_retention_days,
            connectors=[*connectors.names(), *s.known_connectors],
        )
        dispatcher = Dispatcher(
            s,
            registry=connectors,
            catalog=self.catalog if self.catalog is not None else Catalog.load(s.catalog_file),
            runner=runner,
            metrics=metrics,
            lookup_env=environment_secret,
            stats=stats,
            sync_events=sync_events,
            deferrals=Deferrals(self.client, prefix=s.prefix, queue=s.queue_name, delay_s=s.duplicate_run_delay_s),
        )
        worker = QueueWorker(
            s,
            worker_client,
            dispatcher.process,
            autopipeline=autopipeline,
            on_stalled=lambda _job_id: metrics.stalled_recovered(),
            on_failed_undecodable=lambda: metrics.job_failed_before_start("InvalidJobData"),
        )
        return worker, store, stats

    async def _close(
        self,
        background: list[asyncio.Task[None]],
        stats: StatsRecorder | None,
        owned_sink: Sink | None,
        worker_client: RedisClient,
    ) -> None:
        """Stop background tasks, write the last statistics, close the ops port, the sink and the clients."""
        for task in background:
            task.cancel()
            await reap(task, f"{task.get_name()}.failed")
        if stats is not None:
            try:
                await stats.flush()
            except Exception as exc:
                log.warning("stats.flush_failed", error=str(exc), error_type=type(exc).__name__)
        if self.ops is not None:
            await self.ops.stop()
        if owned_sink is not None:
            with suppressed("sink.close_failed"):
                await owned_sink.aclose()
        with suppressed("redis.close_failed", client="job path"):
            await worker_client.aclose()
        if self.client is not None:
            with suppressed("redis.close_failed", client="shared"):
                await self.client.aclose()

    async def _wait_for_redis(self) -> bool:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.redis_startup_timeout_s
        delay = 0.2
        while True:
            try:
                await self.client.ping()
                return True
            except (RedisError, OSError) as exc:
                if loop.time() >= deadline or self._stop.is_set():
                    log.error("redis.unreachable", redis=redact_url(self.settings.redis_url), error=str(exc))
                    return False
                log.warning("redis.waiting", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _shutdown(self, worker: QueueWorker) -> int:
        s = self.settings
        self.draining = True
        if self.metrics:
            self.metrics.draining.set(1)
        for hook in self.on_draining:
            await hook(self)
        drained = await self._race(worker.drain(s.drain_timeout_s))
        if not drained and not self._force.is_set():
            handed = worker.request_handoff()
            log.info("shutdown.handoff", active=handed, timeout_s=s.handoff_timeout_s)
            drained = await self._race(worker.drain(s.handoff_timeout_s))
        await worker.close(force=not drained)
        log.info("worker.stopped", drained=drained)
        return RET_OK if drained else RET_FORCED

    async def _race(self, waiting: Awaitable[bool]) -> bool:
        """Await ``waiting`` unless a second signal comes first (then False)."""
        task = asyncio.ensure_future(waiting)
        forced = asyncio.ensure_future(self._force.wait())
        done, _ = await asyncio.wait({task, forced}, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if task in done:
            return task.result()
        task.cancel()
        return False
