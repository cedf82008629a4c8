"""One HTTP port for operations: ``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness).

Served by uvicorn as a task in the worker's own event loop, so an answer from ``/healthz`` is the
proof that the loop is alive; it never touches Redis (a Redis outage must not restart every pod).
``/readyz`` asks the app (Redis answers, not draining, worker started). ``/metrics`` first awaits
the ``before_scrape`` hooks (the queue-state refresh), then renders the injected registry with
prometheus-client's own ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, Sequence

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from worker.connections import RedisClient
from worker.errors import ConfigError
from worker.logs import get_logger
from worker.queue_stats import QueueStatsCollector
from worker.settings import Settings

log = get_logger(__name__)

Readiness = Callable[[], Awaitable[tuple[bool, str]]]
Hook = Callable[[], Awaitable[None]]


def build_app(registry: CollectorRegistry, readiness: Readiness, before_scrape: Sequence[Hook] = ()) -> Starlette:
    """The ASGI application (exposed for tests)."""
    metrics_app = make_asgi_app(registry)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, reason = await readiness()
        return JSONResponse({"status": "ready" if ready else "unready", "reason": reason}, 200 if ready else 503)

    class MetricsEndpoint:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            for hook in before_scrape:
                await hook()
            await metrics_app(scope, receive, send)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", MetricsEndpoint()),
        ]
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the app owns SIGTERM/SIGINT (drain); uvicorn must not take them over


class OpsServer:
    """The operations HTTP server running in the current event loop."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Readiness,
        *,
        host: str,
        port: int,
        before_scrape: Sequence[Hook] = (),
    ) -> None:
        config = uvicorn.Config(
            build_app(registry, readiness, before_scrape),
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        sockets = self._server.servers[0].sockets if self._server.servers else []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def start(self) -> None:
        """Start serving; returns once the port is bound (:class:`ConfigError` if it cannot be)."""
        self._task = asyncio.create_task(self._serve(), name="ops-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise ConfigError("the operations HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("http.started", port=self.port)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind; we report instead
            config = self._server.config
            raise ConfigError(
                f"cannot serve /metrics, /healthz, /readyz on {config.host}:{config.port} (port in use?): "
                "set CRAWL_WORKER_METRICS_PORT, or CRAWL_WORKER_METRICS_ENABLED=false"
            ) from exc

    async def stop(self) -> None:
        """Stop serving (open scrapes get up to a second)."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=5)
        except (TimeoutError, OSError):
            self._task.cancel()
        self._task = None


async def start_ops_server(
    settings: Settings, registry: CollectorRegistry, client: RedisClient, readiness: Readiness
) -> OpsServer | None:
    """Register the queue-state collector and start the operations port (None when disabled)."""
    if not settings.metrics_enabled:
        return None
    stats = QueueStatsCollector(
        client, prefix=settings.prefix, queues=[settings.queue_name], cache_s=settings.queue_stats_cache_s
    )
    registry.register(stats)
    server = OpsServer(
        registry, readiness, host=settings.metrics_host, port=settings.metrics_port, before_scrape=[stats.refresh]
    )
    await server.start()
    return server
