"""The operations port: liveness never depends on Redis, readiness follows Redis and start-up, both recover."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from bullmq import Queue
from prometheus_client import CollectorRegistry

from tests.helpers import add_crawl, catalog_of, running_app, wait_for, wait_state
from tests.proc import Processes, write_catalog
from tests.redis_server import RedisServer, free_port
from worker.app import App
from worker.errors import ConfigError
from worker.http import OpsServer
from worker.settings import Settings


async def _status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path, timeout=2.0)).status_code


async def test_liveness_survives_redis_outage_and_readiness_follows(
    make_settings: Callable[..., Settings], private_redis: RedisServer
) -> None:
    """Starting without Redis, losing it and getting it back: /healthz stays 200, /readyz is 503 then 200 again."""
    settings = make_settings(
        redis_url=private_redis.url,
        metrics_enabled=True,
        metrics_host="127.0.0.1",
        metrics_port=0,
        redis_retry_delay_ms=500,
    )
    async with running_app(settings, catalog_of(), wait_started=False) as app:
        await wait_for(lambda: asyncio.sleep(0, app.ops is not None and app.ops.port > 0), what="ops port")
        assert app.ops is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.ops.port}") as http:
            # start-up: Redis not there yet
            assert await _status(http, "/healthz") == 200
            response = await http.get("/readyz")
            assert (response.status_code, response.json()["reason"]) == (503, "starting")

            private_redis.start()

            async def ready() -> bool:
                return await _status(http, "/readyz") == 200

            await wait_for(ready, timeout=15, what="ready after Redis started")
            metrics = (await http.get("/metrics")).text
            assert f'crawl_worker_queue_jobs{{queue="{settings.queue_name}",state="waiting"}} 0.0' in metrics
            assert "crawl_worker_concurrency_slots" in metrics

            private_redis.stop()
            lost = time.monotonic()

            async def unready() -> bool:
                return await _status(http, "/readyz") == 503

            await wait_for(unready, timeout=5, what="unready after Redis stopped")
            assert time.monotonic() - lost < 5
            for _ in range(3):
                started = time.monotonic()
                assert await _status(http, "/healthz") == 200
                assert time.monotonic() - started < 1.0
                assert (await http.get("/metrics")).status_code == 200  # scrapes still answer (errors counted)

            private_redis.start()
            await wait_for(ready, timeout=15, what="ready after Redis came back")
            assert await _status(http, "/healthz") == 200


async def test_readiness_is_unready_while_draining(make_settings: Callable[..., Settings], redis_url: str) -> None:
    """A draining worker answers /readyz 503 "draining" while /healthz stays 200."""
    settings = make_settings(metrics_enabled=True, metrics_host="127.0.0.1", metrics_port=0)
    app = App(settings, metrics_registry=CollectorRegistry(), catalog=catalog_of())
    started = asyncio.Event()

    async def mark(_: App) -> None:
        started.set()

    app.on_started.append(mark)
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(started.wait(), timeout=15)
    assert app.ops is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.ops.port}") as http:
        assert await _status(http, "/readyz") == 200
        app.draining = True
        response = await http.get("/readyz")
        assert (response.status_code, response.json()["reason"]) == (503, "draining")
        assert await _status(http, "/healthz") == 200
        app.draining = False
    app.request_stop()
    assert await asyncio.wait_for(task, timeout=30) == 0


async def test_port_in_use_is_a_clear_configuration_error() -> None:
    """A second worker on a busy metrics port stops with ConfigError naming the port and the settings to change."""
    registry = CollectorRegistry()

    async def ready() -> tuple[bool, str]:
        return True, "ok"

    first = OpsServer(registry, ready, host="127.0.0.1", port=0)
    await first.start()
    try:
        second = OpsServer(registry, ready, host="127.0.0.1", port=first.port)
        with pytest.raises(ConfigError, match=f"127.0.0.1:{first.port}.*CRAWL_WORKER_METRICS_PORT"):
            await second.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.port}") as http:
            assert await _status(http, "/healthz") == 200
    finally:
        await first.stop()


@pytest.mark.slow
async def test_sigterm_drains_with_the_port_still_answering(
    make_settings: Callable[..., Settings], tmp_path: Path, queue: Queue, processes: Processes
) -> None:
    """On SIGTERM the app drains (uvicorn does not take the signal): /healthz 200 and /readyz 503 meanwhile, exit 0."""
    settings = make_settings()
    port = free_port()
    slow = {"items": 6, "step_size": 1, "step_delay_s": 0.5}
    catalog = write_catalog(tmp_path / "catalog.toml", {"slow": {"connector": "mock", "config": slow}})
    proc = processes.crawler(
        settings, catalog, tmp_path, metrics_enabled=True, metrics_host="127.0.0.1", metrics_port=port
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def ready() -> bool:
            try:
                return await _status(http, "/readyz") == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout=20, interval=0.2, what="worker process ready")
        job_id = await add_crawl(queue, "mock", "slow")
        await wait_state(queue, job_id, ["active"])
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            response = await http.get("/readyz")
            return response.status_code == 503 and response.json()["reason"] == "draining"

        await wait_for(draining, timeout=5, what="/readyz draining")
        assert await _status(http, "/healthz") == 200
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert await wait_state(queue, job_id, ["completed"]) == "completed"
