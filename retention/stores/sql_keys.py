"""Keys in key order: keyset pagination's bounds, key lists, and keys typed on the command line
read as their columns' values."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, and_, case, not_, or_, tuple_
from sqlalchemy.engine import CursorResult, RowMapping

from retention.selection import KeyValues
from retention.store_protocol import KeyFilter


def not_true(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """True where ``condition`` is false or NULL: NOT would drop the NULLs too."""
    return case((condition, 1), else_=0) == 0


def after_key(keys: Sequence[Column[Any]], after: KeyValues) -> ColumnElement[bool]:
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


def key_between(
    keys: Sequence[Column[Any]], first: KeyValues, last: KeyValues
) -> ColumnElement[bool]:
    """``first <= (key) <= last`` in key order."""
    return and_(
        not_(_beyond(keys, first, lambda column, value: column < value)), key_up_to(keys, last)
    )


def key_up_to(keys: Sequence[Column[Any]], last: KeyValues) -> ColumnElement[bool]:
    """``(key) <= last`` in key order."""
    return not_(_beyond(keys, last, lambda column, value: column > value))


def only_accepted(
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


def key_in(keys: Sequence[Column[Any]], values: Sequence[KeyValues]) -> ColumnElement[bool]:
    if len(keys) == 1:
        return keys[0].in_([value[0] for value in values])
    return tuple_(*keys).in_(values)


def fitted(columns: Sequence[Column[Any]], key: Sequence[str]) -> KeyValues | None:
    """A key typed on the command line as its columns' values, or None when no row can have
    it (a part that is no value of its column, or a key of another width)."""
    if len(key) != len(columns):
        return None
    try:
        return tuple(coerce(column, part) for column, part in zip(columns, key, strict=True))
    except ValueError:
        return None


# A signed BIGINT, the widest integer key the three databases share; SQLite's driver cannot even
# send a larger one.
_INTEGER_RANGE = range(-(2**63), 2**63)


def coerce(column: ColumnElement[Any], value: str) -> object:
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


def result_keys(result: CursorResult[Any], plain_integers: bool) -> list[KeyValues]:
    """Given a result of key columns and whether they are integers SQLAlchemy hands over as
    the driver reads them (``SqlStore.plain_integer_keys``), return its keys in the order
    returned, in one fetch (iterating would fetch row by row). Plain integer keys come
    straight from the driver's rows: making a Row of each cost about 1.2 µs per key (0.6 s of
    CPU for 500,000 keys, measured on MariaDB), and psycopg's rows are tuples already (copying
    10,000 of them cost 0.5 ms a batch). Example: ``[(4,), (17,)]``."""
    if not plain_integers:
        return list(map(tuple, result.all()))
    with result:
        rows = result.cursor.fetchall()
    if isinstance(rows, list) and (not rows or type(rows[0]) is tuple):
        return rows
    return list(map(tuple, rows))
