"""Run crawl-worker as a real process (signals, kill -9, exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def write_catalog(path: Path, instances: dict[str, dict[str, Any]]) -> Path:
    """Write a catalog TOML file for ``instances`` (connectorId -> entry)."""
    lines = []
    for cid, entry in instances.items():
        lines.append(f'[instances."{cid}"]')
        lines.append(f'connector = "{entry["connector"]}"')
        config = ", ".join(f"{k} = {_toml(v)}" for k, v in entry.get("config", {}).items())
        lines.append(f"config = {{ {config} }}")
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())  # fail early on a bad fixture
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def worker_env(**settings: Any) -> dict[str, str]:
    """The process environment with CRAWL_WORKER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWL_WORKER_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in settings.items():
        env[f"CRAWL_WORKER_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def start_worker(log_path: Path, *args: str, **settings: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m worker run`` with ``settings``; its output goes to ``log_path``."""
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "worker", *(args or ("run",))],
            env=worker_env(**{"log_format": "json", "metrics_enabled": False, **settings}),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


class Processes:
    """The processes a test started; :meth:`close` kills each one still running and waits for it, once."""

    def __init__(self) -> None:
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], *, log_path: Path | None = None, **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv``; its output goes to ``log_path`` (appended), or nowhere."""
        if log_path is None:
            return self.adopt(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen))
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            return self.adopt(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen))

    def worker(self, log_path: Path, *args: str, **settings: Any) -> subprocess.Popen[bytes]:
        """:func:`start_worker`: ``python -m worker run`` with ``settings``, output to ``log_path``."""
        return self.adopt(start_worker(log_path, *args, **settings))

    def crawler(
        self, settings: Settings, catalog: Path, tmp_path: Path, name: str = "worker", **extra: Any
    ) -> subprocess.Popen[bytes]:
        """A worker process on ``settings``' Redis and queue with ``catalog``, data under ``tmp_path / "data"``,
        output to ``tmp_path / f"{name}.log"``; ``extra`` settings on top."""
        common = {"redis_url": settings.redis_url, "queue_name": settings.queue_name, "catalog_file": catalog}
        return self.worker(tmp_path / f"{name}.log", **{**common, "data_dir": tmp_path / "data", **extra})

    def adopt(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Take ``proc``, started by another helper (one that waits for its port, say), into the group."""
        self._started.append(proc)
        return proc

    def close(self) -> None:
        """Kill every process still running, then wait for each of them (one wait per process)."""
        running = [proc for proc in self._started if proc.poll() is None]
        for proc in running:
            proc.kill()
        for proc in running:
            proc.wait(5)


def run_cli(*args: str, **settings: Any) -> subprocess.CompletedProcess[str]:
    """Run one crawl-worker command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=worker_env(**settings),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
