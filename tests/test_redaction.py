"""No value from a row reaches an output: driver errors are redacted before they reach the run
report, the JSON logs, the run ledger or a traceback."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, create_engine, insert

from retention.cli import main
from retention.errors import ExitCode, error_text, without_values
from retention.runtime.logging import redacted_traceback
from retention.stores.s3_client import short
from retention.stores.sql import SqlStore
from tests.support import config_text, create_tables

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
PEOPLE = ("jane.doe@example.com", "john.roe@example.org")
PEOPLE_RULE = """
[[rules]]
name = "people"
store = "db"
table = "people"
key = "email"
clock = "left_at"
period = "1y"
"""
WRONG_TYPE_RULE = (
    PEOPLE_RULE
    + """action = "anonymise"
marker_column = "anonymised_at"

[rules.anonymise]
hired = { fixed = "abc" }
"""
)


def _people(url: str) -> None:
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("email", String(100), primary_key=True),
        Column("hired", Boolean),
        Column("left_at", DateTime),
        Column("anonymised_at", DateTime),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(people),
            [{"email": email, "hired": True, "left_at": datetime(2000, 1, 1)} for email in PEOPLE],
        )
    engine.dispose()


def _run(tmp_path: Path, url: str) -> tuple[Result, Path]:
    return _run_rule(tmp_path, url, WRONG_TYPE_RULE)


def _run_rule(tmp_path: Path, url: str, rule: str) -> tuple[Result, Path]:
    state = tmp_path / "state.sqlite"
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, rule, state_url=f"sqlite:///{state}"))
    result = CliRunner().invoke(
        main,
        ["--log-format", "json", "--config", str(config), "run", "--yes", "--as-of", "2026-01-01"],
    )
    return result, state


def _ledger_text(state: Path) -> str:
    with sqlite3.connect(state) as connection:
        return "\n".join(str(row) for row in connection.execute("SELECT * FROM retention_runs"))


def _assert_no_email(*texts: str) -> None:
    for text in texts:
        found = EMAIL.search(text)
        assert found is None, f"{found.group(0)!r} leaked in:\n{text}"


def test_a_wrong_typed_anonymise_value_leaks_no_key_anywhere(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema check refuses such a rule (test_validate_columns.py); this is what happens if
    a value still reaches the driver: the rule fails, and what it says names no row."""
    _people(database_url)
    monkeypatch.setattr("retention.app.check_against_stores", lambda _rules, _store_for: ([], {}))
    monkeypatch.setattr(
        "retention.stores.sql_purge.column_value",
        lambda _column, value, _dialect: value,
        raising=False,  # so that the test also runs on code from before that check
    )
    result, state = _run(tmp_path, database_url)
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "people: store" in result.stdout
    assert '"event": "rule.finished"' in result.stderr
    ledger = _ledger_text(state)
    assert "failed" in ledger
    _assert_no_email(result.stdout, result.stderr, ledger)


def test_a_bug_during_a_purge_leaks_no_key_in_its_traceback(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _people(sqlite_url)
    monkeypatch.setattr("retention.app.check_against_stores", lambda _rules, _store_for: ([], {}))

    def crash(*_arguments: object, **_options: object) -> None:
        try:
            raise ValueError(f"bad row {PEOPLE[0]!r}")
        except ValueError as error:
            raise KeyError(PEOPLE[1]) from error

    monkeypatch.setattr(SqlStore, "purge_batch", crash)
    result, state = _run(tmp_path, sqlite_url)
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert '"event": "rule.crashed"' in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError: '…'" in result.stdout
    _assert_no_email(result.stdout, result.stderr, _ledger_text(state))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # PyMySQL
        (
            "(1062, \"Duplicate entry 'jane@example.com' for key 'PRIMARY'\")",
            "(1062) Duplicate entry '…' for key 'PRIMARY'",
        ),
        (
            "(1366, \"Incorrect integer value: 'jane@example.com' for column `db`.`people`.`age` "
            'at row 1")',
            "(1366) Incorrect integer value: '…' for column `db`.`people`.`age` at row 1",
        ),
        (
            "(1406, \"Data too long for column 'phone' at row 1\")",
            "(1406) Data too long for column 'phone' at row 1",
        ),
        # psycopg
        (
            'duplicate key value violates unique constraint "people_pkey"\n'
            "DETAIL:  Key (email)=(jane@example.com) already exists.",
            'duplicate key value violates unique constraint "people_pkey"',
        ),
        (
            'invalid input syntax for type integer: "jane@example.com"',
            ('invalid input syntax for type integer: "…"'),
        ),
        (
            "Key (email, tenant)=(jane@example.com, 4) is still referenced",
            ("Key (email, tenant)=(…) is still referenced"),
        ),
        # SQLAlchemy around a driver's message
        (
            "(builtins.TypeError) Not a boolean value: 'x'\n[SQL: UPDATE people SET hired=?]\n"
            "[parameters: [{'key_email': 'jane@example.com'}]]\n"
            "(Background on this error at: https://sqlalche.me/e/20/7s2a)",
            "(builtins.TypeError) Not a boolean value: '…'",
        ),
        (
            "(sqlite3.IntegrityError) UNIQUE constraint failed: people.email "
            "[SQL: INSERT INTO people VALUES (?)] [parameters: ('jane@example.com',)]",
            "(sqlite3.IntegrityError) UNIQUE constraint failed: people.email",
        ),
        # botocore
        (
            "Parameter validation failed:\nInvalid type for parameter Key, value: 1",
            "Parameter validation failed:",
        ),
        (
            'Could not connect to the endpoint URL: "http://s3.local/b/c/jane%40example.com"',
            'Could not connect to the endpoint URL: "…"',
        ),
    ],
)
def test_without_values_keeps_the_reason_and_drops_every_value(message: str, expected: str) -> None:
    assert without_values(message) == expected


def test_error_text_names_the_type_of_a_foreign_error() -> None:
    assert error_text(KeyError("jane@example.com")) == "KeyError: '…'"


def test_redacted_traceback_keeps_the_frames_and_the_chain() -> None:
    try:
        try:
            raise ValueError(f"first {PEOPLE[0]!r}")
        except ValueError as first:
            raise KeyError(PEOPLE[1]) from first
    except KeyError as error:
        text = redacted_traceback(error)
    assert "direct cause" in text
    assert "test_redaction.py" in text
    assert text.endswith("KeyError: '…'")
    _assert_no_email(text)


DELETE_RULE = PEOPLE_RULE + 'action = "delete"\n'
# Triggers that refuse a deletion with a message quoting the row's value unquoted: nothing in
# the message tells a value from the words around it (%% is a literal % through the driver).
POSTGRES_TRIGGERS = {
    "raise": "RAISE EXCEPTION 'refusing to delete %%', OLD.email",
    "raise with a constraint's code": (
        "RAISE EXCEPTION USING ERRCODE = '23505', MESSAGE = 'refusing ' || OLD.email"
    ),
}


@pytest.mark.parametrize("statement", POSTGRES_TRIGGERS.values(), ids=POSTGRES_TRIGGERS.keys())
def test_a_postgres_trigger_quoting_a_value_unquoted_leaks_it_nowhere(
    postgres_url: str, tmp_path: Path, statement: str
) -> None:
    _refused_by_a_trigger_leaking_nothing(
        tmp_path,
        postgres_url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {statement}; END $$",
        "CREATE TRIGGER refuse BEFORE DELETE ON people FOR EACH ROW EXECUTE FUNCTION refuse()",
    )


def test_a_mariadb_trigger_quoting_a_value_unquoted_leaks_it_nowhere(
    mariadb_url: str, tmp_path: Path
) -> None:
    _refused_by_a_trigger_leaking_nothing(
        tmp_path,
        mariadb_url,
        "CREATE TRIGGER refuse BEFORE DELETE ON people FOR EACH ROW BEGIN "
        "DECLARE message VARCHAR(200) DEFAULT CONCAT('refusing to delete ', OLD.email); "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = message; END",
    )


def _refused_by_a_trigger_leaking_nothing(tmp_path: Path, url: str, *statements: str) -> None:
    """The people's deletion refused by the trigger that ``statements`` create: the rule fails
    saying so, and no e-mail address is in the output, the logs or the ledger."""
    _people(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()
    result, state = _run_rule(tmp_path, url, DELETE_RULE)
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "a trigger or function of the database raised" in result.stdout
    _assert_no_email(result.stdout, result.stderr, _ledger_text(state))


def test_an_address_outside_quotes_is_left_out_of_any_message() -> None:
    """The second net, for messages whose words may be anyone's (a trigger's)."""
    message = "refusing to delete jane.doe@example.com from 192.168.10.4"
    assert without_values(message) == "refusing to delete … from …"


@pytest.mark.parametrize(
    "message",
    [
        "(1062, 'refusing to delete Jane Doe')",
        "(1451, 'Cannot delete Jane Doe: a foreign key constraint fails')",
        "(9999, 'Lock wait timeout exceeded for Jane')",
    ],
)
def test_a_mariadb_message_not_in_the_servers_words_is_left_out_whole(message: str) -> None:
    """A SIGNAL can borrow any error number (SET MYSQL_ERRNO = 1062) with words of its own."""
    number = message[1:5]
    assert without_values(message) == (
        f"({number}) its message is left out: it does not read as MariaDB's own "
        "(a trigger's SIGNAL can borrow a server error's number)"
    )


@pytest.mark.parametrize("source_file", ["pl_exec.c", "plpy_elog.c", "plperl.c", "pltcl.c"])
def test_an_error_a_procedural_language_raised_is_left_out_whole(source_file: str) -> None:
    """Only PL/pgSQL is installed on the test server: the others by their source file."""

    class Diagnostic:
        pass

    class DriverError(Exception):
        sqlstate = "XX000"
        diag = Diagnostic()

    DriverError.diag.source_file = source_file  # type: ignore[attr-defined]
    assert error_text(DriverError("refusing Jane Doe")) == (
        "DriverError: a trigger or function of the database raised XX000 "
        "(its message is left out: it may quote values)"
    )


def test_an_s3_message_about_an_object_leaves_its_key_out() -> None:
    key = "exports/Jane Doe/2024 taxes.csv"
    assert short(f"The object {key} is archived", key) == "The object … is archived"
    assert short("Cannot delete exports/Jane%20Doe/x", key) == "Cannot delete …/…/x"
    assert short("Please reduce your request rate.", key) == "Please reduce your request rate."
