"""Crawl the generated site with Scrapy (same concurrency, robots obeyed, text extracted); prints JSON.

Usage: ``python -m bench.web_crawl_scrapy START_URL CONCURRENCY``. Needs the ``bench`` extra (scrapy).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess

PAGES = [0]


class SiteSpider(scrapy.Spider):  # type: ignore[misc]
    """Follows every link on the site; one item per page with title and text."""

    name = "site"

    def __init__(self, start: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [start]

    def parse(self, response: Any) -> Iterator[Any]:
        """Emit the page, follow its links (Scrapy's dupefilter drops repeats)."""
        PAGES[0] += 1
        yield {
            "url": response.url,
            "title": response.css("title::text").get(),
            "text": " ".join(response.css("body *::text").getall()),
        }
        yield from response.follow_all(css="a::attr(href)", callback=self.parse)


def main(start: str, concurrency: int) -> dict[str, float]:
    """Run the crawl to the end."""
    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
            "DOWNLOAD_DELAY": 0,
            "ROBOTSTXT_OBEY": True,
            "LOG_LEVEL": "ERROR",
            "TELNETCONSOLE_ENABLED": False,
            "DEPTH_LIMIT": 50,
            "ITEM_PIPELINES": {},
            "REQUEST_FINGERPRINTER_IMPLEMENTATION": "2.7",
        }
    )
    process.crawl(SiteSpider, start=start)
    t0 = time.monotonic()
    process.start()
    elapsed = time.monotonic() - t0
    return {
        "pages": PAGES[0],
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
