"""SQL databases (SQLite, PostgreSQL, MariaDB/MySQL) through SQLAlchemy Core.

One predicate, built from a Selection, serves the plan's count, the run's keyset batches and the
re-check inside every DELETE/UPDATE, so the plan counts exactly what the run purges and a row
touched since it was selected survives. Identifiers come from the config and are quoted by
SQLAlchemy; values are always bound.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Literal, cast
from urllib.parse import quote

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    MetaData,
    Select,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    inspect,
    literal,
    not_,
    null,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.mysql import TIMESTAMP as MYSQL_TIMESTAMP
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.functions import GenericFunction

from retention.anonymise import anonymise_value
from retention.config import Child, ColumnRef, Condition, Rule, Scalar, SqlStoreConfig
from retention.errors import (
    BatchConflict,
    ConfigIssue,
    RetentionError,
    StoreUnavailable,
    error_text,
    without_values,
)
from retention.planner import (
    Batch,
    BeforeWrite,
    ChildCounts,
    KeyFilter,
    KeyValues,
    Selection,
    Survey,
    child_paths,
)
from retention.rules import Expired, to_wall_time
from retention.runtime.faults import crash_point
from retention.stores import partitions
from retention.stores.sql_columns import column_value, strategy_problem

ClockKind = Literal["date", "aware", "naive", "utc_naive"]
CONNECT_TIMEOUT_SECONDS = 10
WRITE_OPTION = "retention_write"
# Strategies that write one value for many rows: a unique column cannot take them.
SHARED_VALUE_STRATEGIES = ("fixed", "mask_email", "truncate_ip", "year_only")


class greatest(GenericFunction[Any]):
    """GREATEST(); SQLite spells it max() with several arguments."""

    name = "greatest"
    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


def create_sql_engine(url: str, *, read_only: bool) -> Engine:
    """Given a SQLAlchemy URL, return an engine; read-only engines cannot write by construction.

    SQLite files are opened with ``mode=ro`` (or ``mode=rw``, so a missing file is an error rather
    than a new empty database); PostgreSQL sessions get ``default_transaction_read_only``;
    MariaDB/MySQL sessions ``SET SESSION TRANSACTION READ ONLY``. MariaDB/MySQL sessions run in
    UTC so that TIMESTAMP columns read the same whatever the server's time_zone.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed.database or "", read_only=read_only)
    if backend == "postgresql":
        options = "-c default_transaction_read_only=on" if read_only else ""
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if options:
            connect_args["options"] = options
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if backend in ("mysql", "mariadb"):
        engine = create_engine(
            url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}, pool_pre_ping=True
        )
        statements = ["SET time_zone = '+00:00'"]
        if read_only:
            statements.append("SET SESSION TRANSACTION READ ONLY")

        @event.listens_for(engine, "connect")
        def _session_setup(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

        return engine
    raise StoreUnavailable(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_engine(path: str, *, read_only: bool) -> Engine:
    if not path or path == ":memory:":
        raise StoreUnavailable("a SQLite store needs a database file path")
    mode = "ro" if read_only else "rw"
    uri = f"file:{quote(path)}?mode={mode}"

    def connect() -> sqlite3.Connection:
        # isolation_level=None: transactions are begun below, so a batch's locking select and
        # its DELETE are one transaction (pysqlite would otherwise begin only at the DELETE).
        return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Only a purge takes the write lock up front; reads (plan counts) must not block writers.
        writing = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing and not read_only else "BEGIN")

    return engine


@dataclass(frozen=True)
class _Clock:
    expression: ColumnElement[Any]
    kind: ClockKind
    # SQLite only: true where every clock column holds text this store can compare as time.
    readable: ColumnElement[bool] | None = None


class SqlStore:
    """A SQL database holding the records of some rules."""

    def __init__(self, config: SqlStoreConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._metadata = MetaData()
        self._tables: dict[str, Table] = {}
        self._inspected: dict[str, tuple[set[str], list[set[str]]]] = {}

    @property
    def name(self) -> str:
        return self.config.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn connection failures into StoreUnavailable, and other database errors (and
        values refused by SQLAlchemy's type processing before they reach the database) into a
        RetentionError with the driver's first line, values left out: what reaches logs, the
        ledger and the audit trail never quotes a row (SQLAlchemy's own text holds the
        statement's parameters)."""
        try:
            yield
        except sa_exc.DBAPIError as error:
            if error.connection_invalidated or _is_connect_failure(error):
                raise StoreUnavailable(
                    f"store {self.name!r} is unreachable: {_reason(error)}"
                ) from error
            raise RetentionError(
                f"store {self.name!r}: the database refused it: {without_values(_reason(error))}"
            ) from error
        except sa_exc.StatementError as error:
            # Refused before it reached the database: a value the column's type cannot take.
            reason = error_text(error.orig) if error.orig is not None else "invalid statement"
            raise RetentionError(f"store {self.name!r}: cannot send the statement: {reason}") from (
                error
            )

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self._reachable(), self.engine.connect() as connection:
            connection.execute(select(literal(1)))

    # --- schema ---------------------------------------------------------------------------

    def table(self, name: str) -> Table:
        if name not in self._tables:
            with self._reachable(), self.engine.connect() as connection:
                self._tables[name] = Table(
                    name, self._metadata, autoload_with=connection, resolve_fks=False
                )
        return self._tables[name]

    def _unique_column_sets(self, name: str) -> list[set[str]]:
        if name not in self._inspected:
            with self._reachable(), self.engine.connect() as connection:
                inspector = inspect(connection)
                primary = set(inspector.get_pk_constraint(name).get("constrained_columns") or [])
                unique = [set(c["column_names"]) for c in inspector.get_unique_constraints(name)]
                unique += [
                    {column for column in index["column_names"] if column}
                    for index in inspector.get_indexes(name)
                    if index.get("unique")
                ]
            self._inspected[name] = (primary, unique)
        primary, unique = self._inspected[name]
        return ([primary] if primary else []) + unique

    def check_rule(self, rule: Rule) -> list[ConfigIssue]:
        """Given a rule, return every way it does not fit the live schema (empty: it fits)."""
        issues: list[ConfigIssue] = []

        def problem(key: str, message: str) -> None:
            issues.append(ConfigIssue(f"{rule.path}.{key}", message))

        tables = {}
        for key, table_name in [("table", rule.table)] + [
            (f"joins.{join.name}.table", join.table) for join in rule.joins
        ]:
            try:
                tables[table_name] = self.table(table_name)
            except sa_exc.NoSuchTableError:
                problem(key, f"table {table_name!r} does not exist in store {self.name!r}")
        if rule.table not in tables:
            return issues
        table = tables[rule.table]
        missing = [column for column in rule.key if column not in table.c]
        if missing:
            problem("key", f"no column {', '.join(missing)} in {rule.table!r}")
        elif set(rule.key) not in self._unique_column_sets(rule.table):
            problem(
                "key", f"{', '.join(rule.key)} is not a primary key or unique in {rule.table!r}"
            )
        elif set(rule.key) != self._inspected[rule.table][0]:
            # A unique key may hold NULLs (many of them): such rows could not be paged through
            # by key nor named in the audit trail. (Primary key columns cannot be NULL.)
            nullable = [column for column in rule.key if table.c[column].nullable]
            if nullable:
                problem(
                    "key",
                    f"{', '.join(nullable)} can be NULL in {rule.table!r}: use the primary key "
                    "or a unique key whose columns are NOT NULL",
                )
        for join in rule.joins:
            remote = tables.get(join.table)
            for column in join.local_columns:
                if column not in table.c:
                    problem(f"joins.{join.name}.on", f"no column {column!r} in {rule.table!r}")
            if remote is None:
                continue
            absent = [column for column in join.remote_columns if column not in remote.c]
            if absent:
                problem(f"joins.{join.name}.on", f"no column {', '.join(absent)} in {join.table!r}")
            elif set(join.remote_columns) not in self._unique_column_sets(join.table):
                problem(
                    f"joins.{join.name}.on",
                    f"{', '.join(join.remote_columns)} is not unique in {join.table!r}: the join "
                    "must reach at most one row",
                )

        def resolve(reference: ColumnRef, key: str) -> Column[Any] | None:
            owner_name = rule.table if reference.join is None else rule.join(reference.join).table
            owner = tables.get(owner_name)
            if owner is None:
                return None  # its missing table is already reported
            if reference.column not in owner.c:
                problem(key, f"no column {reference.column!r} in {owner.name!r}")
                return None
            return owner.c[reference.column]

        kinds = set()
        for index, reference in enumerate(rule.clock):
            clock_column = resolve(reference, f"clock[{index}]" if len(rule.clock) > 1 else "clock")
            if clock_column is not None:
                kind = _clock_kind(clock_column, self.engine.dialect.name)
                if kind is None:
                    problem("clock", f"{reference} is {clock_column.type}, not a date or timestamp")
                kinds.add(kind)
        if len(kinds - {None}) > 1:
            problem("clock", "the clock columns mix dates and timestamps of different kinds")
        if "date" in kinds and rule.period.has_time_part:
            problem("period", "a date clock cannot take a period with hours, minutes or seconds")
        if rule.period_column is not None:
            period_column = resolve(rule.period_column, "period_column")
            if period_column is not None and not _is_text(period_column) and not rule.period_unit:
                problem(
                    "period_column",
                    f"{rule.period_column} is {period_column.type}: "
                    "give period_unit when it holds a number of units",
                )
        for index, condition in enumerate(rule.conditions):
            condition_column = resolve(condition.column, f"where[{index}]")
            if condition_column is None:
                continue
            for value in _literals(condition):
                try:
                    column_value(condition_column, value, self.engine.dialect.name)
                except ValueError as error:
                    problem(f"where[{index}]", str(error))
        if rule.erase_by is not None:
            resolve(rule.erase_by, "erase_by")
        for column_name, strategy in rule.anonymise:
            if column_name not in table.c:
                problem(f"anonymise.{column_name}", f"no column {column_name!r} in {rule.table!r}")
                continue
            misfit = strategy_problem(table.c[column_name], strategy, self.engine.dialect.name)
            shared = strategy.kind in SHARED_VALUE_STRATEGIES
            if misfit is None and shared and {column_name} in self._unique_column_sets(rule.table):
                misfit = (
                    f"{strategy.kind} gives many rows one value, and {column_name} is unique "
                    f"in {rule.table!r}"
                )
            if misfit is not None:
                problem(f"anonymise.{column_name}", misfit)
        if rule.marker_column is not None:
            if rule.marker_column not in table.c:
                problem("marker_column", f"no column {rule.marker_column!r} in {rule.table!r}")
            elif _clock_kind(table.c[rule.marker_column], self.engine.dialect.name) is None:
                problem("marker_column", f"{rule.marker_column!r} must be a date or timestamp")
        self._check_children(rule, table, rule.children, "children", problem)
        if rule.where_sql and not issues:
            try:
                with self.engine.connect() as connection:
                    connection.execute(
                        select(literal(1)).select_from(table).where(text(rule.where_sql)).limit(0)
                    )
            except sa_exc.DBAPIError as error:
                problem("where_sql", f"the database refuses it: {_reason(error)}")
        return issues

    def _check_children(
        self, rule: Rule, parent: Table, children: Sequence[Child], path: str, problem: Any
    ) -> None:
        for index, child in enumerate(children):
            where = f"{path}[{index}]"
            try:
                child_table = self.table(child.table)
            except sa_exc.NoSuchTableError:
                problem(f"{where}.table", f"table {child.table!r} does not exist")
                continue
            if child.foreign_key not in child_table.c:
                problem(
                    f"{where}.foreign_key", f"no column {child.foreign_key!r} in {child.table!r}"
                )
            if child.references not in parent.c:
                problem(f"{where}.references", f"no column {child.references!r} in {parent.name!r}")
            self._check_children(rule, child_table, child.children, f"{where}.children", problem)

    # --- selection --------------------------------------------------------------------------

    def _column(self, rule: Rule, reference: ColumnRef) -> ColumnElement[Any]:
        table = self.table(rule.table)
        if reference.join is None:
            return table.c[reference.column]
        join = rule.join(reference.join)
        remote = self.table(join.table)
        # A correlated scalar subquery rather than a JOIN: it works unchanged inside DELETE and
        # UPDATE on every dialect, where joins do not.
        return (
            select(remote.c[reference.column])
            .where(
                *(
                    remote.c[remote_column] == table.c[local_column]
                    for local_column, remote_column in zip(
                        join.local_columns, join.remote_columns, strict=True
                    )
                )
            )
            .correlate(table)
            .scalar_subquery()
        )

    def _clock(self, rule: Rule) -> _Clock:
        columns = [self._column(rule, reference) for reference in rule.clock]
        kind = _clock_kind(columns[0], self.engine.dialect.name)
        if kind is None:
            raise RetentionError(f"{rule.clock_text} is not a date or timestamp")
        readable = None
        if self.engine.dialect.name == "sqlite":
            readable = and_(
                *(
                    or_(column.is_(None), _sqlite_time_text(column, date_only=kind == "date"))
                    for column in columns
                )
            )
        if len(columns) == 1:
            return _Clock(columns[0], kind, readable)
        # The latest non-NULL value: each argument falls back on the others when it is NULL, so
        # GREATEST ignores NULLs on every dialect (MariaDB's and SQLite's would return NULL).
        arguments = [
            func.coalesce(column, *(other for other in columns if other is not column))
            for column in columns
        ]
        return _Clock(greatest(*arguments, type_=columns[0].type), kind, readable)

    def _expired(self, clock: _Clock, expired: Expired) -> ColumnElement[bool]:
        if clock.kind == "date":
            if expired.last_date is None:
                return false()
            return _when_readable(clock, clock.expression <= expired.last_date)
        parts = []
        for window in expired.windows:
            upper = clock.expression <= self._bound(window.end, clock.kind)
            if window.start is None:
                parts.append(upper)
            else:
                parts.append(and_(clock.expression >= self._bound(window.start, clock.kind), upper))
        return _when_readable(clock, or_(*parts))

    def _bound(self, instant: datetime, kind: ClockKind) -> datetime:
        if kind == "aware":
            return instant
        if kind == "utc_naive":
            return instant.astimezone(UTC).replace(tzinfo=None)
        return instant.astimezone(self.config.timezone).replace(tzinfo=None)

    def predicate(self, selection: Selection) -> ColumnElement[bool]:
        """Given a Selection, return the SQL condition that is true exactly for its due rows:
        expired, in scope, and under no legal hold."""
        rule = selection.rule
        expired = self._expired_all(selection, self._clock(rule))
        held = self._held(selection)
        due = expired if held is None else and_(expired, not_(held))
        return and_(due, self._scope(selection))

    def _scope(self, selection: Selection) -> ColumnElement[bool]:
        """The rows a rule is about, whatever their clock: its conditions (not for an erasure,
        which is about everything a person left), not yet anonymised."""
        rule = selection.rule
        table = self.table(rule.table)
        parts: list[ColumnElement[bool]] = [true()]
        if selection.erasure is None:
            parts += [self._condition(rule, condition) for condition in rule.conditions]
            if rule.where_sql:
                parts.append(text(f"({rule.where_sql})").self_group())  # type: ignore[arg-type]
        if rule.marker_column is not None:
            parts.append(table.c[rule.marker_column].is_(None))
        return and_(*parts)

    def _held(self, selection: Selection) -> ColumnElement[bool] | None:
        """True for rows under a legal hold in force (None when the rule has none). A NULL in a
        hold's condition counts as held: not(NULL) selects nothing."""
        rule = selection.rule
        parts: list[ColumnElement[bool]] = []
        key_columns = self._key_columns(rule)
        for hold in selection.holds:
            if hold.kind == "key" and hold.keys:
                # A key that is no value of its column ('abc' for an integer id) holds nothing:
                # the survey reports its hold, and the other keys still hold their rows.
                keys = [fit for key in hold.keys if (fit := _fitted(key_columns, key)) is not None]
                if keys:
                    parts.append(_key_in(key_columns, keys))
            elif hold.kind == "where" and hold.condition is not None:
                parts.append(self._condition(rule, hold.condition))
        return or_(*parts) if parts else None

    def _expired_all(self, selection: Selection, clock: _Clock) -> ColumnElement[bool]:
        rule = selection.rule
        if selection.erasure is not None:
            return self._erased(rule, selection.erasure.subject)
        expired = self._expired(clock, selection.default)
        if rule.period_column is None:
            return expired
        period_column = self._column(rule, rule.period_column)
        return or_(
            and_(period_column.is_(None), expired),
            *(
                and_(period_column == value, self._expired(clock, override))
                for value, override in selection.overrides
            ),
        )

    def _erased(self, rule: Rule, subject_text: str) -> ColumnElement[bool]:
        """An erasure is due now, whatever the clock: every row whose erase_by column holds the
        subject. Through a join, the rows whose join columns are among those of the remote rows
        that hold it: an IN that an index on the join columns serves, where the clock's
        correlated subquery would be evaluated on every row of the table."""
        if rule.erase_by is None:
            raise RetentionError(f"rule {rule.name!r} has no erase_by column")
        reference = rule.erase_by
        owner = self.table(
            rule.table if reference.join is None else rule.join(reference.join).table
        )
        person = owner.c[reference.column]
        try:
            subject = _coerce(person, subject_text)
        except ValueError:
            return false()  # "alice@example.com" is nobody's integer id
        if reference.join is None:
            return person == subject
        join = rule.join(reference.join)
        table = self.table(rule.table)
        local = [table.c[column] for column in join.local_columns]
        remote = select(*(owner.c[column] for column in join.remote_columns)).where(
            person == subject
        )
        if len(local) == 1:
            return local[0].in_(remote)
        return tuple_(*local).in_(remote)

    def _condition(self, rule: Rule, condition: Condition) -> ColumnElement[bool]:
        column = self._column(rule, condition.column)
        # As check_rule checked it: ISO text becomes a date for a date column, and so on.
        value = cast("Scalar | tuple[Scalar, ...] | None", self._bindable(rule, condition))
        match condition.operator:
            case "is_null":
                return column.is_(None)
            case "is_not_null":
                return column.is_not(None)
            case "in":
                return column.in_(value if isinstance(value, tuple) else (value,))
            case "not_in":
                return column.not_in(value if isinstance(value, tuple) else (value,))
            case "=":
                return column == value
            case "!=":
                return column != value
            case "<":
                return column < value
            case "<=":
                return column <= value
            case ">":
                return column > value
            case ">=":
                return column >= value
        raise AssertionError(condition.operator)

    def _invalid_period(self, selection: Selection) -> ColumnElement[bool] | None:
        """True for rows whose period column holds no period (kept: they match no override),
        None when there are none to count."""
        rule = selection.rule
        if rule.period_column is None or not selection.invalid_period_values:
            return None
        column = self._column(rule, rule.period_column)
        periods = [value for value, _expired in selection.overrides]
        return and_(column.is_not(None), column.not_in(periods))

    def unfit_keys(
        self, rule: Rule, keys: Sequence[tuple[str, ...]]
    ) -> tuple[tuple[str, ...], ...]:
        """Given a rule and keys as typed on the command line (one text per key column), return
        those that no row can have: 'abc' or '1.5' for an integer id."""
        key_columns = self._key_columns(rule)
        return tuple(key for key in keys if _fitted(key_columns, key) is None)

    def _bindable(self, rule: Rule, condition: Condition) -> object:
        if condition.value is None:
            return None
        reference = condition.column
        owner = self.table(
            rule.table if reference.join is None else rule.join(reference.join).table
        )
        target, dialect = owner.c[reference.column], self.engine.dialect.name
        try:
            if isinstance(condition.value, tuple):
                return tuple(column_value(target, item, dialect) for item in condition.value)
            return column_value(target, condition.value, dialect)
        except ValueError as error:
            # check_rule refuses such a rule; a hold's condition can still hold a literal
            # that no longer fits (the column changed): the rule fails, nothing is purged.
            # A hold's literal can name a person: left out.
            raise RetentionError(
                f"rule {rule.name!r}: a condition cannot be compared: {without_values(str(error))}"
            ) from error

    def period_values(self, rule: Rule) -> tuple[object, ...]:
        """Given a rule with a period column, return the distinct non-NULL values it holds."""
        if rule.period_column is None:
            return ()
        reference = rule.period_column
        owner = self.table(
            rule.table if reference.join is None else rule.join(reference.join).table
        )
        column = owner.c[reference.column]
        with self._reachable(), self.engine.connect() as connection:
            rows = connection.execute(select(column).where(column.is_not(None)).distinct())
            return tuple(sorted((row[0] for row in rows), key=str))

    def _key_columns(self, rule: Rule) -> list[Column[Any]]:
        table = self.table(rule.table)
        return [table.c[column] for column in rule.key]

    def _batch_query(
        self, selection: Selection, after: KeyValues | None, limit: int, extra: Sequence[str] = ()
    ) -> Select[Any]:
        """The one query that picks due rows in key order, after ``after``: keyset pagination."""
        rule = selection.rule
        table = self.table(rule.table)
        keys = self._key_columns(rule)
        columns = keys + [table.c[name] for name in extra if name not in rule.key]
        query = select(*columns).where(self.predicate(selection)).order_by(*keys).limit(limit)
        if after is not None:
            query = query.where(_after_key(keys, after))
        return query

    def due_keys(
        self, selection: Selection, *, after: KeyValues | None, limit: int
    ) -> tuple[KeyValues, ...]:
        """Given a Selection, return up to ``limit`` due keys after ``after``, in key order: the
        subjects of a cross-store rule, read with the run's own query, without locking."""
        with self._reachable(), self.engine.connect() as connection:
            rows = connection.execute(self._batch_query(selection, after, limit)).all()
        return tuple(tuple(row) for row in rows)

    def survey(self, selection: Selection, sample_size: int) -> Survey:
        """Given a Selection, return in one pass over the rule's scope: rows due, held and with a
        future clock, the oldest due clock; then the first due keys (the run's own query)."""
        rule = selection.rule
        clock = self._clock(rule)
        expired = self._expired_all(selection, clock)
        held = self._held(selection)
        due = expired if held is None else and_(expired, not_(held))
        erasure = selection.erasure is not None
        future = _when_readable(
            clock,
            clock.expression > to_wall_time(selection.as_of, selection.zone).date()
            if clock.kind == "date"
            else clock.expression > self._bound(selection.as_of, clock.kind),
        )

        def how_many(condition: ColumnElement[bool]) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        # Rows whose text says due but whose spelling cannot be trusted: those the guard keeps.
        unreadable = (
            literal(0)
            if clock.readable is None or erasure
            else how_many(
                and_(
                    self._expired_all(selection, replace(clock, readable=None)),
                    not_(clock.readable),
                )
            )
        )

        invalid_period = None if erasure else self._invalid_period(selection)
        counting = (
            select(
                func.count(),
                how_many(due),
                how_many(and_(expired, held)) if held is not None else literal(0),
                literal(0) if erasure else how_many(future),
                unreadable,
                literal(0) if invalid_period is None else how_many(invalid_period),
                # An erasure ignores the clock, which may not even be readable.
                null() if erasure else func.min(case((due, clock.expression), else_=None)),
            )
            .select_from(self.table(rule.table))
            .where(self._scope(selection))
        )
        with self._reachable(), self.engine.connect() as connection:
            counts = connection.execute(counting).one()
            samples = connection.execute(self._batch_query(selection, None, sample_size)).all()
            children = self._count_children(connection, selection, self.predicate(selection))
        in_scope, due_count, held_count, future_count, unreadable_count, invalid_count, oldest = (
            counts
        )
        partitioned, partitions_due, partition_notes = partitions.survey_partitions(self, selection)
        return Survey(
            due=int(due_count),
            oldest=self._instant(oldest, clock.kind),
            sample_keys=tuple(tuple(row) for row in samples),
            in_scope=int(in_scope),
            held=int(held_count),
            future=int(future_count),
            unreadable=int(unreadable_count),
            invalid_period=int(invalid_count),
            unfit_holds=tuple(
                hold.id
                for hold in selection.holds
                if hold.kind == "key" and self.unfit_keys(rule, hold.keys)
            ),
            partitioned=partitioned,
            partitions=partitions_due,
            partition_notes=partition_notes,
            children=children,
        )

    # --- children -----------------------------------------------------------------------------

    def _count_children(
        self,
        connection: Connection,
        selection: Selection,
        parents: ColumnElement[bool],
        before: ColumnElement[bool] | None = None,
    ) -> ChildCounts:
        """Per child table, how many rows a purge of the rule's rows matching ``parents`` deletes:
        one COUNT each, a semi-join on the parents (no row comes back to Python). With
        ``before`` (a dry run's earlier batches), the child rows those batches already reached
        are left out, as the run deletes them there; they can only overlap when a
        ``references`` column is not unique."""
        rule = selection.rule
        counts = []
        for name, path in child_paths(rule.children):
            child_table, reached = self._child_rows(selection, path, parents)
            if before is not None and not self._unique_path(rule.table, path):
                _, earlier = self._child_rows(selection, path, before)
                reached = and_(reached, _not_true(earlier))
            count = connection.execute(
                select(func.count()).select_from(child_table).where(reached)
            ).scalar_one()
            counts.append((name, int(count)))
        return tuple(counts)

    def _child_rows(
        self, selection: Selection, path: Sequence[Child], parents: ColumnElement[bool]
    ) -> tuple[Table, ColumnElement[bool]]:
        """The last table of a child path, and the condition true for its rows that a purge of
        the rule's rows matching ``parents`` deletes: those whose foreign key holds a value of
        a parent still there. At every level, rows that the rules of ``removed_before`` delete
        first are no longer there (nor reach anything)."""
        table = self.table(selection.rule.table)
        reached = and_(parents, self._kept_before(selection, table.name))
        for child in path:
            child_table = self.table(child.table)
            referenced = table.c[child.references]
            # correlate(None): a table met again lower in the path is another row, not this one.
            values = select(referenced).where(reached, referenced.is_not(None)).correlate(None)
            reached = and_(
                child_table.c[child.foreign_key].in_(values),
                self._kept_before(selection, child_table.name),
            )
            table = child_table
        return table, reached

    def _kept_before(self, selection: Selection, table_name: str) -> ColumnElement[bool]:
        """True for the rows of ``table_name`` that no rule of ``removed_before`` deletes, as
        its rows due or as their children."""
        gone: list[ColumnElement[bool]] = []
        for earlier in selection.removed_before:
            if earlier.rule.table == table_name:
                gone.append(self.predicate(earlier))
            for _name, path in child_paths(earlier.rule.children):
                if path[-1].table == table_name:
                    gone.append(self._child_rows(earlier, path, self.predicate(earlier))[1])
        return _not_true(or_(*gone)) if gone else true()

    def _unique_path(self, table_name: str, path: Sequence[Child]) -> bool:
        """Whether every ``references`` along a child path is unique in its table: then two
        batches never reach the same child row."""
        for child in path:
            if {child.references} not in self._unique_column_sets(table_name):
                return False
            table_name = child.table
        return True

    def _instant(self, value: Any, kind: ClockKind) -> datetime | date | None:
        if value is None or kind == "date":
            return value  # type: ignore[no-any-return]
        if kind == "aware":
            return value.astimezone(UTC)  # type: ignore[no-any-return]
        zone = UTC if kind == "utc_naive" else self.config.timezone
        return value.replace(tzinfo=zone).astimezone(UTC)  # type: ignore[no-any-return]

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
    ) -> Batch:
        """Given a Selection and the last key already handled, purge the next batch of due rows.

        One transaction: lock the next ``limit`` due rows in key order, call ``before_write`` with
        their keys (the audit intent: if it raises, the transaction rolls back and nothing is
        deleted), delete their children, then delete (or anonymise) them with the due condition
        checked again inside the statement. If the database reports another number of rows than
        were locked, a row changed under us: the batch rolls back and BatchConflict is raised.
        With ``only`` (a subjects' rule: the subjects whose objects were visited), the locked
        rows it does not accept are left untouched, as if held, until a later run. A plain
        delete rule without ``only`` takes the shorter way of ``_delete_range``. ``dry_run``
        only selects.
        """
        rule = selection.rule
        extra = [child.references for child in rule.children]
        extra += [column for column, _strategy in rule.anonymise]
        query = self._batch_query(selection, after, limit, extra)
        if dry_run:
            with self._reachable(), self.engine.connect() as connection:
                rows = connection.execute(query).mappings().all()
                keys = tuple(tuple(row[key] for key in rule.key) for row in rows)
                resume_after: KeyValues | None = None
                more: bool | None = None
                if only is not None and keys:
                    _, keys, resume_after, more = _only_accepted(rows, keys, only, limit)
                children: ChildCounts = ()
                if keys and rule.children:
                    key_columns = self._key_columns(rule)
                    before = None
                    if after is not None:
                        before = and_(
                            self.predicate(selection), not_(_after_key(key_columns, after))
                        )
                    children = self._count_children(
                        connection, selection, _key_in(key_columns, keys), before
                    )
            return Batch(
                keys,
                done=0,
                children_deleted=sum(count for _name, count in children),
                children=children,
                resume_after=resume_after,
                more=more,
            )
        started = time.monotonic()
        with (
            self._reachable(),
            self.engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
            connection.begin(),
        ):
            if only is None and self._deletes_by_range(rule):
                batch = self._delete_range(connection, selection, after, limit, before_write)
            else:
                batch = self._purge_locked(
                    connection, selection, query, now, hash_key, before_write, only, limit
                )
            if batch.keys:
                crash_point("mid_batch")
        if batch.keys:
            crash_point("after_commit")
        return replace(batch, transaction_seconds=time.monotonic() - started)

    # --- whole partitions (stores/partitions.py) ------------------------------------------------

    def drop_partition(
        self, selection: Selection, name: str, *, before_write: BeforeWrite | None = None
    ) -> Batch:
        """Given a Selection and a partition its plan found due, drop it whole, recorded."""
        return partitions.drop_partition(self, selection, name, before_write)

    def partition_exists(self, table: str, name: str) -> bool:
        """Given a table and a partition's name, return whether the partition is still there."""
        return partitions.partition_exists(self, table, name)

    def reachable(self) -> Any:
        return self._reachable()

    def write_connection(self) -> Connection:
        return self.engine.connect().execution_options(**{WRITE_OPTION: True})

    def clock_kind(self, rule: Rule) -> ClockKind:
        return self._clock(rule).kind

    def bound(self, instant: datetime, kind: ClockKind) -> datetime:
        return self._bound(instant, kind)

    def instant(self, value: Any, kind: ClockKind) -> datetime | date | None:
        return self._instant(value, kind)

    def key_columns(self, rule: Rule) -> list[Column[Any]]:
        return self._key_columns(rule)

    def held(self, selection: Selection) -> ColumnElement[bool] | None:
        return self._held(selection)

    def _deletes_by_range(self, rule: Rule) -> bool:
        """A plain delete (no children to delete first, no values to read) on a dialect with
        DELETE … RETURNING needs no locking select: the DELETE itself says which rows went."""
        returning = bool(self.engine.dialect.delete_returning)
        return rule.action == "delete" and not rule.children and returning

    def _delete_range(
        self,
        connection: Connection,
        selection: Selection,
        after: KeyValues | None,
        limit: int,
        before_write: BeforeWrite | None,
    ) -> Batch:
        """Delete the next batch of a plain delete rule in two statements: find the last of the
        next ``limit`` due keys (an index walk, no rows sent back but one), then delete every
        row up to it that is still due, the condition checked inside the DELETE, RETURNING
        their keys. ``before_write`` (the audit intent) gets exactly those keys before the
        COMMIT: if it raises, the transaction rolls back and nothing was deleted.

        A row that stopped being due since the first statement stays; one that became due in
        the range goes with the others and is in the keys. The next batch starts after the
        range's end (``resume_after``), whatever was deleted; a range of fewer than ``limit``
        due keys was the last.
        """
        rule = selection.rule
        key_columns = self._key_columns(rule)
        window = self._batch_query(selection, after, limit).subquery()
        # The window's size comes back with its last key: a short window is the rule's last
        # batch, so no further probe walks the rest of the index again.
        last = connection.execute(
            select(*window.c, func.count().over())
            .order_by(*(column.desc() for column in window.c))
            .limit(1)
        ).first()
        if last is None:
            return Batch((), 0, more=False)
        end, size = tuple(last[:-1]), int(last[-1])
        in_range = _key_up_to(key_columns, end)
        if after is not None:
            in_range = and_(_after_key(key_columns, after), in_range)
        statement = (
            delete(self.table(rule.table))
            .where(in_range, self.predicate(selection))
            .returning(*key_columns)
        )
        # One fetchall: iterating the result would fetch row by row.
        keys = tuple(map(tuple, connection.execute(statement).all()))
        if keys and before_write is not None:
            before_write(keys)
        return Batch(keys, done=len(keys), resume_after=end, more=size >= limit)

    def _purge_locked(
        self,
        connection: Connection,
        selection: Selection,
        query: Select[Any],
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None,
        only: KeyFilter | None,
        limit: int,
    ) -> Batch:
        rule = selection.rule
        rows = connection.execute(query.with_for_update()).mappings().all()
        if not rows:
            return Batch((), 0)
        keys = tuple(tuple(row[key] for key in rule.key) for row in rows)
        resume_after: KeyValues | None = None
        more: bool | None = None
        if only is not None:
            # The rows ``only`` refuses stay locked and untouched.
            rows, keys, resume_after, more = _only_accepted(rows, keys, only, limit)
            if not keys:
                return Batch((), 0, resume_after=resume_after, more=more)
        if before_write is not None:
            before_write(keys)
        table = self.table(rule.table)
        key_columns = self._key_columns(rule)
        recheck = self.predicate(selection)
        children: ChildCounts = ()
        if rule.action == "delete":
            names = {path: name for name, path in child_paths(rule.children)}
            deleted = self._delete_children(
                connection,
                rule.children,
                {
                    child.references: [row[child.references] for row in rows]
                    for child in rule.children
                },
                names,
            )
            children = tuple((name, deleted.get(name, 0)) for name in dict.fromkeys(names.values()))
            # A key range would also reach the rows ``only`` refused.
            self._delete_exactly(
                connection, table, key_columns, keys, recheck, by_range=only is None
            )
        else:
            result = connection.execute(
                update(table)
                .where(
                    *(column == bindparam(f"key_{column.name}") for column in key_columns),
                    recheck,
                )
                .values(
                    {
                        **{column: bindparam(f"new_{column}") for column, _ in rule.anonymise},
                        rule.marker_column: bindparam("new_marker"),
                    }
                ),
                [self._anonymised(rule, row, now, hash_key) for row in rows],
            )
            if result.rowcount != len(keys):
                raise BatchConflict(f"{result.rowcount} of {len(keys)} locked rows changed")
        return Batch(
            keys,
            done=len(keys),
            children_deleted=sum(count for _name, count in children),
            children=children,
            resume_after=resume_after,
            more=more,
        )

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
        with self._reachable(), self.engine.connect() as connection:
            for start in range(0, len(keys), 1000):
                chunk = [tuple(key) for key in keys[start : start + 1000]]
                query = select(*columns).where(_key_in(columns, chunk))
                if marker_column is not None:
                    query = query.where(table.c[marker_column].is_(None))
                rows = connection.execute(query)
                found.update(tuple(row) for row in rows)
        return found

    def _delete_exactly(
        self,
        connection: Connection,
        table: Table,
        key_columns: list[Column[Any]],
        keys: tuple[KeyValues, ...],
        recheck: ColumnElement[bool],
        *,
        by_range: bool,
    ) -> None:
        """Delete the locked rows, the due condition checked again; BatchConflict unless
        exactly those rows went. With RETURNING and ``by_range`` the statement names the batch
        by its key range (binding one parameter per key cost more than the delete) and the
        returned keys prove the set; else by the list of keys and the row count."""
        if by_range and self.engine.dialect.delete_returning:
            deleted = connection.execute(
                delete(table)
                .where(_key_between(key_columns, keys[0], keys[-1]), recheck)
                .returning(*key_columns)
            ).all()
            if len(deleted) != len(keys) or {tuple(row) for row in deleted} != set(keys):
                raise BatchConflict(f"{len(deleted)} rows deleted, {len(keys)} locked")
            return
        result = connection.execute(delete(table).where(_key_in(key_columns, keys), recheck))
        if result.rowcount != len(keys):
            raise BatchConflict(f"{result.rowcount} of {len(keys)} locked rows changed")

    def _anonymised(
        self, rule: Rule, row: RowMapping, now: datetime, hash_key: bytes | None
    ) -> dict[str, Any]:
        table = self.table(rule.table)
        assert rule.marker_column is not None
        marker_kind = _clock_kind(table.c[rule.marker_column], self.engine.dialect.name)
        marker: datetime | date = now if marker_kind != "date" else now.date()
        if isinstance(marker, datetime) and marker_kind is not None:
            marker = self._bound(marker, marker_kind)
        parameters: dict[str, Any] = {f"key_{column}": row[column] for column in rule.key}
        for column, strategy in rule.anonymise:
            value = anonymise_value(strategy, row[column], hash_key=hash_key)
            if strategy.kind == "fixed" and strategy.value is not None and value is not None:
                # The value check_rule checked, as the column takes it (a date, a UUID).
                value = column_value(table.c[column], strategy.value, self.engine.dialect.name)
            parameters[f"new_{column}"] = value
        parameters["new_marker"] = marker
        return parameters

    def _delete_children(
        self,
        connection: Connection,
        children: Sequence[Child],
        parent_values: Mapping[str, Sequence[Any] | Select[Any]],
        names: Mapping[tuple[Child, ...], str],
        above: tuple[Child, ...] = (),
    ) -> dict[str, int]:
        """Delete the children of a batch, the deepest first; return the rows deleted per child
        table, named as ``child_paths`` names them."""
        deleted: dict[str, int] = {}
        for child in children:
            path = (*above, child)
            child_table = self.table(child.table)
            references = child_table.c[child.foreign_key].in_(parent_values[child.references])
            if child.children:
                below = self._delete_children(
                    connection,
                    child.children,
                    {
                        grandchild.references: select(child_table.c[grandchild.references]).where(
                            references
                        )
                        for grandchild in child.children
                    },
                    names,
                    path,
                )
                for name, count in below.items():
                    deleted[name] = deleted.get(name, 0) + count
            count = connection.execute(delete(child_table).where(references)).rowcount
            deleted[names[path]] = deleted.get(names[path], 0) + count
        return deleted


def _not_true(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """True where ``condition`` is false or NULL: NOT would drop the NULLs too."""
    return case((condition, 1), else_=0) == 0


def _literals(condition: Condition) -> tuple[Any, ...]:
    if condition.value is None:
        return ()
    return condition.value if isinstance(condition.value, tuple) else (condition.value,)


def _after_key(keys: Sequence[Column[Any]], after: KeyValues) -> ColumnElement[bool]:
    """``(a, b) > (x, y)`` spelled out, which every dialect can serve from the key's index."""
    return _beyond(keys, after, lambda column, value: column > value)


def _beyond(
    keys: Sequence[Column[Any]],
    values: KeyValues,
    strictly: Callable[[Column[Any], Any], ColumnElement[bool]],
) -> ColumnElement[bool]:
    clauses = []
    for position, column in enumerate(keys):
        equal_prefix = [keys[index] == values[index] for index in range(position)]
        clauses.append(and_(*equal_prefix, strictly(column, values[position])))
    return or_(*clauses) if len(clauses) > 1 else clauses[0]


def _key_between(
    keys: Sequence[Column[Any]], first: KeyValues, last: KeyValues
) -> ColumnElement[bool]:
    """``first <= (key) <= last`` in key order."""
    return and_(
        not_(_beyond(keys, first, lambda column, value: column < value)), _key_up_to(keys, last)
    )


def _key_up_to(keys: Sequence[Column[Any]], last: KeyValues) -> ColumnElement[bool]:
    """``(key) <= last`` in key order."""
    return not_(_beyond(keys, last, lambda column, value: column > value))


def _only_accepted(
    rows: Sequence[RowMapping], keys: tuple[KeyValues, ...], only: KeyFilter, limit: int
) -> tuple[list[RowMapping], tuple[KeyValues, ...], KeyValues, bool]:
    """Given a batch's rows and their keys in key order (at least one), return the rows and
    keys ``only`` accepts, where the next batch starts (after the last row read, accepted or
    not) and whether more may follow."""
    accepted = only(keys)
    chosen = [(row, key) for row, key in zip(rows, keys, strict=True) if key in accepted]
    return (
        [row for row, _ in chosen],
        tuple(key for _, key in chosen),
        keys[-1],
        len(keys) >= limit,
    )


def _key_in(keys: Sequence[Column[Any]], values: Sequence[KeyValues]) -> ColumnElement[bool]:
    if len(keys) == 1:
        return keys[0].in_([value[0] for value in values])
    return tuple_(*keys).in_(values)


def _fitted(columns: Sequence[Column[Any]], key: Sequence[str]) -> KeyValues | None:
    """A key typed on the command line as its columns' values, or None when no row can have
    it (a part that is no value of its column, or a key of another width)."""
    if len(key) != len(columns):
        return None
    try:
        return tuple(_coerce(column, part) for column, part in zip(columns, key, strict=True))
    except ValueError:
        return None


# A signed BIGINT, the widest integer key the three databases share; SQLite's driver cannot even
# send a larger one.
_INTEGER_RANGE = range(-(2**63), 2**63)


def _coerce(column: ColumnElement[Any], value: str) -> object:
    """A value typed on the command line (a held key, an erasure's subject), as the column's
    Python type: ints and UUIDs are parsed, ValueError when the text is not one."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return value
    if python_type is int:
        number = int(value)
        if number not in _INTEGER_RANGE:
            raise ValueError(f"{value!r} is out of the range of an integer column")
        return number
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    return value


def _clock_kind(column: ColumnElement[Any], dialect: str) -> ClockKind | None:
    column_type = column.type
    if isinstance(column_type, sqltypes.DateTime):
        if dialect in ("mysql", "mariadb") and isinstance(column_type, MYSQL_TIMESTAMP):
            return "utc_naive"
        return "aware" if column_type.timezone else "naive"
    if isinstance(column_type, sqltypes.Date):
        return "date"
    return None


# SQLite stores a DATETIME as whatever was written. Only these spellings, without an offset,
# compare as text in time order against the bounds SQLAlchemy writes (YYYY-MM-DD HH:MM:SS.ffffff):
# each is a prefix-consistent truncation of that form.
_SQLITE_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_SQLITE_MINUTE = _SQLITE_DATE + " [0-9][0-9]:[0-9][0-9]"
_SQLITE_SECOND = _SQLITE_MINUTE + ":[0-9][0-9]"


def _sqlite_time_text(column: ColumnElement[Any], *, date_only: bool) -> ColumnElement[bool]:
    """True where a SQLite clock value is text in a spelling that compares correctly as text:
    ``2024-02-29`` for a DATE; that, ``2024-02-29 10:00``, ``2024-02-29 10:00:00`` or
    ``2024-02-29 10:00:00.123456`` for a DATETIME. Unix seconds, offsets, a ``T`` separator
    or any other text are not: such rows are never purged, and plans count them."""

    def glob(value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return value.op("GLOB", is_comparison=True)(pattern)

    is_text = func.typeof(column) == "text"
    if date_only:
        return and_(is_text, glob(column, _SQLITE_DATE))
    # One pattern by length: GLOB with character classes is what costs here.
    length = func.length(column)
    shaped = case(
        (length == 10, glob(column, _SQLITE_DATE)),
        (length == 16, glob(column, _SQLITE_MINUTE)),
        (length == 19, glob(column, _SQLITE_SECOND)),
        else_=and_(
            glob(column, _SQLITE_SECOND + ".[0-9]*"),
            not_(glob(func.substr(column, 21), "*[^0-9]*")),
        ),
    )
    return and_(is_text, shaped)


def _when_readable(clock: _Clock, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # The comparison first: SQLite evaluates AND in order, so the costly check of the spelling
    # only runs on the rows the comparison keeps.
    return condition if clock.readable is None else and_(condition, clock.readable)


def _is_text(column: ColumnElement[Any]) -> bool:
    return isinstance(column.type, sqltypes.String)


def _is_connect_failure(error: sa_exc.DBAPIError) -> bool:
    if not isinstance(error, sa_exc.OperationalError):
        return False
    message = str(error.orig).lower()
    return any(
        marker in message
        for marker in (
            "connection refused",
            "could not connect",
            "can't connect",
            "unable to open database",
            "connection timed out",
            "timeout expired",
            "access denied",
            "authentication failed",
            "unknown database",
            "does not exist",
            "name or service not known",
            "server closed the connection",
            "lost connection",
        )
    )


def _reason(error: sa_exc.DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else str(error)


__all__ = ["SqlStore", "create_sql_engine"]
