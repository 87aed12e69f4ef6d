"""The keys of a partition about to be dropped, streamed in chunks, as fast as each driver allows.

Every record of a dropped partition gets a leaf in the trail, so its key is read once per record:
that read, and spelling the key as its record's locator for the leaf, are the drop's per-record
costs outside the hash itself. Python's own spelling of a key read as values (``str()`` of a
datetime, then quoting) costs more than the hash (about 1 µs a key on a quiet core), so where
every key column is a NOT NULL integer, date or datetime without time zone, the database spells
them (``SpelledKeys``): its text of each value, which for these types is Python's ``str()`` but
for the fractional seconds (fixed here: ``_respelled``), joined by the server into one string
per piece of the partition, which Python checks (only the bytes such a spelling holds, no zero
date), quotes and splits with a few passes over the whole string.

- PostgreSQL 14 and later (psycopg): one ``string_agg`` per range of the partition's pages
  (a TID range scan), each read by a thread while the one before is hashed: the server spells
  and scans while Python hashes (the driver lets go of the GIL while it waits). Other keys, and
  servers before 14, come through a server-side cursor in binary format (0.5–0.7 µs per key
  read; ``COPY … TO STDOUT`` through psycopg was slower, its rows built one by one in Python).
- MariaDB (PyMySQL, pure Python, about 10 µs a row): the server joins ``CHUNK`` keys into one
  string (``GROUP_CONCAT``). Other key columns are read row by row through an unbuffered
  cursor, and so are all keys on a server without window functions (MySQL before 8.0, MariaDB
  before 10.2).

A key that cannot be spelled exactly (a zero date, a year BC or beyond 9999, infinity) fails
closed: BatchConflict, and the partition goes by row batches. Columns whose type SQLAlchemy
post-processes (``_PLAIN_KEY_TYPES`` excluded) always go through SQLAlchemy's own rows.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any, Generic, TypeVar

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
from retention.store_protocol import Keys, SpelledKeys

try:
    from retention.stores import _keys as _native
except ImportError:  # not compiled (setup.py): the server spells PostgreSQL's keys as text
    _native = None  # type: ignore[assignment]

# Key columns whose values the driver returns exactly as SQLAlchemy would (no result
# processor): their rows can be read from the driver's cursor as they come.
_PLAIN_KEY_TYPES = (Integer, String, DateTime, Date)
# GROUP_CONCAT's limit for one chunk's string (MariaDB's default is 1 MB): CHUNK keys of up to
# 20 digits and a datetime with microseconds take under 5 MB at 100,000 keys. The server cuts a
# longer one, at this or at max_allowed_packet (16 MB by default, whatever this says): a cut
# string raises a warning, which ``joined_digest`` refuses (BatchConflict).
JOINED_LIMIT = 64 * 1024 * 1024
# About how many keys PostgreSQL spells in one piece (what one thread step reads ahead).
PIECE = 25_000
# What the database's text of spellable keys may hold: digits, "-" (dates, negative integers),
# " ", ":" and "." (times), "/" between a key's parts, "," or "\n" between keys. A year BC, an
# infinity or anything else has a letter or another sign.
_SPELLED_BYTES = b"0123456789-:. /,\n"
# Those bytes by class: each digit as "0", anything else not spelled as "?". A year after 9999
# (PostgreSQL's run to 294276) is then "00000-", which nothing else spells: an integer key part
# ends at "/" or a separator, a month or day has two digits.
_SPELLED_CLASSES = bytes(
    ord("0") if byte in b"0123456789" else byte if byte in _SPELLED_BYTES else ord("?")
    for byte in range(256)
)
_FRACTION = re.compile(rb"\.([0-9]+)")
# MariaDB's zero dates: a zero month or day, a year 0. No valid date, time or integer is
# spelled with these (a year is 0001 to 9999, an integer has no leading zero).
_ZERO_DATES = (b"-00", b"0000-")

T = TypeVar("T")


@dataclass
class Checksum:
    """What MariaDB's check under the lock compares the keys streamed with, taken in the same
    read: where they come as one joined string (a partition within one chunk), ``digest``, the
    SHA-256 of that string as the server spelled it, which ``joined_digest`` gives again under
    the lock while nothing changed (SHA2 of the same GROUP_CONCAT); else None (the server takes
    the digest in the keys' snapshot, ``joined_digest`` again)."""

    digest: str | None = None


@dataclass(frozen=True)
class KeysDigest:
    """MariaDB: a partition's keys as the check under the lock compares them: in ``buckets``
    buckets (by CRC32 of each key's text, so that no bucket's joined string outgrows the
    server's limits), each bucket's count and SHA-256 of its keys joined (``text``: with one
    bucket, that digest alone). No secret: a key that leaves or arrives changes its bucket's
    string, and finding another string of the same SHA-256 is out of reach."""

    buckets: int
    text: str


def spellable(key_columns: Sequence[Column[Any]]) -> bool:
    """Given key columns, return whether the database can spell their values as the ends of
    record locators (``SpelledKeys``): each NOT NULL and an integer, a date or a datetime
    without time zone, whose text the server writes as Python's ``str()`` but for fractional
    seconds (``_respelled`` fixes them)."""
    return all(
        not column.nullable
        and (
            isinstance(column.type, Integer | Date)
            or (isinstance(column.type, DateTime) and not column.type.timezone)
        )
        for column in key_columns
    )


def key_chunks(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    chunk: int,
    checksum: Checksum | None = None,
    rows: int = 0,
) -> Generator[Keys, None, None]:
    """Given a connection in a transaction, the query of a partition's keys and its key columns,
    and how many rows it holds (MariaDB: as the plan counted them, 0 when unknown), yield the
    keys in chunks of at most ``chunk`` (on MariaDB, a partition counted within one chunk
    comes as one, however many rows it holds now), in no particular order: as values, or on
    MariaDB spelled (``SpelledKeys``) where ``spellable``; and sum ``checksum`` along when the
    keys come joined (MariaDB). PostgreSQL's spellable keys are read by ``postgres_pieces``."""
    if not all(isinstance(column.type, _PLAIN_KEY_TYPES) for column in key_columns):
        for found in connection.execute(keys_query).partitions(chunk):
            yield tuple(map(tuple, found))
        return
    dialect = connection.dialect.name
    driver = connection.connection.driver_connection
    assert driver is not None
    if dialect != "postgresql" and spellable(key_columns):
        # A partition the plan counted within one chunk is read as one group: numbering its
        # rows to cut them into chunks costs the server twice the read (measured on MariaDB
        # 10.11, 85,000 keys: 140 ms against 60-70 ms). Grown since, it is still one chunk,
        # its string bounded by JOINED_LIMIT (a longer one is cut: BatchConflict).
        whole = 0 < rows <= chunk
        joined = _joined_chunks(connection, keys_query, key_columns, chunk, checksum, whole)
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
    if dialect == "postgresql":
        cursor = driver.cursor(name="retention_partition_keys", binary=True)
    else:
        import pymysql.cursors  # type: ignore[import-untyped]

        cursor = driver.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(str(compiled), compiled.params)
        while found := cursor.fetchmany(chunk):
            yield tuple(found)
    finally:
        cursor.close()


def _respelled(text: bytes, separator: bytes, zero_dates: bool = True) -> bytes:
    """Given keys as the database spelled them (each part's text, joined by "/"; the keys by
    ``separator``), return each key's locator end as ``record_locator`` spells the values the
    driver gives, joined by newlines: fractional seconds as Python writes them (six digits,
    none when zero), " " and ":" quoted. BatchConflict when a key holds what no such value
    spells (a year BC or after 9999, an infinity; with ``zero_dates``, MariaDB's zero dates
    too)."""
    # One pass for both (1.6 ms for 25,000 keys; a regular expression for the year took 12).
    classes = text.translate(_SPELLED_CLASSES)
    if b"?" in classes or b"00000-" in classes:
        raise BatchConflict("one of its keys cannot be spelled exactly")
    # PostgreSQL has no zero date (no year 0, month 00 or day 00): searching a piece for one
    # cost 0.7 ms of its 3 ms here (600 KB), with the GIL held, in the reading thread.
    if zero_dates and any(zero in text for zero in _ZERO_DATES):
        raise BatchConflict("one of its keys cannot be spelled exactly")
    if b"." in text:
        text = _FRACTION.sub(_microseconds, text)
    if separator != b"\n":
        text = text.replace(separator, b"\n")
    return text.replace(b" ", b"%20").replace(b":", b"%3A")


def _microseconds(found: re.Match[bytes]) -> bytes:
    digits = found[1]
    if len(digits) > 6:
        raise BatchConflict("one of its keys has more than microseconds")
    return b"" if digits.count(b"0") == len(digits) else b"." + digits.ljust(6, b"0")


def postgres_pieces(
    driver: Any,
    partition: str,
    names: Sequence[str],
    rows: int,
    fingerprint: tuple[str, str] | None = None,
    summed: list[int] | None = None,
) -> Iterator[bytes]:
    """PostgreSQL: the keys (their columns' quoted ``names``) of the partition of about
    ``rows`` rows spelled, one range of its pages at a time (about ``PIECE`` keys), in this
    transaction's snapshot; the last range open-ended, so that a page added since the size was
    read is read too. The server sends each key column of a range as one binary array, which
    the compiled module spells (``_keys.c``); without it, or for a column type it does not
    spell, the server spells the keys as text. With a ``fingerprint`` (the SQL of two
    aggregates), each range's are read with its keys and their sums left in ``summed`` once
    the last range is read."""
    line = " || '/' || ".join(f"{name}::text" for name in names)
    arrays = ", ".join(f"array_send(array_agg({name}))" for name in names)
    counted = "0, 0" if fingerprint is None else ", ".join(fingerprint)
    totals = [0, 0]
    binary = _native is not None
    with driver.cursor() as cursor:
        # ISO: dates and times as YYYY-MM-DD HH:MM:SS.ffffff (trailing zeros cut).
        cursor.execute("SET LOCAL DateStyle = 'ISO'")
        cursor.execute(
            "SELECT pg_relation_size(CAST(%s AS regclass)) / current_setting('block_size')::int",
            (partition,),
        )
        (pages,) = cursor.fetchone()
        step = max(1, math.ceil(pages * PIECE / max(rows, 1)))
        for start in range(0, max(pages, 1), step):
            bounds = f"ctid >= '({start},0)'::tid"
            if start + step < pages:
                bounds += f" AND ctid < '({start + step},0)'::tid"
            if binary:
                # Two thirds of the server's time per key went to writing its values as text.
                cursor.execute(
                    f"SELECT {counted}, {arrays} FROM {partition} WHERE {bounds}", binary=True
                )
                count, hashed, *found = cursor.fetchone()
                totals[0] += int(count)
                totals[1] += int(hashed)
                if found[0] is None:
                    continue
                try:
                    spelled = _native.spelled_arrays(tuple(found))
                except TypeError:
                    # A column type not spelled there: this range again, and the rest, as text.
                    binary = False
                    totals[0] -= int(count)
                    totals[1] -= int(hashed)
                except ValueError as error:
                    raise BatchConflict("one of its keys cannot be spelled exactly") from error
                else:
                    yield spelled
                    continue
            cursor.execute(
                f"SELECT {counted}, string_agg({line}, E'\\n') FROM {partition} WHERE {bounds}"
            )
            count, hashed, text = cursor.fetchone()
            totals[0] += int(count)
            totals[1] += int(hashed)
            if text:
                yield _respelled(text.encode("ascii", "replace"), b"\n", zero_dates=False)
    if summed is not None:
        summed[:] = totals


class ReadAhead(Generic[T]):
    """An iterator whose every step waits on the database, stepped in a thread from the start,
    up to ``depth`` items ahead of its reader: the database reads the next items while this
    one is handled. What the iterator holds (its connection, its transaction) is the thread's
    until it stops, which it does before ``close()`` returns (read to its end, or not); what
    it raises is raised to the reader."""

    def __init__(self, items: Iterator[T], depth: int = 1, name: str = "retention-read-ahead"):
        self._items = items
        self._queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                self._queue.put((False, item))
            self._queue.put((True, None))
        except BaseException as error:  # handed to the reader, raised there
            self._queue.put((True, error))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._ended:
            raise StopIteration
        ended, item = self._queue.get()
        if ended:
            self._ended = True
            if item is not None:
                raise item
            raise StopIteration
        return item  # type: ignore[no-any-return]

    def wait(self) -> None:
        """Wait for the thread to end by itself: only when ``depth`` holds every item left
        and the end (else it would wait for a reader)."""
        self._thread.join()

    def close(self) -> None:
        """Stop the thread (after the step it is in) and wait for it to end."""
        self._ended = True
        self._stop.set()
        while self._thread.is_alive():
            # Room for an item being handed over, so that the thread sees the stop.
            with suppress(Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


def spelled_chunks(pieces: Iterator[bytes], chunk: int) -> Iterator[SpelledKeys]:
    """Given pieces of spelled keys, return them as ``SpelledKeys`` of ``chunk`` keys each
    (the last fewer); what a reader left of one is read before the next."""
    rest: list[bytes] = []  # the end of a piece cut at a chunk's end: the next one's

    def gathered() -> Iterator[bytes]:
        count = 0
        while count < chunk:
            piece = rest.pop() if rest else next(pieces, None)
            if piece is None:
                return
            size = piece.count(b"\n") + 1
            if size > chunk - count:
                # Cut where the chunk ends (once a chunk: a piece's lines made objects once).
                lines = piece.split(b"\n", chunk - count)
                rest.append(lines.pop())
                piece, size = b"\n".join(lines), len(lines)
            yield piece
            count += size

    while True:
        if not rest:
            first = next(pieces, None)
            if first is None:
                return
            rest.append(first)
        keys = SpelledKeys(gathered())
        yield keys
        keys.finish()


def _joined_chunks(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    chunk: int,
    checksum: Checksum | None,
    whole: bool = False,
) -> Iterator[SpelledKeys]:
    """MariaDB: ``chunk`` keys a row (``whole``: all of them in one row), spelled and joined by
    the server (``joined_keys``), with their count to check the split; and where ``whole``,
    ``checksum``'s digest: the SHA-256 of the one string."""
    statement, parameters = _joined_statement(
        connection, keys_query, key_columns, literal(0), None if whole else chunk
    )
    driver = connection.connection.driver_connection
    assert driver is not None
    import pymysql.cursors

    cursor = driver.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(f"SET SESSION group_concat_max_len = {JOINED_LIMIT}")
        try:
            cursor.execute(statement, parameters)
        except pymysql.err.ProgrammingError as error:
            raise _NoWindowFunctions from error
        for _bucket, count, _summed, text in cursor.fetchall_unbuffered():
            if not count:
                continue  # one group of no rows: a partition emptied since it was counted
            if isinstance(text, str):
                text = text.encode("ascii", "replace")
            spelled = _respelled(bytes(text), b",")
            if spelled.count(b"\n") + 1 != int(count):
                raise BatchConflict("a chunk of its keys did not read back whole")
            if whole and checksum is not None:
                # What SHA2 of the same GROUP_CONCAT gives under the lock: its bytes as read.
                checksum.digest = hashlib.sha256(text).hexdigest()
            yield SpelledKeys([spelled])
    finally:
        cursor.close()
        connection.exec_driver_sql("SET SESSION group_concat_max_len = DEFAULT")


def _joined_statement(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    summed: ColumnElement[Any],
    chunk: int | None,
    digest: bool = False,
    buckets: int = 1,
) -> tuple[str, Any]:
    """MariaDB: the statement that reads the keys of ``keys_query`` joined (``joined_keys``),
    ``chunk`` keys a row (None: all of them in one row), with their count and the sum of
    ``summed`` over them; with ``digest``, the string's SHA2 in its place, in ``buckets``
    rows (by CRC32 of each key's text; keys the server cannot spell unambiguously joined
    encoded, ``encoded_keys``). Its parameters."""
    numbered = () if chunk is None else (_row_number().label("n"),)
    labeled = keys_query.with_only_columns(
        *[column.label(f"k{index}") for index, column in enumerate(key_columns)],
        *numbered,
        summed.label("c"),
    )
    compiled = labeled.compile(dialect=connection.dialect)
    parts = [f"`k{index}`" for index in range(len(key_columns))]
    if digest and not spellable(key_columns):
        parts = encoded_keys(parts)
    joined = joined_keys(parts)
    if digest:
        joined = f"SHA2({joined}, 256)"
    bucket = "0"
    if buckets > 1:
        bucket = f"CRC32(CONCAT({', '.join(parts)})) MOD {int(buckets)}"
    statement = f"SELECT {bucket}, COUNT(*), SUM(`c`), {joined} FROM ({compiled}) AS numbered"
    if chunk is not None:
        statement += f" GROUP BY (`n` - 1) DIV {int(chunk)}"
    elif buckets > 1:
        statement += " GROUP BY 1 ORDER BY 1"
    return statement, compiled.params


def digest_buckets(rows: int, chunk: int) -> int:
    """How many buckets ``joined_digest`` splits ``rows`` keys into: about ``chunk`` keys each
    (one joined string per bucket, within the server's limits, ``JOINED_LIMIT``).

    >>> digest_buckets(250_000, 100_000)
    3
    """
    return max(1, -(-rows // max(1, chunk)))


def joined_digest(
    connection: Connection,
    keys_query: Any,
    key_columns: list[Column[Any]],
    summed: ColumnElement[Any],
    buckets: int = 1,
) -> tuple[int, int, KeysDigest | None]:
    """MariaDB, given a connection (in the keys' snapshot, or under the lock), the query of a
    partition's keys and its key columns, a per-row expression that reads no other column and
    how many buckets: the keys' count, the sum of ``summed`` over them and their digest
    (``KeysDigest``; None over no row). With one bucket of keys the server spells, the
    statement is the one that read them whole (``key_chunks``) but for SHA2 around the
    string: the server reads the same columns of the same rows, the same way (its index), so
    the same keys give the digest Python took of that string (``Checksum.digest``). A string
    the server cut (``JOINED_LIMIT``, max_allowed_packet) raises a warning: BatchConflict, so
    that a cut string never stands for the keys it left out."""
    statement, parameters = _joined_statement(
        connection, keys_query, key_columns, summed, None, digest=True, buckets=buckets
    )
    connection.exec_driver_sql(f"SET SESSION group_concat_max_len = {JOINED_LIMIT}")
    try:
        found = connection.exec_driver_sql(statement, parameters).all()
        warnings = connection.exec_driver_sql("SELECT @@warning_count").scalar_one()
    finally:
        connection.exec_driver_sql("SET SESSION group_concat_max_len = DEFAULT")
    if warnings:
        raise BatchConflict("its keys are too long to be checked in one string per bucket")
    rows = sum(int(count) for _bucket, count, _summed, _digest in found)
    summed_rows = sum(int(summed or 0) for _bucket, _count, summed, _digest in found)
    if not rows:
        return 0, summed_rows, None
    if buckets == 1:
        return rows, summed_rows, KeysDigest(1, str(found[0][3]))
    text = ";".join(f"{bucket}:{count}:{digest}" for bucket, count, _summed, digest in found)
    return rows, summed_rows, KeysDigest(buckets, text)


def joined_keys(columns: Sequence[str]) -> str:
    """MariaDB: the SQL that joins the keys of the rows read into one string, given their
    columns as SQL: each key's parts joined by "/", the keys by ",", in the order the rows are
    read. The keys read ahead come this way, and under the lock SHA2 of the same string is
    compared with theirs; only keys the server spells without "/" or "," (``spellable``), or
    encoded (``encoded_keys``)."""
    parts = ", '/', ".join(columns)
    return f"GROUP_CONCAT({parts} SEPARATOR ',')"


def encoded_keys(columns: Sequence[str]) -> list[str]:
    """MariaDB: given key columns as SQL, each as the hex digits of its text's bytes ("N" for
    NULL): no "/" or "," inside, so that the joined string (``joined_keys``) reads back as
    exactly one sequence of keys, whatever a text key holds (a key "a,b" and a key "a" then
    "b" join differently), and no row left out of GROUP_CONCAT for a NULL."""
    return [f"IFNULL(HEX(CAST({column} AS BINARY)), 'N')" for column in columns]


class _NoWindowFunctions(Exception):
    """The server refused the joined read's statement (it has no ROW_NUMBER() OVER ())."""


def _row_number() -> Any:
    return func.row_number().over()


__all__ = [
    "JOINED_LIMIT",
    "PIECE",
    "Checksum",
    "KeysDigest",
    "ReadAhead",
    "digest_buckets",
    "encoded_keys",
    "joined_digest",
    "joined_keys",
    "key_chunks",
    "postgres_pieces",
    "spellable",
    "spelled_chunks",
]
