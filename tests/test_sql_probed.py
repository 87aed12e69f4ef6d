"""PostgreSQL's plain delete batches, pipelined (stores/sql_probed.py): each batch's keys are read
by a read-only probe, the next batch's while this one's intent is written, and its DELETE runs
beside the intent; the intent is still durable before the COMMIT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text

from retention.audit.reconcile import pending_keys
from retention.audit.trail import TrailWriter
from tests.support import claimed_leaves, create_logs, logs_rule, make_config, remaining_ids
from tests.test_sql_integration import LEAP_AS_OF, LEAP_DUE, LEAP_ROWS

pytestmark = pytest.mark.postgres


def _leap_logs(url: str) -> Engine:
    create_logs(url, {key: at for key, (at, _due) in LEAP_ROWS.items()})
    return create_engine(url)


def test_the_next_batch_is_read_while_the_intent_is_written_and_the_intent_precedes_the_commit(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five due rows in batches of 2. Each full batch's intent waits (up to 10 s) for the next
    batch's probe to have run: it does, because that probe was started before the intent, on
    another connection, in a read-only transaction. Every COMMIT comes after its batch's intent
    was appended (durably), and only one transaction writes at a time."""
    from retention.app import make_plan, run_plan
    from retention.audit.leaves import record_leaf
    from retention.stores import open_stores

    engine = _leap_logs(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, logs_rule(extra="batch_size = 2"), audit_directory=audit)
    events: list[tuple[str, Any]] = []
    probed = threading.Condition()
    writing: list[int] = []

    def statement(_connection: Any, cursor: Any, sql: str, *_args: Any) -> None:
        if sql.startswith("SELECT logs.id \nFROM logs") and "logged_at" in sql:
            with probed:
                events.append(("probe", cursor.connection.read_only))
                probed.notify_all()
        elif sql.startswith("DELETE FROM logs"):
            writing.append(1)
            events.append(("delete", len(writing)))

    def committed(_connection: Any) -> None:
        events.append(("commit", None))
        writing.pop()

    real_append = TrailWriter.append

    def append(self: TrailWriter, entry_type: str, fields: dict[str, Any], **options: Any) -> int:
        seq = real_append(self, entry_type, fields, **options)
        if entry_type == "batch.intent":
            events.append(("intent", fields["selected"]))
            if fields["selected"] == 2:
                intents = sum(kind == "intent" for kind, _ in events)
                with probed:
                    probed.wait_for(
                        lambda: sum(kind == "probe" for kind, _ in events) > intents, timeout=10
                    )
        return seq

    monkeypatch.setattr(TrailWriter, "append", append)
    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        store_engine = store_for("db").engine  # type: ignore[attr-defined]
        event.listen(store_engine, "before_cursor_execute", statement)
        event.listen(store_engine, "commit", committed)
        report = run_plan(config, the_plan, store_for, dry_run=False)
    monkeypatch.undo()

    assert report.outcomes[0].deleted == len(LEAP_DUE) == 5
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    kinds = [kind for kind, _ in events]
    assert kinds.count("probe") == 3
    assert all(read_only for kind, read_only in events if kind == "probe")
    # Never a second write transaction: each DELETE ran with no other one uncommitted.
    assert all(open_writes == 1 for kind, open_writes in events if kind == "delete")
    commits = [index for index, kind in enumerate(kinds) if kind == "commit"]
    assert len(commits) == 3
    previous = -1
    for batch, commit in enumerate(commits):
        between = kinds[previous + 1 : commit]
        assert between.count("intent") == 1, kinds
        assert between.count("delete") == 1, kinds
        # The batch's own probe came before its intent; the next one's before this COMMIT.
        assert between.count("probe") == (2 if batch == 0 else 1 if batch == 1 else 0), kinds
        previous = commit
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    assert claimed_leaves(audit) == sorted(
        record_leaf(hmac_key, "db", "logs", (key,)) for key in LEAP_DUE
    )


def test_a_row_gone_since_its_batch_was_read_is_not_claimed(
    postgres_url: str, tmp_path: Path
) -> None:
    """Another session deletes a row of the second batch after its keys were read (ahead,
    while the first batch's intent was written): the second batch deletes the rest, its result
    says one was not purged, and the trail claims exactly the rows this run deleted."""
    from retention.app import make_plan, run_plan
    from retention.audit.entries import read_entries
    from retention.audit.leaves import record_leaf
    from retention.stores import open_stores

    engine = _leap_logs(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, logs_rule(extra="batch_size = 2"), audit_directory=audit)
    taken = sorted(LEAP_DUE)[2]  # the second batch's first row
    deletes: list[str] = []

    def statement(_connection: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if sql.startswith("DELETE FROM logs"):
            deletes.append(sql)
            if len(deletes) == 2:
                # The second batch's DELETE: its keys were read before it.
                with engine.begin() as other:
                    other.execute(text("DELETE FROM logs WHERE id = :id"), {"id": taken})

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        event.listen(store_for("db").engine, "before_cursor_execute", statement)  # type: ignore[attr-defined]
        report = run_plan(config, the_plan, store_for, dry_run=False)

    assert len(deletes) == 3
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    assert report.outcomes[0].deleted == len(LEAP_DUE) - 1
    results = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.result"
    ]
    assert [(result["status"], result["done"], result.get("not_done")) for result in results] == [
        ("committed", 2, None),
        ("committed", 1, 1),
        ("committed", 1, None),
    ]
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    assert claimed_leaves(audit) == sorted(
        record_leaf(hmac_key, "db", "logs", (key,)) for key in LEAP_DUE - {taken}
    )


def test_the_batches_keep_their_connections_and_a_failed_one_is_given_back(
    postgres_url: str, tmp_path: Path
) -> None:
    """Five due rows in batches of 1: the DELETEs run on one connection and the probes on
    another, both kept from batch to batch (two check-outs from the pool, not two a batch),
    with the GIL handed over within 0.5 ms while the store's threads run.
    A batch whose DELETE fails gives its connection back: the next run's batches check out a
    fresh one and purge the rest."""
    from retention.app import make_plan, run_plan
    from retention.stores import open_stores

    engine = _leap_logs(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, logs_rule(extra="batch_size = 1"), audit_directory=audit)
    checkouts: list[int] = []
    deletes: list[int] = []
    checked_out_by_then: list[int] = []
    intervals: list[float] = []
    interval_before = sys.getswitchinterval()

    def checkout(dbapi_connection: Any, *_args: Any) -> None:
        checkouts.append(id(dbapi_connection))

    def statement(_connection: Any, cursor: Any, sql: str, *_args: Any) -> None:
        if sql.startswith("DELETE FROM logs"):
            deletes.append(id(cursor.connection))
            intervals.append(sys.getswitchinterval())
            if len(deletes) == 3:
                checked_out_by_then.append(len(checkouts))
                raise RuntimeError("the third DELETE fails")

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        store_engine = store_for("db").engine  # type: ignore[attr-defined]
        event.listen(store_engine, "checkout", checkout)
        event.listen(store_engine, "before_cursor_execute", statement)
        failed = run_plan(config, the_plan, store_for, dry_run=False)
        assert failed.outcomes[0].deleted == 2
        # Three batches: the probes on one connection, the DELETEs on another.
        assert checked_out_by_then == [2]
        assert len(set(deletes)) == 1
        event.remove(store_engine, "before_cursor_execute", statement)
        the_plan = make_plan(config, config.rules, store_for, LEAP_AS_OF)
        checkouts.clear()
        report = run_plan(config, the_plan, store_for, dry_run=False)

    assert report.outcomes[0].deleted == len(LEAP_DUE) - 2
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    # The probes' connection is still held; the DELETEs' was given back and checked out again.
    assert len(checkouts) == 1
    # The DELETEs' thread got the GIL back within 0.5 ms; the store closed, the interval is
    # the process's own again.
    assert max(intervals) <= 0.0005 < interval_before
    assert sys.getswitchinterval() == interval_before


# A `retention run` in a child process whose first DELETE of logs is preceded, on another
# connection, by the delete of one row that the batch's probe read (argv: url, id, then the
# CLI's arguments); RETENTION_CRASH_AT then kills it where the test says.
_TAKES_A_PROBED_ROW = """
import runpy, sys
from sqlalchemy import Engine, create_engine, event, text

url, taken = sys.argv[1], int(sys.argv[2])
other = create_engine(url)
taking = []

@event.listens_for(Engine, "before_cursor_execute")
def take(_connection, _cursor, statement, *_arguments):
    if statement.startswith("DELETE FROM logs") and not taking:
        taking.append(statement)
        with other.begin() as session:
            session.execute(text("DELETE FROM logs WHERE id = :id"), {"id": taken})

sys.argv = ["retention", *sys.argv[3:]]
runpy.run_module("retention", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("crash_at", "taken_when"),
    [
        ("mid_batch", "before its DELETE"),
        ("after_commit", "before its DELETE"),
        ("mid_batch", "after the crash"),
    ],
)
def test_a_crash_claims_no_row_that_another_session_deleted(
    postgres_url: str, tmp_path: Path, crash_at: str, taken_when: str
) -> None:
    """The first batch's intent is durable, then the process dies: before its COMMIT (the
    server rolls the DELETE back) or after it, before its result. Another session deleted one
    of the batch's rows: before our DELETE (which then did not delete it), or after the crash,
    before the next run. That row is gone, but not by us: the next run's reconcile must not
    claim it, and must claim exactly what our committed DELETE took."""
    crashed = _crash_with_a_row_taken(postgres_url, tmp_path, crash_at, taken_when)
    # The probed row our DELETE did not return was recorded before the COMMIT.
    notes = list((crashed.audit / "pending").glob("*.not_done.json"))
    assert len(notes) == (taken_when == "before its DELETE")

    finished = _run_again(crashed)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids(crashed.engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    assert claimed_leaves(crashed.audit) == _leaves(tmp_path, LEAP_DUE - {crashed.taken})
    assert not list((crashed.audit / "pending").iterdir())


def test_an_edited_note_of_keys_not_purged_is_not_believed(
    postgres_url: str, tmp_path: Path
) -> None:
    """The note of the keys a committed batch did not purge is edited after the crash to name
    every key of the batch (its deletions would go unclaimed): its HMAC does not check, so the
    reconcile says so (``audit.note_rejected``) and looks for the records instead: every row
    our DELETE took is claimed."""
    crashed = _crash_with_a_row_taken(postgres_url, tmp_path, "after_commit", "before its DELETE")
    (note,) = (crashed.audit / "pending").glob("*.not_done.json")
    (pending,) = (crashed.audit / "pending").glob("*[0-9].json")
    content = json.loads(note.read_text())
    content["keys"] = [list(key) for key in pending_keys(json.loads(pending.read_text()))]
    note.write_text(json.dumps(content))

    finished = _run_again(crashed)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "audit.note_rejected" in finished.stdout + finished.stderr
    assert remaining_ids(crashed.engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    # Looking cannot tell the row another session took from ours: it is claimed too.
    assert claimed_leaves(crashed.audit) == _leaves(tmp_path, LEAP_DUE)


@dataclass(frozen=True)
class _Crashed:
    engine: Any
    audit: Path
    arguments: list[str]
    taken: int


def _crash_with_a_row_taken(
    postgres_url: str, tmp_path: Path, crash_at: str, taken_when: str | None = None
) -> _Crashed:
    """Run with batches of 2 until the first batch's intent is durable and the process dies at
    ``crash_at``, another session having deleted that batch's second row ``taken_when``
    (before its DELETE, or after the crash; None: nobody did)."""
    from tests.support import config_text

    engine = _leap_logs(postgres_url)
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    config.write_text(
        config_text(postgres_url, logs_rule(extra="batch_size = 2"), audit_directory=audit)
    )
    taken = sorted(LEAP_DUE)[1]  # the first batch's second row
    arguments = ["--config", str(config), "run", "--yes", "--as-of", LEAP_AS_OF.isoformat()]
    environment = {**os.environ, "RETENTION_CRASH_AT": crash_at}
    if taken_when == "before its DELETE":
        command = [sys.executable, "-c", _TAKES_A_PROBED_ROW, postgres_url, str(taken)]
    else:
        command = [sys.executable, "-m", "retention"]
    crashed = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, env=environment, timeout=120
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if taken_when == "after the crash":
        with engine.begin() as other:
            other.execute(text("DELETE FROM logs WHERE id = :id"), {"id": taken})
    (pending,) = (audit / "pending").glob("*[0-9].json")
    assert isinstance(json.loads(pending.read_text())["transaction"], int)
    return _Crashed(engine, audit, arguments, taken)


def _run_again(crashed: _Crashed) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention", *crashed.arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _leaves(tmp_path: Path, keys: set[int]) -> list[Any]:
    from retention.audit.leaves import record_leaf

    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    return sorted(record_leaf(hmac_key, "db", "logs", (key,)) for key in keys)


def test_a_pending_file_edited_to_name_no_transaction_is_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    """A pending file whose transaction was taken out (as an older version wrote none): its
    HMAC in the intent's entry no longer checks, so none of it is believed
    (audit.pending_rejected): the batch stays unsettled, nothing of it claimed; its rows,
    still there (the crash came before the COMMIT), go in the next run's batches."""
    from retention.audit.entries import read_entries

    crashed = _crash_with_a_row_taken(postgres_url, tmp_path, "mid_batch")
    (pending,) = (crashed.audit / "pending").glob("*[0-9].json")
    content = json.loads(pending.read_text())
    del content["transaction"]
    pending.write_text(json.dumps(content))

    finished = _run_again(crashed)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "audit.pending_rejected" in finished.stderr
    assert not [
        stored
        for stored in read_entries(crashed.audit)
        if stored.content["type"] == "batch.reconciled"
    ]
    assert pending.exists()
    assert remaining_ids(crashed.engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    assert claimed_leaves(crashed.audit) == _leaves(tmp_path, LEAP_DUE)


def test_a_transaction_reads_committed_aborted_or_still_in_progress(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a reconcile asks the database: a transaction still in progress is waited for, then
    left for a later run (StoreUnavailable); one that ended committed or aborted."""
    from retention.errors import StoreUnavailable
    from retention.stores import open_stores, sql_probed

    monkeypatch.setattr(sql_probed, "IN_PROGRESS_WAIT_SECONDS", 0.2)
    config = make_config(postgres_url, logs_rule())
    with open_stores(config, read_only=False) as store_for:
        store: Any = store_for("db")
        with store.engine.connect() as connection:
            transaction = sql_probed.current_transaction(connection)
            with pytest.raises(StoreUnavailable, match="still in progress"):
                store.transaction_status(transaction)
            connection.commit()
        assert store.transaction_status(transaction) == "committed"
        with store.engine.connect() as connection:
            transaction = sql_probed.current_transaction(connection)
            connection.rollback()
        assert store.transaction_status(transaction) == "aborted"


def _crash_then_edit_then_run(
    postgres_url: str, tmp_path: Path, crash_at: str, transaction: Any
) -> tuple[Engine, Path, Any]:
    """Run until the first batch's intent is durable and the process dies at ``crash_at``;
    then set the pending file's transaction to ``transaction(engine, recorded)`` (another
    transaction of that number: a hostile edit, or after a failover or a restore, the server's
    own reuse of the number); then run again. Return the engine, the audit directory and the
    finished run."""
    crashed = _crash_with_a_row_taken(postgres_url, tmp_path, crash_at)
    (pending,) = (crashed.audit / "pending").glob("*[0-9].json")
    content = json.loads(pending.read_text())
    content["transaction"] = transaction(crashed.engine, content["transaction"])
    pending.write_text(json.dumps(content))
    return crashed.engine, crashed.audit, _run_again(crashed)


def _committed_other(engine: Engine, _recorded: int) -> int:
    with engine.begin() as connection:
        return int(connection.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())


def _aborted_other(engine: Engine, _recorded: int) -> int:
    with engine.connect() as connection:
        number = int(connection.execute(text("SELECT pg_current_xact_id()::text")).scalar_one())
        connection.rollback()
    return number


def _in_the_future(engine: Engine, recorded: int) -> int:
    return recorded + 1_000_000


@pytest.mark.parametrize(
    ("crash_at", "transaction"),
    [
        ("mid_batch", _committed_other),
        ("after_commit", _aborted_other),
        ("mid_batch", _in_the_future),
        ("after_commit", _in_the_future),
    ],
    ids=["aborted-as-committed", "committed-as-aborted", "future-aborted", "future-committed"],
)
def test_a_pending_transaction_other_than_the_intents_is_refused_and_claims_nothing_false(
    postgres_url: str, tmp_path: Path, crash_at: str, transaction: Any
) -> None:
    """The pending file is not the trail: its transaction edited (another of that number,
    committed or aborted, or one the server never gave) no longer matches the HMAC in its
    intent's entry, so nothing of the file is believed (audit.pending_rejected): the batch
    stays unsettled, its file kept, nothing claimed for it. (Before pending_mac, the
    transaction was read from the entry, the rest of the file believed.) No row is claimed
    falsely or twice: the due rows claimed and those of the unsettled intent are every due
    row, each once."""
    from retention.audit.entries import read_leaves
    from retention.audit.leaves import record_leaf

    engine, audit, finished = _crash_then_edit_then_run(
        postgres_url, tmp_path, crash_at, transaction
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "audit.pending_rejected" in finished.stderr
    assert remaining_ids(engine, "logs") == set(LEAP_ROWS) - LEAP_DUE
    (pending,) = (audit / "pending").glob("*[0-9].json")
    claimed = claimed_leaves(audit)
    if crash_at == "after_commit":
        # Its rows went in its transaction: they are the unsettled intent's, not claimed.
        claimed = sorted(claimed + read_leaves(audit, int(pending.stem)))
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    assert claimed == sorted(record_leaf(hmac_key, "db", "logs", (key,)) for key in LEAP_DUE)


def test_a_transaction_the_server_never_gave_is_one_it_does_not_know(postgres_url: str) -> None:
    """A number beyond any this server gave (its history restored from before the batch):
    pg_xact_status refuses it ("is in the future"), which failed every later run; the
    reconcile is told the database does not know, and looks for the records."""
    from retention.stores import open_stores, sql_probed

    config = make_config(postgres_url, logs_rule())
    with open_stores(config, read_only=False) as store_for:
        store: Any = store_for("db")
        with store.engine.connect() as connection:
            transaction = sql_probed.current_transaction(connection)
            connection.rollback()
        assert store.transaction_status(transaction + 1_000_000) is None
