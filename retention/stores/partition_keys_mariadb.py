"""MariaDB: a partition's keys joined by the server into strings (``GROUP_CONCAT``), ``CHUNK``
keys a string (``joined_chunks``), and compared under the lock by the SHA-256 of the same
strings (``joined_digest``, ``KeysDigest``, ``Checksum``).

PyMySQL is pure Python (about 10 µs a row), so where the server spells the keys
(partition_key_spelling.py) it joins them: one row a chunk, not one a key. A server without
window functions (MySQL before 8.0, MariaDB before 10.2) refuses the statement that numbers the
rows (``NoWindowFunctions``): its keys are read row by row (partition_keys.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, func, literal

from retention.errors import BatchConflict
from retention.store_protocol import SpelledKeys
from retention.stores.partition_key_spelling import respelled, spellable

# GROUP_CONCAT's limit for one chunk's string (MariaDB's default is 1 MB): CHUNK keys of up to
# 20 digits and a datetime with microseconds take under 5 MB at 100,000 keys. The server cuts a
# longer one, at this or at max_allowed_packet (16 MB by default, whatever this says): a cut
# string raises a warning, which ``joined_digest`` refuses (BatchConflict).
JOINED_LIMIT = 64 * 1024 * 1024


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


def joined_chunks(
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
    import pymysql.cursors  # type: ignore[import-untyped]

    cursor = driver.cursor(pymysql.cursors.SSCursor)
    try:
        cursor.execute(f"SET SESSION group_concat_max_len = {JOINED_LIMIT}")
        try:
            cursor.execute(statement, parameters)
        except pymysql.err.ProgrammingError as error:
            raise NoWindowFunctions from error
        for _bucket, count, _summed, text in cursor.fetchall_unbuffered():
            if not count:
                continue  # one group of no rows: a partition emptied since it was counted
            if isinstance(text, str):
                text = text.encode("ascii", "replace")
            spelled = respelled(bytes(text), b",")
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


class NoWindowFunctions(Exception):
    """The server refused the joined read's statement (it has no ROW_NUMBER() OVER ())."""


def _row_number() -> Any:
    return func.row_number().over()


__all__ = [
    "JOINED_LIMIT",
    "Checksum",
    "KeysDigest",
    "NoWindowFunctions",
    "digest_buckets",
    "encoded_keys",
    "joined_chunks",
    "joined_digest",
    "joined_keys",
]
