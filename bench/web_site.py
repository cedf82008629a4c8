"""A generated site of N pages for the crawl benchmark, served by uvicorn in its own process.

Usage: ``python -m bench.web_site PORT PAGES``. Page i links to 2i+1 and 2i+2 (a tree, depth about
log2 N) and to two pseudo-random other pages (duplicates a crawler must recognise), with about 2 KB text.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

WORDS = [
    "crawl",
    "worker",
    "queue",
    "redis",
    "page",
    "link",
    "text",
    "index",
    "search",
    "document",
    "fetch",
    "robots",
    "sitemap",
]


def build(pages: int) -> Starlette:
    """The ASGI app."""

    def page(i: int) -> str:
        links = [j for j in (2 * i + 1, 2 * i + 2, (i * 7919) % pages, (i * 104729 + 13) % pages) if j < pages]
        body = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(300))
        anchors = "".join(f'<a href="/p/{j}">page {j}</a> ' for j in links)
        return f"<html><head><title>Page {i}</title></head><body><h1>Page {i}</h1><p>{body}</p>{anchors}</body></html>"

    async def home(_: Request) -> Response:
        return HTMLResponse(page(0))

    async def one(request: Request) -> Response:
        i = int(request.path_params["i"])
        if i >= pages:
            return PlainTextResponse("not found", status_code=404)
        return HTMLResponse(page(i))

    async def robots(_: Request) -> Response:
        return PlainTextResponse("User-agent: *\nAllow: /\n")

    return Starlette(routes=[Route("/", home), Route("/p/{i:int}", one), Route("/robots.txt", robots)])


if __name__ == "__main__":
    uvicorn.run(build(int(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
