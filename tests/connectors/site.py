"""A fixture website served on loopback (127.0.0.1 unless asked) by the tests, with a log of every request it
received."""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, dict[str, str], bytes]


def html(title: str, body: str = "", links: tuple[str, ...] = (), head: str = "") -> Reply:
    """An HTML page linking to ``links``."""
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    page = f"<html><head><title>{title}</title>{head}</head><body><p>{body}</p>{anchors}</body></html>"
    return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()


def sitemap(urls: list[str], *, index: bool = False) -> bytes:
    """A sitemap (or sitemap index) XML document."""
    tag, item = ("sitemapindex", "sitemap") if index else ("urlset", "url")
    locs = "".join(f"<{item}><loc>{u}</loc></{item}>" for u in urls)
    return f'<?xml version="1.0"?><{tag} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</{tag}>'.encode()


@dataclass
class Site:
    """Routes: path (with query) -> a reply or a function of the request count and headers."""

    routes: dict[str, Reply | Callable[[int, dict[str, str]], Reply]] = field(default_factory=dict)
    #: Answers paths that have no route (generated sites: calendars, session ids), or None for a 404.
    fallback: Callable[[str], Reply | None] | None = None
    log: list[str] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    base: str = ""

    def fetched(self, *, exclude: tuple[str, ...] = ("/robots.txt",)) -> list[str]:
        """Paths requested, in order, without ``exclude``."""
        return [p for p in self.log if p not in exclude]


@contextmanager
def serve(site: Site, host: str = "127.0.0.1", port: int = 0) -> Iterator[Site]:
    """Serve ``site`` on a loopback address (a free port unless ``port``) for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.log.append(self.path)
            site.hits[self.path] += 1
            route = site.routes.get(self.path)
            generated = site.fallback(self.path) if route is None and site.fallback else None
            if generated is not None:
                status, headers, body = generated
            elif route is None:
                status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
            elif callable(route):
                status, headers, body = route(site.hits[self.path], dict(self.headers))
            else:
                status, headers, body = route
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    site.base = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


def gz(data: bytes) -> bytes:
    """gzip ``data``."""
    return gzip.compress(data)


def slow(seconds: float, reply: Reply) -> Callable[[int, dict[str, str]], Reply]:
    """A route that answers after ``seconds``."""

    def route(_: int, __: dict[str, str]) -> Reply:
        time.sleep(seconds)
        return reply

    return route
