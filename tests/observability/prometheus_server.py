"""A throwaway Prometheus server on loopback (Debian package ``prometheus``)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.observability.promtool import RULES, require
from tests.redis_server import free_port


def fast_rules(path: Path) -> Path:
    """rules.yml with every ``for`` at 0 s and 1 s evaluation, so alerts fire within a short test."""
    text = re.sub(r"for: \d+[smh]", "for: 0s", RULES.read_text())
    path.write_text(re.sub(r"interval: \d+[smh]", "interval: 1s", text))
    return path


class PrometheusServer:
    """Prometheus scraping ``targets`` every second with ``rules``; stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, targets: list[str], rules: Path, job: str = "crawl-worker") -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        quoted = ", ".join(f'"{t}"' for t in targets)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {rules}\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{quoted}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def start(self) -> None:
        """Start Prometheus and wait until it is ready."""
        with (self.workdir / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    require("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not start: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (raises on a query error)."""
        body = self.http.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def get(self, path: str, **params: Any) -> Any:
        """GET an API path; its ``data``."""
        body = self.http.get(path, params=params).json()
        assert body["status"] == "success", body
        return body["data"]

    def stop(self) -> None:
        """Stop the server."""
        self.http.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
