"""The `retention` command as people and scripts use it: exit codes, output, the demo flow."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from retention.cli import main
from retention.errors import ExitCode
from tests.support import copy_shipped_config

ROOT = Path(__file__).parent.parent
AS_OF = "2026-11-23T12:00:00+00:00"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str) -> Path:
    """A fresh working directory holding the shipped config, as a newcomer's checkout would
    (its S3 stores on the test server)."""
    copy_shipped_config(tmp_path, s3_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    return tmp_path


def invoke(*arguments: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *arguments], input=stdin)


def _demo(workdir: Path) -> None:
    # The test S3 server is moto in this process, not one scripts/demo-s3 started.
    result = invoke("demo", "--s3-endpoint-is-mine", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert (workdir / "var" / "demo.sqlite").exists()


def _plan_json(*extra: str) -> dict[str, object]:
    result = invoke("plan", "--as-of", AS_OF, "--output", "json", *extra)
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_demo_then_plan_then_run_then_nothing_is_due(workdir: Path) -> None:
    _demo(workdir)
    text_plan = invoke("plan", "--as-of", AS_OF)
    assert text_plan.exit_code == 0, text_plan.output
    assert "read-only, nothing was changed" in text_plan.stdout
    before = _plan_json()
    rules = before["rules"]
    assert isinstance(rules, list)
    assert len(rules) == 17
    assert all(rule["due"] > 0 for rule in rules), [r["rule"] for r in rules if not r["due"]]

    run = invoke("run", "--yes", "--as-of", AS_OF)
    assert run.exit_code == 0, run.output
    assert "0 of 17 rules failed" in run.stdout

    after = _plan_json()
    assert {rule["rule"]: rule["due"] for rule in after["rules"]} == {  # type: ignore[union-attr]
        rule["rule"]: 0 for rule in rules
    }


def test_plan_is_read_only_and_matches_what_run_purges(workdir: Path) -> None:
    _demo(workdir)
    database = workdir / "var" / "demo.sqlite"
    before = database.read_bytes()
    planned = _plan_json("--rule", "connection-logs")
    assert database.read_bytes() == before
    run = invoke("run", "--yes", "--as-of", AS_OF, "--rule", "connection-logs")
    assert run.exit_code == 0, run.output
    finished = [
        json.loads(line)
        for line in run.stderr.splitlines()
        if line.startswith("{") and '"rule.finished"' in line
    ]
    assert [line["rule"] for line in finished] == ["connection-logs"]
    assert finished[0]["deleted"] == planned["rules"][0]["due"]  # type: ignore[index]


def test_plan_json_document(workdir: Path) -> None:
    _demo(workdir)
    document = _plan_json("--rule", "campaign-history", "--rule", "clients")
    assert document["schema_version"] == 1
    assert document["as_of"] == AS_OF
    assert re.fullmatch(r"[0-9a-f]{16}", str(document["plan_id"]))
    assert document["sample_hashing"] == "keyed"
    campaign, clients = document["rules"]  # type: ignore[misc]
    assert campaign["rule"] == "campaign-history"
    assert campaign["period"] == "10y"
    assert campaign["period_column"] == "retention_period"
    assert set(campaign["period_overrides"]) >= {"1y", "18mo"}
    assert clients["action"] == "anonymise"
    assert clients["cutoff"].startswith("2021-11-23")
    assert all(re.fullmatch(r"[0-9a-f]{16}", key) for key in clients["sample_keys"])


def test_no_personal_value_in_plan_or_run_output_or_logs(workdir: Path) -> None:
    _demo(workdir)
    with sqlite3.connect(workdir / "var" / "demo.sqlite") as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM job_applicants")}
    outputs = [
        invoke("plan", "--as-of", AS_OF),
        invoke("plan", "--as-of", AS_OF, "--output", "json"),
        invoke("run", "--yes", "--as-of", AS_OF),
    ]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert not EMAIL.search(result.output), EMAIL.search(result.output)
        assert not any(name in result.output for name in names)


def test_run_refuses_without_yes_when_not_on_a_terminal(workdir: Path) -> None:
    _demo(workdir)
    result = invoke("run", "--as-of", AS_OF)
    assert result.exit_code == ExitCode.USAGE
    assert "--yes" in result.stderr
    assert _plan_json()["rules"][0]["due"] > 0  # type: ignore[index]


def test_run_on_a_terminal_asks_for_the_plan_id_and_anything_else_purges_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _demo(workdir)
    monkeypatch.setattr("retention.cli.purge.stdin_is_terminal", lambda: True)
    result = invoke("run", "--as-of", AS_OF, "--rule", "partners", stdin="y\n")
    assert result.exit_code == ExitCode.USAGE
    assert "To purge, type the plan id" in result.stdout
    assert "nothing was purged" in result.stderr
    assert _plan_json("--rule", "partners")["rules"][0]["due"] > 0  # type: ignore[index]

    plan_id = _plan_json("--rule", "partners")["plan_id"]
    confirmed = invoke("run", "--as-of", AS_OF, "--rule", "partners", stdin=f"{plan_id}\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert _plan_json("--rule", "partners")["rules"][0]["due"] == 0  # type: ignore[index]


def test_dry_run_changes_nothing(workdir: Path) -> None:
    _demo(workdir)
    before = _plan_json()
    result = invoke("run", "--dry-run", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert "Dry run (nothing was changed)" in result.stdout
    assert _plan_json()["rules"] == before["rules"]


def test_config_validate_passes_on_the_shipped_config_and_demo(workdir: Path) -> None:
    _demo(workdir)
    result = invoke("config", "validate")
    assert result.exit_code == 0, result.output
    assert "valid (17 rules, 4 stores)" in result.stdout


def test_config_validate_lists_every_error_with_its_path(workdir: Path) -> None:
    _demo(workdir)
    config = workdir / "config" / "retention.toml"
    text = config.read_text()
    text = text.replace('period = "1y"\naction = "delete"', 'period = 365\naction = "delete"', 1)
    text = text.replace('clock = "sent_at"\nperiod = "0d"', 'clock = "sent_on"\nperiod = "0d"', 1)
    text = text.replace('store = "app"', 'store = "nowhere"', 1)
    config.write_text(text)
    result = invoke("config", "validate")
    assert result.exit_code == ExitCode.BAD_CONFIG
    assert "rules[5].period: must be a string such as '90d'" in result.stderr
    assert "rules[3].store: no store named 'nowhere'" in result.stderr
    assert "2 configuration errors" in result.stderr
    # The static errors come first; the schema is checked once they are fixed.
    config.write_text(text.replace("period = 365", 'period = "1y"').replace('"nowhere"', '"app"'))
    schema = invoke("config", "validate")
    assert schema.exit_code == ExitCode.BAD_CONFIG
    assert "rules[6].clock: no column 'sent_on' in 'message_sends'" in schema.stderr


def test_bad_config_stops_run_before_any_data_is_touched(workdir: Path) -> None:
    _demo(workdir)
    database = workdir / "var" / "demo.sqlite"
    before = database.read_bytes()
    config = workdir / "config" / "retention.toml"
    config.write_text(config.read_text() + "\n[[rules]]\nname = 'x'\n")
    result = invoke("run", "--yes", "--as-of", AS_OF)
    assert result.exit_code == ExitCode.BAD_CONFIG
    assert "rules[17].store: missing" in result.stderr
    assert "Traceback" not in result.output
    assert database.read_bytes() == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["plan", "--as-of", "yesterday"], "--as-of 'yesterday' is not an ISO 8601"),
        (["plan", "--rule", "nope"], "--rule: no rule named 'nope'"),
        (["--config", "/nonexistent/retention.toml", "plan"], "cannot read"),
    ],
)
def test_bad_input_gets_one_clear_line(workdir: Path, arguments: list[str], message: str) -> None:
    _demo(workdir)
    result = invoke(*arguments)
    assert result.exit_code in (ExitCode.USAGE, ExitCode.BAD_CONFIG)
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_no_config_anywhere_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    monkeypatch.setattr("retention.cli.shared.DEFAULT_CONFIG_PATHS", (tmp_path / "absent.toml",))
    result = invoke("plan")
    assert result.exit_code == ExitCode.USAGE
    assert "no configuration file" in result.stderr


def test_config_from_the_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _demo(workdir)
    moved = workdir / "config" / "elsewhere.toml"
    (workdir / "config" / "retention.toml").rename(moved)
    monkeypatch.setenv("RETENTION_CONFIG", str(moved))
    assert invoke("config", "validate").exit_code == 0


def test_a_purge_as_of_an_instant_to_come_is_refused_unless_asked_for(workdir: Path) -> None:
    """A run as of tomorrow purges today what is due only tomorrow: refused before any store is
    opened, whether the instant comes from --as-of or a saved plan; a dry run may look ahead."""
    _demo(workdir)
    database = workdir / "var" / "demo.sqlite"
    future = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0).isoformat()
    before = database.read_bytes()

    refused = invoke("run", "--yes", "--as-of", future, "--rule", "connection-logs")
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "is in the future" in refused.stderr
    assert "--allow-future-as-of" in refused.stderr
    # The value as typed (a day on settings.timezone's calendar), then the instant in UTC.
    typed_day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    refused_day = invoke("run", "--yes", "--as-of", typed_day, "--rule", "connection-logs")
    assert refused_day.exit_code == ExitCode.USAGE, refused_day.output
    assert f"--as-of {typed_day!r} (" in refused_day.stderr
    assert " UTC) is in the future" in refused_day.stderr
    assert database.read_bytes() == before

    looked_ahead = invoke("run", "--dry-run", "--as-of", future, "--rule", "connection-logs")
    assert looked_ahead.exit_code == 0, looked_ahead.output
    saved = workdir / "tomorrow.plan.json"
    planned = invoke("plan", "--as-of", future, "--rule", "connection-logs", "--save", str(saved))
    assert planned.exit_code == 0, planned.output
    from_plan = invoke("run", "--yes", "--plan-file", str(saved))
    assert from_plan.exit_code == ExitCode.USAGE, from_plan.output
    assert "the saved plan's as_of" in from_plan.stderr
    assert database.read_bytes() == before

    logs = "SELECT count(*) FROM connection_logs"
    with sqlite3.connect(database) as connection:
        rows_before = connection.execute(logs).fetchone()[0]
    allowed = invoke(
        "run", "--yes", "--allow-future-as-of", "--as-of", future, "--rule", "connection-logs"
    )
    assert allowed.exit_code == 0, allowed.output
    with sqlite3.connect(database) as connection:
        assert connection.execute(logs).fetchone()[0] < rows_before


def test_unreachable_store_exit_code(workdir: Path) -> None:
    key = workdir / "var" / "secrets" / "hash.key"
    key.parent.mkdir(parents=True)
    key.write_text("k" * 32)
    assert invoke("audit", "keygen").exit_code == 0
    result = invoke("run", "--yes", "--as-of", AS_OF, "--rule", "partners")
    assert result.exit_code == ExitCode.STORE_UNAVAILABLE
    assert "unreachable" in result.stdout


def test_every_exit_code_is_documented() -> None:
    documented = (ROOT / "docs" / "exit-codes.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\|\s*{int(code)}\s*\|", documented, re.MULTILINE), code
