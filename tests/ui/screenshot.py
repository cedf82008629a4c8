"""Take the README's screenshot of the dashboard overview: ``python -m tests.ui.screenshot docs/dashboard.png``.

Runs the real worker on a private key prefix of the test Redis with a few mock crawls (some done,
one failing, two running), serves the dashboard, and photographs the overview in headless Chromium.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from tests.api.conftest import ADMIN, READ, serve
from tests.conftest import REDIS_URL, delete_keys
from tests.helpers import add_crawl, catalog_of, open_queue, running_app, wait_for
from tests.ui.browser import chromium
from worker.settings import Settings

INSTANCES = {
    "docs-site": {"connector": "mock", "config": {"items": 1000, "step_size": 4, "step_delay_s": 0.05}},
    "eng-drive": {"connector": "mock", "config": {"items": 300, "step_size": 3, "step_delay_s": 0.08}},
    "wiki": {"connector": "mock", "config": {"items": 40, "step_size": 10}},
    "tickets": {"connector": "mock", "config": {"items": 25, "step_size": 5}},
    "chat": {"connector": "mock", "config": {"invalid_credentials": True}},
}


async def main(out: Path) -> None:
    """Fill, run, photograph, clean up."""
    prefix = f"cwshot{uuid.uuid4().hex[:6]}"
    settings = Settings(
        redis_url=REDIS_URL, prefix=prefix, queue_name="crawling-scheduler", api_read_token=READ,
        api_admin_token=ADMIN, progress_interval_s=0.2, log_level="warning", metrics_enabled=False,
        worker_name="crawler-7f9c-1",
    )  # fmt: skip
    queue = open_queue(settings)
    try:
        async with running_app(settings, catalog_of(**INSTANCES)), serve(settings) as client, chromium() as browser:
            for cid in ("wiki", "tickets", "chat", "wiki", "tickets"):
                await add_crawl(queue, "mock", cid, attempts=1)
                await asyncio.sleep(0.3)
            for cid in ("docs-site", "eng-drive"):
                await add_crawl(queue, "mock", cid)
            await asyncio.sleep(3)
            await wait_for(lambda: queue.getJobCountByTypes("active"), what="active crawls")
            page = await browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
            base = str(client.base_url).rstrip("/")
            await page.goto(f"{base}/ui/")
            await page.fill("input[name=token]", ADMIN)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/ui/")
            await asyncio.sleep(1.5)  # a few live progress updates
            await page.screenshot(path=str(out), full_page=True)
    finally:
        await queue.obliterate({"force": True})
        await queue.close()
        delete_keys(REDIS_URL, prefix, settings.queue_name)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")))
