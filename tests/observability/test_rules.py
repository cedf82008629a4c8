"""Alert and recording rules: promtool accepts them and its unit tests cover every alert both ways."""

from __future__ import annotations

import re
import subprocess

from tests.observability.promtool import RULE_TESTS, RULES, require


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts deploy/prometheus/rules.yml."""
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(RULES)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes every firing and not-firing case in deploy/prometheus/tests/."""
    files = sorted(str(path) for path in RULE_TESTS.glob("*.yml"))
    result = subprocess.run([require("promtool"), "test", "rules", *files], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_firing_and_not_firing_cases() -> None:
    """Each alert in rules.yml appears in a case that expects it firing and in one that expects nothing."""
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    text = "\n".join(path.read_text() for path in RULE_TESTS.glob("*.yml"))
    silent = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", text))
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", text))
    assert len(alerts) >= 8
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - silent == set(), "alerts without a not-firing case"
