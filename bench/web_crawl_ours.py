"""Crawl the generated site with crawl-worker's web connector; prints pages, seconds, peak RSS as JSON.

Usage: ``python -m bench.web_crawl_ours START_URL CONCURRENCY DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from worker.connectors.base import ConnectorContext
from worker.connectors.web import WebConfig, WebConnector


async def main(start: str, concurrency: int, data_dir: Path) -> dict[str, float]:
    """Run the connector step by step until done, as the runner does."""
    config = WebConfig(
        start_urls=[start],
        max_depth=50,
        max_pages=100_000,
        per_host_concurrency=concurrency,
        pages_per_step=concurrency * 8,
        allowed_networks=["127.0.0.0/8"],
        max_pages_per_pattern=100_000,
    )
    connector = WebConnector(config, ConnectorContext(connector_id="bench", org_id="bench", data_dir=data_dir))
    checkpoint = connector.initial_checkpoint(None)
    pages = 0
    t0 = time.monotonic()
    while checkpoint.has_more:
        step = await connector.run_step(checkpoint)
        checkpoint.model_dump_json()  # the runner persists every checkpoint: count its cost too
        pages += len(step.documents)
        checkpoint = step.checkpoint
    elapsed = time.monotonic() - t0
    await connector.aclose()
    return {
        "pages": pages,
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))))
