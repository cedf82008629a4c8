"""Shared pieces of the benchmarks: a private Redis, process measurements, PipesHub-shaped job filling."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from worker.models import CrawlingJobData
from worker.queue.producer import producer_job_options

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Deletes the hashes of job ids ARGV[1]..ARGV[2] under KEYS[1] (the bulk-filled benchmark queues).
DROP_JOBS = """
local base, first, last = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = first, last do redis.call('UNLINK', base .. ':' .. i) end
return last
"""


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(out_dir: Path) -> Iterator[str]:
    """A redis-server of our own on a free loopback port, keeping nothing on disk; yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(out_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.kill()
        proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def crawl_jobs(count: int, *, keep: bool = False, id_prefix: str = "b") -> list[dict[str, Any]]:
    """``count`` PipesHub-shaped jobs for the mock connector, one connector instance each."""
    opts = producer_job_options()
    if keep:
        opts = {**opts, "removeOnComplete": False, "removeOnFail": False}
    jobs = []
    for i in range(count):
        name, data = CrawlingJobData.for_instance("mock", f"{id_prefix}{i}", org_id="org-bench", user_id="u").to_job()
        jobs.append({"name": name, "data": data, "opts": opts})
    return jobs


def write_noop_catalog(path: Path, count: int, id_prefix: str = "b") -> Path:
    """A catalog with ``count`` mock instances that finish at once (zero items)."""
    path.write_text(
        "".join(f'[instances."{id_prefix}{i}"]\nconnector = "mock"\nconfig = {{ items = 0 }}\n' for i in range(count))
    )
    return path


def delete_queue(client: redis.Redis, queue_name: str, prefix: str = "bull") -> None:
    """Delete every key of ``queue_name``."""
    keys = list(client.scan_iter(match=f"{prefix}:{queue_name}:*", count=5000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])


def worker_env(redis_url: str, queue_name: str, **settings: Any) -> dict[str, str]:
    """Environment for a ``crawl-worker run`` subprocess with ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWL_WORKER_")}
    env["PYTHONPATH"] = str(REPO)
    env["CRAWL_WORKER_REDIS_URL"] = redis_url
    env["CRAWL_WORKER_QUEUE_NAME"] = queue_name
    for key, value in settings.items():
        env[f"CRAWL_WORKER_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
