"""HTML to title, text, links and canonical URL, with selectolax (a real HTML5 parser); binary bodies to blobs;
both done to a fetched batch off the event loop (:func:`prepare`)."""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from worker.connectors.web.fetch import Response
from worker.connectors.web.urls import absolute, resolve, url_key

HTML_TYPES = ("text/html", "application/xhtml+xml")
#: Media types kept as text as they are (any other non-HTML body is stored as a blob).
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv")

_DROP = ("script", "style", "noscript", "template", "svg", "iframe")


@dataclass
class Page:
    """What an HTML page says."""

    title: str | None
    text: str
    links: list[str] = field(default_factory=list)
    canonical: str | None = None
    nofollow: bool = False
    #: Links that are not valid URLs (``http://x\\@host/``, bad ports, ...): skipped as ``invalid-url``.
    invalid_links: int = 0
    #: Links longer than ``max_url_length``: dropped here, skipped as ``trap:url-too-long``.
    long_links: int = 0


def parse(html: str, base_url: str, max_url_length: int = 2048) -> Page:
    """Parse ``html`` fetched from ``base_url`` (``<base href>`` honoured).

    Links longer than ``max_url_length`` (before or after resolving) are dropped here, so a page
    full of over-long links costs nothing further down.
    """
    tree = HTMLParser(html)
    base = base_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        base = absolute(base_node.attributes.get("href") or "", base_url) or base_url
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else None
    canonical = None
    for node in tree.css("link[rel]"):
        if "canonical" in (node.attributes.get("rel") or "").lower().split():
            canonical = absolute(node.attributes.get("href") or "", base)
            break
    robots_meta = tree.css_first('meta[name="robots"]')
    nofollow = robots_meta is not None and "nofollow" in (robots_meta.attributes.get("content") or "").lower()
    links: list[str] = []
    invalid = too_long = 0
    for node in tree.css("a[href]"):
        attributes = node.attributes
        href = attributes.get("href") or ""
        if "nofollow" in (attributes.get("rel") or "").lower():
            continue
        if len(href) > max_url_length:
            too_long += 1
            continue
        url, bad = resolve(href, base)
        if url and len(url) <= max_url_length:
            links.append(url)
        too_long += bool(url) and len(url or "") > max_url_length
        invalid += bad
    tree.strip_tags(list(_DROP))
    body = tree.body
    text = body.text(separator=" ", strip=True) if body is not None else ""
    return Page(
        title=title or None,
        text=" ".join(text.split()),
        links=links,
        canonical=canonical,
        nofollow=nofollow,
        invalid_links=invalid,
        long_links=too_long,
    )


def _charset(headers: Mapping[str, str]) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", headers.get("content-type", ""), re.IGNORECASE)
    if match:
        try:
            return codecs.lookup(match.group(1)).name
        except LookupError:
            pass
    return "utf-8"


#: A parsed page and its links with their keys.
Parsed = tuple[Page, list[tuple[str, str]]]


def parse_all(responses: list[Response], max_url_length: int) -> list[Parsed]:
    """Parse HTML responses and key their links (run in a thread: the loop stays free)."""
    out = []
    for response in responses:
        page = parse(response.body.decode(_charset(response.headers), "replace"), response.url, max_url_length)
        links = [] if page.nofollow else list(dict.fromkeys(page.links))
        out.append((page, [(link, url_key(link)) for link in links]))
    return out


def mime_type(response: Response) -> str:
    """The response's media type, lower case, without parameters."""
    return response.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()


def store_blob(data_dir: Path, body: bytes) -> str:
    """Binary content goes to the data directory by its hash, once; documents reference it."""
    name = hashlib.sha256(body).hexdigest()
    path = data_dir / "blobs" / name[:2] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
    return str(path)


@dataclass(frozen=True)
class Prepared:
    """What was done to a response off the event loop: its HTML parsed, or its binary body stored."""

    parsed: Parsed | None = None
    blob: str | None = None


def to_prepare(responses: list[Response]) -> tuple[list[Response], list[Response]]:
    """The HTML responses to parse and the binary ones to store, among successful ``responses``."""
    ok = [r for r in responses if r.status < 300]
    html = [r for r in ok if mime_type(r) in HTML_TYPES]
    binary = [r for r in ok if mime_type(r) not in HTML_TYPES and not mime_type(r).startswith(TEXT_TYPES)]
    return html, binary


def prepare(html: list[Response], binary: list[Response], data_dir: Path, max_url_length: int) -> dict[int, Prepared]:
    """Parse the HTML pages and store the binary bodies (in a worker thread), by id(response)."""
    pages = parse_all(html, max_url_length)
    out = {id(r): Prepared(parsed=p) for r, p in zip(html, pages, strict=True)}
    out.update({id(r): Prepared(blob=store_blob(data_dir, r.body)) for r in binary})
    return out
