"""Throughput, pickup latency and idle cost: crawl-worker vs bare Python bullmq vs Node BullMQ (issue 8).

Throughput: 20,000 PipesHub-shaped no-op jobs (mock connector with zero items, producer options:
priority 5, attempts 3, keep 10) are enqueued first; then one worker process starts and the
clock runs from its first pickup until the backlog is empty or ``CAP_S`` has passed, whichever
comes first (so slow configurations are measured on fewer jobs, and say so). Every worker gets
the same jobs on the same private Redis, one after another:

- ``crawl-worker``: the full stack: validation, catalog lookup, run record with lease and fencing,
  progress, job log line, JSON logs at info, metrics on its HTTP port, per-minute stats;
- ``crawl-worker-core``: the same queue core with a handler that returns at once (the stack's own
  cost is the difference);
- ``bullmq-py-default`` / ``bullmq-py-pooled``: a stock Python bullmq Worker, given a URL (its own
  single connection) or a pooled ``redis.asyncio`` client;
- ``node-bullmq``: a Node BullMQ Worker (npm, pinned in tests/interop).

Then the full stack again at concurrency 10 and 50 with one optimisation taken away at a time
(uvloop, hiredis, the auto-pipeline): what each one buys.

Pickup latency: an idle worker, jobs added one by one; ``processedOn - timestamp`` from the job hash.
Idle cost: CPU seconds of an idle crawl-worker over ``IDLE_S``.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from bullmq import Queue

from bench.common import (
    REPO,
    cpu_seconds,
    crawl_jobs,
    delete_queue,
    free_port,
    peak_rss_mb,
    worker_env,
    write_noop_catalog,
)

JOBS = 20_000
CONCURRENCIES = (1, 10, 50)
CAP_S = 20.0
KINDS = ("crawl-worker", "crawl-worker-core", "bullmq-py-default", "bullmq-py-pooled", "node-bullmq")
#: Full stack minus one optimisation: row name -> (extra environment, ``bench.without`` argument).
ABLATIONS: dict[str, tuple[dict[str, str], str | None]] = {
    "crawl-worker without uvloop": ({"CRAWL_WORKER_EVENT_LOOP": "asyncio"}, None),
    "crawl-worker without hiredis": ({}, "hiredis"),
    "crawl-worker without auto-pipeline": ({}, "autopipeline"),
}
ABLATION_CONCURRENCIES = (10, 50)
PICKUP_JOBS = 500
PICKUP_GAP_S = 0.02
IDLE_S = 60.0
GOALS = {"vs_best_bare_python": 0.9, "vs_node": 0.7, "pickup_p50_ms": 5.0, "idle_cpu_pct": 1.0, "peak_rss_mb": 100.0}


def _command(
    kind: str, url: str, queue: str, concurrency: int, *, catalog: Path, out_dir: Path
) -> tuple[list[str], dict[str, str] | None]:
    if kind.startswith("crawl-worker") and kind != "crawl-worker-core":
        env = worker_env(
            url,
            queue,
            concurrency=concurrency,
            catalog_file=catalog,
            data_dir=out_dir / "data",
            metrics_port=free_port(),
            metrics_host="127.0.0.1",
            log_format="json",
            worker_name=f"bench-{queue}",
        )
        extra, without = ABLATIONS.get(kind, ({}, None))
        env.update(extra)
        module = ["-m", "bench.without", without] if without else ["-m", "worker", "run"]
        return [sys.executable, *module], env
    if kind == "crawl-worker-core":
        env = worker_env(url, queue)
        return [sys.executable, "-m", "bench.core_worker", url, queue, str(concurrency)], env
    if kind.startswith("bullmq-py"):
        mode = kind.rsplit("-", 1)[1]
        return [sys.executable, "-m", "bench.bare_worker", url, queue, str(concurrency), mode], None
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    return [node, str(REPO / "bench" / "node_worker.mjs"), url, queue, str(concurrency)], None


async def _fill(url: str, queue_name: str, jobs: list[dict[str, Any]]) -> None:
    queue = Queue(queue_name, {"connection": url, "prefix": "bull"})
    try:
        for start in range(0, len(jobs), 1000):
            await queue.addBulk(jobs[start : start + 1000])
    finally:
        await queue.close()


def _backlog(client: redis.Redis, queue: str) -> int:
    pipe = client.pipeline(transaction=False)
    pipe.llen(f"bull:{queue}:wait")
    pipe.zcard(f"bull:{queue}:prioritized")
    pipe.llen(f"bull:{queue}:active")
    return int(sum(pipe.execute()))


def _connected(client: redis.Redis, queue: str) -> bool:
    marks = (queue, base64.b64encode(queue.encode()).decode())
    return any(any(m in (c.get("name") or "") for m in marks) for c in client.client_list())


def _redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _start(
    kind: str, url: str, queue: str, concurrency: int, *, catalog: Path, out_dir: Path
) -> subprocess.Popen[bytes]:
    argv, env = _command(kind, url, queue, concurrency, catalog=catalog, out_dir=out_dir)
    log = (out_dir / f"{kind.replace(' ', '-')}-{concurrency}.log").open("ab")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _throughput(
    url: str, kind: str, concurrency: int, *, catalog: Path, out_dir: Path, jobs: list[dict[str, Any]]
) -> dict[str, Any]:
    queue = f"bench-tp-{concurrency}-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(url, decode_responses=True)
    asyncio.run(_fill(url, queue, jobs))
    proc = _start(kind, url, queue, concurrency, catalog=catalog, out_dir=out_dir)
    try:
        deadline = time.monotonic() + 60
        while _backlog(client, queue) >= len(jobs):  # waiting for the first pickup
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} never started consuming (see {out_dir})")
            time.sleep(0.01)
        t0, left0 = time.monotonic(), _backlog(client, queue)
        cpu0, redis0 = cpu_seconds(proc.pid), _redis_cpu_s(client)
        left = left0
        while left > 0 and time.monotonic() - t0 < CAP_S:
            time.sleep(0.02)
            left = _backlog(client, queue)
        elapsed = time.monotonic() - t0
        cpu, redis_cpu = cpu_seconds(proc.pid) - cpu0, _redis_cpu_s(client) - redis0
        rss = peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
        delete_queue(client, queue)
        client.close()
    done = max(left0 - left, 1)
    return {
        "worker": kind,
        "concurrency": concurrency,
        "jobs": left0 - left,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(done / elapsed, 1),
        "cpu_us_per_job": round(1e6 * cpu / done),
        "redis_cpu_us_per_job": round(1e6 * redis_cpu / done),
        "peak_rss_mb": round(rss, 1),
    }


def _pickup(url: str, kind: str, catalog: Path, out_dir: Path) -> dict[str, Any]:
    queue = f"bench-pickup-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(url, decode_responses=True)
    proc = _start(kind, url, queue, 10, catalog=catalog, out_dir=out_dir)
    jobs = crawl_jobs(PICKUP_JOBS, keep=True)

    async def add_one_by_one() -> list[str]:
        q = Queue(queue, {"connection": url, "prefix": "bull"})
        ids = []
        try:
            for job in jobs:
                added = await q.add(job["name"], job["data"], job["opts"])
                ids.append(str(added.id))
                await asyncio.sleep(PICKUP_GAP_S)
        finally:
            await q.close()
        return ids

    try:
        deadline = time.monotonic() + 30
        while not _connected(client, queue):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} never connected")
            time.sleep(0.05)
        time.sleep(1.0)  # idle: blocked on its marker read
        ids = asyncio.run(add_one_by_one())
        deadline = time.monotonic() + 30
        while _backlog(client, queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(f"bull:{queue}:{job_id}", "timestamp", "processedOn")
        lat = sorted(int(p) - int(t) for t, p in pipe.execute() if t and p)
    finally:
        _stop(proc)
        delete_queue(client, queue)
        client.close()
    return {
        "worker": kind,
        "jobs": len(lat),
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "max_ms": lat[-1] if lat else None,
    }


def _idle(url: str, catalog: Path, out_dir: Path) -> dict[str, Any]:
    queue = f"bench-idle-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(url, decode_responses=True)
    proc = _start("crawl-worker", url, queue, 10, catalog=catalog, out_dir=out_dir)
    try:
        deadline = time.monotonic() + 30
        while not _connected(client, queue):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("crawl-worker never connected")
            time.sleep(0.05)
        time.sleep(2.0)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(IDLE_S)
        cpu, elapsed = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        rss = peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
        delete_queue(client, queue)
        client.close()
    return {
        "idle_s": round(elapsed, 1),
        "cpu_s": round(cpu, 3),
        "cpu_pct_of_core": round(100 * cpu / elapsed, 2),
        "rss_mb": round(rss, 1),
    }


def _compare(batch: list[dict[str, Any]]) -> None:
    """Ratios and per-job overheads within one concurrency's rows."""
    by_kind = {row["worker"]: row for row in batch}
    best_bare = max(by_kind["bullmq-py-default"]["jobs_per_s"], by_kind["bullmq-py-pooled"]["jobs_per_s"])
    node = by_kind["node-bullmq"]["jobs_per_s"]
    core = by_kind["crawl-worker-core"]["jobs_per_s"]
    for row in batch:
        row["vs_best_bare_python"] = round(row["jobs_per_s"] / best_bare, 2)
        row["vs_node"] = round(row["jobs_per_s"] / node, 2)
    ours = by_kind["crawl-worker"]
    ours["overhead_us_vs_bare"] = round(1e6 / ours["jobs_per_s"] - 1e6 / best_bare)
    ours["stack_us_per_job"] = round(1e6 / ours["jobs_per_s"] - 1e6 / core)


def _goals(rows: list[dict[str, Any]], pickup: list[dict[str, Any]], idle: dict[str, Any]) -> list[dict[str, Any]]:
    ours = [r for r in rows if r["worker"] == "crawl-worker"]
    node_rss = max(r["peak_rss_mb"] for r in rows if r["worker"] == "node-bullmq")
    goals: list[dict[str, Any]] = []
    for row in ours:
        c = row["concurrency"]
        goals.append(
            {
                "goal": f">= 90 % of the fastest bare Python bullmq, concurrency {c}",
                "measured": row["vs_best_bare_python"],
                "met": row["vs_best_bare_python"] >= GOALS["vs_best_bare_python"],
            }
        )
    for row in ours:
        if row["concurrency"] in (10, 50):
            goals.append(
                {
                    "goal": f">= 70 % of Node BullMQ with <= half its memory, concurrency {row['concurrency']}",
                    "measured": f"{row['vs_node']}, {row['peak_rss_mb']} MB vs {node_rss} MB",
                    "met": row["vs_node"] >= GOALS["vs_node"] and row["peak_rss_mb"] <= node_rss / 2,
                }
            )
    ours_pickup = next(p for p in pickup if p["worker"] == "crawl-worker")
    peak = max(r["peak_rss_mb"] for r in ours)
    goals += [
        {
            "goal": "pickup p50 < 5 ms",
            "measured": ours_pickup["p50_ms"],
            "met": ours_pickup["p50_ms"] is not None and ours_pickup["p50_ms"] < GOALS["pickup_p50_ms"],
        },
        {
            "goal": "idle CPU < 1 % of a core",
            "measured": idle["cpu_pct_of_core"],
            "met": idle["cpu_pct_of_core"] < GOALS["idle_cpu_pct"],
        },
        {"goal": "peak RSS < 100 MB", "measured": peak, "met": peak < GOALS["peak_rss_mb"]},
    ]
    return goals


def _ablations(url: str, *, catalog: Path, out_dir: Path, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The full stack with one optimisation taken away at a time, between two runs of the full stack
    (their mean is the baseline, so machine drift during the rows hits both sides)."""
    rows = []
    for concurrency in ABLATION_CONCURRENCIES:
        kinds = ["crawl-worker", *ABLATIONS, "crawl-worker"]
        measured = [_throughput(url, kind, concurrency, catalog=catalog, out_dir=out_dir, jobs=jobs) for kind in kinds]
        before, after = measured[0], measured[-1]
        without = dict(zip(ABLATIONS, measured[1:-1], strict=True))
        base_rate = (before["jobs_per_s"] + after["jobs_per_s"]) / 2
        base_cpu = (before["cpu_us_per_job"] + after["cpu_us_per_job"]) / 2
        for kind, row in without.items():
            rows.append(
                {
                    "taken_away": kind.removeprefix("crawl-worker without "),
                    "concurrency": concurrency,
                    "full_stack_jobs_per_s": round(base_rate, 1),
                    "without_jobs_per_s": row["jobs_per_s"],
                    "full_stack_cpu_us_per_job": round(base_cpu),
                    "without_cpu_us_per_job": row["cpu_us_per_job"],
                    "throughput_bought": f"{base_rate / row['jobs_per_s']:.2f}x",
                    "cpu_saved_us_per_job": round(row["cpu_us_per_job"] - base_cpu),
                }
            )
    return rows


def run(redis_url: str, out_dir: Path) -> dict[str, Any]:
    """Throughput at concurrency 1/10/50, ablations, pickup latency and idle cost (bench harness contract)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = write_noop_catalog(out_dir / "catalog.toml", JOBS)
    jobs = crawl_jobs(JOBS)
    rows: list[dict[str, Any]] = []
    for concurrency in CONCURRENCIES:
        batch = [
            _throughput(redis_url, kind, concurrency, catalog=catalog, out_dir=out_dir, jobs=jobs) for kind in KINDS
        ]
        _compare(batch)
        rows += batch
    ablations = _ablations(redis_url, catalog=catalog, out_dir=out_dir, jobs=jobs)
    pickup = [
        _pickup(redis_url, kind, catalog, out_dir) for kind in ("crawl-worker", "bullmq-py-pooled", "node-bullmq")
    ]
    idle = _idle(redis_url, catalog, out_dir)
    pick = "; ".join(f"{p['worker']} p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms" for p in pickup)
    notes = (
        f"{JOBS} jobs enqueued per row; each row runs until the backlog is empty or {CAP_S:.0f} s have passed "
        "(the `jobs` column says how many were measured). `vs_best_bare_python` divides by the faster of the two "
        "stock Python bullmq rows at the same concurrency; `overhead_us_vs_bare` = 1e6/ours - 1e6/best bare; "
        "`stack_us_per_job` = 1e6/ours - 1e6/crawl-worker-core (what validation, the fenced run record, progress, "
        "the job log line, logs, metrics and stats cost per job on top of the queue core). `cpu_us_per_job` is the "
        "worker process, `redis_cpu_us_per_job` the Redis server (INFO cpu) over the same window. "
        f"Pickup latency ({PICKUP_JOBS} jobs added one by one, {PICKUP_GAP_S * 1000:.0f} ms apart, to an idle "
        f"worker; processedOn - timestamp, whole milliseconds: 0 means under 1 ms): {pick}. "
        f"Idle crawl-worker over {idle['idle_s']} s: "
        f"{idle['cpu_s']} CPU s = {idle['cpu_pct_of_core']} % of a core, RSS {idle['rss_mb']} MB."
    )
    return {
        "title": "Throughput, pickup latency and idle cost (issue 8)",
        "rows": rows,
        "tables": [
            {"title": "Goals (issue 8)", "rows": _goals(rows, pickup, idle)},
            {"title": "What each optimisation buys (full stack with one taken away)", "rows": ablations},
        ],
        "notes": notes,
        "pickup": pickup,
        "idle": idle,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run("redis://127.0.0.1:6379/0", REPO / ".bench" / "throughput"), indent=2))
