"""The shipped Prometheus alerts (deploy/prometheus/retention-alerts.yml): valid, and they fire
when a rule misses its scheduled run, whatever the schedule (a weekly rule is not late on a
Wednesday), by `promtool test rules` on retention-alerts.test.yml. Skipped without promtool
(Debian: the prometheus package) except under CI=true, where .ci/run installs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "retention-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "retention-alerts.test.yml"


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus); alerts untested"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_the_shipped_alert_rules_are_valid(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_alerts_fire_on_a_missed_run_and_not_between_weekly_runs(
    promtool: str,
) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_shipped_alert_is_tested_and_documented() -> None:
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    documented = (ROOT / "docs" / "operations.md").read_text()
    assert len(alerts) >= 8
    assert set(alerts) == tested
    assert [alert for alert in alerts if f"`{alert}`" not in documented] == []
