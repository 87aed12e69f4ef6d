"""Whole expired partitions of a partitioned PostgreSQL or MariaDB table, dropped whole.

A partition goes whole only when its whole range is expired (its upper bound on the rule's
clock is at or before the cutoff), the rule allows it (``partition_fallback``), no foreign key
references the table, and every row in it is due: counted with the rule's own predicate, so a
``where`` condition, a period override or a legal hold that keeps even one row sends the whole
partition to the usual row batches.

Dropping is audited like a batch: every record's key is read and recorded (one trail intent,
leaves and intent fsynced, per chunk of ``CHUNK`` keys; memory is bounded by the chunk) before
anything is dropped, and nothing is dropped unless the keys recorded are exactly its rows. How
each server records and locks a partition: stores/partition_postgres.py (the partition locked
in SHARE mode, its row versions checked, DETACH and DROP in one transaction) and
stores/partition_mariadb.py (counted again under LOCK TABLES, DROP PARTITION).

Partitions go one after the other, overlapped (``dropping_partitions``): one is dropped in a
thread while the next is recorded, and the one after is read (in its own snapshot, checked the
same way: stores/partition_ahead.py).

A conflict (BatchConflict) drops nothing: the partition's rows go by row batches. The results
are written after the commit; a crash before it leaves intents without results, which the
reconcile settles by whether the partition still exists (``SqlStore.partition_exists``): the
very partition whose keys were recorded (its identity, partition_catalog), not one created
since under its name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from retention.errors import BatchConflict
from retention.runtime.faults import crash_point
from retention.runtime.logging import get_logger
from retention.selection import Selection
from retention.store_protocol import Batch, BeforeDrop
from retention.stores.partition_ahead import Ahead, start_reading
from retention.stores.partition_mariadb import finish_mariadb, record_mariadb
from retention.stores.partition_postgres import finish_postgres, record_postgres
from retention.stores.partition_records import LOCK_TIMEOUT_MS, Recorded

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# Keys per trail intent while a partition is streamed: what bounds memory (about 15 MB; the
# next partition's keys read ahead meanwhile hold at most as much again).
CHUNK = 100_000


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
                return record_postgres(store, selection, name, before_write, ahead, CHUNK)
            return record_mariadb(store, selection, name, before_write, planned_rows, ahead, CHUNK)
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
            dropped = finish_postgres(store, selection, recorded)
        else:
            dropped = finish_mariadb(store, selection, recorded, before_lock)
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


_REFUSALS = ("must be owner", "permission denied", "command denied")


__all__ = ["CHUNK", "Recorded", "drop_partition", "finish_partition", "record_partition"]
