"""What a SQL column can take: the config's literals (a `where` value, a `fixed` anonymise value)
turned into the column's Python type, and each anonymise strategy checked against the column it
writes. ``config validate``, ``plan`` and ``run`` refuse a rule that does not fit, so no batch
ever fails on it; the SQL store writes and compares the very values checked here.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import Column
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import sqltypes

from retention.anonymise import Strategy

ConfigLiteral = str | int | float | bool

# The signed range of an integer column, by dialect and type name; SQLite's INTEGER is 64-bit.
_INTEGER_BITS = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 24, "BIGINT": 64}
# Types written as text by the driver, which compares and stores addresses.
_ADDRESS_TYPES = ("INET", "CIDR", "INET4", "INET6")


def column_value(column: Column[Any], value: ConfigLiteral, dialect: str) -> object:
    """Given a column, a literal from the config and the dialect, return the value to bind for
    it; raise ValueError saying why the column cannot take it.

    ISO text becomes a date, a timestamp or a time for such columns, and a UUID for a UUID
    column. Example: ``column_value(Column("born", Date), "1970-01-01", "sqlite")`` returns
    ``date(1970, 1, 1)``, and ``column_value(Column("hired", Boolean), "abc", "sqlite")``
    raises ``ValueError("'abc' is not a boolean (true or false), and hired is BOOLEAN")``.
    """
    column_type = column.type
    described = f"{column.name} is {_type_name(column)}"
    if isinstance(column_type, sqltypes.Boolean):
        if isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not a boolean (true or false), and {described}")
    if isinstance(column_type, sqltypes.Integer):
        return _integer(column, value, dialect, described)
    if isinstance(column_type, sqltypes.Numeric | sqltypes.Float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not a number, and {described}")
        _check_digits(column_type, value, described)
        return value
    if isinstance(column_type, sqltypes.DateTime | sqltypes.Date | sqltypes.Time):
        return _moment(column_type, value, described)
    if isinstance(column_type, sqltypes.Uuid):
        try:
            parsed = uuid.UUID(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValueError(f"{value!r} is not a UUID, and {described}")
        return parsed if column_type.as_uuid else str(parsed)
    if isinstance(column_type, sqltypes.Enum):
        if value not in column_type.enums:
            allowed = ", ".join(repr(item) for item in column_type.enums)
            raise ValueError(f"{value!r} is not one of {allowed}, and {described}")
        return value
    if isinstance(column_type, sqltypes.String):
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not text, and {described}: write it in quotes")
        length = column_type.length
        if length is not None and len(value) > length:
            raise ValueError(f"{value!r} is {len(value)} characters long, and {described}")
        return value
    if isinstance(column_type, sqltypes.LargeBinary):
        raise ValueError(f"{described}: binary columns take no literal")
    return value


def stored_as_text(column: Column[Any], dialect: str) -> bool:
    """Given a column and the dialect, return whether its dates are text the driver parses on
    reading: SQLite's DATE, DATETIME and TIME, which hold any text, an impossible date too
    (``1990-02-30``), on which that parsing fails (ValueError). Anonymised such columns are
    read and written as text (``read_stored``, ``written_as_stored``)."""
    moment = sqltypes.Date | sqltypes.DateTime | sqltypes.Time
    return dialect == "sqlite" and isinstance(column.type, moment)


def read_stored(column: Column[Any], stored: str | None, dialect: Dialect) -> object:
    """Given such a column's text as SQLite holds it, return its value as SQLAlchemy reads it
    (a date), or the text itself when it is none. Example: for a Date column, ``"1990-07-14"``
    gives ``date(1990, 7, 14)`` and ``"1990-02-30"`` stays ``"1990-02-30"``."""
    processor = column.type.result_processor(dialect, None)
    if stored is None or processor is None:
        return stored
    try:
        return processor(stored)
    except ValueError:
        return stored


def written_as_stored(column: Column[Any], value: object, dialect: Dialect) -> object:
    """Given such a column and the value to write (a date, or text: ``year_only`` of an
    impossible date, ``"1990-01-01"``), return the text SQLite is to hold, as SQLAlchemy writes
    that date; text that is no date stays as it is. Example: for a DateTime column,
    ``"1990-01-01"`` gives ``"1990-01-01 00:00:00"``."""
    if isinstance(value, str):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return value
        value = datetime.combine(day, time()) if isinstance(column.type, sqltypes.DateTime) else day
    processor = column.type.bind_processor(dialect)
    return processor(value) if processor is not None and value is not None else value


def strategy_problem(column: Column[Any], strategy: Strategy, dialect: str) -> str | None:
    """Given a column, the strategy that anonymises it and the dialect, return why the column
    cannot take what the strategy writes (None: it can).

    Example: ``"hash"`` on a VARCHAR(40) column gives ``"hash writes 64 characters, and phone is
    VARCHAR(40): write "hash:40" (see docs/config.md) or widen the column"``.
    """
    described = f"{column.name} is {_type_name(column)}"
    kind = strategy.kind
    if kind == "null":
        return None if column.nullable else f"null writes NULL, and {described} NOT NULL"
    if kind == "fixed":
        assert strategy.value is not None
        try:
            column_value(column, strategy.value, dialect)
        except ValueError as error:
            return str(error)
        return None
    if kind == "year_only":
        if isinstance(column.type, sqltypes.DateTime | sqltypes.Date):
            return None
        if not _is_text(column):
            return f"year_only writes a date, and {described}"
        return _writes_null(column, "year_only", "text that does not start with a year")
    if kind == "truncate_ip":
        if not _is_text(column) and _type_name(column).split("(")[0] not in _ADDRESS_TYPES:
            return f"truncate_ip writes an address as text, and {described}"
        return _writes_null(column, "truncate_ip", "a value that is not an IP address")
    if not _is_text(column):
        return f"{kind} writes text, and {described}"
    if kind == "hash":
        length = getattr(column.type, "length", None)
        if length is not None and length < strategy.hash_length:
            fits = f'write "hash:{length}" (see docs/config.md) or widen the column'
            if length < 8:
                fits = "widen the column (a hash takes at least 8 characters)"
            writes = f"{strategy.describe()} writes {strategy.hash_length} characters"
            return f"{writes}, and {described}: {fits}"
    return None


def _writes_null(column: Column[Any], kind: str, what: str) -> str | None:
    if column.nullable:
        return None
    return f"{kind} writes NULL for {what}, and {column.name} is NOT NULL"


def _is_text(column: Column[Any]) -> bool:
    return isinstance(column.type, sqltypes.String) and not isinstance(column.type, sqltypes.Enum)


def _type_name(column: Column[Any]) -> str:
    try:
        return str(column.type)
    except Exception:  # some reflected types cannot be compiled without their dialect
        return type(column.type).__name__.upper()


def _integer(column: Column[Any], value: ConfigLiteral, dialect: str, described: str) -> int:
    name = _type_name(column).split("(")[0]
    # MySQL/MariaDB spell BOOLEAN as TINYINT(1): true and false are 1 and 0 there.
    if isinstance(value, bool) and dialect in ("mysql", "mariadb") and name == "TINYINT":
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer, and {described}")
    bits = 64 if dialect == "sqlite" else _INTEGER_BITS.get(name, 32)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValueError(f"{value!r} is out of range, and {described}")
    return value


def _check_digits(column_type: Any, value: int | float, described: str) -> None:
    precision, scale = getattr(column_type, "precision", None), getattr(column_type, "scale", None)
    if isinstance(column_type, sqltypes.Float) or precision is None:
        return
    if abs(value) >= 10 ** (precision - (scale or 0)):
        raise ValueError(f"{value!r} has too many digits, and {described}")


def _moment(column_type: Any, value: ConfigLiteral, described: str) -> date | datetime | time:
    if isinstance(value, str):
        try:
            if isinstance(column_type, sqltypes.DateTime):
                return datetime.fromisoformat(value)
            if isinstance(column_type, sqltypes.Date):
                return date.fromisoformat(value)
            return time.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO 8601 date or time, and {described}")
