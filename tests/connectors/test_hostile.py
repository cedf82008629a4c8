"""The web connector against hostile servers on loopback: trickled bodies and headers, link floods, bad addresses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from tests.connectors.site import Site, html, serve
from tests.connectors.test_web import crawl
from worker.connectors.base import ConnectorContext
from worker.connectors.web.connector import WebConfig, WebConnector
from worker.connectors.web.fetch import Fetcher
from worker.crawlstate import MemoryRunData
from worker.errors import FetchError

Talk = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(talk: Talk) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that runs ``talk`` per connection; yields its base URL."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await talk(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await server.wait_closed()


def trickle(head: bytes) -> Talk:
    """Send ``head`` at once, then one byte a second for ever."""

    async def talk(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        await writer.drain()
        for _byte in range(100_000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(1)

    return talk


#: Headers at once, then the body one byte a second.
trickle_body = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n")
#: The status line, then one header byte a second, never ending the headers.
trickle_headers = trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ")


@pytest.mark.parametrize("talk", [trickle_body, trickle_headers], ids=["1-byte-per-s-body", "slow-headers"])
async def test_trickling_server_ends_within_the_total_deadline(tmp_path: Path, talk: Talk) -> None:
    """A server trickling its body or its headers one byte a second is cut at timeout_s, connect to last byte."""
    async with raw_server(talk) as base:
        cfg = WebConfig(
            start_urls=[f"{base}/"], timeout_s=1.0, retries=0, obey_robots=False, allowed_networks=["127.0.0.0/8"]
        )
        started = time.monotonic()
        _, docs, failures, _ = await crawl(cfg, tmp_path)
        elapsed = time.monotonic() - started
    assert docs == []
    assert len(failures) == 1
    assert "no complete response within 1 s" in failures[0].reason
    assert elapsed < 2.0, f"the request took {elapsed:.1f}s with a 1 s deadline"


def _flood(site: Site, pages: int, links: int, length: int) -> None:
    """Pages each linking to ``links`` distinct URLs of ``length`` characters (and to the next page)."""
    for page in range(pages):
        pad = "a" * length
        hrefs = tuple(f"/x{page}-{i}?{pad}"[:length] for i in range(links))
        site.routes[f"/flood{page}"] = html(f"Flood {page}", "many links", (*hrefs, f"/flood{page + 1}"))


async def test_ten_thousand_over_long_links_per_page_leave_the_stored_state_small(tmp_path: Path) -> None:
    """3 pages of 10,000 links longer than max_url_length: nothing of them is stored, the state stays under 4 KB."""
    with serve(Site()) as site:
        _flood(site, pages=3, links=10_000, length=2100)
        cfg = WebConfig(
            start_urls=[f"{site.base}/flood0"],
            max_url_length=2048,
            max_body_bytes=64 * 1024 * 1024,
            obey_robots=False,
            allowed_networks=["127.0.0.0/8"],
            max_depth=5,
        )
        conn = WebConnector(cfg, ConnectorContext(connector_id="h", org_id="o", data_dir=tmp_path))
        data = MemoryRunData(WebConnector.carried)
        conn.bind(data)
        checkpoint, stored, rounds = conn.initial_checkpoint(None), 0, 0
        async with aclosing(conn):
            while checkpoint.has_more:
                step = await conn.run_step(checkpoint)
                stored += step.changes.size
                data.apply(step.changes)
                checkpoint, rounds = step.checkpoint, rounds + 1
    assert [p for p in site.fetched() if p.startswith("/x")] == []
    assert {"/flood0", "/flood1", "/flood2"} <= set(site.fetched())
    assert stored < 4096, f"{stored} characters of crawl state stored for 3 pages"
    assert len(checkpoint.model_dump_json()) < 200


REFUSED = [
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata, shared address space 100.64.0.0/10
    "http://169.254.169.254/latest/meta-data/",  # link-local metadata
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",  # private
    "http://127.0.0.1:{port}/",  # loopback (the test site itself)
    "http://0.0.0.0:{port}/",  # unspecified
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.0.1/",  # multicast, reserved...
    "http://[::1]:{port}/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[2001:db8::1]/",
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # Teredo, client 10.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::6464:64c8]/",  # NAT64 of 100.100.100.200
    "http://168.63.129.16/",  # Azure wire server, global to the standard library
    "http://[::ffff:168.63.129.16]/",
    "http://[fec0::1]/",  # IPv6 site-local, global to the standard library
    "http://name-{address}.test:{port}/",  # names that resolve to each class
]
NAMED = [
    "100.100.100.200",
    "10.0.0.1",
    "127.0.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",
    "2002:a00:1::1",
    "168.63.129.16",
    "fec0::1",
]


def _targets() -> list[str]:
    out = [u for u in REFUSED if "{address}" not in u]
    out += [REFUSED[-1].replace("{address}", a.replace(":", "-").replace(".", "-")) for a in NAMED]
    return out


@pytest.mark.parametrize("url", _targets())
async def test_every_refused_address_class_gets_zero_requests(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start URLs in every refused class (literal or by name) send no request: no robots.txt, no page."""
    sent: list[str] = []

    async def spy(self: Fetcher, target: str, headers: Any) -> Any:
        sent.append(target)
        raise FetchError("the spy refuses to send")  # never let a request leave the machine

    monkeypatch.setattr(Fetcher, "_exchange", spy)
    by_name = {a.replace(":", "-").replace(".", "-"): a for a in NAMED}

    async def resolver(host: str, _: int) -> list[str]:
        return [by_name[host.removeprefix("name-").removesuffix(".test")]]

    with serve(Site()) if "{port}" in url else nullcontext(Site()) as site:  # a live target only when it is ours
        site.routes["/"] = html("Home")
        port = site.base.rsplit(":", 1)[-1]
        conn = WebConnector(
            WebConfig(start_urls=[url.format(port=port)], same_host=False),
            ConnectorContext(connector_id="ssrf", org_id="o", data_dir=tmp_path, resolver=resolver),
        )
        _, docs, failures, stats = await crawl(conn.config, tmp_path, connector=conn)
        requests = list(site.log)
    assert sent == []
    assert requests == []
    assert docs == []
    assert stats["skipped_blocked"] == 1
    assert "refused" in failures[0].reason
