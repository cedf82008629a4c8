"""Redis topologies against real local redis-server processes: TLS, ACL, Sentinel failover, Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from bullmq import Queue

from tests.helpers import add_crawl, catalog_of, running_app, wait_for
from tests.proc import Processes, run_cli, write_catalog
from tests.redis_procs import REDIS_CLI, REDIS_SERVER, spawn, start_cluster, wait_port
from tests.redis_server import free_port
from worker.connections import make_client
from worker.settings import Settings

QUICK = {"connector": "mock", "config": {"items": 3, "step_size": 3}}
KEEP: dict[str, Any] = {"removeOnComplete": 1000, "removeOnFail": 1000}


@contextlib.asynccontextmanager
async def producer(settings: Settings) -> AsyncIterator[Queue]:
    """A bullmq Queue on the worker's own client construction (so producers get the same topology); closed on exit."""
    queue = Queue(settings.queue_name, {"connection": make_client(settings), "prefix": settings.prefix})
    try:
        yield queue
    finally:
        await queue.close()


async def crawl_one(settings: Settings) -> None:
    """Run the worker in-process and complete one crawl through ``settings``' Redis."""
    async with producer(settings) as queue, running_app(settings, catalog_of(quick=QUICK)):
        job_id = await add_crawl(queue, "mock", "quick", **KEEP)

        async def done() -> bool:
            state: str = await queue.getJobState(job_id)
            return state == "completed"

        await wait_for(done, timeout=20, what="the crawl to complete")


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("crawl-worker.test")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "server", "server-key", "client", "client-key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server"]))
    server.private_key_pem.write_to_path(str(files["server-key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    return files


def _tls_args(files: dict[str, Path], port: int) -> list[str]:
    return [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(files["server"]),
        "--tls-key-file",
        str(files["server-key"]),
        "--tls-ca-cert-file",
        str(files["ca"]),
        "--tls-auth-clients",
        "yes",
        "--tls-replication",
        "yes",
    ]


def _tls_settings(files: dict[str, Path]) -> dict[str, Path]:
    return {
        "redis_tls_ca_file": files["ca"],
        "redis_tls_cert_file": files["client"],
        "redis_tls_key_file": files["client-key"],
    }


@pytest.mark.slow
def test_tls_certificates(
    make_settings: Callable[..., Settings], tmp_path: Path, tls_files: dict[str, Path], processes: Processes
) -> None:
    """rediss:// with a private CA and a client certificate runs a crawl; without the client cert it is refused."""
    files = tls_files
    port = free_port()
    processes.adopt(spawn(tmp_path / "redis", _tls_args(files, port), port))
    url = f"rediss://127.0.0.1:{port}/0"
    settings = make_settings(redis_url=url, **_tls_settings(files))
    asyncio.run(crawl_one(settings))
    catalog = write_catalog(tmp_path / "catalog.toml", {})
    no_cert = run_cli(
        "check", redis_url=url, redis_tls_ca_file=files["ca"], catalog_file=catalog, redis_connect_timeout_s=1
    )
    assert no_cert.returncode == 1
    assert "FAIL redis" in no_cert.stdout
    plain = run_cli("check", redis_url=f"redis://127.0.0.1:{port}/0", catalog_file=catalog, redis_connect_timeout_s=1)
    assert plain.returncode == 1, "a plain-text client must not get through"


@pytest.mark.slow
def test_acl_user_password_and_file(
    make_settings: Callable[..., Settings], tmp_path: Path, processes: Processes
) -> None:
    """An ACL user limited to the prefix crawls with a password or a password file; a bad one fails, unlogged."""
    port = free_port()
    acl = "user default off\nuser crawl on >s3cret-Pw ~bull:* &* +@all\n"
    processes.adopt(spawn(tmp_path / "redis", ["--port", str(port)], port, config=acl))
    url = f"redis://127.0.0.1:{port}/0"
    asyncio.run(crawl_one(make_settings(redis_url=url, redis_username="crawl", redis_password="s3cret-Pw")))
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret-Pw\n")
    asyncio.run(crawl_one(make_settings(redis_url=url, redis_username="crawl", redis_password_file=secret)))
    outside = redis.Redis(port=port, username="crawl", password="s3cret-Pw")
    with pytest.raises(redis.exceptions.NoPermissionError):
        outside.set("other:key", 1)
    outside.close()
    catalog = write_catalog(tmp_path / "catalog.toml", {})
    wrong = run_cli("check", redis_url=url, redis_username="crawl", redis_password="wrong-Pw-123", catalog_file=catalog)
    assert wrong.returncode == 1
    assert "wrong-Pw-123" not in wrong.stdout + wrong.stderr


def _sentinel_conf(master_port: int, port: int) -> str:
    return (
        f"port {port}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 2000\nsentinel failover-timeout mymaster 10000\n"
    )


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        [REDIS_CLI, "-p", str(port), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@pytest.mark.slow
def test_sentinel_failover_loses_no_job(
    make_settings: Callable[..., Settings], tmp_path: Path, processes: Processes
) -> None:
    """The worker finds the master through Sentinel, and a failover while jobs run loses none of them."""
    master, replica, sentinel = free_port(), free_port(), free_port()
    processes.adopt(spawn(tmp_path / "master", ["--port", str(master)], master))
    processes.adopt(
        spawn(tmp_path / "replica", ["--port", str(replica), "--replicaof", "127.0.0.1", str(master)], replica)
    )
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    conf = sentinel_dir / "sentinel.conf"
    conf.write_text(_sentinel_conf(master, sentinel))
    processes.start([REDIS_SERVER, str(conf), "--sentinel"], cwd=sentinel_dir)
    wait_port(sentinel)

    def replica_known() -> bool:
        try:
            listed = _cli(sentinel, "sentinel", "replicas", "mymaster")
        except subprocess.CalledProcessError:
            return False
        return str(replica) in listed and "master_link_status:up" in _cli(replica, "info", "replication")

    asyncio.run(wait_for(_sync(replica_known), timeout=20, what="sentinel to see the synced replica"))
    settings = make_settings(
        redis_sentinels=[f"127.0.0.1:{sentinel}"],
        redis_sentinel_master="mymaster",
        redis_url=f"redis://127.0.0.1:{master}/0",
        concurrency=3,
        lock_duration_ms=5000,
        stalled_interval_ms=2000,
    )
    asyncio.run(_failover_during_crawls(settings, sentinel, replica))


def _sync(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return await asyncio.to_thread(check)

    return run


async def _failover_during_crawls(settings: Settings, sentinel: int, replica: int) -> None:
    slow = {"connector": "mock", "config": {"items": 8, "step_size": 1, "step_delay_s": 0.1}}
    instances = {f"s{i}": slow for i in range(12)}
    async with producer(settings) as queue, running_app(settings, catalog_of(**instances)):
        ids = [await add_crawl(queue, "mock", cid, **KEEP) for cid in instances]

        async def some_done() -> bool:
            counts: dict[str, int] = await queue.getJobCounts("completed")
            return counts["completed"] >= 2

        await wait_for(some_done, timeout=20, what="the first crawls to complete")
        await asyncio.to_thread(_cli, sentinel, "sentinel", "failover", "mymaster")

        def promoted() -> bool:
            return _cli(sentinel, "sentinel", "get-master-addr-by-name", "mymaster").split()[-1] == str(replica)

        await wait_for(_sync(promoted), timeout=20, what="the replica to be promoted")

        async def all_done() -> list[str] | None:
            states = [await queue.getJobState(job_id) for job_id in ids]
            return states if all(state == "completed" for state in states) else None

        await wait_for(all_done, timeout=60, interval=0.5, what="every job to complete after the failover")
        assert "role:master" in await asyncio.to_thread(_cli, replica, "info", "replication")


@pytest.mark.slow
def test_cluster_crawl_with_hash_tag_prefix(
    make_settings: Callable[..., Settings], tmp_path: Path, processes: Processes
) -> None:
    """On a 3-node Redis Cluster the worker runs a crawl with prefix {bull}; every queue key lands on one node."""
    ports = start_cluster(tmp_path / "cluster", processes)
    settings = make_settings(redis_url=f"redis://127.0.0.1:{ports[0]}/0", redis_cluster=True, prefix="{bull}")
    asyncio.run(crawl_one(settings))
    keys_per_node = {port: _cli(port, "--scan").splitlines() for port in ports}
    holders = [port for port, keys in keys_per_node.items() if keys]
    assert len(holders) == 1, f"queue keys spread over nodes: {keys_per_node}"
    keys = keys_per_node[holders[0]]
    assert any(key.endswith(":completed") for key in keys)
    assert all(key.startswith(f"{{bull}}:{settings.queue_name}") for key in keys)


def test_sentinel_over_tls(
    make_settings: Callable[..., Settings], tmp_path: Path, tls_files: dict[str, Path], processes: Processes
) -> None:
    """Sentinel discovery works when the Sentinels and the master speak only TLS (rediss:// + certificates)."""
    master, sentinel = free_port(), free_port()
    processes.adopt(spawn(tmp_path / "master", _tls_args(tls_files, master), master))
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    conf = sentinel_dir / "sentinel.conf"
    tls_conf = "\n".join(
        f"{a[2:]} {b}" for a, b in itertools.pairwise(_tls_args(tls_files, sentinel)[2:]) if a.startswith("--")
    )
    conf.write_text(f"port 0\n{tls_conf}\nsentinel monitor mymaster 127.0.0.1 {master} 1\n")
    processes.start([REDIS_SERVER, str(conf), "--sentinel"], cwd=sentinel_dir)
    wait_port(sentinel)
    settings = make_settings(
        redis_url="rediss://mymaster/0",
        redis_sentinels=[f"127.0.0.1:{sentinel}"],
        redis_sentinel_master="mymaster",
        **_tls_settings(tls_files),
    )
    asyncio.run(crawl_one(settings))
