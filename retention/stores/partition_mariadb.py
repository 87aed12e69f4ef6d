"""MariaDB: a whole expired partition recorded, then checked and dropped under ``LOCK TABLES``
(stores/partitions.py).

MariaDB has no lock on one partition and commits before any DDL: in one snapshot, count the
partition's rows, due rows, held rows and a checksum of its keys, and record its keys; then
under ``LOCK TABLES`` count again (anything changed: nothing dropped) and ``ALTER TABLE … DROP
PARTITION`` (atomic DDL). That lock covers the whole table and grows with the partition's rows
(docs/operations.md).

The checksum (``KeysDigest``), SHA-256 and no secret: for keys read as one joined string (a
partition within one chunk), the SHA-256 of that string, taken by Python as it comes and by the
server's SHA2 of the same ``GROUP_CONCAT`` under the lock: one hash of the string, no expression
per row. For keys read in several chunks, or row by row (keys the server cannot spell, a server
without window functions), the server takes it in the keys' snapshot by the statement it runs
again under the lock: the keys split into buckets of about a chunk each by CRC32 of their text,
each bucket's count and the SHA2 of its keys joined (keys that are not integers or dates as
the hex digits of their bytes: a text key holding "," or "/" cannot pass for other keys). A
string the server cut (its limits) fails the check, never passes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from retention.errors import BatchConflict
from retention.runtime.faults import crash_point
from retention.selection import Selection
from retention.store_protocol import BeforeDrop
from retention.stores.partition_ahead import Ahead
from retention.stores.partition_catalog import (
    Partition,
    Partitioning,
    drop_statements,
    read_partitioning,
    upper_identity,
)
from retention.stores.partition_keys_mariadb import Checksum, KeysDigest, digest_buckets
from retention.stores.partition_records import (
    LOCK_TIMEOUT_MS,
    Dropped,
    Recorded,
    find_partition,
    record_keys,
    recorded_count,
)
from retention.stores.partition_survey import count_partition

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


def record_mariadb(
    store: SqlStore,
    selection: Selection,
    name: str,
    before_write: BeforeDrop | None,
    planned_rows: int,
    ahead: Ahead | None,
    chunk: int,
) -> Recorded:
    """In one snapshot, record the partition's keys (chunks of ``chunk``) and take their digest
    (as they are read, or by the server's pass): all of them due, or BatchConflict.
    Keys read ahead were read in a snapshot already ended: they are recorded after it."""
    with store.engine.connect() as connection:
        partitioning = read_partitioning(connection, selection.rule.table)
    partition = find_partition(store, selection, partitioning, name)
    assert partitioning is not None
    found = None
    if ahead is not None:
        found = next(ahead.reading)
        ahead.close()
    first: tuple[int, int, int, KeysDigest | None]
    if found is not None and found.checksum is not None:
        rows = recorded_count(found.keys, before_write, name, upper_identity(partition))
        first = (rows, rows, 0, KeysDigest(1, found.checksum))
    else:
        rows, first = _mariadb_in_turn(
            store, selection, partitioning, partition, before_write, planned_rows, chunk
        )
    if first[:3] != (rows, rows, 0):
        raise BatchConflict(
            f"partition {name!r}: {first[0] - first[1]:,} of {first[0]:,} rows are not due"
            if first[0] == rows
            else f"partition {name!r}: {rows:,} keys read, {first[0]:,} counted"
        )
    return Recorded(name, rows, partitioning, partition, first)


def finish_mariadb(
    store: SqlStore,
    selection: Selection,
    recorded: Recorded,
    before_lock: Callable[[], None] | None,
) -> Dropped:
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
    # The keys' digest in as many buckets as in their snapshot (one: the string read whole).
    digest: KeysDigest = recorded.counted[3]
    with store.write_connection() as connection:
        seconds = max(1, LOCK_TIMEOUT_MS // 1000)
        connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {seconds}")
        connection.exec_driver_sql(f"LOCK TABLES {locks}")
        locked = time.monotonic()
        try:
            again = count_partition(
                store, connection, selection, partitioning, partition, digest.buckets
            )
            if again[1:3] != (again[0], 0):
                raise BatchConflict(f"partition {name!r}: not every row in it is due now")
            if again != recorded.counted:
                raise BatchConflict(f"partition {name!r} changed while its keys were recorded")
            connection.exec_driver_sql(drop)
            crash_point("after_drop")
        finally:
            connection.exec_driver_sql("UNLOCK TABLES")
            connection.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
    return Dropped(recorded.rows, locked, locked)


def _mariadb_in_turn(
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    before_write: BeforeDrop | None,
    planned_rows: int,
    chunk: int,
) -> tuple[int, tuple[int, int, int, KeysDigest | None]]:
    """Keys not read ahead: in one snapshot, read and record them, and take their digest (as
    they are read whole, else by the server's pass in buckets of about ``chunk`` keys); return
    how many there were and the partition's rows, due rows, held rows and digest in that
    snapshot."""
    checksum = Checksum()
    snapshot = store.engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        # One snapshot for the keys and what they are checked against.
        rows = record_keys(
            connection,
            store,
            selection,
            partitioning,
            partition,
            before_write,
            chunk,
            checksum,
            rows=planned_rows,
            identity=upper_identity(partition),
        )
        if checksum.digest is not None:
            return rows, (rows, rows, 0, KeysDigest(1, checksum.digest))
        buckets = digest_buckets(rows, chunk)
        return rows, count_partition(store, connection, selection, partitioning, partition, buckets)


__all__ = ["finish_mariadb", "record_mariadb"]
