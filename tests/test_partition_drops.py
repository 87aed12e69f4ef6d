"""How a whole partition is dropped (issue 15): its keys read once and recorded before its lock is
taken, one count under the lock, and never a row dropped that the trail does not name."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, literal_column, text
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from retention.audit.entries import read_entries, read_leaves
from retention.audit.leaves import record_leaf
from retention.audit.recorder import TrailRecorder
from retention.stores import partition_keys_mariadb, partition_session, partitions
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


@pytest.fixture(params=["postgres", "mariadb"])
def events_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    create_events(url)
    return url


def test_the_partitions_lock_is_not_held_while_its_keys_are_recorded(
    events_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Recording a partition's keys (here made to take 3 s) happens before its lock is
    taken: the lock covers the check and the drop only (the code of 0e397fe held PostgreSQL's
    partition lock through the recording: writers into it waited that long)."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    _while_recording(monkeypatch, "events_2024_02", lambda: time.sleep(3))
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    locks = {line["partition"]: line for line in logs if line["event"] == "partition.locks"}
    assert "events_2024_02" in locks
    for line in locks.values():
        assert line["partition_lock_seconds"] < 3
    assert "events_2024_02" not in _partitions(events_url)


def test_a_row_written_into_the_partition_while_it_is_recorded_is_never_dropped_unnamed(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A due row inserted into a partition while its keys are recorded goes in (the partition
    is not locked yet); the check under the lock sees it (PostgreSQL: a row version written
    since the keys' snapshot; MariaDB: the count): nothing is dropped, the partition's rows go
    by row batches, every row gone is named in the trail, and every row named is gone."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    writer: list[threading.Thread] = []

    def insert_meanwhile() -> None:
        thread = threading.Thread(target=_insert_late_row, args=(events_url, None))
        thread.start()
        writer.append(thread)
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
    """Dropping a partition reads its keys and counts it no more than it must, with no key
    cast or hashed on PostgreSQL: there, one plain pass over its row versions under the lock
    (in the keys' snapshot, the scans that read its keys through the driver, unseen here, count
    them too: no pass of its own any more); on MariaDB one count, under the lock, with one
    digest of its keys joined, no hash per key (the keys read ahead: their digest taken by
    Python as they come; b2c58e7 summed a keyed MD5 of every key, in the read and under the
    lock). The code before that counted it twice on both, each time with a checksum of every
    key's text."""
    config = make_config(events_url, RULE)
    during: list[str] = []
    original = partition_session.dropping_partitions

    @contextmanager
    def dropping_partitions(*args: Any, **kwargs: Any) -> Iterator[Any]:
        # The whole of the drops: the next partition's keys are read while one is dropped.
        first = len(captured_statements)
        try:
            with original(*args, **kwargs) as drop:
                yield drop
        finally:
            during.extend(captured_statements[first:])

    monkeypatch.setattr(partition_session, "dropping_partitions", dropping_partitions)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    drops = [statement for statement in during if "PARTITION" in statement and "ALTER" in statement]
    assert len(drops) == 3
    counts = [
        statement
        for statement in during
        if "count(" in statement.lower()
        and ("from events" in statement.lower() or "from public.events" in statement.lower())
    ]
    postgres = events_url.startswith("postgresql")
    assert len(counts) == 3
    if postgres:
        assert not [statement for statement in during if "hashtextextended" in statement]
        assert not [statement for statement in during if "AS VARCHAR" in statement]
    else:
        assert all("SHA2(GROUP_CONCAT(" in statement for statement in counts)
        assert not [statement for statement in during if "md5(" in statement.lower()]


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


def _update(url: str, statement: str) -> str:
    """Run one UPDATE from another session; return "updated"."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
        return "updated"
    finally:
        engine.dispose()


# Row 12, narrowed to February's partition: an UPDATE on the parent that PostgreSQL cannot narrow
# locks every partition, January's too, whose drop runs while February is recorded: it waits
# for January's lock, and January's DETACH for it (lock_timeout: January kept).
_ROW_12 = "id = 12 AND logged_at = '2024-02-10 00:00:00'"


def _rekey(url: str) -> str:
    """Give row 12 (February 2024) the id LATE_ID: the partition keeps as many rows, all due,
    one key changed."""
    return _update(url, f"UPDATE events SET id = {LATE_ID} WHERE {_ROW_12}")


def test_a_key_changed_while_the_partition_is_recorded_is_never_dropped_unnamed(
    events_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key rewritten in the partition while its keys are recorded (the same number of rows,
    all due): PostgreSQL sees a row version written since the keys' snapshot, MariaDB a
    digest of the keys (taken as they were read) unlike the one under the lock: nothing
    dropped, the rows go by row batches, each named as it is (the new key)."""
    audit = tmp_path / "audit"
    config = make_config(events_url, RULE, audit_directory=audit)
    attempts = _while_recording(monkeypatch, "events_2024_02", lambda: _rekey(events_url))
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["updated"]
    rows = dict(ROWS)
    rows[LATE_ID] = rows.pop(12)
    assert "events_2024_02" in _partitions(events_url), "not dropped"
    assert _remaining(events_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, rows[i])) for i in set(rows) - KEPT
    )
    _verified(audit)


def test_postgres_keeps_a_partition_written_into_while_it_was_recorded(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row rewritten without changing its key or the partition's count (a note set) while
    the keys are recorded: PostgreSQL's check is by row version, so even that write keeps the
    partition from the drop (its rows go by row batches, each named)."""
    create_events(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, RULE, audit_directory=audit)
    statement = f"UPDATE events SET note = 'seen' WHERE {_ROW_12}"
    attempts = _while_recording(
        monkeypatch, "events_2024_02", lambda: _update(postgres_url, statement)
    )
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["updated"]
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_2024_02"]
    assert "changed while its keys were recorded" in kept[0]["reason"]
    assert _remaining(postgres_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE
    )
    _verified(audit)


def test_mariadb_text_keys_are_read_row_by_row_and_counted_in_the_same_snapshot(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text key column cannot come joined (a comma could be in it): those keys come row by
    row, and the partition is counted, digest included, in the keys' own snapshot; a row
    inserted while they are recorded is seen under the lock, and nothing is dropped."""
    engine = create_engine(mariadb_url)
    rows = {f"a,{i}": datetime(2024, 1, 5 + i) for i in range(1, 6)}
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (code varchar(20) NOT NULL, logged_at datetime NOT NULL, "
                "PRIMARY KEY (code, logged_at)) PARTITION BY RANGE COLUMNS (logged_at) "
                "(PARTITION events_2024_01 VALUES LESS THAN ('2024-02-01'), "
                "PARTITION events_2024_02 VALUES LESS THAN ('2024-03-01'), "
                "PARTITION events_max VALUES LESS THAN (MAXVALUE))"
            )
        )
        connection.execute(
            text("INSERT INTO events (code, logged_at) VALUES (:code, :at)"),
            [{"code": code, "at": at} for code, at in rows.items()]
            + [{"code": f"b,{i}", "at": datetime(2024, 2, 5)} for i in range(3)],
        )
    engine.dispose()
    late = _while_recording(
        monkeypatch,
        "events_2024_02",
        lambda: _update(
            mariadb_url, "INSERT INTO events (code, logged_at) VALUES ('late', '2024-02-06')"
        ),
    )
    audit = tmp_path / "audit"
    rule = RULE.replace('key = ["id", "logged_at"]', 'key = ["code", "logged_at"]')
    config = make_config(mariadb_url, rule, audit_directory=audit)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert late == ["updated"]
    assert "events_2024_01" not in _partitions(mariadb_url), "dropped whole"
    kept = [line["partition"] for line in logs if line["event"] == "partition.kept"]
    assert kept == ["events_2024_02"], "the insert was seen"
    assert report.outcomes[0].deleted == 9
    key = _key(audit)
    dropped = [
        stored.content
        for stored in read_entries(audit)
        if stored.content["type"] == "batch.intent"
        and stored.content.get("partition") == "events_2024_01"
    ]
    leaves = {leaf for entry in dropped for leaf in read_leaves(audit, entry["seq"])}
    assert leaves == {record_leaf(key, "db", "events", (c, at)) for c, at in rows.items()}
    _verified(audit)


def test_mariadb_without_window_functions_reads_the_keys_row_by_row(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses the joined read (no ROW_NUMBER() OVER (): MySQL before 8.0,
    MariaDB before 10.2; here its statement made unreadable) still gets its partitions dropped,
    each key read row by row and recorded."""
    monkeypatch.setattr(
        partition_keys_mariadb, "_row_number", lambda: literal_column("ROW_NUMBER() OVER (")
    )
    create_events(mariadb_url)
    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert _remaining(mariadb_url) == KEPT
    assert not {"events_2024_01", "events_2024_02", "events_2024_03"} & _partitions(mariadb_url)
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE
    )
    _verified(audit)


def _crc32_twins(text_of: Any, taken: set[int]) -> tuple[int, int]:
    """Two new ids of February 2024 whose keys' CRC32s add up to those of rows 12 and 13 (the
    keys as MariaDB spells them, ``text_of(id)``): found by a table of one id's CRC32s."""
    target = zlib.crc32(text_of(12).encode()) + zlib.crc32(text_of(13).encode())
    candidates = range(100_000, 400_000)
    by_crc = {zlib.crc32(text_of(i).encode()): i for i in candidates if i not in taken}
    for first in candidates:
        second = by_crc.get(target - zlib.crc32(text_of(first).encode()))
        if second is not None and second != first and first not in taken:
            return first, second
    raise AssertionError("no ids found")


def test_mariadb_keys_swapped_for_keys_of_the_same_crc32_sum_are_seen_under_the_lock(
    mariadb_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows 12 and 13 of February deleted and two due rows inserted in their place, whose keys'
    CRC32s add up to the same (the partition keeps its count and its CRC32 sum), while its keys
    are recorded: the check under the lock still sees them (the code of 99eba59 summed CRC32,
    dropped the partition and the two new rows unnamed in the trail). Nothing dropped; the
    rows go by row batches, each named."""
    create_events(mariadb_url)
    at = ROWS[12]
    assert ROWS[13] == at

    def text_of(key: int) -> str:
        return f"{key}|{at:%Y-%m-%d %H:%M:%S}"

    first, second = _crc32_twins(text_of, set(ROWS))
    engine = create_engine(mariadb_url)
    try:
        with engine.connect() as connection:
            # The keys' texts as the server spells and sums them: the same sum.
            sums = [
                connection.execute(
                    text(
                        f"SELECT CRC32(CONCAT_WS('|', {a}, :at)) + CRC32(CONCAT_WS('|', {b}, :at))"
                    ),
                    {"at": at},
                ).scalar_one()
                for a, b in ((12, 13), (first, second))
            ]
    finally:
        engine.dispose()
    assert sums[0] == sums[1]
    swap = (
        "DELETE FROM events WHERE id IN (12, 13) AND logged_at = '2024-02-10 00:00:00'; "
        f"INSERT INTO events (id, logged_at) VALUES ({first}, '2024-02-10'), "
        f"({second}, '2024-02-10')"
    )

    def swapped() -> str:
        for statement in swap.split("; "):
            _update(mariadb_url, statement)
        return "swapped"

    audit = tmp_path / "audit"
    config = make_config(mariadb_url, RULE, audit_directory=audit)
    attempts = _while_recording(monkeypatch, "events_2024_02", swapped)
    with capture_logs() as logs:
        _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert attempts == ["swapped"]
    kept = [line for line in logs if line["event"] == "partition.kept"]
    assert [line["partition"] for line in kept] == ["events_2024_02"]
    assert "events_2024_02" in _partitions(mariadb_url), "not dropped"
    rows = {key: value for key, value in ROWS.items() if key not in (12, 13)}
    rows |= {first: at, second: at}
    assert _remaining(mariadb_url) == KEPT
    key = _key(audit)
    assert sorted(_claimed(audit)) == sorted(
        record_leaf(key, "db", "events", (i, rows[i])) for i in set(rows) - KEPT
    )
    _verified(audit)
