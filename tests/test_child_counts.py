"""Child rows are counted beforehand: `plan` (text and JSON), `run --dry-run` and
`erase --dry-run` count per child table exactly what the run or the erasure then deletes, on
SQLite, PostgreSQL and MariaDB (``database_url``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    text,
)

from retention.cli import main
from tests.support import config_text, create_tables

OLD = datetime(2020, 1, 1)
RECENT = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=10)
CHILD_TABLES = ("orders", "order_lines", "notes", "mails")

# Notes older than a year go by their own rule, which runs first: they are not the accounts'
# children any more by then. Accounts go a year after they closed, customers only, with their
# orders (and the orders' lines), their remaining notes, and the mails sent to their address
# (a references column that is not unique: two accounts share one).
OLD_NOTES_RULE = """
[[rules]]
name = "old-notes"
store = "db"
table = "notes"
key = "id"
clock = "written_at"
period = "1y"
action = "delete"
"""
ACCOUNTS_RULE = """
[[rules]]
name = "accounts"
store = "db"
table = "accounts"
key = "id"
clock = "closed_at"
period = "1y"
where = ["kind = 'customer'"]
action = "delete"
erase_by = "email"
batch_size = 2

[[rules.children]]
table = "orders"
foreign_key = "account_id"

[[rules.children.children]]
table = "order_lines"
foreign_key = "order_id"
references = "id"

[[rules.children]]
table = "notes"
foreign_key = "account_id"

[[rules.children]]
table = "mails"
foreign_key = "address"
references = "email"
"""
RULES = OLD_NOTES_RULE + ACCOUNTS_RULE

# id: (closed_at, kind, email). Due: 1, 5, 6 (2 is held; 3 closed recently; 4 is staff; 7 open).
ACCOUNTS = {
    1: (OLD, "customer", "a@example.com"),
    2: (OLD, "customer", "b@example.com"),
    3: (RECENT, "customer", "c@example.com"),
    4: (OLD, "staff", "d@example.com"),
    5: (OLD, "customer", "e@example.com"),
    6: (OLD, "customer", "a@example.com"),
    7: (None, "customer", "f@example.com"),
}
ORDERS = {10: 1, 11: 1, 20: 2, 30: 3, 40: 4, 50: 5, 60: 6, 61: 6}
ORDER_LINES = {100: 10, 101: 10, 110: 11, 200: 20, 300: 30, 400: 40, 500: 50, 600: 60}
# id: (account_id, written_at)
NOTES = {1: (1, RECENT), 2: (1, OLD), 3: (5, RECENT), 4: (2, RECENT), 5: (6, OLD), 6: (4, RECENT)}
MAILS = {
    1: "a@example.com",
    2: "a@example.com",
    3: "b@example.com",
    4: "e@example.com",
    5: "z@example.com",
}


def _database(url: str) -> Engine:
    metadata = MetaData()
    accounts = Table(
        "accounts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("closed_at", DateTime),
        Column("kind", String(20), nullable=False),
        Column("email", String(100), nullable=False),
    )
    orders = Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    )
    lines = Table(
        "order_lines",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    )
    notes = Table(
        "notes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
        Column("written_at", DateTime, nullable=False),
    )
    mails = Table(
        "mails",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("address", String(100), nullable=False, index=True),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(accounts),
            [
                {"id": key, "closed_at": closed, "kind": kind, "email": email}
                for key, (closed, kind, email) in ACCOUNTS.items()
            ],
        )
        connection.execute(
            insert(orders), [{"id": key, "account_id": owner} for key, owner in ORDERS.items()]
        )
        connection.execute(
            insert(lines), [{"id": key, "order_id": order} for key, order in ORDER_LINES.items()]
        )
        connection.execute(
            insert(notes),
            [
                {"id": key, "account_id": owner, "written_at": written}
                for key, (owner, written) in NOTES.items()
            ],
        )
        connection.execute(
            insert(mails), [{"id": key, "address": address} for key, address in MAILS.items()]
        )
    return engine


def _rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in CHILD_TABLES
        }


def _ids(engine: Engine, table: str) -> set[int]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text(f"SELECT id FROM {table}"))}


def _cli(config: Path, *arguments: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config), *arguments], input=stdin
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _child_line(output: str, heading: str, rule: str) -> dict[str, int]:
    """The counts of one rule's line under ``heading``: `  accounts  5 orders, 5 orders/…`."""
    section = output.split(heading, 1)[1]
    line = next(line for line in section.splitlines() if line.startswith(f"  {rule} "))
    counts = line[len(f"  {rule} ") :].strip()
    return {
        table: int(count.replace(",", ""))
        for count, table in re.findall(r"(\d[\d,]*) (\w[^,\s]*)", counts)
    }


def _setup(database_url: str, tmp_path: Path) -> tuple[Engine, Path]:
    engine = _database(database_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, RULES, audit_directory=tmp_path / "audit"))
    _cli(config, "hold", "add", "--rule", "accounts", "--key", "2", "--reason", "case-7")
    return engine, config


def _difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: before[table] - after[table] for table in before}


def test_plan_and_dry_run_count_the_children_the_run_deletes(
    database_url: str, tmp_path: Path
) -> None:
    engine, config = _setup(database_url, tmp_path)
    # Accounts 1, 5, 6: their orders and the lines of those orders; their notes but those the
    # old-notes rule deletes first (2 and 5); the mails of a@ (twice an account's) and e@.
    expected = {"orders": 5, "orders/order_lines": 5, "notes": 2, "mails": 3}

    document = json.loads(_cli(config, "plan", "--output", "json"))
    rules: dict[str, Any] = {rule["rule"]: rule for rule in document["rules"]}
    assert rules["accounts"]["due"] == 3
    assert rules["accounts"]["held"] == 1
    assert rules["accounts"]["children"] == expected
    assert rules["old-notes"]["children"] == {}
    assert rules["old-notes"]["due"] == 2

    shown = _cli(config, "plan")
    assert _child_line(shown, "Child rows that go with them:", "accounts") == expected
    assert "5 records due in 2 rules, and 15 child rows with them." in shown

    dry = _cli(config, "run", "--dry-run")
    assert _child_line(dry, "Child rows would be deleted with them:", "accounts") == expected
    dry_document = json.loads(_cli(config, "run", "--dry-run", "--output", "json"))
    outcomes = {rule["rule"]: rule for rule in dry_document["rules"]}
    assert outcomes["accounts"]["children"] == expected
    assert outcomes["accounts"]["children_deleted"] == sum(expected.values())
    assert dry_document["plan"]["rules"][1]["children"] == expected
    assert _rows(engine) == {"orders": 8, "order_lines": 8, "notes": 6, "mails": 5}

    before = _rows(engine)
    ran = _cli(config, "run", "--yes")
    assert _child_line(ran, "Child rows deleted with them:", "accounts") == expected
    deleted = _difference(before, _rows(engine))
    assert deleted == {
        "orders": expected["orders"],
        "order_lines": expected["orders/order_lines"],
        # The old notes went by their own rule.
        "notes": expected["notes"] + rules["old-notes"]["due"],
        "mails": expected["mails"],
    }
    assert _ids(engine, "orders") == {20, 30, 40}
    assert _ids(engine, "order_lines") == {200, 300, 400}
    assert _ids(engine, "notes") == {4, 6}
    assert _ids(engine, "mails") == {3, 5}

    again = json.loads(_cli(config, "plan", "--output", "json"))
    assert {rule["rule"]: rule["children"] for rule in again["rules"]} == {
        "old-notes": {},
        "accounts": {"orders": 0, "orders/order_lines": 0, "notes": 0, "mails": 0},
    }


def test_erase_dry_run_counts_the_children_the_erasure_deletes(
    database_url: str, tmp_path: Path
) -> None:
    engine, config = _setup(database_url, tmp_path)
    # a@ is accounts 1 and 6, whatever their age: all their notes go (old-notes has no
    # erase_by, so it erases nothing first), the mails to a@.
    expected = {"orders": 4, "orders/order_lines": 4, "notes": 3, "mails": 2}
    erase = ["erase", "--subject", "-", "--request", "DSR-1"]

    dry = _cli(config, *erase, "--dry-run", stdin="a@example.com\n")
    assert _child_line(dry, "Child rows that go with them:", "accounts") == expected
    assert _child_line(dry, "Child rows would be deleted with them:", "accounts") == expected
    assert "a@example.com" not in dry

    before = _rows(engine)
    erased = _cli(config, *erase, "--yes", stdin="a@example.com\n")
    assert _child_line(erased, "Child rows deleted with them:", "accounts") == expected
    deleted = _difference(before, _rows(engine))
    assert deleted == {
        "orders": expected["orders"],
        "order_lines": expected["orders/order_lines"],
        "notes": expected["notes"],
        "mails": expected["mails"],
    }
    assert _ids(engine, "accounts") == {2, 3, 4, 5, 7}


def test_a_saved_plan_is_refused_when_its_children_moved(sqlite_url: str, tmp_path: Path) -> None:
    """Child counts are part of the plan: the same parents with other children are another
    plan (another id), and `run --plan-file` refuses to delete children nobody reviewed."""
    engine, config = _setup(sqlite_url, tmp_path)
    saved = tmp_path / "plan.json"
    first = json.loads(_cli(config, "plan", "--output", "json", "--save", str(saved)))
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO orders (id, account_id) VALUES (12, 1)"))
    second = json.loads(_cli(config, "plan", "--output", "json"))
    assert [rule["due"] for rule in second["rules"]] == [rule["due"] for rule in first["rules"]]
    assert second["plan_id"] != first["plan_id"]

    refused = CliRunner().invoke(
        main, ["--config", str(config), "run", "--plan-file", str(saved), "--yes"]
    )
    assert refused.exit_code == 2, refused.output
    assert "accounts: 6 orders rows go with it now, 5 in the plan" in refused.output
    assert 12 in _ids(engine, "orders")


SELF_REFERENCING = """
[[rules]]
name = "comments"
store = "db"
table = "comments"
key = "id"
clock = "written_at"
period = "1y"
action = "delete"

[[rules.children]]
table = "comments"
foreign_key = "reply_to"
references = "id"
"""


def test_a_table_named_as_its_own_child_is_refused_before_any_row_goes(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Replies in the table of the comments they answer: named as the rule's own child, a reply
    due in the same batch as its comment would be deleted twice. Such a rule is refused with its
    key path (exit 78), by validate and run alike, and nothing is deleted."""
    metadata = MetaData()
    comments = Table(
        "comments",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("reply_to", Integer, ForeignKey("comments.id"), nullable=True),
        Column("written_at", DateTime, nullable=False),
    )
    engine = create_tables(sqlite_url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(comments),
            [
                {"id": 1, "reply_to": None, "written_at": OLD},
                {"id": 2, "reply_to": 1, "written_at": OLD},
                {"id": 3, "reply_to": 1, "written_at": RECENT},
            ],
        )
    config = tmp_path / "retention.toml"
    config.write_text(config_text(sqlite_url, SELF_REFERENCING, audit_directory=tmp_path / "a"))
    for command in (["config", "validate"], ["run", "--yes"]):
        result = CliRunner().invoke(main, ["--config", str(config), *command])
        assert result.exit_code == 78, result.output
        assert "rules[0].children[0].table" in result.stderr
        assert "cannot be a child of itself" in result.stderr
    assert _ids(engine, "comments") == {1, 2, 3}


CASCADED = """
[[rules]]
name = "accounts"
store = "db"
table = "accounts"
key = "id"
clock = "closed_at"
period = "1y"
action = "delete"
"""

CASCADED_LISTED = (
    CASCADED
    + """
[[rules.children]]
table = "sessions"
foreign_key = "account_id"

[[rules.children.children]]
table = "session_events"
foreign_key = "session_id"
references = "id"
"""
)


def _cascading_tables(url: str) -> Engine:
    """accounts <- sessions <- session_events, each key ON DELETE CASCADE."""
    metadata = MetaData()
    Table(
        "accounts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("closed_at", DateTime, nullable=False),
    )
    Table(
        "sessions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE")),
    )
    Table(
        "session_events",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("session_id", Integer, ForeignKey("sessions.id", ondelete="CASCADE")),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO accounts VALUES (1, '2020-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO sessions VALUES (10, 1)"))
        connection.execute(text("INSERT INTO session_events VALUES (100, 10)"))
    return engine


def test_a_cascade_into_an_unlisted_table_is_refused_before_any_row_goes(
    database_url: str, tmp_path: Path
) -> None:
    """The database would delete the sessions (and their events) of an expired account by
    itself, and nothing would name them in the trail: unless the rule lists them as children,
    validate and run refuse it (exit 78) with the key path and the table. On SQLite, whose
    connections enforce no foreign key, the declared cascade is refused alike: deleting the
    account alone would leave its sessions pointing at it."""
    engine = _cascading_tables(database_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, CASCADED, audit_directory=tmp_path / "a"))
    for command in (["config", "validate"], ["run", "--yes", "--dry-run"], ["run", "--yes"]):
        result = CliRunner().invoke(main, ["--config", str(config), *command])
        assert result.exit_code == 78, result.output
        assert "rules[0].table" in result.stderr
        assert "'sessions' references 'accounts' (account_id) with ON DELETE CASCADE" in (
            result.stderr
        )
        assert _ids(engine, "session_events") == {100}
    assert _ids(engine, "accounts") == {1}


def test_cascading_tables_listed_as_children_are_deleted_as_children(
    database_url: str, tmp_path: Path
) -> None:
    """Listed as children (and grandchildren), the cascading tables' rows are deleted by the
    rule itself (counted as its children, so recorded as such; tests/test_audit_children.py
    checks their leaves), not by the cascade; a grandchild left out is refused at its own key
    path."""
    engine = _cascading_tables(database_url)
    config = tmp_path / "retention.toml"
    without_grandchild = CASCADED_LISTED.split("[[rules.children.children]]")[0]
    config.write_text(config_text(database_url, without_grandchild, audit_directory=tmp_path / "a"))
    refused = CliRunner().invoke(main, ["--config", str(config), "config", "validate"])
    assert refused.exit_code == 78, refused.output
    assert "rules[0].children[0].table" in refused.stderr
    assert "'session_events' references 'sessions' (session_id)" in refused.stderr
    assert "list it in children[0].children" in refused.stderr
    config.write_text(config_text(database_url, CASCADED_LISTED, audit_directory=tmp_path / "a"))
    ran = json.loads(_cli(config, "run", "--yes", "--output", "json"))
    (outcome,) = ran["rules"]
    assert outcome["deleted"] == 1
    assert outcome["children"] == {"sessions": 1, "sessions/session_events": 1}
    assert (_ids(engine, "accounts"), _ids(engine, "sessions")) == (set(), set())
    assert _ids(engine, "session_events") == set()
