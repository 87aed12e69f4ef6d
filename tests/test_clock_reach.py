"""A clock read through a join from a table another rule deletes from: once that rule deletes
the joined row, the rows it dated have no clock and are never due, kept for ever. `config
validate` warns of it (exit 0), with and without the stores, unless the rows go with the
joined row (a child of that rule) or are due first (the same date, a shorter period)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention.cli import main
from retention.clock_reach import clocks_cut_by_other_rules
from tests.support import config_text, make_config

URL = "sqlite:////nonexistent/never-opened.sqlite"

LOGS = """
[[rules]]
name = "connection-logs"
store = "db"
table = "connection_logs"
key = "id"
clock = "account.closed_at"
period = "{logs_period}"
action = "delete"

[rules.joins.account]
table = "accounts"
on = {{ account_id = "id" }}
"""
ACCOUNTS = """
[[rules]]
name = "accounts"
store = "db"
table = "accounts"
key = "id"
clock = "{accounts_clock}"
period = "{accounts_period}"
action = "{action}"
{extra}
"""
LOGS_AS_CHILD = """
[[rules.children]]
table = "connection_logs"
foreign_key = "account_id"
"""
ANONYMISED = """marker_column = "anonymised_at"

[rules.anonymise]
email = "mask_email"
"""


def _rules(
    *,
    logs_period: str = "1y",
    accounts_clock: str = "closed_at",
    accounts_period: str = "1y",
    action: str = "delete",
    extra: str = "",
) -> str:
    return LOGS.format(logs_period=logs_period) + ACCOUNTS.format(
        accounts_clock=accounts_clock,
        accounts_period=accounts_period,
        action=action,
        extra=extra,
    )


def test_a_clock_through_a_table_another_rule_deletes_from_is_warned_of() -> None:
    (warning,) = clocks_cut_by_other_rules(make_config(URL, _rules()).rules)
    assert warning.warning
    assert warning.path == "rules[0].clock"
    assert warning.message.startswith(
        "rule 'accounts' deletes rows of 'accounts', which this rule's clock account.closed_at "
        "is read from: a row whose accounts row it takes first has no clock any more and is "
        "kept for ever"
    )


@pytest.mark.parametrize(
    "rules",
    [
        # The logs go with their account, as its children.
        _rules(extra=LOGS_AS_CHILD),
        # Every log is due a year after the account closed, the account four years later.
        _rules(accounts_period="5y"),
        _rules(logs_period="90d", accounts_period="90d1s"),
        _rules(logs_period="90d", accounts_period="1y"),
        _rules(logs_period="11mo", accounts_period="1y"),
        # Anonymised accounts keep their closed_at.
        _rules(action="anonymise", extra=ANONYMISED),
    ],
    ids=["child", "longer period", "longer by a second", "days and a year", "months", "anonymised"],
)
def test_no_warning_where_the_rows_go_first_or_with_their_row(rules: str) -> None:
    assert clocks_cut_by_other_rules(make_config(URL, rules).rules) == []


@pytest.mark.parametrize(
    "rules",
    [
        # Both due on the same day: whichever runs first decides.
        _rules(logs_period="1y", accounts_period="1y"),
        # The accounts go by another date: nothing says the logs go first.
        _rules(accounts_clock="created_at", accounts_period="10y"),
        # A month is no number of days: 31d may pass a 1mo cutoff.
        _rules(logs_period="31d", accounts_period="1mo"),
        _rules(logs_period="28d1h", accounts_period="1mo"),
    ],
    ids=["same period", "another date", "days against months", "a DST day"],
)
def test_a_warning_where_nothing_says_the_rows_go_first(rules: str) -> None:
    assert len(clocks_cut_by_other_rules(make_config(URL, rules).rules)) == 1


def test_config_validate_prints_the_warning_and_passes(tmp_path: Path) -> None:
    config = tmp_path / "retention.toml"
    config.write_text(config_text(URL, _rules()))
    validated = CliRunner().invoke(
        main, ["--config", str(config), "config", "validate", "--offline"]
    )
    assert validated.exit_code == 0, validated.output
    assert validated.stderr.startswith(
        "warning: rules[0].clock: rule 'accounts' deletes rows of 'accounts'"
    )
    assert "valid as a file" in validated.stdout


def test_the_shipped_config_has_no_such_clock() -> None:
    shipped = Path(__file__).parent.parent / "config" / "retention.toml"
    validated = CliRunner().invoke(
        main, ["--config", str(shipped), "config", "validate", "--offline"]
    )
    assert validated.exit_code == 0, validated.output
    assert "warning" not in validated.stderr


def test_the_live_check_prints_it_too(sqlite_url: str, tmp_path: Path) -> None:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as connection:
        connection.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, closed_at TIMESTAMP)")
        connection.execute(
            "CREATE TABLE connection_logs (id INTEGER PRIMARY KEY, account_id INTEGER)"
        )
    config = tmp_path / "retention.toml"
    config.write_text(config_text(sqlite_url, _rules()))
    validated = CliRunner().invoke(main, ["--config", str(config), "config", "validate"])
    assert validated.exit_code == 0, validated.output
    assert validated.stderr.startswith(
        "warning: rules[0].clock: rule 'accounts' deletes rows of 'accounts'"
    )
    assert "valid (2 rules" in validated.stdout
