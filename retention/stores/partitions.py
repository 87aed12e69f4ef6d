"""Whole expired partitions of a partitioned PostgreSQL or MariaDB table, dropped whole.

A partition goes whole only when its whole range is expired (its upper bound on the rule's
clock is at or before the cutoff), the rule allows it (``partition_fallback``), no foreign key
references the table, and every row in it is due: counted with the rule's own predicate, so a
``where`` condition, a period override or a legal hold that keeps even one row sends the whole
partition to the usual row batches.

Dropping is audited like a batch: every record's key is read and recorded (one trail intent,
leaves and intent fsynced, per chunk of ``CHUNK`` keys; memory is bounded by the chunk) before
anything is dropped, and nothing is dropped unless the keys recorded are exactly its rows.

- PostgreSQL: in one snapshot, fingerprint the partition's row versions (their count and the
  sum of a hash of each ``xmin``) and record its keys; then one transaction locks the partition
  in ``SHARE`` mode (no row can arrive in, leave or change in it, and it cannot be detached or
  attached elsewhere, until the COMMIT; readers go on), reads its range again from the catalog,
  fingerprints its row versions again and counts the rows not due (any difference: nothing is
  dropped), then ``DETACH PARTITION`` and ``DROP TABLE`` and COMMIT, all or nothing. A row
  written since the snapshot is a row version whose ``xmin`` no row of the snapshot has. The
  lock is not held while the keys are recorded; the parent's ``ACCESS EXCLUSIVE`` lock is held
  from the DETACH to the COMMIT only.
- MariaDB, which has no lock on one partition and commits before any DDL: in one snapshot,
  count the partition's rows, due rows, held rows and a checksum of its keys, and record its
  keys; then under ``LOCK TABLES`` count again (anything changed: nothing dropped) and ``ALTER
  TABLE … DROP PARTITION`` (atomic DDL). That lock covers the whole table and grows with the
  partition's rows (docs/operations.md).

Partitions go one after the other, overlapped (``dropping_partitions``): one is dropped in a
thread while the next is recorded, and the one after is read (in its own snapshot, checked the
same way: stores/partition_ahead.py).

A conflict (BatchConflict) drops nothing: the partition's rows go by row batches. The results
are written after the commit; a crash before it leaves intents without results, which the
reconcile settles by whether the partition still exists (``SqlStore.partition_exists``): the
very partition whose keys were recorded (its identity, partition_catalog), not one created
since under its name.

PostgreSQL's ``DETACH PARTITION CONCURRENTLY`` is not used: it cannot run in a transaction, so
the partition would sit detached (its rows out of the table, not yet dropped, not yet in the
trail as gone) between two transactions, and it refuses a table with a default partition. The
plain DETACH takes the parent's ACCESS EXCLUSIVE lock only from the DETACH to the COMMIT (the
DROP of a table nobody else can see any more), and waits for it, and for the partition's
lock, at most ``LOCK_TIMEOUT_MS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    case,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from retention.errors import BatchConflict
from retention.runtime.faults import crash_point
from retention.runtime.logging import get_logger
from retention.selection import Selection
from retention.store_protocol import Batch, BeforeDrop, Keys, SpelledKeys
from retention.stores.partition_ahead import (
    Ahead,
    PostgresSnapshot,
    qualified_name,
    snapshot_xmin,
    start_reading,
    xmin_fingerprint,
)
from retention.stores.partition_catalog import (
    Partition,
    Partitioning,
    drop_statements,
    in_partition,
    oid_identity,
    read_partitioning,
    upper_identity,
)
from retention.stores.partition_keys import Checksum, key_chunks, spelled_chunks
from retention.stores.partition_survey import (
    count_partition,
    expired_partitions,
    key_hash,
    table_fallback,
)

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# Keys per trail intent while a partition is streamed: what bounds memory (about 15 MB; the
# next partition's keys read ahead meanwhile hold at most as much again).
CHUNK = 100_000
# The longest the drop waits for its locks; the application waits at most this long behind it.
LOCK_TIMEOUT_MS = 250


@dataclass(frozen=True)
class Recorded:
    """A partition whose keys are recorded, not dropped yet: how many, the table's partitioning
    and the partition as they were read, and what the check under its lock compares with
    (PostgreSQL: the keys' snapshot's xmin and its row versions' count and sum; MariaDB: its
    rows, due rows, held rows and keys' checksum in that snapshot)."""

    name: str
    rows: int
    partitioning: Partitioning
    partition: Partition
    counted: tuple[Any, ...]
    reference: int = 0


@dataclass(frozen=True)
class _Dropped:
    """A partition dropped: its rows, and when its lock and the table's were taken."""

    rows: int
    partition_locked: float
    table_locked: float


def drop_partition(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    planned_rows: int = 0,
) -> Batch:
    """Given a store, a Selection, the name of a partition the plan found due and the rows the
    plan counted in it (0: unknown; only how its keys are read depends on it), record its keys
    (``before_write`` for each chunk, before anything is dropped) and drop it; return the rows
    dropped. BatchConflict when the partition is no longer wholly due or changed while its
    keys were recorded (nothing dropped: its rows go by row batches)."""
    recorded = record_partition(store, selection, name, before_write, planned_rows)
    return finish_partition(store, selection, recorded)


def record_partition(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    planned_rows: int = 0,
    ahead: Ahead | None = None,
) -> Recorded:
    """Given a store, a Selection, a partition the plan found due and the rows the plan counted
    in it, record its keys (``before_write`` for each chunk), read by ``ahead`` where already
    being read; return what its drop checks them against (``finish_partition``). BatchConflict
    when it is no longer wholly due or holds no row."""
    with store.reachable(), _conflicts(name):
        try:
            if ahead is None:
                ahead = start_reading(store, selection, name, planned_rows, CHUNK)
            if store.engine.dialect.name == "postgresql":
                return _record_postgres(store, selection, name, before_write, ahead)
            return _record_mariadb(store, selection, name, before_write, planned_rows, ahead)
        finally:
            if ahead is not None:
                ahead.close()


def finish_partition(
    store: SqlStore,
    selection: Selection,
    recorded: Recorded,
    before_lock: Callable[[], None] | None = None,
) -> Batch:
    """Given a partition whose keys are recorded (``record_partition``), lock it, check that it
    holds exactly the rows recorded, all due, and drop it (``before_lock`` called before the
    lock is taken); return the rows dropped. BatchConflict when anything changed (nothing is
    dropped: its rows go by row batches)."""
    name = recorded.name
    with store.reachable(), _conflicts(name):
        if store.engine.dialect.name == "postgresql":
            dropped = _finish_postgres(store, selection, recorded)
        else:
            dropped = _finish_mariadb(store, selection, recorded, before_lock)
    crash_point("after_commit")
    ended = time.monotonic()
    # What the application waits for: the table's lock (PostgreSQL: from the DETACH to the
    # COMMIT; MariaDB: the whole LOCK TABLES), and the partition's (PostgreSQL: writes into it
    # wait while its row versions are checked; MariaDB: the same LOCK TABLES).
    get_logger().info(
        "partition.locks",
        rule=selection.rule.name,
        partition=name,
        table_lock_seconds=round(ended - dropped.table_locked, 4),
        partition_lock_seconds=round(ended - dropped.partition_locked, 4),
    )
    return Batch((), done=dropped.rows, transaction_seconds=ended - dropped.partition_locked)


@contextmanager
def _conflicts(name: str) -> Iterator[None]:
    """A lock not free in time, or a drop the database refused: BatchConflict (nothing was
    dropped)."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        message = str(error.orig).lower()
        if "lock timeout" in message or "lock wait timeout" in message:
            raise BatchConflict(
                f"partition {name!r}: its lock was not free within {LOCK_TIMEOUT_MS} ms"
            ) from error
        if any(refusal in message for refusal in _REFUSALS):
            # A partition owned by another role than its table's: nothing was dropped.
            raise BatchConflict(
                f"partition {name!r}: the database refused the drop ({message.splitlines()[0]})"
            ) from error
        raise


def _record_keys(
    connection: Connection,
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    before_write: BeforeDrop | None,
    checksum: Checksum | None = None,
    rows: int = 0,
    identity: str | None = None,
) -> int:
    """Stream the partition's keys, each chunk of ``CHUNK`` recorded (``before_write``, with
    the partition's ``identity``); return how many there were. BatchConflict when there were
    none (nothing to record, nothing to drop). MariaDB: ``rows`` the rows the plan counted
    (within one chunk: read in one piece)."""
    rule = selection.rule
    table = store.table(rule.table)
    key_columns = store.key_columns(rule)
    keys_query = in_partition(
        select(*key_columns).select_from(table),
        table,
        partitioning,
        partition,
        store.engine.dialect.name,
    )
    # Closed before the transaction ends, whatever happens.
    with closing(key_chunks(connection, keys_query, key_columns, CHUNK, checksum, rows)) as chunks:
        return _recorded(chunks, before_write, partition.name, identity)


def _recorded(
    chunks: Iterable[Keys], before_write: BeforeDrop | None, name: str, identity: str | None
) -> int:
    """Record each chunk of a partition's keys (``before_write``, with the partition's
    ``identity``); return how many there were. BatchConflict when there were none (nothing to
    record, nothing to drop)."""
    streamed = 0
    for keys in chunks:
        if before_write is not None:
            before_write(keys, identity)
        streamed += keys.finish() if isinstance(keys, SpelledKeys) else len(keys)
    if not streamed:
        raise BatchConflict(f"partition {name!r} holds no row any more")
    return streamed


def _versions(
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    reference: int,
) -> Any:
    """PostgreSQL, under the partition's lock: the query of its row versions' fingerprint
    (``xmin_fingerprint``) and how many of its rows are not due. The same count and sum as in
    the keys' snapshot: nothing was written into the partition since."""
    table = store.table(selection.rule.table)
    count, summed = xmin_fingerprint(reference)
    query = select(
        literal_column(count),
        literal_column(summed),
        func.coalesce(func.sum(case((store.predicate(selection), 0), else_=1)), 0),
    ).select_from(table)
    return in_partition(query, table, partitioning, partition, store.engine.dialect.name)


def _find(
    store: SqlStore, selection: Selection, partitioning: Partitioning | None, name: str
) -> Partition:
    """The partition of that name, still wholly expired and allowed; else BatchConflict."""
    if partitioning is None:
        raise BatchConflict(f"table {selection.rule.table!r} is no longer partitioned")
    reason = table_fallback(selection, partitioning)
    if reason is not None:
        raise BatchConflict(f"partition {name!r}: {reason}")
    for partition in expired_partitions(store, selection, partitioning, []):
        if partition.name == name:
            return partition
    raise BatchConflict(f"partition {name!r} is gone or no longer wholly expired")


def _record_postgres(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    ahead: Ahead | None,
) -> Recorded:
    """In one snapshot (REPEATABLE READ), fingerprint the partition's row versions and read and
    record its keys; that snapshot ends before anything is locked."""
    if ahead is not None:
        snapshot = next(ahead.reading)
        if _find(store, selection, snapshot.partitioning, name) != snapshot.partition:
            raise BatchConflict(f"partition {name!r} is no longer wholly expired")
        with store.engine.connect() as connection:
            qualified = qualified_name(store.engine.dialect, snapshot.partition)
            identity = oid_identity(connection, qualified)
        rows = _recorded(spelled_chunks(ahead.reading, CHUNK), before_write, name, identity)
        # Its snapshot ends here: the DETACH would wait for its lock.
        ahead.close()
    else:
        snapshot, rows = _postgres_in_turn(store, selection, name, before_write)
    before = snapshot.versions
    if rows != before[0]:
        raise BatchConflict(f"partition {name!r}: {rows:,} keys read, {before[0]:,} counted")
    return Recorded(
        name, rows, snapshot.partitioning, snapshot.partition, tuple(before), snapshot.reference
    )


def _finish_postgres(store: SqlStore, selection: Selection, recorded: Recorded) -> _Dropped:
    """In one transaction lock the partition (SHARE), check that its row versions are those of
    the keys' snapshot and all due (``_versions``), detach and drop it. The lock is not held
    while the keys are recorded; the parent's own lock is taken only by the DETACH
    (docs/operations.md)."""
    rule = selection.rule
    name, partitioning, partition = recorded.name, recorded.partitioning, recorded.partition
    with store.write_connection() as connection, connection.begin():
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        # SHARE: writers into the partition wait (inserts, updates, deletes, a DETACH or an
        # ATTACH elsewhere); readers go on.
        qualified = qualified_name(store.engine.dialect, partition)
        connection.exec_driver_sql(f"LOCK TABLE {qualified} IN SHARE MODE")
        locked = time.monotonic()
        # Read again under the lock: the partition holds the same range as when it was read.
        if _find(store, selection, read_partitioning(connection, rule.table), name) != partition:
            raise BatchConflict(f"partition {name!r} was changed while its keys were recorded")
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
    return _Dropped(recorded.rows, locked, detached)


def _postgres_in_turn(
    store: SqlStore, selection: Selection, name: str, before_write: BeforeDrop | None
) -> tuple[PostgresSnapshot, int]:
    """PostgreSQL, keys the server cannot spell (or a server before 14): in one snapshot,
    fingerprint the partition's row versions, read its keys through a cursor and record them;
    return the snapshot and how many keys there were."""
    with store.engine.connect() as connection:
        partitioning = read_partitioning(connection, selection.rule.table)
    partition = _find(store, selection, partitioning, name)
    assert partitioning is not None
    qualified = qualified_name(store.engine.dialect, partition)
    snapshot = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        reference = snapshot_xmin(connection)
        count, summed = xmin_fingerprint(reference)
        before = tuple(connection.execute(text(f"SELECT {count}, {summed} FROM {qualified}")).one())
        identity = oid_identity(connection, qualified)
        rows = _record_keys(
            connection, store, selection, partitioning, partition, before_write, identity=identity
        )
    return PostgresSnapshot(partitioning, partition, reference, before), rows


def _record_mariadb(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    planned_rows: int,
    ahead: Ahead | None,
) -> Recorded:
    """In one snapshot, record the partition's keys and sum a checksum of them (as they are
    read, or by a count of the partition): all of them due, or BatchConflict. Keys read ahead
    were read in a snapshot already ended: they are recorded after it."""
    with store.engine.connect() as connection:
        partitioning = read_partitioning(connection, selection.rule.table)
    partition = _find(store, selection, partitioning, name)
    assert partitioning is not None
    found = None
    if ahead is not None:
        found = next(ahead.reading)
        ahead.close()
    if found is not None and found.checksum is not None:
        rows = _recorded(found.keys, before_write, name, upper_identity(partition))
        first = (rows, rows, 0, found.checksum)
    else:
        rows, first = _mariadb_in_turn(
            store, selection, partitioning, partition, before_write, planned_rows
        )
    if first[:3] != (rows, rows, 0):
        raise BatchConflict(
            f"partition {name!r}: {first[0] - first[1]:,} of {first[0]:,} rows are not due"
            if first[0] == rows
            else f"partition {name!r}: {rows:,} keys read, {first[0]:,} counted"
        )
    return Recorded(name, rows, partitioning, partition, first)


def _finish_mariadb(
    store: SqlStore,
    selection: Selection,
    recorded: Recorded,
    before_lock: Callable[[], None] | None,
) -> _Dropped:
    """Under LOCK TABLES count the partition (rows, due rows, held rows, the checksum):
    anything else than the keys recorded, all due, and nothing is dropped; else drop it.
    MariaDB has no lock on one partition, and a DDL statement commits the transaction before it
    starts (docs/operations.md)."""
    rule = selection.rule
    name, partitioning, partition = recorded.name, recorded.partitioning, recorded.partition
    quote = store.engine.dialect.identifier_preparer.quote
    # Every table the predicate reads must be locked too (a `where` through a join).
    others = sorted({join.table for join in rule.joins} - {rule.table})
    locks = ", ".join([f"{quote(rule.table)} WRITE"] + [f"{quote(name)} READ" for name in others])
    (drop,) = drop_statements(store.engine.dialect, rule.table, partition)
    if before_lock is not None:
        # The next partition's keys read ahead: its transaction ends before the lock (which
        # would wait for its metadata lock).
        before_lock()
    with store.engine.connect() as connection:
        # Read again once the drops before have ended: whether it is the table's first
        # partition now, which counts its rows not due apart (count_partition).
        now = read_partitioning(connection, rule.table)
    # Its lower bound is the partition's before it, if any is left: only its upper one stays.
    uppers = {} if now is None else {found.name: found.upper for found in now.partitions}
    if now is None or name not in uppers or uppers[name] != partition.upper:
        raise BatchConflict(f"partition {name!r} was changed while its keys were recorded")
    partitioning = now
    with store.write_connection() as connection:
        seconds = max(1, LOCK_TIMEOUT_MS // 1000)
        connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {seconds}")
        connection.exec_driver_sql(f"LOCK TABLES {locks}")
        locked = time.monotonic()
        try:
            again = count_partition(store, connection, selection, partitioning, partition)
            if again[1:3] != (again[0], 0):
                raise BatchConflict(f"partition {name!r}: not every row in it is due now")
            if again != recorded.counted:
                raise BatchConflict(f"partition {name!r} changed while its keys were recorded")
            connection.exec_driver_sql(drop)
            crash_point("after_drop")
        finally:
            connection.exec_driver_sql("UNLOCK TABLES")
            connection.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
    return _Dropped(recorded.rows, locked, locked)


def _mariadb_in_turn(
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    before_write: BeforeDrop | None,
    planned_rows: int,
) -> tuple[int, tuple[int, int, int, int]]:
    """MariaDB, keys not read ahead: in one snapshot, read and record them, and sum their
    checksum (as they are read, or by a count of the partition); return how many there were
    and the partition's rows, due rows, held rows and checksum in that snapshot."""
    # The keys' checksum, summed as they are read where the driver can (else counted apart).
    checksum = Checksum(key_hash(store, selection))
    snapshot = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        # One snapshot for the keys and what they are checked against.
        rows = _record_keys(
            connection,
            store,
            selection,
            partitioning,
            partition,
            before_write,
            checksum,
            rows=planned_rows,
            identity=upper_identity(partition),
        )
        if checksum.total is None:
            return rows, count_partition(store, connection, selection, partitioning, partition)
        return rows, (rows, rows, 0, int(checksum.total))


_REFUSALS = ("must be owner", "permission denied", "command denied")


__all__ = ["CHUNK", "Recorded", "drop_partition", "finish_partition", "record_partition"]
