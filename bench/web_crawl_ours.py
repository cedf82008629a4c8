"""Crawl a site with crawl-worker's web connector alone, step by step as the runner does; prints JSON.

Usage: ``python -m bench.web_crawl_ours CONCURRENCY DATA_DIR START_URL [START_URL ...]``. The step's state
changes are applied to an in-memory run data (what the runner commits to Redis), and their size counted.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from worker.connectors.base import ConnectorContext
from worker.connectors.web.connector import WebConfig, WebConnector
from worker.crawlstate import MemoryRunData


def config(starts: list[str], concurrency: int) -> WebConfig:
    """The benchmark's crawl configuration (also used for the worker end to end)."""
    return WebConfig(
        start_urls=starts,
        max_depth=100,
        max_pages=1_000_000,
        per_host_concurrency=concurrency,
        pages_per_step=100,
        allowed_networks=["127.0.0.0/8"],
        max_pages_per_pattern=1_000_000,
    )


async def main(starts: list[str], concurrency: int, data_dir: Path) -> dict[str, float]:
    """Run the connector until done."""
    connector = WebConnector(config(starts, concurrency), ConnectorContext("bench", "bench", data_dir))
    data = MemoryRunData(WebConnector.carried)
    connector.bind(data)
    checkpoint = connector.initial_checkpoint(None)
    pages = stored = 0
    t0 = time.monotonic()
    while checkpoint.has_more:
        step = await connector.run_step(checkpoint)
        data.apply(step.changes)
        stored += step.changes.size + len(step.checkpoint.model_dump_json())
        pages += len(step.documents)
        checkpoint = step.checkpoint
    elapsed = time.monotonic() - t0
    await connector.aclose()
    return {
        "pages": pages,
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_bytes_per_page": stored / max(pages, 1),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[3:], int(sys.argv[1]), Path(sys.argv[2])))))
