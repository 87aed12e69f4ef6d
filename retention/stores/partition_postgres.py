"""PostgreSQL: a whole expired partition recorded, then locked, checked and dropped
(stores/partitions.py).

In one snapshot, fingerprint the partition's row versions (their count and the sum of a hash of
each ``xmin``) and record its keys; then one transaction locks the partition in ``SHARE`` mode
(no row can arrive in, leave or change in it, and it cannot be detached or attached elsewhere,
until the COMMIT; readers go on), reads its range again from the catalog, fingerprints its row
versions again and counts the rows not due (any difference: nothing is dropped), then ``DETACH
PARTITION`` and ``DROP TABLE`` and COMMIT, all or nothing. A row written since the snapshot is a
row version whose ``xmin`` no row of the snapshot has. The lock is not held while the keys are
recorded; the parent's ``ACCESS EXCLUSIVE`` lock is held from the DETACH to the COMMIT only.

``DETACH PARTITION CONCURRENTLY`` is not used: it cannot run in a transaction, so the partition
would sit detached (its rows out of the table, not yet dropped, not yet in the trail as gone)
between two transactions, and it refuses a table with a default partition. The plain DETACH
takes the parent's ACCESS EXCLUSIVE lock only from the DETACH to the COMMIT (the DROP of a table
nobody else can see any more), and waits for it, and for the partition's lock, at most
``LOCK_TIMEOUT_MS``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, func, literal_column, select, text
from sqlalchemy import table as sql_table

from retention.errors import BatchConflict
from retention.runtime.faults import crash_point
from retention.selection import Selection
from retention.store_protocol import BeforeDrop
from retention.stores.partition_ahead import (
    Ahead,
    PostgresSnapshot,
    qualified_name,
    snapshot_identity,
    snapshot_xmin,
    xmin_fingerprint,
)
from retention.stores.partition_catalog import (
    Partition,
    Partitioning,
    drop_statements,
    in_partition,
    read_partitioning,
    standing,
    stands_as_read,
)
from retention.stores.partition_key_spelling import spelled_chunks
from retention.stores.partition_records import (
    LOCK_TIMEOUT_MS,
    Dropped,
    Recorded,
    find_partition,
    record_keys,
    recorded_count,
)
from retention.stores.partition_survey import due_by_clock_range, not_due

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


def record_postgres(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    ahead: Ahead | None,
    chunk: int,
) -> Recorded:
    """In one snapshot (REPEATABLE READ), fingerprint the partition's row versions and read and
    record its keys (chunks of ``chunk``); that snapshot ends before anything is locked."""
    if ahead is not None:
        snapshot = next(ahead.reading)
        if find_partition(store, selection, snapshot.partitioning, name) != snapshot.partition:
            raise BatchConflict(f"partition {name!r} is no longer wholly expired")
        chunks = spelled_chunks(ahead.reading, chunk)
        rows = recorded_count(chunks, before_write, name, snapshot.identity)
        # Its snapshot ends here: the DETACH would wait for its lock.
        ahead.close()
    else:
        snapshot, rows = _postgres_in_turn(store, selection, name, before_write, chunk)
    before = snapshot.fingerprint()
    if rows != before[0]:
        raise BatchConflict(f"partition {name!r}: {rows:,} keys read, {before[0]:,} counted")
    return Recorded(
        name, rows, snapshot.partitioning, snapshot.partition, tuple(before), snapshot.reference
    )


def finish_postgres(store: SqlStore, selection: Selection, recorded: Recorded) -> Dropped:
    """In one transaction lock the partition (SHARE), check that it is still the partition
    recorded (``_check_standing``), that its row versions are those of the keys' snapshot and
    all due (``_versions``), detach and drop it. The lock is not held while the keys are
    recorded; the parent's own lock is taken only by the DETACH (docs/operations.md)."""
    rule = selection.rule
    name, partitioning, partition = recorded.name, recorded.partitioning, recorded.partition
    with store.write_connection() as connection, connection.begin():
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        # SHARE: writers into the partition wait (inserts, updates, deletes, a DETACH or an
        # ATTACH elsewhere); readers go on.
        qualified = qualified_name(store.engine.dialect, partition)
        connection.exec_driver_sql(f"LOCK TABLE {qualified} IN SHARE MODE")
        locked = time.monotonic()
        _check_standing(connection, rule.table, qualified, partition)
        *after, kept = connection.execute(
            _versions(store, selection, partitioning, partition, recorded.reference)
        ).one()
        if kept:
            raise BatchConflict(f"partition {name!r}: not every row in it is due now")
        if tuple(after) != recorded.counted:
            raise BatchConflict(f"partition {name!r} changed while its keys were recorded")
        detach, drop = drop_statements(store.engine.dialect, rule.table, partition)
        detached = time.monotonic()
        connection.exec_driver_sql(detach)
        crash_point("after_detach")
        connection.exec_driver_sql(drop)
        crash_point("after_drop")
    return Dropped(recorded.rows, locked, detached)


def _check_standing(
    connection: Connection, table: str, qualified: str, partition: Partition
) -> None:
    """Under the partition's lock (nobody can detach, attach, rename or drop it until the
    COMMIT), read again what the catalog says of it, in one statement: the same relation (its
    OID), still a partition of the table, with the same bound, and no foreign key referencing
    the table; else BatchConflict. Whether it is still wholly expired and allowed follows from
    these and the rule: the table's partition key, the rule and the partition's kind (a leaf)
    cannot change under the same OID, and its owner is checked by the DETACH itself (a
    refusal: BatchConflict). A key created since the plan is seen here: creating it takes a
    lock that conflicts with this one, so it either committed before or waits for the COMMIT.
    The table's whole partitioning is not read again (six statements under the lock)."""
    found = standing(connection, table, qualified, references=True)
    if found is None or not stands_as_read(found, partition):
        raise BatchConflict(
            f"partition {partition.name!r} was changed while its keys were recorded"
        )
    if found.referenced:
        raise BatchConflict(f"partition {partition.name!r}: a foreign key references the table now")


def _versions(
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    reference: int,
) -> Any:
    """Under the partition's lock: the query of its row versions' fingerprint
    (``xmin_fingerprint``) and how many of its rows are not due. The same count and sum as in
    the keys' snapshot: nothing was written into the partition since. Where the rule's due
    rows are a range of its clock (``due_by_clock_range``), the fingerprint is read from the
    partition itself and the rows not due are counted by the negated range through the table,
    which the server prunes to nothing for a partition wholly expired (85,000 rows: about 15
    ms against 35-130 ms with the rule's predicate tested on every row through the table)."""
    table = store.table(selection.rule.table)
    dialect = store.engine.dialect.name
    count, summed = xmin_fingerprint(reference)
    if due_by_clock_range(store, selection):
        kept = select(func.count()).select_from(table).where(not_due(store, selection))
        own = sql_table(partition.name, schema=partition.schema)
        return select(
            literal_column(count),
            literal_column(summed),
            in_partition(kept, table, partitioning, partition, dialect).scalar_subquery(),
        ).select_from(own)
    query = select(
        literal_column(count),
        literal_column(summed),
        func.coalesce(func.sum(case((store.predicate(selection), 0), else_=1)), 0),
    ).select_from(table)
    return in_partition(query, table, partitioning, partition, dialect)


def _postgres_in_turn(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    chunk: int,
) -> tuple[PostgresSnapshot, int]:
    """Keys the server cannot spell (or a server before 14): in one snapshot, fingerprint the
    partition's row versions, read its keys through a cursor and record them; return the
    snapshot and how many keys there were."""
    with store.engine.connect() as connection:
        partitioning = read_partitioning(connection, selection.rule.table)
    partition = find_partition(store, selection, partitioning, name)
    assert partitioning is not None
    qualified = qualified_name(store.engine.dialect, partition)
    snapshot = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        reference = snapshot_xmin(connection)
        count, summed = xmin_fingerprint(reference)
        before = tuple(connection.execute(text(f"SELECT {count}, {summed} FROM {qualified}")).one())
        identity = snapshot_identity(connection, selection.rule.table, partition)
        rows = record_keys(
            connection,
            store,
            selection,
            partitioning,
            partition,
            before_write,
            chunk,
            identity=identity,
        )
    return PostgresSnapshot(partitioning, partition, reference, before, identity), rows


__all__ = ["finish_postgres", "record_postgres"]
