"""The container image, built and run for real (deploy/docker): read-only root, health on the configured
port, a filesystem crawl of a mounted directory, SIGTERM hand-off, and a killed replica's crawl resumed
by another container.

The image is built by ``deploy/docker/build-offline.sh`` (a Debian base from Debian's packages, since no
image registry is reachable here; docker's layer cache makes a rebuild take seconds). The containers use
the host's network, so they reach the test Redis on 127.0.0.1 like every other test's worker.
Skipped without a running Docker daemon, an error in CI (``.ci/run`` installs and starts one).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue

from tests.helpers import add_crawl, wait_for, wait_state
from tests.tools import missing, need
from worker.settings import Settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "crawl-worker:test"
UID = 10001


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built from this checkout (the base is cached between runs)."""
    need("docker", "apt-get install docker.io")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        missing("a running Docker daemon", "apt-get install docker.io; dockerd &")
    need("mmdebstrap", "apt-get install mmdebstrap")
    built = subprocess.run(
        [str(ROOT / "deploy/docker/build-offline.sh"), IMAGE], capture_output=True, text=True, timeout=1200, check=False
    )
    assert built.returncode == 0, built.stderr[-3000:]
    print(built.stdout.strip())
    return IMAGE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, UID, UID)
    return path


class Containers:
    """Starts worker containers on the test's queue; removes every one it started."""

    def __init__(self, image: str, settings: Settings, tmp_path: Path) -> None:
        self.image, self.settings, self.tmp_path = image, settings, tmp_path
        self.names: list[str] = []

    def catalog(self, instances: dict[str, dict[str, Any]]) -> Path:
        """A catalog directory holding ``catalog.toml`` with these instances (TOML via JSON-compatible values)."""
        folder = self.tmp_path / "catalog"
        folder.mkdir(exist_ok=True)
        lines = []
        for cid, entry in instances.items():
            lines.append(f'[instances."{cid}"]\nconnector = "{entry["connector"]}"')
            config = ", ".join(f"{key} = {json.dumps(value)}" for key, value in entry["config"].items())
            lines.append(f"config = {{ {config} }}\n")
        (folder / "catalog.toml").write_text("\n".join(lines))
        return folder

    def run(self, *extra: str, env: dict[str, str] | None = None) -> str:
        """Start a read-only container (only the data volume and /tmp writable); returns its name."""
        name = f"cw-test-{uuid.uuid4().hex[:8]}"
        values = {
            "CRAWL_WORKER_REDIS_URL": self.settings.redis_url,
            "CRAWL_WORKER_QUEUE_NAME": self.settings.queue_name,
            "CRAWL_WORKER_WORKER_NAME": name,
            "CRAWL_WORKER_METRICS_PORT": str(_free_port()),
            **(env or {}),
        }
        volume = _writable_dir(self.tmp_path / "data")
        args = ["run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp"]
        args += [
            "-v",
            f"{volume}:/var/lib/crawl-worker",
            "-v",
            f"{self.tmp_path / 'catalog'}:/etc/crawl-worker/catalog:ro",
        ]
        for key, value in values.items():
            args += ["-e", f"{key}={value}"]
        self.names.append(name)
        _docker(*args, *extra, self.image)
        return name

    def inspect(self, name: str, template: str) -> str:
        return _docker("inspect", "-f", template, name).stdout.strip()

    def remove_all(self) -> None:
        for name in self.names:
            _docker("rm", "-f", name, check=False)


@pytest.fixture
def containers(image: str, make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Containers]:
    started = Containers(image, make_settings(), tmp_path)
    try:
        yield started
    finally:
        for name in started.names:  # what the worker said, for a failing test's report
            print(f"--- {name}\n{_docker('logs', '--tail', '30', name, check=False).stderr[-3000:]}")
        started.remove_all()


async def _healthy(containers: Containers, name: str) -> None:
    async def check() -> bool:
        status = containers.inspect(name, "{{.State.Health.Status}}")
        assert containers.inspect(name, "{{.State.Running}}") == "true", f"{name} exited"
        return status == "healthy"

    await wait_for(check, timeout=90, interval=0.5, what=f"{name} to turn healthy")


async def test_a_read_only_container_crawls_a_mounted_directory_and_is_healthy_on_its_own_port(
    containers: Containers, queue: Queue, tmp_path: Path
) -> None:
    """--read-only --tmpfs /tmp, the data volume, a non-default metrics port: healthy, and the crawl's
    documents land in the mounted data directory; the image runs as uid 10001 with no pip and no compiler."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(25):
        (docs / f"page-{i}.md").write_text(f"# Page {i}\n\nbody {i}\n")
    containers.catalog({"ctr-docs": {"connector": "filesystem", "config": {"root": "/srv/docs"}}})
    name = containers.run("-v", f"{docs}:/srv/docs:ro", "--health-interval", "1s", "--health-start-period", "1s")
    port = containers.inspect(name, "{{range .Config.Env}}{{println .}}{{end}}").split("CRAWL_WORKER_METRICS_PORT=")[1]
    assert port.split()[0] != "9464"
    await _healthy(containers, name)

    job_id = await add_crawl(queue, "filesystem", "ctr-docs", removeOnComplete=False)
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=60) == "completed"
    job = await queue.getJob(job_id)
    assert job.returnvalue["documents"] == 25
    files = list((tmp_path / "data").rglob("documents.jsonl"))
    assert len(files) == 1, files
    assert len(files[0].read_text().splitlines()) == 25

    assert _docker("exec", name, "id", "-u").stdout.strip() == str(UID)
    assert _docker("exec", name, "touch", "/etc/crawl-worker/x", check=False).returncode != 0, "root is writable"
    for probe in (["python", "-m", "pip", "--version"], ["/usr/bin/python3", "-m", "pip", "--version"]):
        assert _docker("exec", name, *probe, check=False).returncode != 0, f"{probe[0]} has pip"
    found = _docker("exec", name, "sh", "-c", "command -v gcc cc g++ pip pip3 || true").stdout.strip()
    assert found == "", f"build tools in the image: {found}"
    # Without any mount, the declared volume still makes the data directory writable under --read-only.
    bare = ["run", "--rm", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "sh", containers.image]
    assert _docker(*bare, "-c", "touch /var/lib/crawl-worker/probe && echo ok").stdout.strip() == "ok"


async def test_sigterm_hands_the_crawl_back_and_a_killed_replicas_crawl_resumes_on_another(
    containers: Containers, queue: Queue
) -> None:
    """docker stop during a crawl: exit 0 within the grace, the crawl handed back with no attempt spent;
    docker kill of the replica running it: the other container recovers it and completes it, resumed."""
    slow = {"connector": "mock", "config": {"items": 300, "step_size": 3, "step_delay_s": 0.1}}
    containers.catalog({"slow": slow})
    fast_recovery = {
        "CRAWL_WORKER_DRAIN_TIMEOUT_S": "1",
        "CRAWL_WORKER_LOCK_DURATION_MS": "5000",
        "CRAWL_WORKER_STALLED_INTERVAL_MS": "1000",
    }
    first = containers.run(env=fast_recovery)
    job_id = await add_crawl(queue, "mock", "slow", removeOnComplete=False)
    await wait_state(queue, job_id, ["active"], timeout=60)

    async def progressed(beyond: int = 0) -> bool:
        job = await queue.getJob(job_id)
        return isinstance(job.progress, dict) and job.progress.get("current", 0) > beyond

    await wait_for(progressed, timeout=30, what="the crawl to make progress")
    started = time.monotonic()
    _docker("stop", "-t", "30", first)
    stopped_s = time.monotonic() - started
    assert containers.inspect(first, "{{.State.ExitCode}}") == "0"
    assert stopped_s < 15, f"docker stop took {stopped_s:.1f}s"
    job = await queue.getJob(job_id)
    assert await queue.getJobState(job_id) in ("delayed", "waiting", "prioritized")
    assert job.attemptsMade == 0, "the hand-off spent an attempt"
    handed_at = int(job.progress["current"])

    second = containers.run(env=fast_recovery)
    third = containers.run(env=fast_recovery)
    await wait_for(lambda: progressed(handed_at), timeout=60, what="a replica to resume the crawl")
    owner = await _owner(queue, job_id, (second, third))
    _docker("kill", owner)
    assert await wait_state(queue, job_id, ["completed", "failed"], timeout=120) == "completed"
    job = await queue.getJob(job_id)
    assert job.returnvalue["documents"] == 300
    assert job.returnvalue["resumed"] is True
    survivor = third if owner == second else second
    assert containers.inspect(survivor, "{{.State.Running}}") == "true"


async def _owner(queue: Queue, job_id: str, names: tuple[str, ...]) -> str:
    """The container whose worker holds the job (BullMQ's processedBy, ``pb``, is the worker's name)."""

    async def check() -> str | None:
        await asyncio.sleep(0)
        raw = await queue.client.hget(f"{queue.prefix}:{queue.name}:{job_id}", "pb")
        owner = raw.decode() if isinstance(raw, bytes) else raw
        return owner if owner in names else None

    found: str = await wait_for(check, timeout=30, what="the job's processedBy to name a replica")
    return found
