"""The next partition's keys, read while the one before is recorded and dropped (issue 15).

Recording a partition (hashing its keys, writing and fsyncing its intent) is Python's work, its
reading the server's: done one after the other, each waits on the other. So while a partition
is recorded and dropped, a thread reads the next one's keys, in its own snapshot, and what it
reads is checked exactly as if it had been read in its turn: the checks under the lock compare
the partition with that snapshot (its row versions on PostgreSQL, its count and its keys'
checksum on MariaDB), so a row written into it since its snapshot, whenever, keeps it from the
drop (its rows go by row batches). Its intent is still written, and fsynced, in its turn, after
the result of the partition before: the trail's order, and what a crash leaves, are unchanged.

- PostgreSQL: the thread takes the partition's snapshot (REPEATABLE READ), fingerprints its
  row versions and spells its keys, piece by piece, at most ``CHUNK`` keys ahead of their
  recording (memory stays bounded). Every statement names the partition itself, never its
  parent: its transaction, open until its keys are recorded, then holds a lock on that
  partition only, which the DETACH of the one before (the parent's ACCESS EXCLUSIVE lock) does
  not wait for; through the parent it would, ``LOCK_TIMEOUT_MS``, then give up.
- MariaDB: the thread reads the partition's keys, joined into one string (``GROUP_CONCAT``)
  whose SHA-256 Python takes as it comes (the check under the lock compares SHA2 of the same
  string), and ends its transaction; the drop of the partition before waits for
  that (``Ahead.settle``) before it locks the table: an open transaction that read the table
  holds a metadata lock which LOCK TABLES … WRITE and DROP PARTITION wait for. Only a partition
  the plan counted within one chunk is read ahead (its keys held whole, one chunk); a larger
  one is read in its turn, in chunks, its transaction open while they are recorded.

Keys that the database cannot spell (``spellable``), and PostgreSQL before 14, are read in
their turn as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Dialect, Engine, select, text

from retention.errors import BatchConflict
from retention.selection import Selection
from retention.store_protocol import Keys
from retention.stores import partition_keys_postgres
from retention.stores.partition_catalog import (
    Partition,
    Partitioning,
    in_partition,
    standing,
    stands_as_read,
)
from retention.stores.partition_catalog import read_partitioning as read_catalog
from retention.stores.partition_key_spelling import spellable
from retention.stores.partition_keys import key_chunks
from retention.stores.partition_keys_mariadb import Checksum
from retention.stores.partition_keys_postgres import postgres_pieces
from retention.stores.read_ahead import ReadAhead

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# The name of a thread reading a partition's keys: this, then the partition's name.
THREAD_PREFIX = "retention-partition-keys "


@dataclass(frozen=True)
class PostgresSnapshot:
    """PostgreSQL: a partition as its keys' snapshot saw it: the table's partitioning, the
    partition, the snapshot's xmin (``reference``), its row versions' fingerprint (their
    count, the sum of a hash of each one's ``xmin``: ``xmin_fingerprint``) and its identity
    (``snapshot_identity``). Read ahead, the fingerprint is taken piece by piece with the
    keys, in the same scans: ``summed`` holds it once the last piece is read."""

    partitioning: Partitioning
    partition: Partition
    reference: int
    versions: tuple[Any, ...]
    identity: str
    summed: list[int] = field(default_factory=list)

    def fingerprint(self) -> tuple[Any, ...]:
        """The row versions' count and sum: read at once, or summed over the pieces of the
        keys (BatchConflict if they were not all read)."""
        if self.versions:
            return self.versions
        if len(self.summed) != 2:
            raise BatchConflict(f"partition {self.partition.name!r}: its keys were not all read")
        return tuple(self.summed)


@dataclass(frozen=True)
class MariadbKeys:
    """MariaDB: a partition's keys read in one snapshot, now ended, and the digest of their
    joined string (``Checksum.digest``; None when they did not come as one: then the partition
    is read again in its turn)."""

    keys: tuple[Keys, ...]
    checksum: str | None


@dataclass(frozen=True)
class Ahead:
    """A partition whose keys a thread is reading: on PostgreSQL its ``PostgresSnapshot``
    then the pieces of its spelled keys; on MariaDB one ``MariadbKeys``."""

    name: str
    reading: ReadAhead[Any]
    dialect: str

    def settle(self) -> None:
        """MariaDB: wait until the read is over and its transaction ended (no metadata lock
        left); PostgreSQL: nothing (its reads lock the partition only)."""
        if self.dialect != "postgresql":
            self.reading.wait()

    def close(self) -> None:
        """Stop the read, its transaction ended (what it read, if unused, is let go)."""
        self.reading.close()


def xmin_fingerprint(reference: int) -> tuple[str, str]:
    """PostgreSQL: the two columns of a fingerprint of a table's row versions, in SQL: how many,
    and the sum of a hash of each one's ``xmin`` (as its distance to the ``reference``
    transaction id, which age() gives exactly across wraparound; no key is cast or hashed). A
    row inserted or updated since a snapshot has an ``xmin`` that no row seen in that snapshot
    has (its transaction had not committed), and a row deleted leaves the count. The
    reference's own age is a scalar subquery, which the server computes once per statement (an
    InitPlan; age() is stable within it), not once per row: a quarter of the query's time on
    85,000 rows (7.1 -> 5.4 ms at best, load 5)."""
    distance = f"age(xmin)::bigint - (SELECT age(CAST('{int(reference)}' AS xid))::bigint)"
    return "count(*)", f"coalesce(sum(hashint8extended({distance}, 0)), 0)"


def qualified_name(dialect: Dialect, partition: Partition) -> str:
    """A partition's name, quoted, with its schema where the catalog gave one."""
    quote = dialect.identifier_preparer.quote
    name = quote(partition.name)
    return name if partition.schema is None else f"{quote(partition.schema)}.{name}"


def start_reading(
    store: SqlStore,
    selection: Selection,
    name: str,
    planned_rows: int,
    chunk: int,
    after: Future[Any] | None = None,
    catalog: Partitioning | None = None,
) -> Ahead | None:
    """Given a store, a Selection, a partition's name, the rows the plan counted in it and the
    keys per chunk, start reading its keys in a thread (on MariaDB once ``after``, the drop
    before, has ended; on PostgreSQL, the partition as ``catalog`` has it, where the table's
    partitioning was read already); None where they are read in their turn (keys the database
    cannot spell, PostgreSQL before 14, MariaDB beyond one chunk)."""
    key_columns = store.key_columns(selection.rule)
    if not spellable(key_columns):
        return None
    engine = store.engine
    dialect = engine.dialect
    if dialect.name == "postgresql":
        version = dialect.server_version_info
        # Before 14, a TID range is a filter over the whole partition, once per piece.
        if version is None or version < (14,):
            return None
        names = [dialect.identifier_preparer.quote(column.name) for column in key_columns]
        # Pieces of about PIECE keys: as many as make a chunk wait, and the one being read.
        depth = max(1, chunk // max(1, partition_keys_postgres.PIECE)) + 1
        reading = _postgres_reading(
            engine, selection.rule.table, name, names, catalog, planned_rows
        )
        return Ahead(name, ReadAhead(reading, depth, _thread_name(name)), dialect.name)
    if not 0 < planned_rows <= chunk:
        return None
    table = store.table(selection.rule.table)
    # Only the partition's name matters to MariaDB's query (``PARTITION (name)``).
    keys_query = in_partition(
        select(*key_columns).select_from(table),
        table,
        Partitioning(None, (), False),
        Partition(name, None, None),
        dialect.name,
    )
    # One joined string: its digest, not a hash per row (``Checksum``).
    checksum = Checksum()
    reading = _mariadb_reading(
        engine, keys_query, key_columns, checksum, planned_rows, chunk, after
    )
    # Room for its one item and its end: the thread ends (its transaction with it) unread.
    return Ahead(name, ReadAhead(reading, 2, _thread_name(name)), dialect.name)


def _thread_name(partition: str) -> str:
    """The name of the thread that reads a partition's keys (what a debugger shows)."""
    return f"{THREAD_PREFIX}{partition}"


def _postgres_reading(
    engine: Engine,
    table: str,
    name: str,
    names: Sequence[str],
    catalog: Partitioning | None,
    planned_rows: int = 0,
) -> Iterator[Any]:
    """The thread's work on PostgreSQL: the partition's ``PostgresSnapshot``, then its keys
    (their columns' quoted ``names``) spelled, a piece at a time, all in that snapshot, the
    row versions' fingerprint summed along (``PostgresSnapshot.summed``, complete once the
    last piece is read: one scan of the partition, not two). The partition is ``catalog``'s
    (the table's partitioning read once for all its partitions), else the catalog is read
    here; ``planned_rows`` (the plan's count) sizes the pieces."""
    partitioning = catalog
    if partitioning is None:
        with engine.connect() as connection:
            partitioning = read_catalog(connection, table)
    partition = None
    if partitioning is not None:
        partition = next((p for p in partitioning.partitions if p.name == name), None)
    if partitioning is None or partition is None:
        raise BatchConflict(f"partition {name!r} is gone")
    qualified = qualified_name(engine.dialect, partition)
    snapshot = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        # This transaction stays open, idle, while the partition before is recorded and
        # dropped: an operator's idle timeout would end it midway through this one's keys.
        # And with constraint_exclusion = on, a query naming a partition with a condition
        # (its pieces' ctid ranges) locks its parent too, until this transaction ends: the
        # DETACH before it would wait for that, then give up.
        connection.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        connection.exec_driver_sql("SET LOCAL constraint_exclusion = partition")
        reference = snapshot_xmin(connection)
        identity = snapshot_identity(connection, table, partition)
        taken = PostgresSnapshot(partitioning, partition, reference, (), identity)
        yield taken
        driver = connection.connection.driver_connection
        summing = xmin_fingerprint(reference)
        yield from postgres_pieces(driver, qualified, names, planned_rows, summing, taken.summed)


def snapshot_identity(connection: Connection, table: str, partition: Partition) -> str:
    """PostgreSQL, in a partition's keys' snapshot: its identity for the trail (``oid N``,
    partition_catalog), once the catalog says it is still the partition read (the same OID,
    still attached, the same bound); else BatchConflict. One statement (``standing``), not
    the table's whole partitioning read again."""
    found = standing(connection, table, qualified_name(connection.dialect, partition))
    if found is None or not stands_as_read(found, partition):
        raise BatchConflict(f"partition {partition.name!r} was changed since it was planned")
    return f"oid {found.oid}"


def snapshot_xmin(connection: Connection) -> int:
    """PostgreSQL: take the transaction's snapshot (its first statement) and return its xmin
    (32 bits): the reference of ``xmin_fingerprint``."""
    return int(
        connection.execute(
            text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::numeric % 4294967296")
        ).scalar_one()
    )


def _mariadb_reading(
    engine: Engine,
    keys_query: Any,
    key_columns: list[Any],
    checksum: Checksum,
    planned_rows: int,
    chunk: int,
    after: Future[Any] | None,
) -> Iterator[MariadbKeys]:
    """The thread's work on MariaDB: the partition's keys and their digest, read in one
    snapshot once ``after`` has ended (a drop holding LOCK TABLES), given once that snapshot's
    transaction has ended."""
    if after is not None:
        wait([after])
    snapshot = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as connection, connection.begin():
        keys = tuple(key_chunks(connection, keys_query, key_columns, chunk, checksum, planned_rows))
    yield MariadbKeys(keys, checksum.digest)


__all__ = [
    "THREAD_PREFIX",
    "Ahead",
    "MariadbKeys",
    "PostgresSnapshot",
    "qualified_name",
    "snapshot_identity",
    "snapshot_xmin",
    "start_reading",
    "xmin_fingerprint",
]
