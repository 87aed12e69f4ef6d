"""`config validate`, `plan` and `run` check every anonymise strategy against the column it
writes and every `where` literal against its column, on the live schema: a rule that would fail
every batch is refused with its key path (exit 78) before any data is touched."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
)

from retention.anonymise import keyed_hash
from retention.cli import main
from retention.errors import ExitCode
from retention.state import StateDatabase
from retention.state_holds import add_hold
from tests.support import config_text, create_tables, engine_for

HASH_KEY = "k" * 32
AS_OF = "2026-01-01"
ROW = {
    "id": 1,
    "email": "jane.doe@example.com",
    "login": "jdoe",
    "phone": "+33 6 12 34 56 78",
    "code": "AB12",
    "hired": True,
    "age": 40,
    "born": date(1984, 7, 14),
    "ip": "192.0.2.77",
    "left_at": datetime(2000, 1, 1),
}


def _people(url: str) -> None:
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(100)),
        Column("login", String(50), unique=True),
        Column("phone", String(40)),
        Column("code", String(5), nullable=False),
        Column("hired", Boolean),
        Column("age", Integer),
        Column("born", Date),
        Column("ip", String(45), nullable=False),
        Column("left_at", DateTime),
        Column("anonymised_at", DateTime),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(insert(people), [ROW])
    engine.dispose()


def _rule(anonymise: str, where: str = "") -> str:
    return f"""
[[rules]]
name = "people"
store = "db"
table = "people"
key = "id"
clock = "left_at"
period = "1y"
action = "anonymise"
marker_column = "anonymised_at"
{where}

[rules.anonymise]
{anonymise}
"""


BAD = _rule(
    """
code = "null"
phone = "hash"
hired = { fixed = "abc" }
age = { fixed = 1.5 }
email = { fixed = "%s" }
born = { fixed = "not a date" }
ip = "truncate_ip"
login = { fixed = "gone" }
"""
    % ("x" * 101),
    where="where = [\"hired = 'abc'\", \"age = 'forty'\"]",
)
EXPECTED = {
    "rules[0].anonymise.code": "null writes NULL, and code is VARCHAR(5) NOT NULL",
    "rules[0].anonymise.phone": (
        'hash writes 64 characters, and phone is VARCHAR(40): write "hash:40"'
    ),
    "rules[0].anonymise.hired": "'abc' is not",
    "rules[0].anonymise.age": "1.5 is not an integer",
    "rules[0].anonymise.email": "is 101 characters long, and email is VARCHAR(100)",
    "rules[0].anonymise.born": "'not a date' is not an ISO 8601 date",
    "rules[0].anonymise.ip": (
        "truncate_ip writes NULL for a value that is not an IP address, and ip is NOT NULL"
    ),
    "rules[0].anonymise.login": "fixed gives many rows one value, and login is unique in 'people'",
    "rules[0].where[0]": "'abc' is not",
    "rules[0].where[1]": "'forty' is not an integer",
}


def _invoke(tmp_path: Path, url: str, rules: str, *arguments: str) -> Result:
    key = tmp_path / "hash.key"
    key.write_text(HASH_KEY)
    config = tmp_path / "retention.toml"
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    config.write_text(config_text(url, rules, hash_key_file=key, state_url=state))
    return CliRunner().invoke(main, ["--log-format", "json", "--config", str(config), *arguments])


def _row(url: str) -> dict[str, object]:
    engine = engine_for(url)
    metadata = MetaData()
    people = Table("people", metadata, autoload_with=engine)
    with engine.connect() as connection:
        row = dict(connection.execute(select(people)).mappings().one())
    engine.dispose()
    return row


def test_config_validate_reports_every_column_misfit_with_its_path(
    database_url: str, tmp_path: Path
) -> None:
    _people(database_url)
    result = _invoke(tmp_path, database_url, BAD, "config", "validate")
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for path, message in EXPECTED.items():
        found = [line for line in lines if line.startswith(f"error: {path}: ")]
        assert len(found) == 1, (path, lines)
        assert message in found[0], (message, found[0])
    assert f"{len(EXPECTED)} configuration errors (exit 78)" in result.stderr


@pytest.mark.parametrize("command", [("plan",), ("run", "--yes"), ("run", "--dry-run")])
def test_plan_and_run_refuse_a_misfit_before_touching_data(
    database_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    _people(database_url)
    before = _row(database_url)
    result = _invoke(tmp_path, database_url, BAD, *command, "--as-of", AS_OF)
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    assert "rules[0].anonymise.phone: hash writes 64 characters" in result.stderr
    assert "rules[0].where[0]: 'abc' is not" in result.stderr
    assert _row(database_url) == before


def test_a_fitting_rule_validates_and_writes_what_was_checked(
    database_url: str, tmp_path: Path
) -> None:
    rules = _rule(
        """
code = { fixed = "-" }
phone = "hash:40"
hired = { fixed = false }
age = { fixed = 0 }
born = { fixed = "1970-01-01" }
email = "null"
login = "hash:16"
""",
        where='where = ["hired = true", "age >= 18"]',
    )
    _people(database_url)
    validated = _invoke(tmp_path, database_url, rules, "config", "validate")
    assert validated.exit_code == 0, validated.output
    run = _invoke(tmp_path, database_url, rules, "run", "--yes", "--as-of", AS_OF)
    assert run.exit_code == 0, run.output
    row = _row(database_url)
    assert row["phone"] == keyed_hash(HASH_KEY.encode(), str(ROW["phone"]))[:40]
    assert row["code"] == "-"
    assert row["login"] == keyed_hash(HASH_KEY.encode(), "jdoe")[:16]
    assert not row["hired"]
    assert row["age"] == 0
    assert row["born"] == date(1970, 1, 1)
    assert row["email"] is None
    assert row["anonymised_at"] is not None


def test_a_where_literal_written_as_iso_text_compares_as_a_date(
    database_url: str, tmp_path: Path
) -> None:
    _people(database_url)
    rules = _rule('email = "null"', where="where = [\"born < '1990-01-01'\"]")
    result = _invoke(tmp_path, database_url, rules, "run", "--yes", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert _row(database_url)["email"] is None


def test_a_hold_whose_literal_no_longer_fits_stops_its_rule_and_names_no_value(
    database_url: str, tmp_path: Path
) -> None:
    """`hold add` refuses such a condition; one stored before (or before the column changed)
    cannot be evaluated: the rule fails and purges nothing, the others go on."""
    _people(database_url)
    before = _row(database_url)
    rules = _rule('email = "null"')
    assert _invoke(tmp_path, database_url, rules, "config", "validate").exit_code == 0
    state = StateDatabase(f"sqlite:///{tmp_path / 'state.sqlite'}")
    add_hold(
        state,
        rule="people",
        kind="where",
        value={"where": "age = 'jane.doe@example.com'"},
        reason="litigation 42",
        now=datetime(2025, 1, 1, tzinfo=UTC),
        by="test",
        until=None,
    )
    state.close()
    result = _invoke(tmp_path, database_url, rules, "run", "--yes", "--as-of", AS_OF)
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "a condition cannot be compared: '…' is not an integer" in result.stdout
    assert "jane.doe@example.com" not in result.output
    assert _row(database_url) == before
