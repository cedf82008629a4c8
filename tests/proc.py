"""Run crawl-worker as a real process (signals, kill -9, exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

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
            env=worker_env(log_format="json", metrics_enabled=False, **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


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
