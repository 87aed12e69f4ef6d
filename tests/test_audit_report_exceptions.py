"""The exceptions of `audit report` (issue 13), each produced for real in one trail: a rule
braked by its max_fraction, a store that cannot be reached, a run stopped by SIGTERM after its
batch, a run that died without `run.finished`, rows whose clock cannot be read, and the backlog
each rule left at the end of the period. The JSON report lists them; the HTML says them."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, text

from retention.cli import main
from retention.documents import schema
from retention.errors import ExitCode
from tests.support import config_text, create_tables, plan_and_run
from tests.test_audit_auditor_report import Tables
from tests.test_interrupted_run import _interrupt_mid_purge, _start

OLD = datetime(2020, 1, 1)
RULES = """
[[rules]]
name = "big"
store = "db"
table = "big"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
batch_size = 5

[[rules]]
name = "braked"
store = "db"
table = "braked"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
max_fraction = 0.5

[[rules]]
name = "clocks"
store = "db"
table = "clocks"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"

[[rules]]
name = "remote"
store = "gone"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
"""


def cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "--config", str(config), *arguments])


def _database(url: str) -> None:
    """Tables big (3,000 old rows), braked (10 old rows: all due, over its 50 % brake) and
    clocks (3 old rows, and one whose clock another program wrote as Unix seconds)."""
    metadata = MetaData()
    tables = {
        name: Table(
            name,
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("logged_at", DateTime, index=True),
        )
        for name in ("big", "braked", "clocks")
    }
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        for name, count in (("big", 3000), ("braked", 10), ("clocks", 3)):
            rows = [{"id": key, "logged_at": OLD} for key in range(1, count + 1)]
            connection.execute(insert(tables[name]), rows)
        connection.execute(text("INSERT INTO clocks (id, logged_at) VALUES (4, 1577836800)"))
    engine.dispose()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Tables, str]:
    """One trail with every exception, its JSON report and its HTML report (parsed, and text)."""
    root = tmp_path_factory.mktemp("exceptions")
    url = f"sqlite:///{root / 'data.sqlite'}"
    _database(url)
    # A store whose database file's directory does not exist: unreachable.
    gone = f'[stores.gone]\nkind = "sql"\nurl = "sqlite:///{root / "missing" / "x.sqlite"}"\n'
    config = root / "retention.toml"
    config.write_text(config_text(url, RULES, audit_directory=root / "audit", extra_stores=gone))
    failed = cli(config, "run", "--yes", "--rule", "braked", "--rule", "clocks", "--rule", "remote")
    assert failed.exit_code == ExitCode.PARTIAL_FAILURE, failed.output
    code, output = _interrupt_mid_purge(
        _start(config, "run", "--rule", "big"), root / "audit", signal.SIGTERM
    )
    assert code == ExitCode.TERMINATED, output
    _died_mid_run(config)
    documents = []
    for output_format in ("json", "html"):
        written = root / f"report.{output_format}"
        result = cli(config, "audit", "report", "--format", output_format, "-o", str(written))
        assert result.exit_code == 0, result.output
        documents.append(written.read_text())
    page = Tables()
    page.feed(documents[1])
    return json.loads(documents[0]), page, documents[1]


class PowerCut(BaseException):
    """The process dies between a batch's commit and its result entry."""


def _died_mid_run(config: Path) -> None:
    """A run of `big` whose process dies after its first batch's commit: no result, no
    run.finished (as after a power cut)."""
    from retention.audit.recorder import TrailRecorder
    from retention.config import load_config

    def cut(self: TrailRecorder, *arguments: object) -> None:
        raise PowerCut

    loaded = load_config(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrailRecorder, "result", cut)
        with pytest.raises(PowerCut):
            plan_and_run(loaded, datetime.now(UTC), "big")


def by_rule(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(row["rule"]): row for row in rows}


def table(page: Tables, name: str) -> list[dict[str, str]]:
    headers, *rows = page.tables[name]
    return [dict(zip(headers, row, strict=True)) for row in rows]


def test_the_report_is_valid_json_of_its_schema(
    report: tuple[dict[str, Any], Tables, str],
) -> None:
    document, _, _ = report
    jsonschema.Draft202012Validator(schema("audit-report")).validate(document)
    assert document["verification"]["valid"] is True


def test_failed_stopped_and_dead_runs_are_listed_and_said(
    report: tuple[dict[str, Any], Tables, str],
) -> None:
    document, page, _ = report
    runs = document["exceptions"]["runs"]
    problems = [run["problem"] for run in runs]
    assert len(runs) == 3, problems
    assert problems[0].startswith("exit 3: ")
    # SIGTERM: the run stops after its batch and records exit 143 with its rule "stopped".
    assert problems[1] == (
        "exit 143: stopped by SIGTERM after its current batch; left unfinished: big"
    )
    assert problems[2].startswith("interrupted: no run.finished")
    shown = table(page, "exceptions-runs")
    assert [row["Run"] for row in shown] == [run["run_id"] for run in runs]
    assert [row["Problem"] for row in shown] == problems


def test_braked_unavailable_and_stopped_rules_are_listed_and_said(
    report: tuple[dict[str, Any], Tables, str],
) -> None:
    document, page, _ = report
    rules = by_rule(document["exceptions"]["rules"])
    assert {name: rule["status"] for name, rule in rules.items()} == {
        "braked": "braked",
        "remote": "unavailable",
        "big": "stopped",
    }
    assert (rules["braked"]["due"], rules["braked"]["skipped"]) == (10, 10)
    assert 0 < rules["big"]["deleted"] < 3000
    shown = {row["Rule"]: row for row in table(page, "exceptions-rules")}
    assert {name: row["Status"] for name, row in shown.items()} == {
        name: rule["status"] for name, rule in rules.items()
    }
    assert shown["braked"]["Skipped"] == "10"


def test_unreadable_clocks_are_listed_and_said(
    report: tuple[dict[str, Any], Tables, str],
) -> None:
    document, page, _ = report
    unreadable = document["exceptions"]["unreadable_clocks"]
    # The row whose clock another program wrote as Unix seconds: kept, and said.
    assert [(row["rule"], row["unreadable_clock"]) for row in unreadable] == [("clocks", 1)]
    shown = table(page, "exceptions-unreadable")
    assert [(row["Rule"], row["Rows whose clock could not be read"]) for row in shown] == [
        ("clocks", "1")
    ]


def test_the_backlog_at_the_end_of_the_period_is_listed_and_said(
    report: tuple[dict[str, Any], Tables, str],
) -> None:
    document, page, _ = report
    backlog = by_rule(document["exceptions"]["backlog"])
    stopped = by_rule(document["exceptions"]["rules"])["big"]
    assert backlog["braked"]["due_not_purged"] == 10
    # The run that died finished nothing: the backlog of `big` is its last finished run's.
    assert backlog["big"]["due_not_purged"] == 3000 - stopped["deleted"]
    # A store that could not be reached tells nothing of what is due there.
    assert backlog["remote"]["due_not_purged"] is None
    assert backlog["clocks"]["due_not_purged"] == 0, "its clock unreadable: never due"
    shown = {row["Rule"]: row for row in table(page, "exceptions-backlog")}
    assert shown["braked"]["Due but not purged"] == "10"
    assert shown["big"]["Due but not purged"] == f"{3000 - stopped['deleted']:,}"
    assert shown["remote"]["Due but not purged"] == "unknown (the rule could not be planned)"
