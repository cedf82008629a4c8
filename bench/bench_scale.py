"""Scale-out: throughput of no-op crawl jobs with 1, 2 and 4 `crawl-worker run` processes.

Each round fills a fresh queue with producer-shaped jobs (priority 5, so they sit in the
`prioritized` ZSET, removeOnComplete 10) whose connector is the mock with zero items: the job
is pure queue + run-record overhead (fetch, lease, run record, progress, finish). The worker
processes start on a full backlog; after a warm-up, jobs consumed in a fixed window give jobs/s.
CPU is read from /proc for the worker processes and from INFO cpu for Redis, over the same window.
Redis is the harness's private redis-server (``bench.common.private_redis``): the shared test Redis
would mix other clients into INFO cpu.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from bullmq import Queue

from bench.common import delete_queue, private_redis
from worker.models import CrawlingJobData
from worker.queue.producer import node_client_name, producer_job_options

REPO = Path(__file__).resolve().parent.parent
PROCESSES = (1, 2, 4)
CONCURRENCY = 10
JOBS = 60_000  # per round: more than the processes consume in the window on this machine
INSTANCES = 10_000  # job i crawls instance b(i mod INSTANCES): later rounds of an instance are incremental runs
WARMUP_S = 1.0
WINDOW_S = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _catalog(path: Path) -> Path:
    lines = [f'[instances."b{i}"]\nconnector = "mock"\nconfig = {{ items = 0 }}\n' for i in range(INSTANCES)]
    path.write_text("".join(lines))
    return path


async def _fill(redis_url: str, queue_name: str) -> None:
    queue = Queue(queue_name, {"connection": redis_url, "prefix": "bull"})
    opts = producer_job_options()
    try:
        for start in range(0, JOBS, 500):
            batch = []
            for i in range(start, min(start + 500, JOBS)):
                name, data = CrawlingJobData.for_instance(
                    "mock", f"b{i % INSTANCES}", org_id="org-bench", user_id="u"
                ).to_job()
                batch.append({"name": name, "data": data, "opts": opts})
            await queue.addBulk(batch)
    finally:
        await queue.close()


def _backlog(client: redis.Redis, queue_name: str) -> int:
    pipe = client.pipeline()
    pipe.llen(f"bull:{queue_name}:wait")
    pipe.zcard(f"bull:{queue_name}:prioritized")
    pipe.llen(f"bull:{queue_name}:active")
    return int(sum(pipe.execute()))


def _proc_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
    return total / CLK_TCK


def _redis_cpu(client: redis.Redis) -> tuple[float, int]:
    cpu = client.info("cpu")
    stats = client.info("stats")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(stats["total_commands_processed"])


def _round(redis_url: str, out_dir: Path, processes: int, catalog: Path) -> dict[str, Any]:
    queue_name = f"bench-scale-{processes}-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(redis_url)
    asyncio.run(_fill(redis_url, queue_name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWL_WORKER_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CRAWL_WORKER_REDIS_URL": redis_url,
            "CRAWL_WORKER_QUEUE_NAME": queue_name,
            "CRAWL_WORKER_CATALOG_FILE": str(catalog),
            "CRAWL_WORKER_DATA_DIR": str(out_dir / "data"),
            "CRAWL_WORKER_CONCURRENCY": str(CONCURRENCY),
            "CRAWL_WORKER_METRICS_ENABLED": "false",
            "CRAWL_WORKER_LOG_LEVEL": "warning",
            "CRAWL_WORKER_LOG_FORMAT": "json",
        }
    )
    log = (out_dir / f"scale-{processes}.log").open("ab")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env={**env, "CRAWL_WORKER_WORKER_NAME": f"b{i}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        for i in range(processes)
    ]
    try:
        deadline = time.monotonic() + 30
        names = {node_client_name("bull", queue_name, f"b{i}") for i in range(processes)}
        while time.monotonic() < deadline:  # every process has connected its worker
            if names <= {c.get("name") for c in client.client_list()}:
                break
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        pids = [p.pid for p in procs]
        t0, left0, cpu0, (rcpu0, cmds0) = (
            time.monotonic(),
            _backlog(client, queue_name),
            _proc_cpu_s(pids),
            _redis_cpu(client),
        )
        while time.monotonic() - t0 < WINDOW_S:
            time.sleep(0.25)
            if _backlog(client, queue_name) == 0:
                break
        t1, left1, cpu1, (rcpu1, cmds1) = (
            time.monotonic(),
            _backlog(client, queue_name),
            _proc_cpu_s(pids),
            _redis_cpu(client),
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        delete_queue(client, queue_name)
        client.close()
    elapsed = t1 - t0
    done = left0 - left1
    return {
        "processes": processes,
        "concurrency_each": CONCURRENCY,
        "jobs_measured": done,
        "window_s": round(elapsed, 2),
        "jobs_per_s": round(done / elapsed, 1),
        "worker_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "worker_cpu_ms_per_job": round(1000 * (cpu1 - cpu0) / max(done, 1), 2),
        "redis_cpu_pct": round(100 * (rcpu1 - rcpu0) / elapsed, 1),
        "redis_cmds_per_job": round((cmds1 - cmds0) / max(done, 1), 1),
        "host_cpu_pct": round(100 * (cpu1 - cpu0 + rcpu1 - rcpu0) / elapsed, 1),
        "backlog_ran_out": left1 == 0,
    }


def run(redis_url: str, out_dir: Path) -> dict[str, Any]:
    """Throughput of no-op crawl jobs with 1, 2 and 4 worker processes (bench harness contract)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = _catalog(out_dir / "scale-catalog.toml")
    client = redis.Redis.from_url(redis_url)
    which_redis = f"the harness's private redis-server {client.info('server')['redis_version']} on loopback"
    client.close()
    rows = [_round(redis_url, out_dir, n, catalog) for n in PROCESSES]
    base = rows[0]["jobs_per_s"] or 1.0
    for row in rows:
        row["speedup"] = round(row["jobs_per_s"] / base, 2)
    cores = os.cpu_count() or 1
    top = max(rows, key=lambda r: r["jobs_per_s"])
    redis_ceiling = round(top["jobs_per_s"] * 100 / max(top["redis_cpu_pct"], 0.1))
    notes = (
        f"{cores} CPU cores, Redis: {which_redis}. No-op crawl jobs (mock connector, 0 items, producer "
        f"options: priority 5, keep 10), "
        f"{CONCURRENCY} concurrent jobs per process, log level warning, metrics off; jobs consumed in a "
        f"{WINDOW_S:.0f} s window after every process connected. worker_cpu_pct sums the processes (100 = one "
        f"core); redis_cpu_pct is INFO cpu over the same window (any other client of that Redis included); "
        f"redis_cmds_per_job counts commands run inside BullMQ's Lua scripts too. Peak {top['jobs_per_s']} jobs/s "
        f"with {top['processes']} process(es), host CPU {top['host_cpu_pct']}% of {cores * 100}%: past that the "
        f"host is CPU-bound and more replicas on it only add contention. Redis (one thread) would saturate near "
        f"{redis_ceiling} jobs/s (jobs_per_s x 100 / redis_cpu_pct), so a fleet of such workers on more hosts "
        f"scales until then; beyond, shard queues (docs/scaling.md)."
    )
    return {"title": "Scale-out: no-op crawl jobs vs worker processes", "rows": rows, "notes": notes}


if __name__ == "__main__":
    with private_redis(REPO / ".bench" / "scale-redis") as private_url:  # INFO cpu must count only us
        result = run(private_url, REPO / ".bench" / "scale")
    print(json.dumps(result, indent=2))
