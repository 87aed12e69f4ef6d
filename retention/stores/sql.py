"""SQL databases (SQLite, PostgreSQL, MariaDB/MySQL) through SQLAlchemy Core.

One predicate, built from a Selection, serves the plan's count, the run's keyset batches and the
re-check inside every DELETE/UPDATE, so the plan counts exactly what the run purges and a row
touched since it was selected survives. Identifiers come from the config and are quoted by
SQLAlchemy; values are always bound.

The store's parts, each in its own module: sql_dialect (engines and what differs between the
databases), sql_keys (key order), sql_schema (a rule against the live schema), sql_predicate
(the due condition), sql_survey (the plan's counts), sql_purge (one batch's transaction);
partitions (whole partitions dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    func,
    inspect,
    literal,
    select,
)
from sqlalchemy import exc as sa_exc

from retention.config import Rule, SqlStoreConfig
from retention.errors import (
    ConfigIssue,
    RetentionError,
    StoreUnavailable,
    error_text,
    raised_by_database_code,
    refused_by_foreign_key,
    refused_by_row_lock,
)
from retention.runtime.handovers import quick_handovers
from retention.selection import KeyValues, Selection
from retention.store_protocol import (
    Batch,
    BeforeCommit,
    BeforeDrop,
    BeforeWrite,
    KeyFilter,
    Survey,
)
from retention.stores import sql_dialect, sql_predicate, sql_probed, sql_schema
from retention.stores.sql_dialect import (
    WRITE_OPTION,
    ClockKind,
    create_sql_engine,
    is_connect_failure,
    reason,
)
from retention.stores.sql_held import HeldConnection
from retention.stores.sql_keys import fitted, key_in

if TYPE_CHECKING:
    from retention.stores import sql_spans
    from retention.stores.partition_session import PartitionDrops
    from retention.stores.sql_probed import Probe

# The survey's, the batches' and the partitions' modules (with the planner's and the documents'
# they bring) are imported by the methods that use them: `config validate` only checks rules
# against the schema, and their imports were about a twentieth of its SQL half's CPU
# (docs/performance-history.md, validate's fourth pass).


class SqlStore:
    """A SQL database holding the records of some rules."""

    # Each batch is a transaction holding row locks: the executor sizes batches by its time.
    steered_batches = True

    def __init__(self, config: SqlStoreConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._metadata = MetaData()
        self._tables: dict[str, Table] = {}
        self._inspected: dict[str, tuple[set[str], list[set[str]]]] = {}
        # PostgreSQL's plain delete batches (sql_probed): the next batch's keys, being read,
        # and the threads that read them and run a batch's DELETE beside its intent.
        self._probe: Probe | None = None
        self._beside: ThreadPoolExecutor | None = None
        self._handovers = ExitStack()
        # Where each rule's walk by spans of its key stands, between its batches (sql_spans).
        self.span_walks: dict[str, sql_spans.SpanWalk] = {}
        # PostgreSQL's probed batches: their DELETEs' connection and their probes', kept
        # between batches (sql_held).
        self.held_writer = HeldConnection(self.write_connection)
        self.held_reader = HeldConnection(
            lambda: self.engine.connect().execution_options(postgresql_readonly=True)
        )

    @property
    def name(self) -> str:
        return self.config.name

    def close(self) -> None:
        probe = self.take_probe()
        if probe is not None:
            wait([probe.keys])
        if self._beside is not None:
            self._beside.shutdown()
            self._beside = None
        self._handovers.close()
        self.held_writer.close()
        self.held_reader.close()
        self.engine.dispose()

    def beside(self) -> ThreadPoolExecutor:
        """Threads for a batch's statements that run beside the calling thread's work; while
        they exist, the GIL is handed over quickly (runtime/handovers.py)."""
        if self._beside is None:
            self._handovers.enter_context(quick_handovers())
            self._beside = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sql-beside")
        return self._beside

    def take_probe(self) -> Probe | None:
        """The next batch's keys being read ahead, if any (the store keeps it no longer)."""
        probe, self._probe = self._probe, None
        return probe

    def keep_probe(self, probe: Probe) -> None:
        """Keep the next batch's keys being read ahead, for the batch that asks for them."""
        previous, self._probe = self._probe, probe
        if previous is not None:
            wait([previous.keys])

    def plain_integer_keys(self, key_columns: Sequence[ColumnElement[Any]]) -> bool:
        """Whether every key column is an integer that SQLAlchemy returns unchanged from the
        driver (no result processor): its values can be read from the driver's rows."""
        dialect = self.engine.dialect
        return all(
            isinstance(column.type, Integer)
            and column.type.dialect_impl(dialect).result_processor(dialect, None) is None
            for column in key_columns
        )

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Turn connection failures into StoreUnavailable, and other database errors (and
        values refused by SQLAlchemy's type processing before they reach the database) into a
        RetentionError with the driver's first line, values left out: what reaches logs, the
        ledger and the audit trail never quotes a row (SQLAlchemy's own text holds the
        statement's parameters)."""
        try:
            yield
        except sa_exc.DBAPIError as error:
            if error.connection_invalidated or is_connect_failure(error):
                raise StoreUnavailable(
                    f"store {self.name!r} is unreachable: {reason(error)}"
                ) from error
            refused = reason(error)
            if refused_by_foreign_key(error) and not raised_by_database_code(error):
                refused += (
                    ": a row of the batch is still referenced; list the referencing table in "
                    "the rule's children by that key (where the store reaches it by its name "
                    "alone), or keep such rows out with where_sql (an erasure ignores "
                    "where_sql: for it, only children)"
                )
            if refused_by_row_lock(error):
                refused += (
                    ": a row of the batch stayed locked by another session for "
                    f"{sql_dialect.ROW_LOCK_TIMEOUT_SECONDS} s; the batch was rolled back, and "
                    "the next run tries it again"
                )
            raise RetentionError(
                f"store {self.name!r}: the database refused it: {refused}"
            ) from error
        except sa_exc.StatementError as error:
            # Refused before it reached the database: a value the column's type cannot take.
            refused = error_text(error.orig) if error.orig is not None else "invalid statement"
            raise RetentionError(
                f"store {self.name!r}: cannot send the statement: {refused}"
            ) from (error)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers ``SELECT 1``: whatever refuses
        it (a SQLite path the system cannot open, a server refusing the session) leaves
        nothing to do on the store, as when it cannot be reached at all."""
        try:
            with self.engine.connect() as connection:
                connection.execute(select(literal(1)))
        except sa_exc.DBAPIError as error:
            raise StoreUnavailable(
                f"store {self.name!r} is unreachable: {reason(error)}"
            ) from error

    # --- schema ---------------------------------------------------------------------------

    def table(self, name: str) -> Table:
        """Given a table's name, return it as the database has it: its columns (name, type,
        NULL or not) and its primary key, what every statement and check here needs. Not
        its foreign keys, indexes, checks or comments: reflecting them all took 11 catalog
        queries on PostgreSQL, against 3 here (NoSuchTableError when it does not exist)."""
        if name not in self._tables:
            with self.reachable(), self.engine.connect() as connection:
                inspector = inspect(connection)
                columns = inspector.get_columns(name)
                primary = inspector.get_pk_constraint(name).get("constrained_columns") or []
            # The primary key as a constraint, in its own column order (not the table's):
            # a composite key's order is that of the keyset's ORDER BY, of the index that
            # serves it, and of a child row's locator in the trail.
            self._tables[name] = Table(
                name,
                self._metadata,
                *(
                    Column(column["name"], column["type"], nullable=column["nullable"])
                    for column in columns
                ),
                *([PrimaryKeyConstraint(*primary)] if primary else []),
            )
        return self._tables[name]

    def unique_column_sets(self, name: str) -> list[set[str]]:
        if name not in self._inspected:
            primary = {column.name for column in self.table(name).primary_key.columns}
            with self.reachable(), self.engine.connect() as connection:
                inspector = inspect(connection)
                unique = [set(c["column_names"]) for c in inspector.get_unique_constraints(name)]
                unique += [
                    {column for column in index["column_names"] if column}
                    for index in inspector.get_indexes(name)
                    if index.get("unique")
                ]
            self._inspected[name] = (primary, unique)
        primary, unique = self._inspected[name]
        return ([primary] if primary else []) + unique

    def primary_key(self, name: str) -> set[str]:
        """Given a table's name, return the columns of its primary key (empty: it has none)."""
        self.unique_column_sets(name)
        return self._inspected[name][0]

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        """Given a rule, return every way it does not fit the live schema (empty: it fits)."""
        return sql_schema.check_rule(self, rule)

    # --- selection --------------------------------------------------------------------------

    def predicate(self, selection: Selection) -> ColumnElement[bool]:
        """Given a Selection, return the SQL condition that is true exactly for its due rows:
        expired, in scope, and under no legal hold."""
        return sql_predicate.predicate(self, selection)

    def held(self, selection: Selection) -> ColumnElement[bool] | None:
        return sql_predicate.held(self, selection)

    def clock_kind(self, rule: Rule) -> ClockKind:
        return sql_predicate.rule_clock(self, rule).kind

    def bound(self, instant: datetime, kind: ClockKind) -> datetime:
        return sql_predicate.bound(self, instant, kind)

    def instant(self, value: Any, kind: ClockKind) -> datetime | date | None:
        return sql_predicate.instant(self, value, kind)

    def key_columns(self, rule: Rule) -> list[Column[Any]]:
        table = self.table(rule.table)
        return [table.c[column] for column in rule.key]

    def unfit_keys(
        self, rule: Rule, keys: Sequence[tuple[str, ...]]
    ) -> tuple[tuple[str, ...], ...]:
        """Given a rule and keys as typed on the command line (one text per key column), return
        those that no row can have: 'abc' or '1.5' for an integer id."""
        key_columns = self.key_columns(rule)
        return tuple(key for key in keys if fitted(key_columns, key) is None)

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        """Given a rule with a period column, return the distinct non-NULL values it holds."""
        if rule.period_column is None:
            return ()
        reference = rule.period_column
        owner = self.table(
            rule.table if reference.join is None else rule.join(reference.join).table
        )
        column = owner.c[reference.column]
        with self.reachable(), self.engine.connect() as connection:
            rows = connection.execute(select(column).where(column.is_not(None)).distinct())
            return tuple(sorted((row[0] for row in rows), key=str))

    def due_keys(
        self, selection: Selection, *, after: KeyValues | None, limit: int
    ) -> tuple[KeyValues, ...]:
        """Given a Selection, return up to ``limit`` due keys after ``after``, in key order: the
        subjects of a cross-store rule, read with the run's own query, without locking (in a
        dry run, without the rows the rules before it delete: ``Selection.removed_before``)."""
        from retention.stores import sql_survey

        kept = sql_survey.still_there(self, selection)
        query = sql_predicate.batch_query(self, selection, after, limit, kept=kept)
        if kept is not None:
            query = query.where(sql_survey.kept_before(self, selection, selection.rule.table))
        with self.reachable(), self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return tuple(tuple(row) for row in rows)

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        """Given a Selection, return in one pass over the rule's scope: rows due, held and with a
        future clock, the oldest due clock; then the first due keys (the run's own query)."""
        from retention.stores import sql_survey

        return sql_survey.survey(self, selection, sample_size)

    # --- purge --------------------------------------------------------------------------------

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
    ) -> Batch:
        """Given a Selection and the last key already handled, purge the next batch of due rows
        in one transaction (sql_purge.purge_batch says how)."""
        from retention.stores import sql_purge

        return sql_purge.purge_batch(
            self,
            selection,
            after=after,
            limit=limit,
            dry_run=dry_run,
            now=now,
            hash_key=hash_key,
            before_write=before_write,
            only=only,
            before_commit=before_commit,
        )

    def transaction_status(self, transaction: int) -> str | None:
        """Given the id of a transaction of this database that wrote a batch (PostgreSQL),
        return whether it "committed" or "aborted", once it has ended; None if the database no
        longer knows. StoreUnavailable while it is still in progress."""
        if self.engine.dialect.name != "postgresql":
            raise RetentionError(
                f"store {self.name!r} is not PostgreSQL: it cannot say whether transaction "
                f"{transaction} committed"
            )
        with self.reachable(), self.engine.connect() as connection:
            return sql_probed.transaction_status(self, connection, transaction)

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]:
        """Given a table, its key columns and keys, return the keys still there (and, with a
        marker column, not yet marked as anonymised)."""
        table = self.table(table_name)
        columns = [table.c[name] for name in key_columns]
        found: set[KeyValues] = set()
        with self.reachable(), self.engine.connect() as connection:
            for start in range(0, len(keys), 1000):
                chunk = [tuple(key) for key in keys[start : start + 1000]]
                query = select(*columns).where(key_in(columns, chunk))
                if marker_column is not None:
                    query = query.where(table.c[marker_column].is_(None))
                rows = connection.execute(query)
                found.update(tuple(row) for row in rows)
        return found

    # --- whole partitions (stores/partitions.py) ------------------------------------------------

    def drop_partition(
        self,
        selection: Selection,
        name: str,
        *,
        before_write: BeforeDrop | None = None,
        planned_rows: int = 0,
    ) -> Batch:
        """Given a Selection and a partition its plan found due (with the rows it counted
        there, 0 if unknown), drop it whole, recorded."""
        from retention.stores import partitions

        return partitions.drop_partition(self, selection, name, before_write, planned_rows)

    def dropping_partitions(self) -> AbstractContextManager[PartitionDrops]:
        """A context whose value records partitions and drops them, one drop in a thread while
        the next partition is recorded (stores/partition_session.py)."""
        from retention.stores import partition_session

        return partition_session.dropping_partitions(self)

    def partition_intents(self, rows: int) -> int:
        """Given a partition's rows, return how many trail intents its keys are recorded in
        before it is dropped (one per chunk: ``partitions.CHUNK`` keys): what a dry run counts
        as its batches."""
        from retention.stores import partitions

        return -(-rows // partitions.CHUNK)

    def partition_exists(self, table: str, name: str, identity: str | None = None) -> bool:
        """Given a table and one of its partitions' names, return whether that partition is
        still there (attached, or on PostgreSQL as a table of that name): after a crash,
        whether its drop committed. With its ``identity`` (partition_catalog), whether that
        very partition is (``partition_catalog.still_there``)."""
        from retention.stores.partition_catalog import read_partitioning, still_there

        with self.reachable(), self.engine.connect() as connection:
            if identity is not None:
                return still_there(connection, table, name, identity)
            partitioning = read_partitioning(connection, table)
            if partitioning is not None and any(p.name == name for p in partitioning.partitions):
                return True
            if self.engine.dialect.name == "postgresql":
                found = connection.execute(
                    select(func.to_regclass(func.quote_ident(name)).is_not(None))
                ).scalar()
                return bool(found)
        return False

    def write_connection(self) -> Connection:
        return self.engine.connect().execution_options(**{WRITE_OPTION: True})


__all__ = ["SqlStore", "create_sql_engine"]
