"""The bare probe: aiohttp + selectolax, fetch + parse + links only, N workers on a shared queue; prints JSON.

Usage: ``python -m bench.web_probe START_URL CONCURRENCY [aiohttp|httpx]``. What the hardware gives a
Python crawler with nothing else (no politeness, no state, no documents): the ceiling the connector is
measured against. ``httpx`` swaps the HTTP client (same loop, same parser): how the client was chosen.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

import aiohttp
from selectolax.lexbor import LexborHTMLParser


async def fetch_httpx(start: str, concurrency: int) -> dict[str, float]:
    """The same crawl with httpx's client."""
    import httpx

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as client:

        async def get(url: str) -> bytes:
            return (await client.get(url)).content

        return await crawl(start, concurrency, get)


async def main(start: str, concurrency: int) -> dict[str, float]:
    """Crawl with aiohttp."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def get(url: str) -> bytes:
            async with session.get(url) as response:
                return await response.read()

        return await crawl(start, concurrency, get)


async def crawl(start: str, concurrency: int, get: Callable[[str], Awaitable[bytes]]) -> dict[str, float]:
    """Crawl everything reachable on the start URL's host."""
    host = urlsplit(start).netloc
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen = {start}
    queue.put_nowait(start)
    pages = 0

    async def work() -> None:
        nonlocal pages
        while True:
            url = await queue.get()
            try:
                body = await get(url)
                tree = LexborHTMLParser(body)
                title = tree.css_first("title")
                _ = title.text() if title is not None else None
                for node in tree.css("a[href]"):
                    link = urljoin(url, node.attributes.get("href") or "")
                    if urlsplit(link).netloc == host and link not in seen:
                        seen.add(link)
                        queue.put_nowait(link)
                pages += 1
            finally:
                queue.task_done()

    t0 = time.monotonic()
    workers = [asyncio.create_task(work()) for _ in range(concurrency)]
    await queue.join()
    elapsed = time.monotonic() - t0
    for task in workers:
        task.cancel()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"pages": pages, "seconds": elapsed, "peak_rss_mb": peak_mb}


if __name__ == "__main__":
    client = sys.argv[3] if len(sys.argv) > 3 else "aiohttp"
    run = fetch_httpx if client == "httpx" else main
    print(json.dumps(asyncio.run(run(sys.argv[1], int(sys.argv[2])))))
