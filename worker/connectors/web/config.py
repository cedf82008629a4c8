"""The ``web`` connector's configuration: what to crawl and how politely."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from worker import __version__
from worker.connectors.base import ConnectorConfig
from worker.connectors.web.urls import absolute


class WebConfig(ConnectorConfig):
    """What to crawl and how politely."""

    start_urls: list[str] = Field(default_factory=list)
    sitemaps: list[str] = Field(default_factory=list, description="Sitemap or sitemap-index URLs (.gz accepted).")
    max_depth: int = Field(3, ge=0, description="Link hops from a start URL or sitemap entry.")
    max_pages: int = Field(1000, gt=0)
    same_host: bool = True
    allow_subdomains: bool = False
    restrict_to_start_path: bool = False
    include: list[str] = Field(default_factory=list, description="Regexes; a URL must match one (if any given).")
    exclude: list[str] = Field(default_factory=list, description="Regexes; a URL matching one is skipped.")
    obey_robots: bool = True
    user_agent: str = f"crawl-worker/{__version__}"
    per_host_concurrency: int = Field(2, gt=0)
    min_delay_s: float = Field(0.0, ge=0)
    timeout_s: float = Field(
        15.0, gt=0, description="Total deadline of one request: connecting, headers and body together."
    )
    retries: int = Field(2, ge=0, description="Per-page retries of timeouts, connection errors and 5xx.")
    backoff_s: float = Field(0.5, ge=0)
    max_retry_after_s: float = Field(
        30.0, ge=0, description="Longest 429 / 503 Retry-After waited in place; longer: the job goes back to delayed."
    )
    max_come_back_s: float = Field(
        3600.0, ge=0, description="Longest Retry-After the job goes back to delayed for; longer: the page is skipped."
    )
    max_crawl_delay_s: float = Field(
        30.0, ge=0, description="Longest robots.txt Crawl-delay obeyed; a host asking more is skipped."
    )
    max_redirects: int = Field(5, ge=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_url_length: int = Field(2048, gt=0, description="Longer URLs are dropped before they are stored.")
    max_path_segments: int = Field(16, gt=0)
    max_query_params: int = Field(8, ge=0)
    max_pages_per_calendar: int = Field(200, gt=0, description="Pages per date-stripped URL template (calendars).")
    max_query_variants: int = Field(32, gt=0, description="Distinct query-key sets per path (faceted navigation).")
    max_pages_per_pattern: int | None = Field(
        None, ge=0, description="Opt-in: pages per URL template with digits ignored (None or 0: off)."
    )
    pages_per_step: int = Field(50, gt=0)
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the private-address guard, e.g. 10.0.0.0/8."
    )

    @field_validator("include", "exclude")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            re.compile(pattern)
        return value

    @field_validator("start_urls", "sitemaps")
    @classmethod
    def _http(cls, value: list[str]) -> list[str]:
        for url in value:
            if absolute(url, url) is None:
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value
