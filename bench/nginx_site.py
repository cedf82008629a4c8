"""A static site of N pages served by nginx (Debian's package) on loopback, for the crawl benchmarks.

Page i links to 2i+1 and 2i+2 (a tree, depth about log2 N) and to two pseudo-random other pages
(duplicates a crawler must recognise), with about 2 KB of text: the structure of the issue's
measurements. With several hosts (127.0.0.2, 127.0.0.3, ...) page i lives on every host and its
links point to pages on host ``j mod hosts``, so a crawl spreads across hosts by the links.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

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


def _links(i: int, pages: int) -> list[int]:
    return [j for j in (2 * i + 1, 2 * i + 2, (i * 7919) % pages, (i * 104729 + 13) % pages) if j < pages]


def generate(root: Path, pages: int, hosts: list[str] | None = None, port: int = 0) -> Path:
    """Write the site's files under ``root`` (once per size and host set); returns the document root."""
    docs = root / (f"site-{pages}" if not hosts else f"site-{pages}-{len(hosts)}hosts-{port}")
    if (docs / "done").exists():
        return docs
    (docs / "p").mkdir(parents=True, exist_ok=True)
    (docs / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    for i in range(pages):
        body = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(300))
        if hosts:
            hrefs = [f"http://{hosts[j % len(hosts)]}:{port}/p/{j}" for j in _links(i, pages)]
        else:
            hrefs = [f"/p/{j}" for j in _links(i, pages)]
        anchors = "".join(f'<a href="{h}">page {j}</a> ' for h, j in zip(hrefs, _links(i, pages), strict=True))
        (docs / "p" / str(i)).write_text(
            f"<html><head><title>Page {i}</title></head><body><h1>Page {i}</h1><p>{body}</p>{anchors}</body></html>"
        )
    (docs / "done").write_text("")
    return docs


def nginx_binary() -> str:
    """The nginx executable (``make bench`` installs Debian's package when it is missing)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx; make bench does it)")
    return found


@contextlib.contextmanager
def serve(docs: Path, port: int, addresses: list[str], work: Path) -> Iterator[None]:
    """nginx (one worker process, no access log) serving ``docs`` on ``addresses``:``port``."""
    work = work.resolve()
    docs = docs.resolve()
    work.mkdir(parents=True, exist_ok=True)
    listens = "\n".join(f"    listen {a}:{port} backlog=4096;" for a in addresses)
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type text/html;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  types {{ text/plain txt; }}
  server {{
{listens}
    root {docs};
    location = /robots.txt {{ default_type text/plain; }}
  }}
}}
""")
    proc = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{addresses[0]}:{port}/robots.txt", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)
