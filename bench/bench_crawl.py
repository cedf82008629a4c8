"""Crawl engine benchmarks (issue 13): what a user gets, next to what the hardware gives.

Web: a static site served by nginx (Debian's package) on loopback, 5,000 and 100,000 pages of about
2 KB. Rows: the bare aiohttp + selectolax probe, Scrapy (5,000 only: about 170 pages/s would take ten
minutes at 100,000), our web connector alone (step by step, state changes applied in memory), and our
worker end to end (a PipesHub-shaped job, the crawl, the JSONL sink, fenced checkpoints and state
commits, progress) against the harness's private Redis, whose input bytes are counted (documents go to
the JSONL files, so they are not in that count). Several hosts: the same site on 127.0.0.2-5 with
links across hosts, per-host limits as configured. Filesystem: 100,000 small files, a bare os.scandir
+ read + SHA-256 probe (the faster of two runs, so the page cache is warm for both) against our worker
end to end. Every crawler runs in its own process (peak RSS is its own), one after the other; each
worker run starts with an empty data directory (a first crawl).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from bullmq import Queue

from bench.common import REPO, delete_queue, free_port, peak_rss_mb, worker_env
from bench.nginx_site import generate, serve
from worker.models import CrawlingJobData
from worker.queue.producer import producer_job_options

SIZES = (5_000, 100_000)
CONCURRENCY = 16
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
FILES = 100_000


def _run(argv: list[str], timeout: float = 900) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _toml(value: Any) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"


async def _worker_crawl(redis_url: str, out: Path, connector: str, config: dict[str, Any]) -> dict[str, Any]:
    """One job through a `crawl-worker run` process; duration from the job's processedOn to finishedOn."""
    queue_name = f"bench-crawl-{uuid.uuid4().hex[:8]}"
    shutil.rmtree(out, ignore_errors=True)  # a first crawl: no JSONL file of an earlier run to index
    out.mkdir(parents=True, exist_ok=True)
    catalog = out / "catalog.toml"
    catalog.write_text(f'[instances.c]\nconnector = "{connector}"\nconfig = {_toml(config)}\n')
    env = worker_env(
        redis_url,
        queue_name,
        catalog_file=catalog,
        data_dir=out / "data",
        log_level="warning",
        metrics_enabled=False,
        concurrency=1,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, cwd=REPO)
    queue = Queue(queue_name, {"connection": redis_url})
    try:
        before = int(client.info("stats")["total_net_input_bytes"])
        name, data = CrawlingJobData.for_instance(connector, "c", org_id="bench", user_id="u").to_job()
        job = await queue.add(name, data, {**producer_job_options(), "removeOnComplete": False, "removeOnFail": False})
        key = f"bull:{queue_name}:{job.id}"
        deadline = time.monotonic() + 1800
        while not client.hget(key, "finishedOn"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the worker did not finish the crawl (exit {proc.poll()})")
            await asyncio.sleep(0.2)
        into_redis = int(client.info("stats")["total_net_input_bytes"]) - before
        fields = client.hgetall(key)
        if "failedReason" in fields and fields.get("failedReason"):
            raise RuntimeError(f"crawl failed: {fields['failedReason']}")
        result = json.loads(fields["returnvalue"])
        seconds = (int(fields["finishedOn"]) - int(fields["processedOn"])) / 1000
        return {
            "items": result["documents"],
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "redis_bytes": into_redis,
        }
    finally:
        await queue.close()
        proc.terminate()
        proc.wait(30)
        delete_queue(client, queue_name)
        client.close()


def _row(crawler: str, pages: int, result: dict[str, Any], probe: float | None, unit: str = "pages") -> dict[str, Any]:
    count = result.get(unit, result.get("items", 0))
    rate = count / result["seconds"] if result["seconds"] else 0.0
    per = result.get("redis_bytes")
    return {
        "crawler": crawler,
        "site": pages,
        unit: count,
        "seconds": round(result["seconds"], 2),
        f"{unit}_per_s": round(rate),
        "vs_probe": round(rate / probe, 2) if probe else "",
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        f"redis_bytes_per_{unit[:-1]}": round(per / count) if per is not None and count else "",
    }


def _web(redis_url: str, out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    port = free_port()
    for pages in SIZES:
        docs = generate(out, pages)
        with serve(docs, port, ["127.0.0.1"], out / "nginx"):
            start = f"http://127.0.0.1:{port}/p/0"
            probe = _run(["bench.web_probe", start, str(CONCURRENCY)])
            rate = probe["pages"] / probe["seconds"]
            rows.append(_row("bare aiohttp + selectolax probe", pages, probe, rate))
            if pages == SIZES[0]:
                rows.append(
                    _row(
                        "bare probe with httpx instead",
                        pages,
                        _run(["bench.web_probe", start, str(CONCURRENCY), "httpx"]),
                        rate,
                    )
                )
                try:
                    import scrapy  # noqa: F401 - optional, only to know whether to run it
                except ImportError:
                    pass
                else:
                    rows.append(_row("Scrapy", pages, _run(["bench.web_crawl_scrapy", start, str(CONCURRENCY)]), rate))
            rows.append(
                _row(
                    "crawl-worker web connector alone",
                    pages,
                    _run(["bench.web_crawl_ours", str(CONCURRENCY), str(out / "data"), start]),
                    rate,
                )
            )
            from bench.web_crawl_ours import config

            cfg = config([start], CONCURRENCY).model_dump(mode="json", exclude_defaults=True)
            worker = asyncio.run(_worker_crawl(redis_url, out / f"worker-{pages}", "web", cfg))
            rows.append(_row("crawl-worker worker end to end", pages, worker, rate))
    hosts: list[dict[str, Any]] = []
    for count, limits in ((1, (4, 16)), (len(HOSTS), (4, 16))):
        docs = generate(out, SIZES[0], HOSTS[:count], port)
        with serve(docs, port, HOSTS[:count], out / f"nginx-{count}hosts"):
            starts = [f"http://{h}:{port}/p/0" for h in HOSTS[:count]]
            for per_host in limits:
                result = _run(["bench.web_crawl_ours", str(per_host), str(out / "data"), *starts])
                hosts.append(
                    {
                        "hosts": count,
                        "per_host_concurrency": per_host,
                        "pages": result["pages"],
                        "pages_per_s": round(result["pages"] / result["seconds"]),
                    }
                )
    return rows, hosts


def _filesystem(redis_url: str, out: Path) -> list[dict[str, Any]]:
    root = out / f"files-{FILES}"
    if not (root / "done").exists():
        for i in range(FILES):
            folder = root / f"d{i // 100:04d}"
            if i % 100 == 0:
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i:06d}.txt").write_text(f"file {i}: " + "lorem ipsum " * 8)
        (root / "done").write_text("")
    probe = min((_run(["bench.fs_probe", str(root)]) for _ in range(2)), key=lambda r: r["seconds"])  # warm cache
    rate = probe["files"] / probe["seconds"]
    config = {"root": str(root), "batch_size": 500, "exclude": ["done"]}
    worker = asyncio.run(_worker_crawl(redis_url, out / "worker-fs", "filesystem", config))
    return [
        _row("bare scandir + read + SHA-256 probe", FILES, probe, rate, "files"),
        _row("crawl-worker worker end to end", FILES, worker, rate, "files"),
    ]


def _goals(web: list[dict[str, Any]], fs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def pick(crawler: str, size: int) -> dict[str, Any]:
        return next(r for r in web if r["crawler"] == crawler and r["site"] == size)

    small, large = pick("crawl-worker worker end to end", SIZES[0]), pick("crawl-worker worker end to end", SIZES[1])
    scrapy = next((r for r in web if r["crawler"] == "Scrapy"), None)
    goals = [
        ("worker end to end >= 0.5x the probe at 5,000 pages", small["vs_probe"], small["vs_probe"] >= 0.5),
        ("worker end to end >= 0.5x the probe at 100,000 pages", large["vs_probe"], large["vs_probe"] >= 0.5),
        (
            "worker end to end >= 5x Scrapy",
            round(small["pages_per_s"] / scrapy["pages_per_s"], 1) if scrapy else "",
            bool(scrapy) and small["pages_per_s"] >= 5 * scrapy["pages_per_s"],
        ),
        (
            "pages/s at 100,000 >= 0.85x pages/s at 5,000",
            round(large["pages_per_s"] / small["pages_per_s"], 2),
            large["pages_per_s"] >= 0.85 * small["pages_per_s"],
        ),
        (
            "Redis bytes per page flat (5,000 -> 100,000) and < 2 KB",
            f"{small['redis_bytes_per_page']} -> {large['redis_bytes_per_page']}",
            large["redis_bytes_per_page"] < 2048
            and large["redis_bytes_per_page"] <= 1.2 * small["redis_bytes_per_page"],
        ),
        (
            "peak RSS at 100,000 <= 1.5x at 5,000 and < 150 MB",
            f"{small['peak_rss_mb']} -> {large['peak_rss_mb']}",
            large["peak_rss_mb"] <= 1.5 * small["peak_rss_mb"] and large["peak_rss_mb"] < 150,
        ),
        ("filesystem worker end to end >= 0.5x the probe", fs[1]["vs_probe"], fs[1]["vs_probe"] >= 0.5),
    ]
    return [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals]


def run(redis_url: str, out_dir: Path) -> dict[str, Any]:
    """Every row in one run (bench harness contract)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    web, hosts = _web(redis_url, out_dir)
    fs = _filesystem(redis_url, out_dir)
    notes = (
        f"nginx (Debian package, 1 worker process) on loopback; concurrency {CONCURRENCY} (per host for ours, "
        "CONCURRENT_REQUESTS for Scrapy, connections for the probe); robots.txt obeyed by ours and Scrapy; "
        "pages_per_step 100. vs_probe divides by the bare probe's pages/s on the same site size. "
        "redis_bytes_per_page: the private Redis's total_net_input_bytes over the job (the job, run record, "
        "state commits, progress, completion; documents go to the JSONL sink's files) per page."
    )
    return {
        "title": "Crawl engine: web and filesystem, what a user gets vs the bare hardware (issue 13)",
        "rows": web,
        "notes": notes,
        "tables": [
            {"title": "Several hosts (127.0.0.2-5, links across hosts; connector alone, 5,000 pages)", "rows": hosts},
            {"title": f"Filesystem: {FILES:,} small files", "rows": fs},
            {"title": "Goals (issue 13)", "rows": _goals(web, fs)},
        ],
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], REPO / ".bench" / "crawl"), indent=2))
