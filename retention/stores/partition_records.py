"""What both servers' drops of a whole partition share (stores/partitions.py): what a partition
recorded and not dropped yet is, the partition found again in a catalog, and its keys streamed
and recorded chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from retention.errors import BatchConflict
from retention.selection import Selection
from retention.store_protocol import BeforeDrop, Keys, SpelledKeys
from retention.stores.partition_catalog import Partition, Partitioning, in_partition
from retention.stores.partition_keys import key_chunks
from retention.stores.partition_keys_mariadb import Checksum
from retention.stores.partition_survey import expired_partitions, table_fallback

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

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
class Dropped:
    """A partition dropped: its rows, and when its lock and the table's were taken."""

    rows: int
    partition_locked: float
    table_locked: float


def find_partition(
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


def record_keys(
    connection: Connection,
    store: SqlStore,
    selection: Selection,
    partitioning: Partitioning,
    partition: Partition,
    before_write: BeforeDrop | None,
    chunk: int,
    checksum: Checksum | None = None,
    rows: int = 0,
    identity: str | None = None,
) -> int:
    """Stream the partition's keys, each chunk of ``chunk`` keys recorded (``before_write``,
    with the partition's ``identity``); return how many there were. BatchConflict when there
    were none (nothing to record, nothing to drop). MariaDB: ``rows`` the rows the plan counted
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
    with closing(key_chunks(connection, keys_query, key_columns, chunk, checksum, rows)) as chunks:
        return recorded_count(chunks, before_write, partition.name, identity)


def recorded_count(
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


__all__ = [
    "LOCK_TIMEOUT_MS",
    "Dropped",
    "Recorded",
    "find_partition",
    "record_keys",
    "recorded_count",
]
