"""Sitemaps: ``<urlset>`` and ``<sitemapindex>`` documents, plain or gzip-compressed."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_DECOMPRESSED = 50 * 1024 * 1024  # the sitemaps.org limit


@dataclass
class Sitemap:
    """The page URLs and nested sitemap URLs one sitemap file lists."""

    pages: list[str] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)


def _decompress(body: bytes) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(body, MAX_DECOMPRESSED)
    if inflater.unconsumed_tail:
        raise ValueError("sitemap larger than 50 MiB uncompressed")
    return data


def parse_sitemap(body: bytes) -> Sitemap:
    """Parse a sitemap or sitemap index (gzip detected by its magic bytes); ValueError if malformed."""
    try:
        root = fromstring(_decompress(body))  # defusedxml: no entity expansion, no external DTDs
    except (ParseError, DefusedXmlException, OSError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"not a sitemap: {exc}") from exc
    found = Sitemap()
    kind = root.tag.rsplit("}", 1)[-1]
    for loc in root.iter():
        if loc.tag.rsplit("}", 1)[-1] != "loc" or not (loc.text or "").strip():
            continue
        (found.sitemaps if kind == "sitemapindex" else found.pages).append(loc.text.strip())
    return found
