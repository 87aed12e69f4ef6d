"""The keys of a partition about to be dropped, streamed in chunks, as fast as each driver allows
(``key_chunks``).

Where every key column is one the database spells (partition_key_spelling.py), the server
spells the keys: PostgreSQL's by ranges of the partition's pages (partition_keys_postgres.py,
read ahead by partition_ahead.py), MariaDB's joined into strings (partition_keys_mariadb.py).
Other keys, and PostgreSQL before 14, come as values: on PostgreSQL through a server-side
cursor in binary format (0.5–0.7 µs per key read; ``COPY … TO STDOUT`` through psycopg was
slower, its rows built one by one in Python), on MariaDB row by row through an unbuffered
cursor, as are all keys on a server without window functions (MySQL before 8.0, MariaDB before
10.2). Columns whose type SQLAlchemy post-processes (``_PLAIN_KEY_TYPES`` excluded) always go
through SQLAlchemy's own rows.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sqlalchemy import Column, Connection, Date, DateTime, Integer, String

from retention.store_protocol import Keys
from retention.stores.partition_key_spelling import spellable
from retention.stores.partition_keys_mariadb import Checksum, NoWindowFunctions, joined_chunks

# Key columns whose values the driver returns exactly as SQLAlchemy would (no result
# processor): their rows can be read from the driver's cursor as they come.
_PLAIN_KEY_TYPES = (Integer, String, DateTime, Date)


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
        joined = joined_chunks(connection, keys_query, key_columns, chunk, checksum, whole)
        try:
            first = next(joined, None)
        except NoWindowFunctions:
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


__all__ = ["key_chunks"]
