"""What the planner and the executor need from a store (the RecordStore protocol), and what a
store gives back: a Survey of what is due, a Batch purged, and the detail an audit intent
records beside a batch's keys. Pure: stores/ implements it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from retention.config import Rule
from retention.errors import ConfigIssue
from retention.selection import ChildCounts, KeyValues, Selection


@dataclass(frozen=True)
class ChildRows:
    """The rows of one child table that a batch deletes with its parent rows, by their key
    (the child table's primary key columns, ``key``)."""

    table: str
    key: tuple[str, ...]
    keys: tuple[KeyValues, ...]


@dataclass(frozen=True)
class IntentDetail:
    """What a batch's audit intent records beside its keys: the child rows that go with them
    (SQL); for objects and files, which keys are delete markers and each key's size in bytes,
    in the order of the keys (empty: not known); and the id of the database transaction that
    writes the batch, when the store can tell after a crash whether it committed (PostgreSQL's
    row batches: a reconcile then asks, rather than look for the records; a pipelined batch's
    is read beside the intent, which waits for it once the keys are hashed); a partition
    dropped whole: what tells it from another of the same name (``partition_identity``)."""

    children: tuple[ChildRows, ...] = ()
    markers: tuple[bool, ...] = ()
    sizes: tuple[int, ...] = ()
    transaction: Future[int] | None = None
    partition_identity: str | None = None


NO_DETAIL = IntentDetail()


class SpelledKeys:
    """A partition's keys as its database spelled them, read once, a piece at a time: each
    key as the end of its record's locator (what follows ``store/dataset/``: its parts as
    ``record_locator`` spells them, joined by "/"), in ASCII, a piece's keys joined by
    newlines. The audit intent hashes each piece as it comes, while the store reads the next;
    ``count`` is how many keys came so far."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self.count = 0
        # What reading them raised (the store's failure, not its reader's), if anything.
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                piece = next(self._pieces)
            except StopIteration:
                return
            except Exception as error:
                self.error = error
                raise
            self.count += piece.count(b"\n") + 1
            yield piece

    def finish(self) -> int:
        """Read what nobody read (no trail: nothing hashed them); return how many keys came."""
        for _piece in self:
            pass
        return self.count


# A batch's keys: their values, or (a partition's) as the database spelled them.
Keys = tuple[KeyValues, ...] | SpelledKeys


class BeforeWrite(Protocol):
    """Called by a store with a batch's keys (and what goes with them) before anything is
    written: the audit intent. If it raises, nothing of the batch is written."""

    def __call__(self, keys: tuple[KeyValues, ...], detail: IntentDetail = ...) -> None: ...


class BeforeCommit(Protocol):
    """Called by a store, before it commits a batch whose intent named its transaction, with
    the batch's keys that its write did not purge (only when there are any): recorded durably,
    so that a reconcile knows them if the commit is the last thing that happened. If it raises,
    the batch rolls back."""

    def __call__(self, not_done: tuple[KeyValues, ...]) -> None: ...


class BeforeDrop(Protocol):
    """Called by a store with each chunk of a partition's keys (as values, or spelled), and
    the partition's identity (what tells it from a partition created later under its name),
    before the partition is dropped: the audit intent. If it raises, nothing is dropped."""

    def __call__(self, keys: Keys, identity: str | None = None) -> None: ...


# Given keys, which of them may be purged (a subjects' rule: those whose objects were visited).
KeyFilter = Callable[[Sequence[KeyValues]], set[KeyValues]]


@dataclass(frozen=True)
class PartitionDue:
    """A partition of the rule's table whose whole range is expired and whose every row is due:
    it goes whole (dropped), not in row batches. ``upper`` is its upper bound as the store
    spells it (exclusive)."""

    name: str
    rows: int
    upper: str


@dataclass(frozen=True)
class Survey:
    """What a store found for a selection: rows due (not held), the oldest clock value and the
    first due keys in key order; rows in scope (the rule's conditions, any clock), rows that
    would be due but are held, rows whose clock is in the future (never due, reported), and
    rows whose clock the store cannot compare (SQLite text in another spelling: kept, reported),
    rows whose period column holds no period (kept, reported), and the key holds naming a key
    that no row can have ('abc' for an integer id: it holds nothing, reported)."""

    due: int
    oldest: datetime | date | None
    sample_keys: tuple[KeyValues, ...]
    in_scope: int = 0
    held: int = 0
    future: int = 0
    details: tuple[tuple[str, int], ...] = ()
    unreadable: int = 0
    invalid_period: int = 0
    unfit_holds: tuple[int, ...] = ()
    # A partitioned table: the partitions that go whole, and why others (or the whole rule) go
    # by row batches instead.
    partitioned: bool = False
    partitions: tuple[PartitionDue, ...] = ()
    partition_notes: tuple[str, ...] = ()
    children: ChildCounts = ()


@dataclass(frozen=True)
class Batch:
    """One purged batch: the keys it selected, how many records it deleted or anonymised.

    Object stores list more than they purge, so they say where the next batch starts
    (``resume_after``) and whether there is more to look at (``more``); SQL stores leave both
    None: the next batch starts after the last key, and a short batch was the last one. A SQL
    batch that no ``before_write`` asked the keys of (no audit trail) may leave ``keys``
    empty: ``done`` then counts its rows, ``resume_after`` and ``more`` say what follows.
    ``failed`` counts records the store refused to delete (``errors`` says why, grouped);
    ``held`` counts records found protected while purging (S3 Object Lock). A cross-store
    rule's batch lists in ``kept_subjects`` the subjects some of whose objects stayed (held or
    failed): their rows must stay too; and in ``visited_subjects`` those whose objects it has
    finished listing: only their rows may go in this run. ``not_done_keys`` are the keys of
    ``keys`` that were not purged (they failed, or changed or went since they were listed): the
    audit trail must not claim them. A SQL batch purges all its keys or rolls back, so it
    leaves this empty, but for PostgreSQL's plain deletes, whose keys are read before their
    transaction (a row that stopped being due or went since then is not done). ``children``
    counts the child rows deleted (a dry run: that would be) per child table,
    ``children_deleted`` is their sum.
    """

    keys: tuple[KeyValues, ...]
    done: int
    children_deleted: int = 0
    children: ChildCounts = ()
    transaction_seconds: float = 0.0
    resume_after: KeyValues | None = None
    more: bool | None = None
    failed: int = 0
    held: int = 0
    errors: tuple[str, ...] = ()
    kept_subjects: tuple[KeyValues, ...] = ()
    not_done_keys: tuple[KeyValues, ...] = ()
    visited_subjects: tuple[KeyValues, ...] = ()

    @property
    def last_key(self) -> KeyValues | None:
        return self.keys[-1] if self.keys else None

    @property
    def next_after(self) -> KeyValues | None:
        return self.resume_after if self.resume_after is not None else self.last_key


class RecordStore(Protocol):
    """What the planner and the executor need from a store (stores/sql.py implements it)."""

    def check_rule(self, rule: Rule) -> list[ConfigIssue]: ...

    def period_values(self, rule: Rule) -> tuple[object, ...]: ...

    def survey(self, selection: Selection, sample_size: int) -> Survey: ...

    def purge_batch(
        self,
        selection: Selection,
        *,
        after: KeyValues | None,
        limit: int,
        dry_run: bool,
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None = None,
        only: KeyFilter | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Batch: ...

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]: ...


class SubjectSource(Protocol):
    """Where a cross-store rule finds its subjects (the SQL store of the subjects' rule)."""

    def due_keys(
        self, selection: Selection, *, after: KeyValues | None, limit: int
    ) -> tuple[KeyValues, ...]: ...
