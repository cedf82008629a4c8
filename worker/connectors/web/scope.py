"""Which discovered URLs a web crawl follows: the checks on the URL itself (shape traps, host and path scope,
include / exclude patterns), its depth, and the trap guards that count what the crawl has queued.

Each check answers with a skip reason (``worker.skips``) or None; counting and keeping the skips is the
connector's.
"""

from __future__ import annotations

import re
from collections import Counter

from worker.connectors.web.config import WebConfig
from worker.connectors.web.traps import TrapLimits, Traps
from worker.connectors.web.urls import host_port, in_host_scope, trap_reason, under_path, url_key


class Scope:
    """The decisions on one crawl's discovered URLs; ``traps`` count in ``patterns`` (the frontier's map)."""

    def __init__(self, config: WebConfig, patterns: Counter[str]) -> None:
        self.config = config
        self._roots = {host_port(u) for u in [*config.start_urls, *config.sitemaps]}
        self._prefixes = [url_key(u) for u in config.start_urls]
        self._include = [re.compile(p) for p in config.include]
        self._exclude = [re.compile(p) for p in config.exclude]
        limits = TrapLimits(
            max_url_length=config.max_url_length,
            max_path_segments=config.max_path_segments,
            max_query_params=config.max_query_params,
            max_pages_per_calendar=config.max_pages_per_calendar,
            max_query_variants=config.max_query_variants,
            max_pages_per_pattern=config.max_pages_per_pattern,
        )
        self.traps = Traps(limits, patterns)

    def static_why_not(self, url: str) -> str | None:
        """The checks that depend on the URL alone."""
        c = self.config
        trap = trap_reason(
            url, max_length=c.max_url_length, max_segments=c.max_path_segments, max_query_params=c.max_query_params
        )
        if trap:
            return trap
        if c.same_host and not in_host_scope(url, self._roots, allow_subdomains=c.allow_subdomains):
            return "out-of-scope:host"
        if c.restrict_to_start_path and self._prefixes and not under_path(url, self._prefixes):
            return "out-of-scope:path"
        if self._include and not any(p.search(url) for p in self._include):
            return "excluded:not-included"
        if any(p.search(url) for p in self._exclude):
            return "excluded:pattern"
        return None

    def why_not(self, url: str, depth: int) -> str | None:
        """Why a URL found at ``depth`` is not followed (the URL's own checks, depth, trap guards), or None."""
        why = self.static_why_not(url)
        if why:
            return why
        if depth > self.config.max_depth:
            return "out-of-scope:depth"
        return self.traps.budget_why_not(url)  # the shape checks were static_why_not's
