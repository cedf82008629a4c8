"""The systemd template unit: `systemd-analyze verify` is clean and the sandbox scores as hardened."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

from tests.proc import REPO
from tests.tools import need
from worker.exits import RET_CONFIG
from worker.settings import Settings

UNIT = REPO / "deploy" / "systemd" / "crawl-worker@.service"
#: The exposure score the README reports; a change to the unit that raises it fails here.
MAX_EXPOSURE = 1.5


def _analyze() -> str:
    return need("systemd-analyze", "apt-get install systemd; .ci/run installs it")


def _instance(tmp_path: Path) -> Path:
    """The unit as instance 9464, with ExecStart pointing at this checkout's console script."""
    script = Path(sys.executable).parent / "crawl-worker"
    text = UNIT.read_text().replace("/opt/crawl-worker/bin/crawl-worker", str(script))
    path = tmp_path / "crawl-worker@9464.service"
    path.write_text(text)
    return path


def _service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing for an instance of the template."""
    result = subprocess.run(
        [_analyze(), "verify", str(_instance(tmp_path))], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_security_exposure_score(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the sandbox at most MAX_EXPOSURE (of 10)."""
    result = subprocess.run(
        [_analyze(), "security", "--offline=true", "--no-pager", str(_instance(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_matches_worker_contract() -> None:
    """Type=notify with a watchdog, a stop timeout above drain + hand-off + close, no restart on a config error."""
    service = _service_section()
    fields = Settings.model_fields
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0]) >= 10
    close_s = 10  # QueueWorker.close waits at most this long
    drain_s = fields["drain_timeout_s"].default + fields["handoff_timeout_s"].default
    assert int(service["TimeoutStopSec"][0]) > drain_s + close_s
    assert service["RestartPreventExitStatus"] == [str(RET_CONFIG)]
    assert service["Restart"] == ["on-failure"]
    assert "CRAWL_WORKER_METRICS_PORT=%i" in service["Environment"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["ProtectSystem"] == ["strict"]
    env = configparser.ConfigParser()
    env.read_string("[env]\n" + (UNIT.parent / "crawl-worker.env").read_text())
    unknown = [key for key in env["env"] if key.upper().removeprefix("CRAWL_WORKER_").lower() not in fields]
    assert not unknown, f"the example env file names unknown settings: {unknown}"
