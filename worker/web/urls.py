"""URL normalisation, scope and trap guards for the web connector.

Two URLs that differ only by ``www.``, a trailing slash, a fragment, a default port, letter
case of scheme or host, query order or tracking parameters have the same *key* and are fetched
once. The key is for deduplication only: requests go to the URL as found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

TRACKING_PARAMS = frozenset({"gclid", "fbclid", "msclkid", "dclid", "mc_cid", "mc_eid", "yclid", "_ga", "igshid"})
DEFAULT_PORTS = {"http": 80, "https": 443}
_DIGITS = re.compile(r"\d+")


def absolute(href: str, base: str) -> str | None:
    """``href`` resolved against ``base`` without its fragment; None unless it is http(s)."""
    href = href.strip()
    if not href or href.startswith(("javascript:", "mailto:", "tel:", "data:")):
        return None
    try:
        url = urljoin(base, href)
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return urlunsplit(parts._replace(fragment=""))


def host_key(host: str) -> str:
    """A host without ``www.`` and in lower case."""
    host = host.lower().rstrip(".")
    return host.removeprefix("www.")


def url_key(url: str) -> str:
    """The deduplication key of an absolute http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = host_key(parts.hostname or "")
    port = f":{parts.port}" if parts.port and parts.port != DEFAULT_PORTS.get(scheme) else ""
    path = re.sub(r"/{2,}", "/", parts.path or "/")
    if len(path) > 1:
        path = path.rstrip("/")
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS
    )
    return urlunsplit((scheme, host + port, path, urlencode(query), ""))


def pattern_key(url: str) -> str:
    """The URL's template (digits replaced, query values dropped): calendar-style traps share one."""
    parts = urlsplit(url_key(url))
    keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
    return f"{parts.netloc}{_DIGITS.sub('N', parts.path)}?{'&'.join(keys)}"


def trap_reason(url: str, *, max_length: int, max_segments: int, max_query_params: int) -> str | None:
    """Why ``url`` looks like a crawler trap, or None."""
    if len(url) > max_length:
        return "trap:url-too-long"
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) > max_segments:
        return "trap:too-deep-path"
    if any(segments.count(s) >= 3 for s in set(segments)):
        return "trap:repeated-path-segment"
    if len(parse_qsl(parts.query, keep_blank_values=True)) > max_query_params:
        return "trap:too-many-query-params"
    return None


def host_port(url: str) -> str:
    """``url``'s host key and its port unless it is the scheme's default: what "the same host" compares."""
    parts = urlsplit(url)
    host = host_key(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        return host + ":invalid"
    return host if port is None or port == DEFAULT_PORTS.get(parts.scheme.lower()) else f"{host}:{port}"


def in_host_scope(url: str, roots: Iterable[str], *, allow_subdomains: bool) -> bool:
    """Whether ``url``'s host and port are one of ``roots`` (``www.`` ignored), or a subdomain when allowed."""
    host = host_port(url)
    return any(host == root or (allow_subdomains and host.endswith("." + root)) for root in roots)


def under_path(url: str, prefixes: Iterable[str]) -> bool:
    """Whether ``url``'s key starts with one of the (key) prefixes."""
    key = url_key(url)
    return any(key == p or key.startswith(p.rstrip("/") + "/") for p in prefixes)
