"""What a SQL store reads of the live schema before a run's first batch: every column with its
type and NULLability, the primary key and the unique keys, the foreign keys into the table; and
not more than that (issue 17: the fixed cost of `retention run`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    event,
)

from retention.stores import open_stores
from retention.stores.sql_dialect import clock_kind
from tests.support import create_tables, logs_rule, make_config


def _tables(url: str) -> None:
    metadata = MetaData()
    Table(
        "accounts",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("tenant", Integer, nullable=False),
        Column("number", Integer, nullable=False),
        Column("email", String(120), unique=True),
        Column("closed_on", Date),
        Column("logged_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("tenant", "number"),
    )
    Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("account_id", BigInteger, ForeignKey("accounts.id")),
        Column("logged_at", DateTime, index=True),
    )
    create_tables(url, metadata).dispose()


def test_a_table_is_read_with_its_columns_types_nulls_and_keys(database_url: str) -> None:
    _tables(database_url)
    config = make_config(database_url, logs_rule())
    with open_stores(config, read_only=True) as store_for:
        store: Any = store_for("db")
        accounts = store.table("accounts")
        assert [column.name for column in accounts.c] == [
            "id",
            "tenant",
            "number",
            "email",
            "closed_on",
            "logged_at",
        ]
        assert {column.name for column in accounts.primary_key.columns} == {"id"}
        assert [column.nullable for column in accounts.c] == [
            False,
            False,
            False,
            True,
            True,
            False,
        ]
        dialect = store.engine.dialect.name
        assert clock_kind(accounts.c.closed_on, dialect) == "date"
        assert clock_kind(accounts.c.logged_at, dialect) in ("aware", "naive", "utc_naive")
        assert clock_kind(accounts.c.email, dialect) is None
        assert store.unique_column_sets("accounts")[0] == {"id"}
        assert {"email"} in store.unique_column_sets("accounts")
        assert {"tenant", "number"} in store.unique_column_sets("accounts")
        assert store.primary_key("logs") == {"id"}
        assert store.check_rule(config.rules[0]) == []


def test_a_missing_table_is_still_reported(database_url: str) -> None:
    _tables(database_url)
    config = make_config(database_url, logs_rule().replace('table = "logs"', 'table = "logz"'))
    with open_stores(config, read_only=True) as store_for:
        issues = store_for("db").check_rule(config.rules[0])
    assert [(issue.path, issue.message) for issue in issues] == [
        ("rules[0].table", "table 'logz' does not exist in store 'db'")
    ]


def test_checking_a_rule_reads_the_catalog_a_few_times_not_seventeen(postgres_url: str) -> None:
    """Reflecting a whole table (foreign keys, indexes, checks, comments, options) took 11
    catalog queries on PostgreSQL, and the unique keys 5 more, before any row was read."""
    _tables(postgres_url)
    config = make_config(postgres_url, logs_rule())
    with open_stores(config, read_only=True) as store_for:
        store: Any = store_for("db")
        statements: list[str] = []
        event.listen(
            store.engine,
            "before_cursor_execute",
            lambda _connection, _cursor, statement, *_rest: statements.append(statement),
        )
        assert store.check_rule(config.rules[0]) == []
    assert len(statements) <= 10, statements


def test_a_composite_primary_key_keeps_its_own_column_order(database_url: str) -> None:
    """A key declared (b, a) over columns a, b is read as (b, a), as a reflection reads it: the
    order of the keyset's ORDER BY, of the index that serves it, and of a child row's locator
    in the trail (a table read as columns flagged one by one came back as (a, b))."""
    metadata = MetaData()
    Table(
        "pairs",
        metadata,
        Column("a", Integer, nullable=False, autoincrement=False),
        Column("b", Integer, nullable=False, autoincrement=False),
        Column("note", String(20)),
        PrimaryKeyConstraint("b", "a"),
    )
    create_tables(database_url, metadata).dispose()
    config = make_config(database_url, logs_rule())
    with open_stores(config, read_only=True) as store_for:
        store: Any = store_for("db")
        pairs = store.table("pairs")
        assert [column.name for column in pairs.primary_key.columns] == ["b", "a"]
        assert [column.name for column in pairs.c] == ["a", "b", "note"]
        assert [column.nullable for column in pairs.c] == [False, False, True]
