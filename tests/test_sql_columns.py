"""What a column takes: literals turned into its Python type, strategies checked against it."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.mysql import TINYINT
from sqlalchemy.dialects.postgresql import INET

from retention.anonymise import parse_strategy
from retention.stores.sql_columns import column_value, strategy_problem


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (Column("born", Date), "1970-01-01", date(1970, 1, 1)),
        (Column("at", DateTime), "2024-02-29 10:00", datetime(2024, 2, 29, 10)),
        (
            Column("ref", Uuid),
            "0B5E1D2C-7F3A-4C1E-9A77-3E2F4D5C6B7A",
            uuid.UUID("0b5e1d2c-7f3a-4c1e-9a77-3e2f4d5c6b7a"),
        ),
        (Column("n", BigInteger), 2**40, 2**40),
        (Column("price", Numeric(5, 2)), 999.99, 999.99),
        (Column("kind", Enum("a", "b", name="kind")), "b", "b"),
        (Column("name", String(3)), "abc", "abc"),
        (Column("notes", Text), "x" * 10_000, "x" * 10_000),
    ],
)
def test_column_value_takes_what_fits(
    column: Column[object], value: object, expected: object
) -> None:
    assert column_value(column, value, "postgresql") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (Column("hired", Boolean), 1, "1 is not a boolean"),
        (Column("age", Integer), True, "True is not an integer"),
        (Column("age", SmallInteger), 40_000, "40000 is out of range"),
        (Column("age", Integer), 2**31, "is out of range"),
        (Column("price", Numeric(5, 2)), 1000, "1000 has too many digits"),
        (Column("price", Numeric(5, 2)), "1", "'1' is not a number"),
        (Column("born", Date), "1970-01-01T10:00", "is not an ISO 8601 date"),
        (Column("born", Date), 1970, "is not an ISO 8601 date"),
        (Column("ref", Uuid), "n/a", "'n/a' is not a UUID"),
        (Column("kind", Enum("a", "b", name="kind")), "c", "'c' is not one of 'a', 'b'"),
        (Column("name", String(3)), "abcd", "'abcd' is 4 characters long, and name is VARCHAR(3)"),
        (Column("name", String(3)), 7, "7 is not text"),
    ],
)
def test_column_value_refuses_what_does_not_fit(
    column: Column[object], value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        column_value(column, value, "postgresql")  # type: ignore[arg-type]


def test_sqlite_integers_are_64_bit_and_mariadb_tinyint_takes_booleans() -> None:
    assert column_value(Column("n", Integer), 2**40, "sqlite") == 2**40
    assert column_value(Column("flag", TINYINT(1)), True, "mariadb") == 1
    with pytest.raises(ValueError, match="out of range"):
        column_value(Column("flag", TINYINT(1)), 300, "mariadb")


@pytest.mark.parametrize(
    ("column", "strategy", "message"),
    [
        (Column("phone", String(40)), "hash", 'write "hash:40"'),
        (Column("phone", String(40)), "hash:41", "hash:41 writes 41 characters"),
        (Column("phone", String(6)), "hash:8", "widen the column"),
        (Column("phone", Integer), "hash", "hash writes text, and phone is INTEGER"),
        (Column("email", Integer), "mask_email", "mask_email writes text"),
        (Column("kind", Enum("a", name="kind")), "mask_email", "mask_email writes text"),
        (Column("notes", Text, nullable=False), "null", "null writes NULL"),
        (Column("ip", String(45), nullable=False), "truncate_ip", "ip is NOT NULL"),
        (Column("ip", Integer), "truncate_ip", "truncate_ip writes an address as text"),
        (Column("born", String(10), nullable=False), "year_only", "born is NOT NULL"),
        (Column("born", Integer), "year_only", "year_only writes a date"),
        (Column("hired", Boolean), {"fixed": "no"}, "'no' is not a boolean"),
    ],
)
def test_strategy_problem_names_the_misfit(
    column: Column[object], strategy: object, message: str
) -> None:
    problem = strategy_problem(column, parse_strategy(strategy), "postgresql")
    assert problem is not None
    assert message in problem


@pytest.mark.parametrize(
    ("column", "strategy"),
    [
        (Column("phone", String(64)), "hash"),
        (Column("phone", Text), "hash"),
        (Column("phone", String(40)), "hash:40"),
        (Column("ip", INET), "truncate_ip"),
        (Column("born", Date, nullable=False), "year_only"),
        (Column("born", DateTime), "year_only"),
        (Column("notes", Text), "null"),
        (Column("email", String(200), nullable=False), "mask_email"),
        (Column("born", Date, nullable=False), {"fixed": "1970-01-01"}),
    ],
)
def test_strategy_problem_accepts_what_fits(column: Column[object], strategy: object) -> None:
    assert strategy_problem(column, parse_strategy(strategy), "postgresql") is None
