"""How a whole partition is dropped (issue 15): its rows read once, under the partition's lock on
PostgreSQL, and never a row dropped that the trail does not name."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc

from retention.audit.entries import read_entries, read_leaves
from retention.audit.leaves import record_leaf
from retention.audit.recorder import TrailRecorder
from retention.stores import partitions
from tests.support import make_config, plan_and_run
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

# A row of February 2024: due, in a partition the run drops whole.
LATE_ID, LATE_AT = 999, datetime(2024, 2, 11)


def _key(audit: Path) -> bytes:
    return (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()


def _insert_late_row(url: str, lock_timeout_ms: int | None) -> str:
    """Insert LATE_ID into events from another session; return "inserted" or, when it could
    not have the partition's lock within ``lock_timeout_ms``, "lock timeout"."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if lock_timeout_ms is not None:
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            connection.execute(
                text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
                {"id": LATE_ID, "at": LATE_AT},
            )
        return "inserted"
    except sa_exc.OperationalError as error:
        if "lock timeout" in str(error.orig):
            return "lock timeout"
        raise
    finally:
        engine.dispose()


def _while_recording(
    monkeypatch: pytest.MonkeyPatch, partition_name: str, action: Any
) -> list[Any]:
    """Run ``action()`` once, as the first intent of that partition is recorded (its keys
    read, the partition not dropped yet); return the list its result goes into."""
    results: list[Any] = []
    original = TrailRecorder.intent

    def intent(self: TrailRecorder, rule_plan: Any, keys: Any, *args: Any, **kwargs: Any) -> int:
        partition = args[0] if args else kwargs.get("partition")
        if partition == partition_name and not results:
            results.append(action())
        return original(self, rule_plan, keys, *args, **kwargs)

    monkeypatch.setattr(TrailRecorder, "intent", intent)
    return results


def test_postgres_holds_the_partitions_lock_while_its_keys_are_recorded(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys are read and recorded under the partition's SHARE lock: a write into it waits
    (here it gives up after 200 ms), so the rows recorded are the rows dropped, with no count
    of the partition before or after (the code before this read it three times and let the
    write in, then found the partition changed and left it to row batches)."""
    create_events(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, RULE, audit_directory=audit)
    attempts = _while_recording(
        monkeypatch, "events_2024_02", lambda: _insert_late_row(postgres_url, 200)
    )
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["lock timeout"]
    assert "events_2024_02" not in _partitions(postgres_url), "dropped whole"
    assert _remaining(postgres_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE
    )
    _verified(audit)


@pytest.fixture(params=["postgres", "mariadb"])
def events_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    create_events(url)
    return url


def test_a_row_written_into_the_partition_while_it_is_recorded_is_never_dropped_unnamed(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due row inserted into a partition while its keys are recorded: on PostgreSQL the
    insert waits for the partition's lock, and, waiting, holds the table's lock that the DETACH
    needs: the DETACH gives up after 250 ms; on MariaDB it goes in at once and the count under
    the lock sees it. Either way nothing is dropped, the partition's rows go by row batches,
    every row gone is named in the trail, and every row named is gone."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    writer: list[threading.Thread] = []

    postgres = events_url.startswith("postgresql")

    def insert_meanwhile() -> None:
        thread = threading.Thread(target=_insert_late_row, args=(events_url, None))
        thread.start()
        writer.append(thread)
        if postgres:
            _until_waiting(events_url, "events_2024_02")
        else:
            thread.join(30)

    _while_recording(monkeypatch, "events_2024_02", insert_meanwhile)
    _, report = plan_and_run(config, AS_OF)
    writer[0].join(30)
    assert not writer[0].is_alive()
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    rows = ROWS | {LATE_ID: LATE_AT}
    gone = set(rows) - _remaining(events_url)
    key = _key(audit)
    claimed = _claimed(audit)
    assert len(claimed) == len(set(claimed)), "each row named once"
    assert sorted(claimed) == sorted(record_leaf(key, "db", "events", (i, rows[i])) for i in gone)
    assert set(DUE) <= gone
    assert "events_2024_02" in _partitions(events_url), "not dropped: its rows went by batches"
    _verified(audit)


def _until_waiting(url: str, partition: str) -> None:
    """Return once a session waits for a lock on that PostgreSQL partition."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            for _ in range(300):
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted "
                        "AND relation = to_regclass(:partition)"
                    ),
                    {"partition": partition},
                ).scalar()
                if waiting:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("the insert never waited for the partition's lock")


@pytest.fixture
def captured_statements() -> Iterator[list[str]]:
    statements: list[str] = []

    def before(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def test_a_drop_reads_the_partitions_rows_once(
    events_url: str, monkeypatch: pytest.MonkeyPatch, captured_statements: list[str]
) -> None:
    """Dropping a partition reads its keys, and counts it only where it must: PostgreSQL not at
    all (the check that every row is due stops at the first one that is not), MariaDB once,
    under the lock (the keys' checksum is summed as they are read). The code before counted
    it twice on both, before the keys and under the lock."""
    config = make_config(events_url, RULE)
    during: list[str] = []
    original = partitions.drop_partition

    def drop_partition(*args: Any, **kwargs: Any) -> Any:
        first = len(captured_statements)
        try:
            return original(*args, **kwargs)
        finally:
            during.extend(captured_statements[first:])

    monkeypatch.setattr(partitions, "drop_partition", drop_partition)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    drops = [statement for statement in during if "PARTITION" in statement and "ALTER" in statement]
    assert len(drops) == 3
    counts = [
        statement
        for statement in during
        if "count(" in statement.lower() and "from events" in statement.lower()
    ]
    assert len(counts) == (0 if events_url.startswith("postgresql") else 3)


def test_mariadb_reads_fractional_second_keys_exactly(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MariaDB's keys come joined in one string per chunk: a DATETIME(3) key reads back as
    the datetime the driver gives (the leaves are those of the keys), across chunk bounds."""
    monkeypatch.setattr(partitions, "CHUNK", 3)
    engine = create_engine(mariadb_url)
    at = [
        datetime(2024, 1, 5, 10, 20, 30, 123000),
        datetime(2024, 1, 6),
        datetime(2024, 1, 7, 0, 0, 0, 500000),
    ]
    rows = {i: at[i % 3] for i in range(1, 8)}
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (id bigint NOT NULL, logged_at datetime(3) NOT NULL, "
                "PRIMARY KEY (id, logged_at)) PARTITION BY RANGE COLUMNS (logged_at) "
                "(PARTITION events_2024_01 VALUES LESS THAN ('2024-02-01'), "
                "PARTITION events_max VALUES LESS THAN (MAXVALUE))"
            )
        )
        connection.execute(
            text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": value} for key, value in rows.items()],
        )
    engine.dispose()
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert report.outcomes[0].deleted == 7
    assert "events_2024_01" not in _partitions(mariadb_url)
    intents = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.intent"
    ]
    assert sorted(entry["selected"] for entry in intents) == [1, 3, 3]
    leaves = {leaf for entry in intents for leaf in read_leaves(audit, entry["seq"])}
    key = _key(audit)
    assert leaves == {record_leaf(key, "db", "events", (i, rows[i])) for i in rows}
    _verified(audit)


def _rekey(url: str, lock_timeout_ms: int | None) -> str:
    """Give row 12 (February 2024) the id LATE_ID from another session: the partition keeps as
    many rows, all due, one key changed; return "updated" or "lock timeout"."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if lock_timeout_ms is not None:
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            connection.execute(text("UPDATE events SET id = :id WHERE id = 12"), {"id": LATE_ID})
        return "updated"
    except sa_exc.OperationalError as error:
        if "lock timeout" in str(error.orig):
            return "lock timeout"
        raise
    finally:
        engine.dispose()


def test_a_key_changed_while_the_partition_is_recorded_is_never_dropped_unnamed(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key rewritten in the partition while its keys are recorded (the same number of rows,
    all due): PostgreSQL's lock refuses the write; MariaDB lets it in, and the checksum of the
    keys, summed as they were read, differs from the one under the lock: nothing dropped."""
    postgres = events_url.startswith("postgresql")
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    attempts = _while_recording(
        monkeypatch, "events_2024_02", lambda: _rekey(events_url, 200 if postgres else None)
    )
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == (["lock timeout"] if postgres else ["updated"])
    rows = dict(ROWS)
    if not postgres:
        rows[LATE_ID] = rows.pop(12)
    kept = "events_2024_02" in _partitions(events_url)
    assert kept == (not postgres), "MariaDB: not dropped, its rows went by batches"
    assert _remaining(events_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, rows[i])) for i in set(rows) - KEPT
    )
    _verified(audit)
