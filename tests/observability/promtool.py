"""Locate promtool / prometheus (Debian package ``prometheus``; .ci/run installs it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests"
DASHBOARD = REPO / "deploy" / "grafana" / "crawl-worker.json"


def require(tool: str) -> str:
    """The tool's path; skipped locally when missing, an error in CI."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
