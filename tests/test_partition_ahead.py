"""The next partition's keys are read while one is recorded and dropped (issue 15): nothing read
ahead is trusted more than a read in its turn, and the drop before it never waits for it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from retention.app import make_plan
from retention.app.holds import place_hold
from retention.audit.entries import read_entries
from retention.audit.leaves import record_leaf
from retention.executor import execute
from retention.runtime import handovers
from retention.stores import (
    open_stores,
    partition_ahead,
    partition_keys_postgres,
    partition_session,
    partitions,
)
from retention.stores.partition_ahead import THREAD_PREFIX
from tests.support import make_config, plan_and_run
from tests.test_partition_drops import (
    LATE_AT,
    LATE_ID,
    _insert_late_row,
    _key,
    _while_recording,
    events_url,
)
from tests.test_partitions import (
    AS_OF,
    DUE,
    KEPT,
    ROWS,
    RULE,
    _claimed,
    _partitions,
    _remaining,
    _verified,
    create_events,
)

__all__ = ["events_url"]  # the fixture, parametrised over both servers


def _when_read_ahead(monkeypatch: pytest.MonkeyPatch) -> dict[str, threading.Event]:
    """Per partition read ahead, an event set once its thread has its keys' snapshot
    (PostgreSQL: taken, its row versions about to be counted; MariaDB: its keys read, that
    snapshot ended)."""
    events: dict[str, threading.Event] = {}
    original_reading = partition_ahead.start_reading

    def start_reading(store: Any, selection: Any, name: str, *args: Any) -> Any:
        events.setdefault(name, threading.Event())
        return original_reading(store, selection, name, *args)

    def snapshot_taken() -> None:
        name = threading.current_thread().name
        if name.startswith(partition_ahead.THREAD_PREFIX):
            events[name.removeprefix(partition_ahead.THREAD_PREFIX)].set()

    original_xmin = partition_ahead.snapshot_xmin
    original_keys = partition_ahead.key_chunks

    def snapshot_xmin(connection: Any) -> int:
        reference = original_xmin(connection)
        snapshot_taken()
        return reference

    def key_chunks(*args: Any, **kwargs: Any) -> Iterator[Any]:
        yield from original_keys(*args, **kwargs)
        snapshot_taken()

    monkeypatch.setattr("retention.stores.partition_session.start_reading", start_reading)
    monkeypatch.setattr(partition_ahead, "snapshot_xmin", snapshot_xmin)
    monkeypatch.setattr(partition_ahead, "key_chunks", key_chunks)
    return events


def test_a_row_written_into_the_next_partition_while_it_is_read_ahead_keeps_it(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While January is recorded, February's keys are read ahead (its snapshot taken before
    January is dropped: the test waits for it there, which the code before, reading each
    partition in its turn, never did); a due row then written into February is not in that
    snapshot: the check under February's lock sees it, February goes by row batches, and
    every row gone is named in the trail, each once. January and March still go whole: the
    read ahead held no lock that their drops waited for."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    read_ahead = _when_read_ahead(monkeypatch)

    def insert_once_february_is_read() -> str:
        assert "events_2024_02" in read_ahead, "February is read while January is recorded"
        assert read_ahead["events_2024_02"].wait(30), "February's snapshot was never taken"
        return _insert_late_row(events_url, None)

    attempts = _while_recording(monkeypatch, "events_2024_01", insert_once_february_is_read)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["inserted"]
    kept = {line["partition"]: line["reason"] for line in logs if line["event"] == "partition.kept"}
    assert list(kept) == ["events_2024_02"]
    assert "changed while its keys were recorded" in kept["events_2024_02"]
    partitions = _partitions(events_url)
    assert "events_2024_02" in partitions
    assert not {"events_2024_01", "events_2024_03"} & partitions
    rows = ROWS | {LATE_ID: LATE_AT}
    gone = set(rows) - _remaining(events_url)
    assert gone == DUE | {LATE_ID}
    claimed = _claimed(audit)
    assert len(claimed) == len(set(claimed)), "each row named once"
    key = _key(audit)
    assert sorted(claimed) == sorted(record_leaf(key, "db", "events", (i, rows[i])) for i in gone)
    _verified(audit)


def _database_setting(url: str, setting: str) -> None:
    """``ALTER DATABASE … SET`` one setting on the test's PostgreSQL database: every session
    the run opens from now on has it, as an operator's postgresql.conf would give it."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            quoted = engine.dialect.identifier_preparer.quote(str(make_url(url).database))
            connection.exec_driver_sql(f"ALTER DATABASE {quoted} SET {setting}")
    finally:
        engine.dispose()


# Rows added to February, each on a fifth of a page: 400 pages, read in 20 pieces.
LONG_FEBRUARY = {1000 + i: datetime(2024, 2, 12) for i in range(2000)}


def _events_with_a_long_february(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: ``events`` with LONG_FEBRUARY, its keys read in pieces of about 100 with
    2 pieces waiting (chunks of 200 keys): February's read ahead stops, its transaction
    open, idle, until its keys are recorded in their turn."""
    create_events(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE events ALTER COLUMN note SET STORAGE PLAIN")
            connection.execute(
                text("INSERT INTO events (id, logged_at, note) VALUES (:id, :at, :note)"),
                [{"id": key, "at": at, "note": "x" * 1500} for key, at in LONG_FEBRUARY.items()],
            )
    finally:
        engine.dispose()
    monkeypatch.setattr(partition_keys_postgres, "PIECE", 100)
    monkeypatch.setattr(partitions, "CHUNK", 200)


def _wait_for_lock(url: str, relation: str) -> None:
    """Wait (at most 10 s) until another session holds a lock on ``relation``: the read ahead
    has counted its row versions, its transaction open."""
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                held = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE pid <> pg_backend_pid() "
                        "AND relation = to_regclass(:relation)"
                    ),
                    {"relation": relation},
                ).scalar()
            if held:
                return
            time.sleep(0.05)
    finally:
        engine.dispose()


def test_constraint_exclusion_on_does_not_keep_the_partition_before_a_read_ahead(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``constraint_exclusion = on`` (an operator's setting), a query that names a
    partition also takes a lock on its parent (the planner reads the partition's constraint),
    held by the read ahead's transaction until that partition's turn: the DETACH of the one
    before waited for it, gave up, and January and February went by row batches (a68f1f5).
    The read ahead takes no lock on the parent, whatever the setting: all three go whole."""
    _events_with_a_long_february(postgres_url, monkeypatch)
    _database_setting(postgres_url, "constraint_exclusion = on")
    audit = tmp_path / "audit"
    config = make_config(postgres_url, RULE, audit_directory=audit)
    _while_recording(
        monkeypatch, "events_2024_01", lambda: _wait_for_lock(postgres_url, "events_2024_02")
    )
    _run_and_check_every_partition_went_whole(postgres_url, config, audit)


def test_an_idle_in_transaction_timeout_does_not_fail_the_run_over_a_read_ahead(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read ahead's transaction waits, idle, while the partition before is recorded and
    dropped: with ``idle_in_transaction_session_timeout`` shorter than that (an operator's
    setting against forgotten transactions), the server ended February's session and the run
    failed midway through February's intents (a68f1f5; read in its turn, a partition's
    transaction idles only while one chunk is recorded). Here January's recording takes 3 s,
    the timeout is 1 s, and February holds more pieces than its read ahead keeps waiting."""
    _events_with_a_long_february(postgres_url, monkeypatch)
    _database_setting(postgres_url, "idle_in_transaction_session_timeout = '1s'")
    audit = tmp_path / "audit"
    config = make_config(postgres_url, RULE, audit_directory=audit)
    _while_recording(monkeypatch, "events_2024_01", lambda: time.sleep(3))
    _run_and_check_every_partition_went_whole(postgres_url, config, audit)


def _run_and_check_every_partition_went_whole(postgres_url: str, config: Any, audit: Path) -> None:
    """Plan and run; the run is ok, no partition was kept back for row batches, January,
    February and March went whole, exactly the due rows went, and the trail verifies."""
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    kept = {line["partition"]: line["reason"] for line in logs if line["event"] == "partition.kept"}
    assert kept == {}
    assert not {"events_2024_01", "events_2024_02", "events_2024_03"} & _partitions(postgres_url)
    assert _remaining(postgres_url) == set(ROWS) - DUE - set(LONG_FEBRUARY)
    _verified(audit)


def test_a_hold_placed_while_the_next_partition_is_read_ahead_keeps_its_row(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legal hold placed on a February row once February's keys were read ahead (while
    January is recorded) is honoured: the holds are read again before February's turn and
    counted under its lock, so February goes by row batches and the held row stays."""
    audit = tmp_path / "audit"
    state = f"sqlite:///{tmp_path}/state.sqlite"
    config = make_config(events_url, RULE, audit_directory=audit, state_url=state)
    # The hold is placed from another config on the same state (the run holds the trail).
    holding = make_config(events_url, RULE, state_url=state)
    read_ahead = _when_read_ahead(monkeypatch)

    def hold_once_february_is_read() -> None:
        assert read_ahead["events_2024_02"].wait(30), "February's snapshot was never taken"
        place_hold(
            holding,
            rule_name="events",
            keys=(),
            where="id = 15",
            prefix=None,
            reason="litigation",
            until=None,
            now=AS_OF,
            by="test",
        )

    _while_recording(monkeypatch, "events_2024_01", hold_once_february_is_read)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    kept = {line["partition"] for line in logs if line["event"] == "partition.kept"}
    assert kept == {"events_2024_02"}
    assert _remaining(events_url) == KEPT | {15}
    assert not {"events_2024_01", "events_2024_03"} & _partitions(events_url)
    _verified(audit)


def _open_transactions(url: str) -> int:
    """How many other sessions on the test's database are in a transaction."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("ending", ["stop", "error"])
def test_a_stop_or_an_error_mid_drop_leaves_no_read_ahead_behind(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A stop request (SIGTERM, Ctrl-C) after January's drop, or an error while January is
    recorded, ends the run while February's keys are read ahead, its transaction open and its
    thread waiting on a full queue: the thread is gone, its transaction ended, and February
    still there."""
    _events_with_a_long_february(postgres_url, monkeypatch)
    events: list[str] = []

    class Log:
        def info(self, event: str, **fields: object) -> None:
            events.append(event)

        warning = error = info

    if ending == "stop":
        config = make_config(postgres_url, RULE)
        with open_stores(config, read_only=False) as store_for:
            the_plan = make_plan(config, config.rules, store_for, AS_OF)
            report = execute(
                the_plan,
                store_for,
                now=lambda: AS_OF,
                dry_run=False,
                hash_key=None,
                logger=Log(),
                stop_requested=lambda: "partition.dropped" in events,
            )
            assert report.outcomes[0].status == "stopped"
            left = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
            assert left == []
            assert _open_transactions(postgres_url) == 0
    else:

        def fail() -> None:
            _wait_for_lock(postgres_url, "events_2024_02")
            raise OSError("No space left on device")

        _while_recording(monkeypatch, "events_2024_01", fail)
        config = make_config(postgres_url, RULE, audit_directory=tmp_path / "audit")
        _, report = plan_and_run(config, AS_OF)
        assert report.outcomes[0].status != "ok"
        left = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
        assert left == []
        assert _open_transactions(postgres_url) == 0
    assert "events_2024_02" in _partitions(postgres_url)


def _january_dropped_after(monkeypatch: pytest.MonkeyPatch, then: Any = None) -> threading.Event:
    """Make January's drop (its lock, check and drop, in the drop thread) wait until February's
    first intent is written, then run ``then()`` after it; return the event February sets."""
    february = threading.Event()
    original = partitions.finish_partition

    def finish_partition(store: Any, selection: Any, recorded: Any, *args: Any) -> Any:
        if recorded.name == "events_2024_01":
            assert february.wait(30), "February was recorded while January was dropped"
            batch = original(store, selection, recorded, *args)
            if then is not None:
                then()
            return batch
        return original(store, selection, recorded, *args)

    monkeypatch.setattr(partitions, "finish_partition", finish_partition)
    _while_recording(monkeypatch, "events_2024_02", february.set)
    return february


def _entries(audit: Path) -> list[tuple[str, Any]]:
    return [
        (stored.content["type"], stored.content.get("partition") or stored.content.get("intent"))
        for stored in read_entries(audit)
        if stored.content["type"] in ("batch.intent", "batch.result")
    ]


def test_a_partition_is_recorded_while_the_one_before_is_dropped(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January's drop ends only once February's intent is written (the code before wrote
    January's result first, and would wait here forever): February is recorded while January
    is dropped. Each intent precedes its partition's drop, each result follows it, the trail
    verifies, and every row gone is named once."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    _january_dropped_after(monkeypatch)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    entries = _entries(audit)
    intents = {seq: name for seq, (kind, name) in enumerate(entries) if kind == "batch.intent"}
    january = next(seq for seq, name in intents.items() if name == "events_2024_01")
    february = next(seq for seq, name in intents.items() if name == "events_2024_02")
    january_result = next(
        seq for seq, (kind, _) in enumerate(entries) if kind == "batch.result" and seq > january
    )
    assert january < february < january_result
    assert not {"events_2024_01", "events_2024_02", "events_2024_03"} & _partitions(events_url)
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE
    )
    _verified(audit)


def test_a_drop_that_fails_after_its_commit_while_the_next_is_recorded(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """January's drop commits, then fails (a lost connection, say) while February is recorded:
    the rule fails; January's intent is settled by looking at the table (the partition is gone:
    committed), February's is rolled back (never dropped), nothing is claimed that is still
    there; the next run drops the rest, and every row gone is named exactly once."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)

    def lost() -> None:
        raise RuntimeError("connection lost after the commit")

    _january_dropped_after(monkeypatch, lost)
    _, failed = plan_and_run(config, AS_OF)
    assert failed.outcomes[0].status == "failed"
    assert "connection lost" in str(failed.outcomes[0].error)
    gone = set(ROWS) - _remaining(events_url)
    key = _key(audit)
    assert set(_claimed(audit)) == {record_leaf(key, "db", "events", (i, ROWS[i])) for i in gone}
    assert "events_2024_01" not in _partitions(events_url)
    assert "events_2024_02" in _partitions(events_url)
    monkeypatch.undo()
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert _remaining(events_url) == set(ROWS) - DUE
    claimed = _claimed(audit)
    assert sorted(claimed) == sorted(record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE)
    _verified(audit)


def test_a_failure_to_start_the_next_read_ends_the_read_of_the_partition_recorded(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """February's keys are being read ahead when its turn comes; starting March's read then
    fails (the connection dropped): the run fails, and February's read ends with it, its thread
    gone and its transaction (a lock on February) ended, rather than left to a daemon's next
    runs."""
    _events_with_a_long_february(postgres_url, monkeypatch)
    original_reading = partition_session.start_reading

    def start_reading(store: Any, selection: Any, name: str, *args: Any) -> Any:
        if name == "events_2024_03":
            _wait_for_lock(postgres_url, "events_2024_02")
            raise sa_exc.OperationalError(
                "SELECT", {}, Exception("server closed the connection unexpectedly")
            )
        return original_reading(store, selection, name, *args)

    monkeypatch.setattr(partition_session, "start_reading", start_reading)
    config = make_config(postgres_url, RULE, audit_directory=tmp_path / "audit")
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status != "ok"
    left = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    assert left == []
    assert _open_transactions(postgres_url) == 0
    assert "events_2024_02" in _partitions(postgres_url)


@pytest.mark.parametrize("server", ["postgres", "mariadb"])
def test_the_gil_is_handed_over_quickly_only_while_postgresql_partitions_are_dropped(
    postgres_url: str, mariadb_url: str, server: str
) -> None:
    """While PostgreSQL partitions are dropped, a thread waiting for the GIL (the read ahead,
    back from the server) waits at most 0.5 ms for the one hashing (the default is 5 ms); the
    interval before comes back when the drops end, after an error too, and nested sessions
    keep it short until the last one ends. MariaDB's drops leave it alone."""
    before = sys.getswitchinterval()
    short = handovers.SWITCH_INTERVAL_SECONDS
    config = make_config(postgres_url if server == "postgres" else mariadb_url, RULE)
    expected = short if server == "postgres" else before
    seen: list[float] = []

    def drop_and_fail(store: Any) -> None:
        with store.dropping_partitions():
            seen.append(sys.getswitchinterval())
            with store.dropping_partitions():
                seen.append(sys.getswitchinterval())
            seen.append(sys.getswitchinterval())
            raise RuntimeError("mid-drop")

    with open_stores(config, read_only=False) as store_for, pytest.raises(RuntimeError):
        drop_and_fail(store_for("db"))
    assert seen == pytest.approx([expected] * 3)
    assert sys.getswitchinterval() == before
