"""Partitions dropped one after the other, overlapped (issue 15): while one is dropped (its
lock, its check, the drop) in a thread, the next one's keys are recorded in the caller's thread
(the audit's), and a thread reads the keys of the one after (stores/partition_ahead.py). One
drop at a time, each ended before the next starts; each partition's intent is written before
its own drop starts, its result (by the caller) after that drop has ended.

MariaDB: a read ahead starts once the drop before has released its LOCK TABLES, and ends before
the next drop takes it (either would wait for the other's metadata lock); a partition read in
its turn (not read ahead: a transaction open while its keys are recorded, through the parent
on PostgreSQL) waits for the drop before to end first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from retention.runtime.handovers import quick_handovers
from retention.selection import Selection
from retention.store_protocol import Batch, BeforeDrop
from retention.stores import partitions
from retention.stores.partition_ahead import Ahead, start_reading
from retention.stores.partition_catalog import Partitioning, read_partitioning
from retention.stores.partitions import Recorded

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


class RecordPartition(Protocol):
    """Records one partition's keys (``record_partition``), reading meanwhile the keys of the
    partition it drops next (``then``: its name and the rows the plan counted in it)."""

    def __call__(
        self,
        selection: Selection,
        name: str,
        *,
        before_write: BeforeDrop | None = None,
        planned_rows: int = 0,
        then: tuple[str, int] | None = None,
    ) -> Recorded: ...


@dataclass(frozen=True)
class PartitionDrops:
    """Partitions dropped one after the other: ``record`` records one's keys (in the caller's
    thread: the audit's), ``finish`` drops it in a thread (its lock, its check, the drop) while
    the caller records the next; one drop at a time, each finished before the next starts."""

    record: RecordPartition
    finish: Callable[[Selection, Recorded], Future[Batch]]


def dropping_partitions(store: SqlStore) -> AbstractContextManager[PartitionDrops]:
    """Given a store, return a context whose value records partitions and drops them
    (``PartitionDrops``), each partition's keys read while the one before is recorded and
    dropped (stores/partition_ahead.py); at its end, every drop started has ended and a read
    not used is let go."""
    return _dropping(store)


# PostgreSQL: the GIL handed over quickly while partitions are dropped (runtime/handovers.py).
# The thread reading the next partition's keys (psycopg) takes the GIL back after each wait on
# the server, several times per piece, while the recording thread hashes, merges and writes in
# Python: with 5 ms per handover the read, and so the recording waiting for it, fell behind.
# Measured with `retention run` on bench/partition_purge.py's table (1,001,369 rows, 12
# partitions), 5 alternated pairs at load 5.5-8: the rule 1.72 -> 1.34 s median, every pair
# faster.


@contextmanager
def _dropping(store: SqlStore) -> Iterator[PartitionDrops]:
    if store.engine.dialect.name == "postgresql":
        with quick_handovers():
            yield from _dropping_here(store)
    else:
        yield from _dropping_here(store)


def _dropping_here(store: SqlStore) -> Iterator[PartitionDrops]:
    pending: list[Ahead] = []
    finishing: list[Future[Batch]] = []  # the drop started last
    following: dict[str, Ahead] = {}  # per partition recorded, the read started with it
    threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention-partition-drop")
    catalogs: dict[str, Partitioning | None] = {}  # PostgreSQL: per table, read once

    def catalog(selection: Selection) -> Partitioning | None:
        """PostgreSQL: the table's partitioning, read once for all its partitions (each one's
        snapshot reads again whether it still stands as read: ``snapshot_identity``)."""
        if store.engine.dialect.name != "postgresql":
            return None
        table = selection.rule.table
        if table not in catalogs:
            with store.reachable(), store.engine.connect() as connection:
                catalogs[table] = read_partitioning(connection, table)
        return catalogs[table]

    def record(
        selection: Selection,
        name: str,
        *,
        before_write: BeforeDrop | None = None,
        planned_rows: int = 0,
        then: tuple[str, int] | None = None,
    ) -> Recorded:
        read = catalog(selection)
        ahead = None
        while pending:
            found = pending.pop()
            if found.name == name and ahead is None:
                ahead = found
            else:
                found.close()
        # MariaDB: no read while the drop before holds its LOCK TABLES (it would wait for it).
        after = finishing[-1] if finishing else None
        if ahead is None:
            # Its own read first: the server takes the partitions in their order.
            ahead = start_reading(
                store, selection, name, planned_rows, partitions.CHUNK, after, read
            )
        if ahead is None:
            # Read in its turn, in a transaction open while its keys are recorded (through the
            # parent on PostgreSQL): the drop before would wait for it, so it ends first.
            wait(finishing)
        following.clear()
        if then is not None:
            try:
                started = start_reading(
                    store, selection, then[0], then[1], partitions.CHUNK, after, read
                )
            except BaseException:
                # This partition's own read is no longer in ``pending``: end it here, or its
                # thread and its transaction (a lock on the partition) outlive the run.
                if ahead is not None:
                    ahead.close()
                raise
            if started is not None:
                pending.append(started)
                following[name] = started
        return partitions.record_partition(
            store, selection, name, before_write, planned_rows, ahead
        )

    def finish(selection: Selection, recorded: Recorded) -> Future[Batch]:
        for earlier in finishing:
            wait([earlier])
        finishing.clear()
        read_next = following.get(recorded.name)
        # MariaDB: the next partition's read ends before the lock (which would wait for it).
        before_lock = None if read_next is None else read_next.settle
        started = threads.submit(
            partitions.finish_partition, store, selection, recorded, before_lock
        )
        finishing.append(started)
        return started

    try:
        yield PartitionDrops(record, finish)
    finally:
        wait(finishing)
        while pending:
            pending.pop().close()
        threads.shutdown(wait=True)


__all__ = ["PartitionDrops", "RecordPartition", "dropping_partitions"]
