"""A bare Python bullmq Worker with a no-op processor: the baseline crawl-worker is measured against.

Usage: ``python -m bench.bare_worker REDIS_URL QUEUE CONCURRENCY default|pooled``; runs until SIGTERM.
``default`` hands bullmq the URL (its own single connection); ``pooled`` hands it a pooled
``redis.asyncio`` client, as crawl-worker does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import redis.asyncio as aioredis
from bullmq import Worker


async def _noop(job: Any, token: str) -> None:
    del job, token


async def main(url: str, queue: str, concurrency: int, mode: str) -> None:
    """Consume ``queue`` until SIGTERM."""
    connection: Any = url
    if mode == "pooled":
        connection = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=30, max_connections=concurrency * 3 + 8
        )
    worker = Worker(queue, _noop, {"connection": connection, "prefix": "bull", "concurrency": concurrency})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
