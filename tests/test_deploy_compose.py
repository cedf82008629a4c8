"""The compose stack (deploy/compose): started here for real, and Grafana's provisioning checked offline.

What runs here: Redis, two workers, the API and Prometheus, built from Debian's packages on the base that
``deploy/docker/build-offline.sh`` makes (no registry is reachable, so the stock ``redis`` and ``prom/prometheus``
images are replaced by ``crawl-worker-services``, set through the file's own REDIS_IMAGE / PROMETHEUS_IMAGE).
Grafana's image cannot be built here: its provisioning files are checked against the shape Grafana reads
(apiVersion 1, the datasource the dashboard's variable selects, the folder the provider loads) — a check of
the files, not a running Grafana.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import missing, need

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
BUILD = ROOT / "deploy" / "docker" / "build-offline.sh"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_every_file_the_stack_mounts_is_in_the_repository() -> None:
    for name, service in _compose()["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts {source}, which is missing"


def test_grafana_provisioning_loads_the_shipped_dashboard_on_the_stacks_prometheus() -> None:
    """The datasource is the compose Prometheus; the provider's folder is where the dashboard is mounted; the
    dashboard's datasource variable selects a Prometheus datasource (the one provisioned)."""
    services = _compose()["services"]
    grafana, prometheus = services["grafana"], services["prometheus"]
    provisioning = COMPOSE.parent / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert any("--web.listen-address=:9090" in arg for arg in prometheus["command"])

    providers = yaml.safe_load((provisioning / "dashboards" / "crawl-worker.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    mounted = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    dashboard_target = next(t for t, s in mounted.items() if s.endswith("crawl-worker.json"))
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    assert mounted["/etc/grafana/provisioning"] == "./grafana/provisioning"

    dashboard = json.loads((COMPOSE.parent / mounted[dashboard_target]).read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == source["type"]
    for panel in dashboard["panels"]:
        if "datasource" in panel:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel.get("title")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _build(*args: str) -> str:
    done = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


class Stack:
    """One compose project on this test's own ports; ``down -v`` removes its containers and volumes."""

    def __init__(self) -> None:
        self.project = f"cwtest{uuid.uuid4().hex[:8]}"
        self.token = uuid.uuid4().hex
        self.api_port, self.prometheus_port = _free_port(), _free_port()
        self.env = {
            **os.environ,
            "PYTHON_IMAGE": _build("base"),
            "REDIS_IMAGE": "crawl-worker-services:local",
            "PROMETHEUS_IMAGE": "crawl-worker-services:local",
            "CRAWL_WORKER_API_ADMIN_TOKEN": self.token,
            "CRAWL_WORKER_API_PUBLISH": f"127.0.0.1:{self.api_port}",
            "PROMETHEUS_PUBLISH": f"127.0.0.1:{self.prometheus_port}",
            "GRAFANA_PUBLISH": f"127.0.0.1:{_free_port()}",
        }

    def compose(self, *args: str, timeout: float = 600) -> str:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"docker-compose {args[0]}: {done.stderr[-3000:]}"
        return done.stdout

    def get(self, url: str, *, token: bool = False) -> Any:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"} if token else {})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())


@pytest.fixture
def stack() -> Iterator[Stack]:
    need("docker", "apt-get install docker.io")
    need("docker-compose", "apt-get install docker-compose")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        missing("a running Docker daemon", "apt-get install docker.io; dockerd &")
    need("mmdebstrap", "apt-get install mmdebstrap")
    _build("services")
    started = Stack()
    try:
        yield started
    finally:
        print(started.compose("logs", "--tail", "20", timeout=60)[-4000:])
        started.compose("down", "-v", "--remove-orphans", timeout=180)


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := check():
                return value
        except OSError:  # not listening yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


@pytest.mark.docker
def test_the_stack_starts_crawls_and_is_scraped(stack: Stack) -> None:
    """up --build: Redis, 2 workers, the API, Prometheus; a crawl of docs/ completes through the API's view,
    and Prometheus scrapes both worker replicas with the shipped rules loaded."""
    stack.compose("up", "-d", "--build", "redis", "worker", "api", "prometheus")
    names = stack.compose("ps", "--services")
    assert {"redis", "worker", "api", "prometheus"} <= set(names.split())
    api = f"http://127.0.0.1:{stack.api_port}"
    _until(lambda: stack.get(f"{api}/v1/queue", token=True), 90, "the API")

    enqueue = ["exec", "-T", "api", "crawl-worker", "enqueue", "--connector", "filesystem"]
    added = json.loads(stack.compose(*enqueue, "--connector-id", "project-docs", "--org-id", "compose"))

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = stack.get(f"{api}/v1/jobs/{added['id']}", token=True)
        return job if job["state"] in ("completed", "failed") else None

    job = _until(finished, 90, "the crawl to finish")
    assert job["state"] == "completed", job.get("failedReason")
    assert job["progress"]["documents"] == len(list((ROOT / "docs").rglob("*.md")))

    prometheus = f"http://127.0.0.1:{stack.prometheus_port}"

    def scraped() -> list[str] | None:
        targets = stack.get(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        up = [t["scrapeUrl"] for t in targets if t["labels"]["job"] == "crawl-worker" and t["health"] == "up"]
        return up if len(up) == 2 else None

    assert len(_until(scraped, 90, "Prometheus to scrape both workers")) == 2
    groups = stack.get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    assert sum(len(g["rules"]) for g in groups) > 0
