"""Locate promtool / prometheus (Debian package ``prometheus``; .ci/run installs it)."""

from __future__ import annotations

from pathlib import Path

from tests.tools import need

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests"
DASHBOARD = REPO / "deploy" / "grafana" / "crawl-worker.json"


def require(tool: str) -> str:
    """The tool's path; skipped locally when missing, an error in CI."""
    return need(tool, "apt-get install prometheus")
