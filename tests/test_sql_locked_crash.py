"""PostgreSQL batches that lock their rows (a rule with child rows, an anonymise rule) settle
after a crash by their transaction, as the pipelined plain deletes do (test_sql_probed.py): the
intent names it, and the reconcile asks whether it committed, not which rows are gone. A row
another session deleted after the crash is not claimed; a row our committed batch deleted and
that came back since is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    text,
)

from retention.audit.entries import read_entries
from tests.support import claimed_leaves, config_text, create_tables
from tests.test_child_counts import ACCOUNTS_RULE, _database

pytestmark = pytest.mark.postgres


# What test_child_counts' accounts rule deletes, alone (its accounts 1, 2, 5 and 6, no hold,
# notes kept by no rule of their own); the first batch holds accounts 1 and 2.
CHILDREN_DELETED = {
    "accounts": {1, 2, 5, 6},
    "orders": {10, 11, 20, 50, 60, 61},
    "order_lines": {100, 101, 110, 200, 500, 600},
    "notes": {1, 2, 3, 4, 5},
    "mails": {1, 2, 3, 4},
}

CONTACTS_RULE = """
[[rules]]
name = "contacts"
store = "db"
table = "contacts"
key = "id"
clock = "updated_at"
period = "1y"
action = "anonymise"
marker_column = "anonymised_at"
batch_size = 2

[rules.anonymise]
email = "null"
"""
# Contacts 1 to 4 are due (the first batch: 1 and 2), 5 is not.
CONTACTS_DUE = {1, 2, 3, 4}


def _contacts(url: str) -> Engine:
    metadata = MetaData()
    contacts = Table(
        "contacts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(80)),
        Column("updated_at", DateTime, nullable=False),
        Column("anonymised_at", DateTime),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(contacts),
            [
                {
                    "id": key,
                    "email": f"c{key}@example.com",
                    "updated_at": datetime(2020, 1, key) if key in CONTACTS_DUE else datetime.now(),
                }
                for key in range(1, 6)
            ],
        )
    return engine


def _crash_then(
    url: str, tmp_path: Path, rules: str, crash_at: str, meanwhile: Callable[[Engine], None]
) -> Path:
    """Run ``rules`` until the first batch's intent is durable and the process dies at
    ``crash_at``; let another session do ``meanwhile``; run again; return the audit directory."""
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, rules, audit_directory=audit))
    arguments = [sys.executable, "-m", "retention", "--config", str(config), "run", "--yes"]
    crashed = subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        env={**os.environ, "RETENTION_CRASH_AT": crash_at},
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (pending,) = (audit / "pending").glob("*[0-9].json")
    (intent,) = (
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.intent"
    )
    assert intent["transaction"] == json.loads(pending.read_text())["transaction"]
    engine = create_engine(url)
    try:
        meanwhile(engine)
    finally:
        engine.dispose()
    environment = {key: value for key, value in os.environ.items() if key != "RETENTION_CRASH_AT"}
    finished = subprocess.run(
        arguments, capture_output=True, text=True, env=environment, timeout=120
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert not list((audit / "pending").iterdir())
    return audit


def _leaves(tmp_path: Path, rows: dict[str, set[int]]) -> list[bytes]:
    from retention.audit.leaves import record_leaf

    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    return sorted(
        record_leaf(hmac_key, "db", table, (key,)) for table, keys in rows.items() for key in keys
    )


def _execute(*statements: str) -> Callable[[Engine], None]:
    def run(engine: Engine) -> None:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))

    return run


def test_a_batch_with_child_rows_that_never_committed_claims_none_another_session_took(
    postgres_url: str, tmp_path: Path
) -> None:
    """The process dies before the first batch's COMMIT (the server rolls it back); then
    another session deletes an order line and a mail that batch's intent named. They are gone,
    but not by us: no reconcile claims them (by looking, it did), and every other row is
    claimed once, by the batches of the next run."""
    _database(postgres_url)
    audit = _crash_then(
        postgres_url,
        tmp_path,
        ACCOUNTS_RULE,
        "mid_batch",
        _execute("DELETE FROM order_lines WHERE id = 101", "DELETE FROM mails WHERE id = 3"),
    )
    (reconciled,) = (
        stored.content
        for stored in read_entries(audit)
        if stored.content["type"] == "batch.reconciled"
    )
    assert (reconciled["done"], reconciled["children_deleted"]) == (0, 0)
    ours = {**CHILDREN_DELETED, "order_lines": CHILDREN_DELETED["order_lines"] - {101}}
    ours["mails"] = CHILDREN_DELETED["mails"] - {3}
    assert claimed_leaves(audit) == _leaves(tmp_path, ours)


def test_a_batch_with_child_rows_that_committed_claims_a_row_that_came_back_since(
    postgres_url: str, tmp_path: Path
) -> None:
    """The process dies after the first batch's COMMIT, before its result; then another
    session inserts a mail and an order line under keys that batch deleted. The batch deleted
    them: the reconcile claims them (by looking, it found them there and did not), with the
    rest of its intent's rows."""
    _database(postgres_url)
    audit = _crash_then(
        postgres_url,
        tmp_path,
        ACCOUNTS_RULE,
        "after_commit",
        _execute(
            "INSERT INTO mails VALUES (1, 'z@example.com')",
            "INSERT INTO order_lines VALUES (100, 30)",
        ),
    )
    (reconciled,) = (
        stored.content
        for stored in read_entries(audit)
        if stored.content["type"] == "batch.reconciled"
    )
    assert reconciled["done"] == 2
    assert reconciled["children"] == {"order_lines": 4, "orders": 3, "notes": 3, "mails": 3}
    assert claimed_leaves(audit) == _leaves(tmp_path, CHILDREN_DELETED)


@pytest.mark.parametrize("crash_at", ["mid_batch", "after_commit"])
def test_an_anonymise_batch_claims_what_its_transaction_anonymised(
    postgres_url: str, tmp_path: Path, crash_at: str
) -> None:
    """The process dies before or after the first anonymise batch's COMMIT (contacts 1 and 2);
    then another session deletes contact 2. Rolled back, that batch anonymised nothing: contact
    2 is not claimed (by looking, gone read as anonymised); committed, it anonymised both, and
    both are claimed. Every other due contact is claimed once, by the next run."""
    engine = _contacts(postgres_url)
    audit = _crash_then(
        postgres_url,
        tmp_path,
        CONTACTS_RULE,
        crash_at,
        _execute("DELETE FROM contacts WHERE id = 2"),
    )
    anonymised = CONTACTS_DUE - {2} if crash_at == "mid_batch" else CONTACTS_DUE
    assert claimed_leaves(audit) == _leaves(tmp_path, {"contacts": anonymised})
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, email FROM contacts ORDER BY id")).all()
    assert rows == [(1, None), (3, None), (4, None), (5, "c5@example.com")]
    engine.dispose()


class _Refused(Exception):
    """The audit intent failed: the batch rolls back."""


@pytest.mark.parametrize("intent_fails", [False, True], ids=["committed", "rolled-back"])
def test_a_subjects_rules_batch_names_its_own_transaction(
    postgres_url: str, intent_fails: bool
) -> None:
    """A cross-store rule's subjects' rule purges only the rows ``only`` accepts, its rows
    locked: its intent names the transaction that deletes them, which the database then
    reports committed, or aborted when the intent failed (test_sql_only_filter's rule)."""
    from zoneinfo import ZoneInfo

    from retention.selection import make_selection
    from retention.store_protocol import NO_DETAIL, IntentDetail
    from retention.stores import open_stores
    from tests.support import make_config, remaining_ids
    from tests.test_sql_only_filter import AS_OF, DELETE, ROWS, RULE, _odd, _people

    _people(postgres_url)
    config = make_config(postgres_url, RULE + DELETE)
    (rule,) = config.rules
    named: list[int] = []

    def intent(keys: tuple[object, ...], detail: IntentDetail = NO_DETAIL) -> None:
        assert detail.transaction is not None
        named.append(detail.transaction.result())
        if intent_fails:
            raise _Refused

    with open_stores(config, read_only=False) as store_for:
        store: Any = store_for("db")
        try:
            batch = store.purge_batch(
                make_selection(rule, AS_OF, ZoneInfo("UTC")),
                after=None,
                limit=5,
                dry_run=False,
                now=AS_OF,
                hash_key=None,
                before_write=intent,
                only=_odd,
            )
        except _Refused:
            assert intent_fails
        else:
            assert batch.keys == ((1,), (3,), (5,))
        (transaction,) = named
        assert store.transaction_status(transaction) == ("aborted" if intent_fails else "committed")
    engine = create_engine(postgres_url)
    expected_left = set(ROWS) if intent_fails else set(ROWS) - {1, 3, 5}
    assert remaining_ids(engine, "people") == expected_left
    engine.dispose()
