"""crawl-worker's queue core with a no-op job: the adapter without the crawl stack on top.

Usage: ``python -m bench.core_worker REDIS_URL QUEUE CONCURRENCY``; runs until SIGTERM. Everything
``crawl-worker run`` uses to consume a queue is here (the pooled client with hiredis packing, the
slot loop whose completions fetch the next job, the auto-pipeline, uvloop); the handler returns at
once instead of validating, leasing, crawling, logging and counting. The difference between this
and the full stack is the stack's own cost per job.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from worker import eventloop
from worker.connections import make_client
from worker.dispatch import ActiveJob, Completion
from worker.queue.producer import QueueWorker
from worker.settings import Settings


async def _noop(job: ActiveJob) -> Completion:
    del job
    return Completion({})


async def main(url: str, queue: str, concurrency: int) -> int:
    """Consume ``queue`` until SIGTERM."""
    settings = Settings(redis_url=url, queue_name=queue, concurrency=concurrency, worker_name=f"core-{queue}")
    client = make_client(settings, max_connections=concurrency * 3 + 8)
    worker = QueueWorker(settings, client, _noop)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    await stop.wait()
    await worker.drain(10)
    await worker.close()
    await client.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(eventloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])), "auto"))
