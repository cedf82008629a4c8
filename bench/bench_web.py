"""Web crawl of a generated 5,000-page site: crawl-worker's web connector vs Scrapy, same concurrency.

The site runs in its own uvicorn process; each crawler runs in its own process (peak RSS is its own
``ru_maxrss``), one after the other, on the same site. Both obey robots.txt, extract title and text
from every page and deduplicate links. Scrapy comes from the optional ``bench`` extra.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import REPO, free_port

PAGES = 5000
CONCURRENCY = 8


def _crawl(argv: list[str]) -> dict[str, Any]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[2]} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(redis_url: str, out_dir: Path) -> dict[str, Any]:
    """Pages per second and peak memory of both crawlers (bench harness contract)."""
    del redis_url  # no Redis involved: this measures the connector itself
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = subprocess.Popen([sys.executable, "-m", "bench.web_site", str(port), str(PAGES)], cwd=REPO)
    start = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(start, timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        rows = []
        ours = _crawl([sys.executable, "-m", "bench.web_crawl_ours", start, str(CONCURRENCY), str(out_dir / "data")])
        rows.append({"crawler": "crawl-worker web connector", **ours})
        try:
            import scrapy  # noqa: F401 - optional, only to know whether to run it
        except ImportError:
            rows.append(
                {
                    "crawler": "scrapy (not installed: pip install -e '.[bench]')",
                    "pages": 0,
                    "seconds": 0,
                    "peak_rss_mb": 0,
                }
            )
        else:
            theirs = _crawl([sys.executable, "-m", "bench.web_crawl_scrapy", start, str(CONCURRENCY)])
            rows.append({"crawler": "scrapy", **theirs})
    finally:
        site.terminate()
        site.wait(10)
    for row in rows:
        row["pages_per_s"] = round(row["pages"] / row["seconds"], 1) if row["seconds"] else 0
        row["seconds"] = round(row["seconds"], 2)
        row["peak_rss_mb"] = round(row["peak_rss_mb"], 1)
    notes = f"{PAGES} pages, concurrency {CONCURRENCY} for both, robots.txt obeyed, title + text extracted."
    if len(rows) == 2 and rows[1]["pages_per_s"]:
        speed = rows[0]["pages_per_s"] / rows[1]["pages_per_s"]
        memory = rows[0]["peak_rss_mb"] / rows[1]["peak_rss_mb"] if rows[1]["peak_rss_mb"] else 0
        notes += f" crawl-worker / Scrapy: {speed:.2f}x the pages per second, {memory:.2f}x the peak memory."
    return {"title": "Web crawl: 5,000-page local site, crawl-worker vs Scrapy (issue 4)", "rows": rows, "notes": notes}


if __name__ == "__main__":
    print(json.dumps(run("", REPO / ".bench" / "web"), indent=2))
