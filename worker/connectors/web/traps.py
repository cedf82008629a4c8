"""Crawler-trap guards: what makes a site endless, told apart from sites that merely have many numbered pages.

A numbered site (``/posts/123``, ``/docs/page-2``, ``?page=7``) is crawled completely; what is cut, each
counted under its own skip reason (``worker.skips``):

- ``trap:calendar``: URLs whose path or query carry a date (``2024/05``, ``2024-05-17``,
  ``?month=5&year=2024``), counted per date-stripped template, ``max_pages_per_calendar`` each;
- ``trap:query-permutations``: one path reached with ever more query-key sets (faceted navigation), at
  most ``max_query_variants`` key sets per path (values are free: ``?page=1`` ... ``?page=900`` is one set);
- ``trap:session-id``: known session parameters (``jsessionid``, ``PHPSESSID``, ``sid``, ...) are not part
  of a URL's key (``worker.connectors.web.urls``), so their variants are duplicates; a path segment that looks like
  a session token (long random hex / base64, ASP.NET's ``(S(...))``, never the last segment) is learned
  to be one when two tokens serve the same page text, and is left out of the key from then on;
- ``trap:repeated-path-segment`` and the other shape checks of ``worker.connectors.web.urls.trap_reason``;
- ``trap:pattern-budget``: the opt-in ``max_pages_per_pattern`` (digits ignored), off by default.

The counts live in the frontier's ``patterns`` map (stored with the run, so a resumed crawl keeps them).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl

from worker.connectors.web.urls import pattern_key, split, trap_reason, url_key

#: Query keys whose values are dates or date parts.
DATE_KEYS = frozenset(
    {"year", "month", "day", "date", "week", "yr", "mo", "y", "m", "d", "ym", "ymd", "from", "to", "since", "until"}
)
_DATE = re.compile(r"(?<!\d)(1[89]\d\d|2[01]\d\d)([-/_.])(0?[1-9]|1[0-2])(?:\2(0?[1-9]|[12]\d|3[01]))?(?!\d)")
_DATE_VALUE = re.compile(r"^[\d_./:-]{1,20}$")
_HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{16,}$")
_B64_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,}$")
_ASP_TOKEN = re.compile(r"^\((?:[A-Z]\([^()/]*\))+\)$")
_LETTER, _DIGIT = re.compile(r"[A-Za-z]"), re.compile(r"\d")

#: Prefixes of the ``patterns`` map's entries (the pattern budget's keys are bare: ``host/path?keys``).
CALENDAR, KEYSET, VARIANTS, SESSION = "cal ", "qs ", "qv ", "sid "


def looks_like_token(segment: str) -> bool:
    """Whether a path segment looks like a session token rather than a name or a number."""
    if _ASP_TOKEN.match(segment):
        return True
    if _HEX_TOKEN.match(segment):
        return bool(_LETTER.search(segment)) and bool(_DIGIT.search(segment))
    return bool(_B64_TOKEN.match(segment) and _LETTER.search(segment) and _DIGIT.search(segment)) and not (
        "-" in segment and segment.replace("-", "").isalpha()
    )


def calendar_template(url: str) -> str | None:
    """The URL with its dates taken out (host, path, query key names), or None when it carries no date."""
    parts = split(url)
    if parts is None:
        return None
    path, dated = _DATE.subn("{date}", parts.path)
    keys = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        name = key.lower()
        if (name in DATE_KEYS and _DATE_VALUE.match(value)) or _DATE.search(value):
            dated += 1
            keys.append(name + "={date}")
        else:
            keys.append(name)
    if not dated:
        return None
    return f"{parts.netloc.lower()}{path}?{'&'.join(sorted(set(keys)))}"


def _session_position(segments: list[str]) -> int | None:
    """The index of the first token-like segment that is not the last one, or None."""
    for i, segment in enumerate(segments[:-1]):
        if looks_like_token(segment):
            return i
    return None


@dataclass(frozen=True)
class TrapLimits:
    """The trap guards' settings (``WebConfig``)."""

    max_url_length: int = 2048
    max_path_segments: int = 16
    max_query_params: int = 8
    max_pages_per_calendar: int = 200
    max_query_variants: int = 32
    max_pages_per_pattern: int | None = None


class Traps:
    """The trap guards of one crawl, counting in ``counts`` (the frontier's ``patterns`` map)."""

    def __init__(self, limits: TrapLimits, counts: Counter[str]) -> None:
        self.limits = limits
        self.counts = counts
        self._texts: dict[tuple[str, str], str] = {}  # (session template, page text digest) -> first token
        self._last: tuple[str, str | None, tuple[str, str] | None] = ("", None, None)

    def _derived(self, url: str) -> tuple[str | None, tuple[str, str] | None]:
        """``url``'s calendar template and query key set, parsed once for the check and the count that follows."""
        if self._last[0] != url:
            self._last = (url, calendar_template(url), _keyset(url))
        return self._last[1], self._last[2]

    def why_not(self, url: str) -> str | None:
        """Why enqueueing ``url`` now would feed a trap, or None."""
        lim = self.limits
        shape = trap_reason(
            url,
            max_length=lim.max_url_length,
            max_segments=lim.max_path_segments,
            max_query_params=lim.max_query_params,
        )
        return shape or self.budget_why_not(url)

    def budget_why_not(self, url: str) -> str | None:
        """The guards that count what the crawl has queued (pattern, calendar, query variants), without the shape
        checks (for a caller that made them already)."""
        lim = self.limits
        if lim.max_pages_per_pattern and self.counts[pattern_key(url)] >= lim.max_pages_per_pattern:
            return "trap:pattern-budget"
        calendar, keyset = self._derived(url)
        if calendar is not None and self.counts[CALENDAR + calendar] >= lim.max_pages_per_calendar:
            return "trap:calendar"
        new_keyset = keyset is not None and not self.counts[KEYSET + keyset[1]]
        if new_keyset and keyset is not None and self.counts[VARIANTS + keyset[0]] >= lim.max_query_variants:
            return "trap:query-permutations"
        return None

    def counted(self, url: str) -> list[str]:
        """The ``patterns`` entries enqueueing ``url`` increments."""
        out = []
        if self.limits.max_pages_per_pattern:
            out.append(pattern_key(url))
        calendar, keyset = self._derived(url)
        if calendar is not None:
            out.append(CALENDAR + calendar)
        if keyset is not None:
            out.append(KEYSET + keyset[1])
            if not self.counts[KEYSET + keyset[1]]:
                out.append(VARIANTS + keyset[0])
        return out

    def session_key(self, url: str) -> str | None:
        """``url``'s key with a learned session token left out; None unless it has one."""
        slot = _session_slot(url)
        if slot is None or not self.counts[slot.flag]:
            return None
        return url_key(slot.parts._replace(path=slot.template).geturl())

    def learn(self, url: str, text: str) -> str | None:
        """A page was fetched: when another session token served the same text at the same place, the
        ``patterns`` entry that marks the token's position as a session id (to be counted); else None."""
        slot = _session_slot(url)
        if slot is None or self.counts[slot.flag]:
            return None
        first = self._texts.setdefault((f"{slot.template}?{slot.parts.query}", _digest(text)), slot.token)
        return slot.flag if first != slot.token else None


@dataclass(frozen=True)
class _SessionSlot:
    """Where a URL's path holds a token-like segment: the URL's parts, the token, the path with ``{session}``
    in its place, and the ``patterns`` entry that marks that place as a session id once learned."""

    parts: SplitResult
    token: str
    template: str
    flag: str


def _session_slot(url: str) -> _SessionSlot | None:
    parts = split(url)
    if parts is None:
        return None
    segments = parts.path.split("/")
    at = _session_position(segments)
    if at is None:
        return None
    token = segments[at]
    flag = f"{SESSION}{parts.netloc.lower()}{'/'.join(segments[:at])}"
    segments[at] = "{session}"
    return _SessionSlot(parts, token, "/".join(segments), flag)


def _keyset(url: str) -> tuple[str, str] | None:
    """(host + path, host + path + sorted query key names) as 64-bit digests (one pair per path with a query
    is stored: 16 hex characters each, whatever the path's length), or None without a query."""
    parts = split(url)
    if parts is None or not parts.query:
        return None
    keys = sorted({k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)})
    path = f"{parts.netloc.lower()}{parts.path}"
    return _digest(path), _digest(f"{path}?{'&'.join(keys)}")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


__all__ = ["TrapLimits", "Traps", "calendar_template", "looks_like_token"]
