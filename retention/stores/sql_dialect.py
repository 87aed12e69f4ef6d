"""What differs between SQLite, PostgreSQL and MariaDB/MySQL: how an engine is opened (read-only
by construction, sessions in UTC, SQLite's write lock taken up front), which column types are a
clock, how SQLite's free-form DATETIME text is recognised, GREATEST's spelling, and which driver
errors mean "unreachable"."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    case,
    create_engine,
    event,
    func,
    literal_column,
    not_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import coercions, roles, sqltypes
from sqlalchemy.sql.base import SyntaxExtension
from sqlalchemy.sql.dml import Delete
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.sql.visitors import InternalTraversal

from retention.config.model import SUPPORTED_URL_FORMS
from retention.errors import StoreUnavailable, message_without_values
from retention.runtime.database_urls import UnusableUrl, engine_of, parsed_url, postgres_options

ClockKind = Literal["date", "aware", "naive", "utc_naive"]
CONNECT_TIMEOUT_SECONDS = 10
WRITE_OPTION = "retention_write"
OneStatementDelete = Literal["ordered_limit"]


class greatest(GenericFunction[Any]):
    """GREATEST(); SQLite spells it max() with several arguments."""

    name = "greatest"
    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


def raw_sql_term(where_sql: str) -> ColumnElement[bool]:
    """Given a rule's where_sql, return it as one parenthesised term of a WHERE clause, sent as
    written. Not text(): it reads ``:name`` as a bind parameter, even inside quotes (``note <>
    'see :ref'``), and then no statement could be built (a traceback); here the database reads
    it, and refuses what it must (config validate: exit 78)."""
    return literal_column(f"({where_sql})")


def one_statement_delete(dialect: Dialect) -> OneStatementDelete | None:
    """Given a dialect, return how one statement deletes the next due rows in key order and
    returns their keys, or None where it cannot (SQLite, MySQL: a probe for the range's end,
    then the range's DELETE; PostgreSQL, which has no DELETE … LIMIT, reads a batch's keys
    ahead: stores/sql_probed.py).

    MariaDB: ``DELETE … WHERE <after> AND <due> ORDER BY <key> LIMIT n RETURNING <key>``, one
    walk of the key's index, rows locked as they are read.
    """
    if dialect.name in ("mysql", "mariadb") and getattr(dialect, "is_mariadb", False):
        return "ordered_limit" if dialect.delete_returning else None
    return None


class _OrderedLimit(SyntaxExtension, ClauseElement):
    """``ORDER BY <columns> LIMIT n`` after a MariaDB DELETE's WHERE."""

    __visit_name__ = "retention_ordered_limit"
    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own spelling)
        ("columns", InternalTraversal.dp_clauseelement_tuple),
        ("limit", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, columns: Sequence[ColumnElement[Any]], limit: int) -> None:
        self.columns = tuple(columns)
        self.limit = coercions.expect(roles.LimitOffsetRole, limit, name=None, type_=None)

    def apply_to_delete(self, delete_stmt: Delete) -> None:
        delete_stmt.apply_syntax_extension_point(self.append_replacing_same_type, "post_criteria")


def ordered_limit(columns: Sequence[ColumnElement[Any]], limit: int) -> _OrderedLimit:
    """Given key columns and a row count, return the DELETE extension that deletes only the
    first ``limit`` matching rows in key order (MariaDB)."""
    return _OrderedLimit(columns, limit)


@compiles(_OrderedLimit)
def _ordered_limit_sql(element: _OrderedLimit, compiler: Any, **kw: Any) -> str:
    order = ", ".join(compiler.process(column, **kw) for column in element.columns)
    return f"ORDER BY {order} LIMIT {compiler.process(element.limit, literal_execute=True, **kw)}"


READ_ONLY_OPTION = "-c default_transaction_read_only=on"
# The longest a batch's write waits for a row another session holds locked (an application's
# open transaction). Past it the batch is rolled back and its rule fails, picked up again by
# the next run, rather than waiting without end: a stop (SIGTERM, Ctrl-C) is served only
# between statements, and systemd's TimeoutStopSec would end in SIGKILL.
ROW_LOCK_TIMEOUT_SECONDS = 5


def create_sql_engine(url: str, *, read_only: bool) -> Engine:
    """Given a SQLAlchemy URL, return an engine; read-only engines cannot write by construction.
    A URL no engine can be made on raises UnusableUrl (runtime/database_urls.py).

    SQLite files are opened with ``mode=ro`` (or ``mode=rw``, so a missing file is an error rather
    than a new empty database); PostgreSQL sessions get ``default_transaction_read_only``;
    MariaDB/MySQL sessions ``SET SESSION TRANSACTION READ ONLY``. MariaDB/MySQL sessions run in
    UTC so that TIMESTAMP columns read the same whatever the server's time_zone.
    """
    parsed = parsed_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed.database or "", read_only=read_only)
    if backend == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if read_only:
            # Added to the URL's own options (a search_path), which connect_args would
            # replace: a read-only check must resolve the rule's tables as the run does. Last,
            # so that the URL cannot turn it off.
            connect_args["options"] = postgres_options(parsed, READ_ONLY_OPTION)
        engine = engine_of(
            create_engine, url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True
        )
        if parsed.get_driver_name() == "psycopg":
            event.listen(engine, "connect", _read_timestamps_off_the_calendar)
        if not read_only:
            event.listen(engine, "begin", _write_lock_timeout)
        return engine
    if backend in ("mysql", "mariadb"):
        engine = engine_of(
            create_engine,
            url,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            pool_pre_ping=True,
            hide_parameters=True,
        )
        statements = ["SET time_zone = '+00:00'"]
        if read_only:
            statements.append("SET SESSION TRANSACTION READ ONLY")
        else:
            statements.append(f"SET SESSION innodb_lock_wait_timeout = {ROW_LOCK_TIMEOUT_SECONDS}")

        @event.listens_for(engine, "connect")
        def _session_setup(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

        return engine
    raise UnusableUrl(SUPPORTED_URL_FORMS)  # parsed_url refuses any other scheme first


def _write_lock_timeout(connection: Connection) -> None:
    # SET LOCAL: this transaction only; a partition's drop sets a shorter one after it.
    if connection.get_execution_options().get(WRITE_OPTION, False):
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{ROW_LOCK_TIMEOUT_SECONDS}s'")


# PostgreSQL's -infinity and dates BC are before any Python date (infinity and years past 9999
# after): read as the first (last) day Python has, a day in, so that a time zone shift still
# fits. Else one such row, due (-infinity sorts first), fails its rule's survey for ever.
EARLIEST_READ = datetime(1, 1, 2)
LATEST_READ = datetime(9999, 12, 30)


def _read_timestamps_off_the_calendar(dbapi_connection: Any, _record: Any) -> None:
    for name, loader in _calendar_loaders().items():
        dbapi_connection.adapters.register_loader(name, loader)


@cache
def _calendar_loaders() -> dict[str, type]:
    """psycopg's loaders of timestamp, timestamptz and date, but a value off Python's calendar
    read as EARLIEST_READ or LATEST_READ instead of a DataError."""
    from psycopg import DataError
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

    def calendar_loader(base: Any, earliest: date, latest: date) -> type:
        def load(self: Any, data: Any) -> Any:
            try:
                return base.load(self, data)
            except DataError:
                text = bytes(data)
                return earliest if text.startswith(b"-") or text.endswith(b" BC") else latest

        return type(f"OnTheCalendar{base.__name__}", (base,), {"load": load})

    aware = (EARLIEST_READ.replace(tzinfo=UTC), LATEST_READ.replace(tzinfo=UTC))
    return {
        "timestamp": calendar_loader(TimestampLoader, EARLIEST_READ, LATEST_READ),
        "timestamptz": calendar_loader(TimestamptzLoader, *aware),
        "date": calendar_loader(DateLoader, EARLIEST_READ.date(), LATEST_READ.date()),
    }


def _sqlite_engine(path: str, *, read_only: bool) -> Engine:
    if not path or path == ":memory:":
        raise StoreUnavailable("a SQLite store needs a database file path")
    mode = "ro" if read_only else "rw"
    uri = f"file:{quote(path)}?mode={mode}"

    def connect() -> sqlite3.Connection:
        # isolation_level=None: transactions are begun below, so a batch's locking select and
        # its DELETE are one transaction (pysqlite would otherwise begin only at the DELETE).
        return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)

    engine = create_engine("sqlite://", creator=connect, hide_parameters=True)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Only a purge takes the write lock up front; reads (plan counts) must not block writers.
        writing = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing and not read_only else "BEGIN")

    return engine


def clock_kind(column: ColumnElement[Any], dialect: str) -> ClockKind | None:
    column_type = column.type
    if isinstance(column_type, sqltypes.DateTime):
        if dialect in ("mysql", "mariadb"):
            # Imported here: the MySQL dialect is loaded only where a MySQL store is open.
            from sqlalchemy.dialects.mysql import TIMESTAMP as MYSQL_TIMESTAMP

            if isinstance(column_type, MYSQL_TIMESTAMP):
                return "utc_naive"
        return "aware" if column_type.timezone else "naive"
    if isinstance(column_type, sqltypes.Date):
        return "date"
    return None


# SQLite stores a DATETIME as whatever was written. Only these spellings, without an offset,
# compare as text in time order against the bounds SQLAlchemy writes (YYYY-MM-DD HH:MM:SS.ffffff):
# each is a prefix-consistent truncation of that form.
# A modifier that changes nothing but makes SQLite normalise the date (2020-02-30: 2020-03-01).
_NO_SHIFT = "+0 days"
_SQLITE_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_SQLITE_MINUTE = _SQLITE_DATE + " [0-9][0-9]:[0-9][0-9]"
_SQLITE_SECOND = _SQLITE_MINUTE + ":[0-9][0-9]"


def sqlite_time_text(column: ColumnElement[Any], *, date_only: bool) -> ColumnElement[bool]:
    """True where a SQLite clock value is text in a spelling that compares correctly as text:
    ``2024-02-29`` for a DATE; that, ``2024-02-29 10:00``, ``2024-02-29 10:00:00`` or
    ``2024-02-29 10:00:00.123456`` for a DATETIME. Unix seconds, offsets, a ``T`` separator
    or any other text are not: such rows are never purged, and plans count them."""

    def glob(value: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        return value.op("GLOB", is_comparison=True)(pattern)

    # GLOB, length() and the date functions stop at a NUL character; instr() does not, and a
    # value with one ('2020-01-01\0') is no date Python can read (a traceback in plan and run).
    is_text = and_(func.typeof(column) == "text", func.instr(column, func.char(0)) == 0)
    # The shape is not enough: 2020-13-45 or 2020-02-30 would compare as due. SQLite's own
    # functions give NULL for a month 13 and, with a modifier, move 02-30 to 03-01: a value
    # they give back unchanged is on the calendar.
    day = func.substr(column, 1, 10)
    if date_only:
        return and_(is_text, glob(column, _SQLITE_DATE), _unchanged(func.date(day, _NO_SHIFT), day))
    second = func.substr(column, 1, 19)
    # One pattern by length: GLOB with character classes is what costs here.
    length = func.length(column)
    shaped = case(
        (
            length == 10,
            and_(glob(column, _SQLITE_DATE), _unchanged(func.date(day, _NO_SHIFT), day)),
        ),
        (
            length == 16,
            and_(
                glob(column, _SQLITE_MINUTE),
                _unchanged(func.strftime("%Y-%m-%d %H:%M", column, _NO_SHIFT), column),
            ),
        ),
        (
            length == 19,
            and_(
                glob(column, _SQLITE_SECOND), _unchanged(func.datetime(column, _NO_SHIFT), column)
            ),
        ),
        else_=and_(
            glob(column, _SQLITE_SECOND + ".[0-9]*"),
            not_(glob(func.substr(column, 21), "*[^0-9]*")),
            _unchanged(func.datetime(second, _NO_SHIFT), second),
        ),
    )
    return and_(is_text, shaped)


def _unchanged(normalised: ColumnElement[Any], value: ColumnElement[Any]) -> ColumnElement[bool]:
    # False, not NULL, where SQLite's function gives NULL (2020-13-45): NOT of the guard must
    # be true there, or the plan would not count the row as unreadable.
    return func.coalesce(normalised, "") == value


def is_connect_failure(error: sa_exc.DBAPIError) -> bool:
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


def reason(error: sa_exc.DBAPIError) -> str:
    """Given a database error, return the driver's message as a report may show it: its first
    line, values left out (``message_without_values``)."""
    return message_without_values(error.orig if error.orig is not None else error)
