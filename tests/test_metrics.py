"""Prometheus metrics: what the daemon serves and what `run --metrics-textfile` writes; the
overdue backlog is what was due a grace period ago and is still there."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner
from prometheus_client import generate_latest

from retention.app import overdue_counts
from retention.audit.freshness import last_anchor_time, last_checkpoint_time
from retention.cli import main
from retention.config import parse_schedule
from retention.run_report import RuleOutcome, RunReport
from retention.runtime.metrics import (
    new_metrics,
    observe_failure,
    observe_report,
    serve_metrics,
    set_last_successes,
    set_overdue,
)
from retention.scheduler import previous_run
from retention.stores import open_stores
from tests.support import audit_table, create_logs, logs_rule, make_config

NOW = datetime(2026, 5, 10, 12, tzinfo=UTC)
RULE = logs_rule(extra="max_fraction = 1.0")


def exposition(metrics_registry: object) -> str:
    return generate_latest(metrics_registry).decode()  # type: ignore[arg-type]


def sample(text: str, name: str) -> float | None:
    """The value of one sample (name with its labels, as exposed), or None when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_counters_start_at_zero_for_every_rule_and_count_each_run() -> None:
    metrics = new_metrics(["a", "b"])
    text = exposition(metrics.registry)
    assert sample(text, 'retention_runs_total{outcome="ok",rule="b"}') == 0
    assert sample(text, 'retention_failures_total{rule="a"}') == 0
    assert "retention_last_success_timestamp_seconds{" not in text  # never succeeded: absent

    report = RunReport(
        plan_id="p",
        dry_run=False,
        outcomes=(
            RuleOutcome("a", "delete", "ok", due=10, deleted=10, seconds=2.5),
            RuleOutcome("b", "anonymise", "unavailable", due=4, error="down"),
        ),
    )
    observe_report(metrics, report, NOW)
    observe_failure(metrics, "b")
    set_overdue(metrics, {"a": 0, "b": 4})
    set_last_successes(metrics, {"b": NOW - timedelta(days=2), "a": None})
    text = exposition(metrics.registry)
    assert sample(text, 'retention_runs_total{outcome="ok",rule="a"}') == 1
    assert sample(text, 'retention_runs_total{outcome="unavailable",rule="b"}') == 1
    assert sample(text, 'retention_runs_total{outcome="failed",rule="b"}') == 1
    assert sample(text, 'retention_records_deleted_total{rule="a"}') == 10
    assert sample(text, 'retention_failures_total{rule="b"}') == 2
    assert sample(text, 'retention_run_duration_seconds_sum{rule="a"}') == 2.5
    assert sample(text, 'retention_last_success_timestamp_seconds{rule="a"}') == NOW.timestamp()
    assert (
        sample(text, 'retention_last_success_timestamp_seconds{rule="b"}')
        == (NOW - timedelta(days=2)).timestamp()
    )
    assert sample(text, 'retention_overdue_records{rule="b"}') == 4


def _logs(url: str, rows: dict[int, datetime]) -> None:
    create_logs(url, rows)


def test_overdue_counts_records_past_their_cutoff_by_more_than_the_grace(sqlite_url: str) -> None:
    a_year_ago = NOW - timedelta(days=365)
    _logs(
        sqlite_url,
        {
            1: a_year_ago - timedelta(days=10),  # due for 10 days: overdue
            2: a_year_ago - timedelta(days=3),  # due for 3 days: overdue
            3: a_year_ago - timedelta(hours=12),  # due for 12 hours: within the grace
            4: NOW - timedelta(days=30),  # not due
        },
    )
    config = make_config(sqlite_url, RULE)
    with open_stores(config, read_only=True) as store_for:
        assert overdue_counts(config, config.rules, store_for, NOW, timedelta(days=1)) == {
            "logs": 2
        }
        assert overdue_counts(config, config.rules, store_for, NOW, timedelta(0)) == {"logs": 3}


def _seven_due(tmp_path: Path, sqlite_url: str, now: datetime) -> Path:
    """Seven logs due as of ``now``, and the config file of their rule, audited."""
    _logs(sqlite_url, {key: now - timedelta(days=800) for key in range(1, 8)})
    config_file = tmp_path / "retention.toml"
    config_file.write_text(
        f'[settings]\ntimezone = "UTC"\n[stores.db]\nkind = "sql"\nurl = "{sqlite_url}"\n'
        f'[state]\nurl = "sqlite:///{tmp_path}/state.sqlite"\n'
        + audit_table(tmp_path / "audit")
        + RULE
    )
    return config_file


def test_run_writes_the_metrics_to_a_node_exporter_textfile(
    tmp_path: Path, sqlite_url: str
) -> None:
    now = datetime.now(UTC)
    config_file = _seven_due(tmp_path, sqlite_url, now)
    textfile = tmp_path / "textfile" / "retention.prom"
    textfile.parent.mkdir()
    result = CliRunner().invoke(
        main, ["--config", str(config_file), "run", "--yes", "--metrics-textfile", str(textfile)]
    )
    assert result.exit_code == 0, result.output
    text = textfile.read_text()
    # One run's counts are gauges: a counter would start again from 0 at the next run.
    assert "# TYPE retention_last_run_records_deleted gauge" in text
    assert "_total" not in text
    assert "_created" not in text
    assert sample(text, 'retention_last_run_records_deleted{rule="logs"}') == 7
    assert sample(text, 'retention_last_run_records_due{rule="logs"}') == 7
    assert sample(text, 'retention_last_run_outcome{outcome="ok",rule="logs"}') == 1
    assert sample(text, 'retention_last_run_outcome{outcome="failed",rule="logs"}') == 0
    assert sample(text, 'retention_overdue_records{rule="logs"}') == 0
    assert "retention_build_info{version=" in text
    following = sample(text, 'retention_next_run_timestamp_seconds{rule="logs"}')
    assert following is not None
    assert following > now.timestamp()
    checkpoint = sample(text, "retention_audit_last_checkpoint_timestamp_seconds")
    assert checkpoint is not None
    assert abs(checkpoint - now.timestamp()) < 60
    last_success = sample(text, 'retention_last_success_timestamp_seconds{rule="logs"}')
    assert last_success is not None
    assert abs(last_success - now.timestamp()) < 60
    assert list(textfile.parent.iterdir()) == [textfile]  # written atomically, no leftovers


def test_a_textfile_that_cannot_be_written_still_shows_the_run_and_says_why(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The textfile's folder is missing (or read-only to the unit: ProtectSystem=strict): the
    purge is done, so its report is printed, then the error, exit 69 (a metrics file, as the
    daemon's metrics port); it ended in the traceback of FileNotFoundError, exit 1, no report."""
    now = datetime.now(UTC)
    config_file = _seven_due(tmp_path, sqlite_url, now)
    textfile = tmp_path / "no-such-folder" / "retention.prom"
    result = CliRunner().invoke(
        main, ["--config", str(config_file), "run", "--yes", "--metrics-textfile", str(textfile)]
    )
    assert result.exit_code == 69, f"{result.output}{result.exception!r}"
    assert "purged 7 records; 0 of 1 rule failed." in result.stdout
    assert result.stderr.endswith(
        "error: the run finished (exit 0; its batches are in the audit trail), but its metrics "
        f"cannot be written to {str(textfile)!r}: No such file or directory\n"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_are_served_over_http_on_the_loopback() -> None:
    metrics = new_metrics(["logs"])
    set_overdue(metrics, {"logs": 3})
    port = free_port()
    server = serve_metrics(metrics, "127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert sample(text, 'retention_overdue_records{rule="logs"}') == 3


def test_each_rule_exports_its_previous_and_next_scheduled_run_and_no_created_series(
    tmp_path: Path,
) -> None:
    weekly = logs_rule(name="campaign-history", extra='schedule = "0 4 * * sun"')
    config = make_config("sqlite:///unused.sqlite", weekly)
    wednesday = datetime(2026, 12, 2, 10, tzinfo=UTC)
    metrics = new_metrics(["campaign-history"], lambda: config, lambda: wednesday)
    text = exposition(metrics.registry)
    assert (
        sample(text, 'retention_previous_run_timestamp_seconds{rule="campaign-history"}')
        == datetime(2026, 11, 29, 4, tzinfo=UTC).timestamp()
    )
    assert (
        sample(text, 'retention_next_run_timestamp_seconds{rule="campaign-history"}')
        == datetime(2026, 12, 6, 4, tzinfo=UTC).timestamp()
    )
    assert 'retention_build_info{version="' in text
    assert "_created" not in text


def test_previous_run_is_the_last_time_the_schedule_named_at_or_before_now() -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2026, 12, 2, 10, 30, 15, tzinfo=UTC)
    assert previous_run(parse_schedule("* * * * *"), UTC, now) == datetime(
        2026, 12, 2, 10, 30, tzinfo=UTC
    )
    assert previous_run(parse_schedule("30 2 * * *"), paris, now) == datetime(
        2026, 12, 2, 1, 30, tzinfo=UTC
    )
    assert previous_run(parse_schedule("0 0 1 1 *"), UTC, now) == datetime(2026, 1, 1, tzinfo=UTC)
    on_time = datetime(2026, 11, 29, 4, tzinfo=UTC)
    assert previous_run(parse_schedule("0 4 * * sun"), UTC, on_time) == on_time
    # Further back than a year.
    assert previous_run(parse_schedule("0 0 29 2 *"), UTC, now) == datetime(2024, 2, 29, tzinfo=UTC)


def test_audit_anchor_notes_its_time_for_the_metrics(tmp_path: Path, sqlite_url: str) -> None:
    _logs(sqlite_url, {1: datetime.now(UTC) - timedelta(days=800)})
    config_file = tmp_path / "retention.toml"
    config_file.write_text(
        f'[settings]\ntimezone = "UTC"\n[stores.db]\nkind = "sql"\nurl = "{sqlite_url}"\n'
        f'[state]\nurl = "sqlite:///{tmp_path}/state.sqlite"\n'
        + audit_table(tmp_path / "audit")
        + RULE
    )
    runner = CliRunner()
    assert runner.invoke(main, ["--config", str(config_file), "run", "--yes"]).exit_code == 0
    assert last_anchor_time(tmp_path / "audit") is None
    checkpoint = last_checkpoint_time(tmp_path / "audit")
    assert checkpoint is not None
    assert abs(checkpoint - datetime.now(UTC)) < timedelta(minutes=1)
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    result = runner.invoke(
        main, ["--config", str(config_file), "audit", "anchor", "--to", str(anchors)]
    )
    assert result.exit_code == 0, result.output
    anchored = last_anchor_time(tmp_path / "audit")
    assert anchored is not None
    assert abs(anchored - datetime.now(UTC)) < timedelta(minutes=1)
