"""The keys of a partition about to be dropped, streamed in chunks, as fast as each driver allows.

Every record of a dropped partition gets a leaf in the trail, so its key is read once per record:
that read is the drop's per-record cost on the database side. The keys come back as the same
Python values a SQLAlchemy query would give (what ``record_locator`` spells), read the fastest
way each driver has:

- PostgreSQL (psycopg): a server-side cursor in binary format: no text to parse per value.
  Measured on the bench's keys (bigint, timestamp): 0.5–0.7 µs per key against 0.8–1.2 µs in
  text format; ``COPY … TO STDOUT`` through ``cursor.copy().rows()`` was slower (1.5–4 µs: its
  rows are built in Python), and so was splitting COPY's text in Python (about 2 µs).
- MariaDB (PyMySQL, pure Python): each row costs a packet read and a conversion per column in
  Python, about 10 µs per key. When every key column is a NOT NULL integer, date or datetime,
  the server joins ``CHUNK`` keys into one string (``GROUP_CONCAT``), which Python splits and
  converts with ``int`` and ``fromisoformat`` (about 3 µs per key). A value that does not read
  back exactly (a zero date) fails closed: BatchConflict, the partition goes by row batches.
  Other key columns are read row by row through an unbuffered cursor, and so are all keys on
  a server without window functions (MySQL before 8.0, MariaDB before 10.2).

Columns whose type SQLAlchemy post-processes (``_PLAIN_KEY_TYPES`` excluded) always go through
SQLAlchemy's own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Integer,
    String,
    func,
    literal,
)

from retention.errors import BatchConflict
from retention.selection import KeyValues

# Key columns whose values the driver returns exactly as SQLAlchemy would (no result
# processor): their rows can be read from the driver's cursor as they come.
_PLAIN_KEY_TYPES = (Integer, String, DateTime, Date)
# Key columns MariaDB can spell in one joined string that Python reads back exactly.
_JOINABLE_KEY_TYPES = (Integer, DateTime, Date)
# GROUP_CONCAT's limit for one chunk's string (MariaDB's default is 1 MB): CHUNK keys of up to
# 20 digits and a datetime with microseconds take under 5 MB at 100,000 keys.
_JOINED_LIMIT = 64 * 1024 * 1024


@dataclass
class Checksum:
    """A per-row expression to sum over the keys streamed, in the same read (MariaDB's joined
    keys): ``total`` is that sum, or None when the stream could not take it along (then count
    it apart)."""

    expression: ColumnElement[Any]
    total: Any = None


def key_chunks(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    chunk: int,
    checksum: Checksum | None = None,
) -> Iterator[tuple[KeyValues, ...]]:
    """Given a connection in a transaction, the query of a partition's keys and its key columns,
    yield the keys in chunks of at most ``chunk``, in no particular order (and sum
    ``checksum`` along, when the keys come joined)."""
    if not all(isinstance(column.type, _PLAIN_KEY_TYPES) for column in key_columns):
        for rows in connection.execute(keys_query).partitions(chunk):
            yield tuple(map(tuple, rows))
        return
    dialect = connection.dialect.name
    if dialect != "postgresql" and all(
        isinstance(column.type, _JOINABLE_KEY_TYPES) and not column.nullable
        for column in key_columns
    ):
        joined = _joined_chunks(connection, keys_query, key_columns, chunk, checksum)
        try:
            first = next(joined, None)
        except _NoWindowFunctions:
            pass  # MySQL before 8.0, MariaDB before 10.2: row by row, below
        else:
            if first is not None:
                yield first
                yield from joined
            return
    compiled = keys_query.compile(dialect=connection.dialect)
    driver = connection.connection.driver_connection
    assert driver is not None
    if dialect == "postgresql":
        cursor = driver.cursor(name="retention_partition_keys", binary=True)
    else:
        import pymysql.cursors  # type: ignore[import-untyped]

        cursor = driver.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(str(compiled), compiled.params)
        while rows := cursor.fetchmany(chunk):
            yield tuple(rows)
    finally:
        cursor.close()


def _joined_chunks(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    chunk: int,
    checksum: Checksum | None,
) -> Iterator[tuple[KeyValues, ...]]:
    """MariaDB: ``chunk`` keys a row, joined by commas, with their count to check the split
    (and the sum of ``checksum`` over them)."""
    summed = checksum.expression if checksum is not None else literal(0)
    labeled = keys_query.with_only_columns(
        *[column.label(f"k{index}") for index, column in enumerate(key_columns)],
        _row_number().label("n"),
        summed.label("c"),
    )
    compiled = labeled.compile(dialect=connection.dialect)
    # Commas: no integer, date or datetime is spelled with one, and no escape is needed.
    joined = ", ',', ".join(f"`k{index}`" for index in range(len(key_columns)))
    statement = (
        f"SELECT COUNT(*), SUM(`c`), GROUP_CONCAT({joined} SEPARATOR ',') "
        f"FROM ({compiled}) AS numbered GROUP BY (`n` - 1) DIV {int(chunk)}"
    )
    readers = [_reader(column) for column in key_columns]
    width = len(readers)
    driver = connection.connection.driver_connection
    assert driver is not None
    import pymysql.cursors

    cursor = driver.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(f"SET SESSION group_concat_max_len = {_JOINED_LIMIT}")
        try:
            cursor.execute(statement, compiled.params)
        except pymysql.err.ProgrammingError as error:
            raise _NoWindowFunctions from error
        total = 0
        for count, summed_here, text in cursor.fetchall_unbuffered():
            if isinstance(text, bytes | bytearray):
                text = bytes(text).decode("ascii")
            parts = text.split(",")
            if len(parts) != width * int(count):
                raise BatchConflict("a chunk of its keys did not read back whole")
            try:
                columns = [map(readers[i], parts[i::width]) for i in range(width)]
                keys = tuple(zip(*columns, strict=True))
            except ValueError as error:
                # A zero date, or a value spelled otherwise than expected: not read exactly.
                raise BatchConflict("one of its keys cannot be read back exactly") from error
            total += summed_here
            yield keys
        if checksum is not None:
            checksum.total = total
    finally:
        cursor.close()
        connection.exec_driver_sql("SET SESSION group_concat_max_len = DEFAULT")


class _NoWindowFunctions(Exception):
    """The server refused the joined read's statement (it has no ROW_NUMBER() OVER ())."""


def _row_number() -> Any:
    return func.row_number().over()


def _reader(column: Column[Any]) -> Callable[[str], Any]:
    if isinstance(column.type, Integer):
        return int
    if isinstance(column.type, DateTime):
        return datetime.fromisoformat
    return date.fromisoformat


__all__ = ["Checksum", "key_chunks"]
