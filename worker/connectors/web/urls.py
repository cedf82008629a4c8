"""URL normalisation, scope and trap guards for the web connector.

Two URLs that differ only by ``www.``, a trailing slash, a fragment, a default port, letter
case of scheme or host, query order or tracking parameters have the same *key* and are fetched
once. The key is for deduplication only: requests go to the URL as found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from yarl import URL

TRACKING_PARAMS = frozenset({"gclid", "fbclid", "msclkid", "dclid", "mc_cid", "mc_eid", "yclid", "_ga", "igshid"})
#: Query parameters that carry a session id: every visit gets another value for the same page.
SESSION_PARAMS = frozenset(
    {
        "jsessionid",
        "phpsessid",
        "sid",
        "sessionid",
        "session_id",
        "sessid",
        "aspsessionid",
        "cfid",
        "cftoken",
        "zenid",
        "oscsid",
        "sess",
    }
)
_SESSION_PATH = re.compile(r";(?:jsessionid|phpsessid|sessionid|sid)=[^/;?]*", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"^[^\s/?#@\\\[\]<>^`{|}%]+$")
DEFAULT_PORTS = {"http": 80, "https": 443}
_DIGITS = re.compile(r"\d+")


def split(url: str) -> SplitResult | None:
    """``urlsplit(url)``, or None when it cannot be split (a bad IPv6 literal, a bad port)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return None
    return parts


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%", 1)[0])
        except ValueError:
            return False
        return host.endswith("]")
    if not host or not _HOST.match(host):
        return False
    if host.isascii():
        return True
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def valid(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL a request can be made to (what aiohttp / yarl accept,
    and no less strict: no control characters, no backslash or space in the authority, a port in range)."""
    if _CONTROL.search(url):
        return False
    parts = split(url)
    if parts is None or parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname:
        return False
    authority = parts.netloc.rpartition("@")[2]
    if "\\" in parts.netloc or " " in parts.netloc or parts.port == 0:
        return False
    host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
    if not _valid_host(host):
        return False
    try:
        parsed = URL(url)
        return parsed.raw_host is not None and parsed.host is not None
    except (ValueError, TypeError, UnicodeError):
        return False


def resolve(href: str, base: str) -> tuple[str | None, bool]:
    """``href`` resolved against ``base`` without its fragment, and whether it was an invalid http(s) URL.

    ``(url, False)`` for a fetchable http(s) URL, ``(None, False)`` for another scheme (mailto:, ...),
    ``(None, True)`` for a URL that cannot be fetched (``http://x\\@host/``, a bad port or IPv6
    literal, control characters): counted as skipped (``invalid-url``), never an error.
    """
    href = href.strip()
    if not href or href.lower().startswith(("javascript:", "mailto:", "tel:", "data:")):
        return None, False
    try:
        url = urljoin(base, href)
        parts = urlsplit(url)
    except ValueError:
        return None, True
    if parts.scheme.lower() not in DEFAULT_PORTS:
        return None, href.lower().startswith(("http:", "https:"))
    url = urlunsplit(parts._replace(fragment=""))
    if not valid(url):
        return None, True
    return url, False


def absolute(href: str, base: str) -> str | None:
    """``href`` resolved against ``base`` without its fragment; None unless it is a valid http(s) URL."""
    return resolve(href, base)[0]


def host_key(host: str) -> str:
    """A host without ``www.`` and in lower case."""
    host = host.lower().rstrip(".")
    return host.removeprefix("www.")


def url_key(url: str) -> str:
    """The deduplication key of an absolute http(s) URL (tracking and session parameters left out).

    Never raises: a URL that cannot be split is its own key.
    """
    parts = split(url)
    if parts is None:
        return url
    scheme = parts.scheme.lower()
    host = host_key(parts.hostname or "")
    port = f":{parts.port}" if parts.port and parts.port != DEFAULT_PORTS.get(scheme) else ""
    path = _SESSION_PATH.sub("", parts.path)
    path = re.sub(r"/{2,}", "/", path or "/")
    if len(path) > 1:
        path = path.rstrip("/")
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _dropped(k))
    return urlunsplit((scheme, host + port, path, urlencode(query), ""))


def _dropped(key: str) -> bool:
    name = key.lower()
    return name.startswith("utm_") or name in TRACKING_PARAMS or name in SESSION_PARAMS


def has_session_id(url: str) -> bool:
    """Whether ``url`` carries a known session parameter (query or ``;jsessionid=`` path parameter)."""
    parts = split(url)
    if parts is None:
        return False
    if _SESSION_PATH.search(parts.path):
        return True
    return any(k.lower() in SESSION_PARAMS for k, _ in parse_qsl(parts.query, keep_blank_values=True))


def pattern_key(url: str) -> str:
    """The URL's template (digits replaced, query values dropped): ``max_pages_per_pattern`` counts by it."""
    parts = split(url_key(url))
    if parts is None:
        return url
    keys = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
    return f"{parts.netloc}{_DIGITS.sub('N', parts.path)}?{'&'.join(keys)}"


def trap_reason(url: str, *, max_length: int, max_segments: int, max_query_params: int) -> str | None:
    """Why ``url`` looks like a crawler trap, or None."""
    if len(url) > max_length:
        return "trap:url-too-long"
    parts = split(url)
    if parts is None:
        return None
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
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url + ":invalid"
    host = host_key(parts.hostname or "")
    return host if port is None or port == DEFAULT_PORTS.get(parts.scheme.lower()) else f"{host}:{port}"


def in_host_scope(url: str, roots: Iterable[str], *, allow_subdomains: bool) -> bool:
    """Whether ``url``'s host and port are one of ``roots`` (``www.`` ignored), or a subdomain when allowed."""
    host = host_port(url)
    return any(host == root or (allow_subdomains and host.endswith("." + root)) for root in roots)


def under_path(url: str, prefixes: Iterable[str]) -> bool:
    """Whether ``url``'s key starts with one of the (key) prefixes."""
    key = url_key(url)
    return any(key == p or key.startswith(p.rstrip("/") + "/") for p in prefixes)
