"""What PostgreSQL and MariaDB say about a partitioned table, and how each drops a partition.

PostgreSQL: declarative ``PARTITION BY RANGE (column)``, its partitions read from pg_inherits
with their bounds (``FOR VALUES FROM (…) TO (…)``, ``DEFAULT``), the bounds cast back to the
column's type by the server itself. MariaDB: ``PARTITION BY RANGE COLUMNS(column)`` and
``PARTITION BY RANGE(TO_DAYS(column))``, ``UNIX_TIMESTAMP(column)`` or ``YEAR(column)``, read from
information_schema.PARTITIONS; a partition's lower bound is the previous one's upper bound (its
first partition also holds the rows whose column is NULL, which is why rows are always counted
in the partition itself). Names come from the catalog and are quoted by the dialect.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Dialect, Select, Table, or_, text

from retention.errors import RetentionError

# A partition boundary value as the database gives it: a date or datetime, or None (unbounded).
Bound = date | datetime | None


@dataclass(frozen=True)
class Partition:
    """One partition: rows with ``lower <= column < upper`` (None: unbounded); ``default``
    partitions take every row no other range takes; ``leaf`` is false when the partition is
    itself partitioned (PostgreSQL sub-partitioning). PostgreSQL also gives its ``oid`` and its
    ``bound`` as the catalog writes it (``FOR VALUES FROM (…) TO (…)``): what ``standing``
    reads again."""

    name: str
    lower: Bound
    upper: Bound
    default: bool = False
    leaf: bool = True
    schema: str | None = None
    oid: int | None = None
    bound: str | None = None


@dataclass(frozen=True)
class Partitioning:
    """A partitioned table: its partition column (None when the key is not one plain column,
    ``unsupported`` says what it is), its partitions in range order, and whether a foreign key
    of some table references it or one of its partitions."""

    column: str | None
    partitions: tuple[Partition, ...]
    referenced: bool
    unsupported: str | None = None
    # Whether this session may drop its partitions (PostgreSQL: it owns the table; MariaDB: it
    # holds ALTER and DROP on it).
    droppable: bool = True
    # Why this server cannot drop partitions safely (too old for the drop's checks), if so.
    server_unfit: str | None = None


def read_partitioning(connection: Connection, table: str) -> Partitioning | None:
    """Given a connection and a table name, return how the table is partitioned; None when it is
    not partitioned (or the dialect has no partitions this tool drops)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return _postgres(connection, table)
    if dialect in ("mysql", "mariadb"):
        return _mariadb(connection, table)
    return None


_PG_KEY = re.compile(r'^RANGE \((?P<column>[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")\)$')
_PG_RANGE = re.compile(r"^FOR VALUES FROM \((?P<lower>.*)\) TO \((?P<upper>.*)\)$")


def _postgres(connection: Connection, table: str) -> Partitioning | None:
    key = connection.execute(
        text(
            "SELECT pg_get_partkeydef(c.oid) FROM pg_class c "
            "WHERE c.oid = to_regclass(quote_ident(:table)) AND c.relkind = 'p'"
        ),
        {"table": table},
    ).scalar()
    if key is None:
        return None
    version = connection.dialect.server_version_info
    if version is not None and version < (13,):
        # The drop checks its partition's row versions against a snapshot's xmin, read with
        # pg_current_snapshot(), which PostgreSQL 13 brought.
        return Partitioning(
            None, (), False, server_unfit="PostgreSQL before 13 (no pg_current_snapshot())"
        )
    match = _PG_KEY.match(key)
    if match is None:
        return Partitioning(None, (), False, unsupported=f"partition key {key}")
    column = match["column"]
    if column.startswith('"'):
        column = column[1:-1].replace('""', '"')
    referenced = bool(
        connection.execute(
            text(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid IN "
                "(SELECT relid FROM pg_partition_tree(to_regclass(quote_ident(:table))))"
            ),
            {"table": table},
        ).scalar()
    )
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relkind, pg_get_expr(c.relpartbound, c.oid), n.nspname, "
            "c.oid::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = to_regclass(quote_ident(:table)) ORDER BY c.relname"
        ),
        {"table": table},
    ).all()
    column_type = connection.execute(
        text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(quote_ident(:table)) AND attname = :column"
        ),
        {"table": table, "column": column},
    ).scalar()
    literals: list[str | None] = []
    for _name, _kind, bound, _schema, _oid in rows:
        found = _PG_RANGE.match(bound or "")
        sides = (found["lower"], found["upper"]) if found else ("", "")
        literals += [_pg_literal(side) for side in sides]
    values = _pg_values(connection, literals, str(column_type))
    partitions = []
    for index, (name, kind, bound, schema, oid) in enumerate(rows):
        leaf = kind == "r"
        if bound == "DEFAULT":
            partitions.append(Partition(name, None, None, True, leaf, schema, int(oid), bound))
        elif _PG_RANGE.match(bound or ""):
            lower, upper = values[2 * index], values[2 * index + 1]
            partitions.append(Partition(name, lower, upper, False, leaf, schema, int(oid), bound))
    partitions.sort(key=lambda partition: (partition.default, _order(partition.upper)))
    owner = connection.execute(
        text(
            "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class "
            "WHERE oid = to_regclass(quote_ident(:table))"
        ),
        {"table": table},
    ).scalar()
    return Partitioning(column, tuple(partitions), referenced, droppable=bool(owner))


def _pg_literal(literal: str) -> str | None:
    """A bound's quoted literal, unquoted; None for MINVALUE, MAXVALUE or anything else."""
    if len(literal) < 2 or not (literal.startswith("'") and literal.endswith("'")):
        return None
    return literal[1:-1].replace("''", "'")


def _pg_values(connection: Connection, literals: list[str | None], column_type: str) -> list[Bound]:
    """Bounds as the server wrote them, cast back by the server to the column's type (in this
    session's time zone, as it wrote them), in one query."""
    if not literals:
        return []
    # format_type() output is a type name the server wrote; it is not user input.
    rows = connection.execute(
        text(
            f"SELECT CAST(value AS {column_type}) FROM unnest(CAST(:literals AS text[])) "
            "WITH ORDINALITY AS bound(value, position) ORDER BY position"
        ),
        {"literals": literals},
    ).scalars()
    return list(rows)


def _order(bound: Bound) -> tuple[int, str]:
    return (1, "") if bound is None else (0, bound.isoformat())


_MARIADB_FUNCTION = re.compile(
    r"^(?P<function>to_days|unix_timestamp|year)\(`(?P<column>[^`]+)`\)$"
)


def _mariadb(connection: Connection, table: str) -> Partitioning | None:
    rows = connection.execute(
        text(
            "SELECT PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, "
            "PARTITION_DESCRIPTION, SUBPARTITION_NAME FROM information_schema.PARTITIONS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table "
            "ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION"
        ),
        {"table": table},
    ).all()
    if not rows or rows[0][0] is None:
        return None
    method, expression = rows[0][1], rows[0][2] or ""
    referenced = bool(
        connection.execute(
            text(
                "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME = :table"
            ),
            {"table": table},
        ).scalar()
    )
    function = None
    if method == "RANGE COLUMNS" and re.fullmatch(r"`[^`]+`", expression):
        column = expression[1:-1]
    elif method == "RANGE" and (found := _MARIADB_FUNCTION.match(expression)):
        function, column = found["function"], found["column"]
    else:
        return Partitioning(None, (), referenced, unsupported=f"{method} ({expression})")
    partitions = []
    lower: Bound = None
    seen = set()
    for name, _method, _expression, description, _subpartition in rows:
        if name in seen:  # one row per sub-partition
            continue
        seen.add(name)
        upper = _mariadb_bound(str(description), function)
        partitions.append(Partition(name, lower, upper))
        lower = upper
    return Partitioning(
        column, tuple(partitions), referenced, droppable=_mariadb_may_drop(connection, table)
    )


# The privileges of this session's account on the table, however granted: GRANTEE reads
# 'user'@'host'; CHAR(39) is the quote.
_MARIADB_GRANTS = """
SELECT DISTINCT PRIVILEGE_TYPE FROM (
    SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES
    UNION ALL SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES
        WHERE TABLE_SCHEMA = DATABASE()
    UNION ALL SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :table
) AS grants
WHERE GRANTEE = CONCAT(
    CHAR(39), REPLACE(CURRENT_USER(), '@', CONCAT(CHAR(39), '@', CHAR(39))), CHAR(39)
)
"""


def _mariadb_may_drop(connection: Connection, table: str) -> bool:
    granted = set(connection.execute(text(_MARIADB_GRANTS), {"table": table}).scalars())
    return {"ALTER", "DROP"} <= granted


def _mariadb_bound(description: str, function: str | None) -> Bound:
    """A ``VALUES LESS THAN`` bound as a date or datetime (None: MAXVALUE or unreadable)."""
    if description == "MAXVALUE":
        return None
    if function is None:
        if not (description.startswith("'") and description.endswith("'")):
            return None
        value = description[1:-1]
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            return None
    try:
        number = int(description)
    except ValueError:
        return None
    if function == "to_days":
        # TO_DAYS('0001-01-01') is 366; Python's ordinal of that day is 1.
        return date.fromordinal(number - 365) if number > 365 else None
    if function == "year":
        return date(number, 1, 1) if 1 <= number <= 9999 else None
    # UNIX_TIMESTAMP of a TIMESTAMP column, read by this tool's sessions in UTC.
    return datetime(1970, 1, 1) + timedelta(seconds=number)


def in_partition(
    query: Select[Any],
    table: Table,
    partitioning: Partitioning,
    partition: Partition,
    dialect: str,
) -> Select[Any]:
    """Given a query over ``table``, return it restricted to the rows of one partition: MariaDB
    names the partition (``FROM t PARTITION (p)``); PostgreSQL, whose range partitions hold
    exactly ``lower <= column < upper`` (NULLs go to the default partition), is given that
    range and prunes to it."""
    if dialect in ("mysql", "mariadb"):
        return query.with_hint(table, f"PARTITION ({_quote_mariadb(partition.name)})", "*")
    assert partitioning.column is not None
    column = table.c[partitioning.column]
    if partition.lower is not None:
        query = query.where(column >= partition.lower)
    if partition.upper is not None:
        query = query.where(column < partition.upper)
    return query


def outside_partitions(
    query: Select[Any],
    table: Table,
    partitioning: Partitioning,
    excluded: Sequence[Partition],
    dialect: str,
) -> Select[Any] | None:
    """Given a query over ``table`` and some of its partitions, return it restricted to the
    rows of the other partitions: MariaDB names them (None when there are none); PostgreSQL
    leaves out the ranges of those given (adjacent ones as one), which it prunes."""
    if dialect in ("mysql", "mariadb"):
        names = {partition.name for partition in excluded}
        others = [p.name for p in partitioning.partitions if p.name not in names]
        if not others:
            return None
        return query.with_hint(table, f"PARTITION ({', '.join(map(_quote_mariadb, others))})", "*")
    assert partitioning.column is not None
    column = table.c[partitioning.column]
    spans: list[tuple[Bound, Bound]] = []
    for partition in sorted(excluded, key=lambda partition: _order(partition.upper)):
        if spans and spans[-1][1] is not None and spans[-1][1] == partition.lower:
            spans[-1] = (spans[-1][0], partition.upper)
        else:
            spans.append((partition.lower, partition.upper))
    for lower, upper in spans:
        # A NULL is in no range (PostgreSQL keeps it in the default partition).
        outside: list[ColumnElement[bool]] = [column.is_(None)]
        if lower is not None:
            outside.append(column < lower)
        if upper is not None:
            outside.append(column >= upper)
        query = query.where(or_(*outside))
    return query


def _quote_mariadb(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def drop_statements(dialect: Dialect, table: str, partition: Partition) -> list[str]:
    """Given the parent table and one partition, return the statements that take it out:
    PostgreSQL ``ALTER TABLE … DETACH PARTITION`` then ``DROP TABLE`` (one transaction);
    MariaDB ``ALTER TABLE … DROP PARTITION``."""
    quote = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        qualified = quote(partition.name)
        if partition.schema is not None:
            qualified = f"{quote(partition.schema)}.{qualified}"
        return [
            f"ALTER TABLE {quote(table)} DETACH PARTITION {qualified}",
            f"DROP TABLE {qualified}",
        ]
    return [f"ALTER TABLE {quote(table)} DROP PARTITION {quote(partition.name)}"]


# --- where a PostgreSQL partition stands, read again before it is recorded and dropped -------


@dataclass(frozen=True)
class Standing:
    """PostgreSQL: a partition as the catalog has it now: its OID, whether it is a partition of
    the table (attached), its bound as the catalog writes it, and (where asked) whether a
    foreign key references the table or any of its partitions."""

    oid: int
    attached: bool
    bound: str | None
    referenced: bool | None = None


_PG_STANDING = (
    "SELECT c.oid::bigint, "
    "coalesce(i.inhparent = to_regclass(quote_ident(:table)), false), "
    "pg_get_expr(c.relpartbound, c.oid), {referenced} "
    "FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
    "WHERE c.oid = to_regclass(:partition)"
)
# pg_partition_tree() takes a share lock on every partition of the table, until the
# transaction ends: asked only where the partition is locked already, for a moment.
_PG_REFERENCED = (
    "EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid IN "
    "(SELECT relid FROM pg_partition_tree(to_regclass(quote_ident(:table)))))"
)


def standing(
    connection: Connection, table: str, qualified: str, *, references: bool = False
) -> Standing | None:
    """PostgreSQL: given the table and the quoted (schema-qualified) name of one of its
    partitions, return where that partition stands now, in one statement (with
    ``references``, whether a foreign key references the table: that also locks every
    partition in share mode until the transaction ends); None when no relation has that
    name. What the catalog says of the partition alone, without reading the whole table's
    partitioning again (``read_partitioning``: six statements)."""
    query = text(_PG_STANDING.format(referenced=_PG_REFERENCED if references else "NULL"))
    row = connection.execute(query, {"table": table, "partition": qualified}).one_or_none()
    if row is None:
        return None
    oid, attached, bound, referenced = row
    return Standing(
        int(oid), bool(attached), bound, None if referenced is None else bool(referenced)
    )


def stands_as_read(found: Standing | None, partition: Partition) -> bool:
    """Whether a partition stands as the catalog read before had it: the same relation (its
    OID: not one created again under its name), still a partition of the table, with the same
    bound."""
    return (
        found is not None
        and found.oid == partition.oid
        and found.attached
        and found.bound == partition.bound
    )


# --- a partition's identity: what tells it from one created later under its name -------------


def oid_identity(connection: Connection, qualified: str) -> str:
    """PostgreSQL: the identity of the partition of that quoted (schema-qualified) name, its
    OID, which a rewrite (VACUUM FULL, CLUSTER) keeps and a partition created again does not
    get."""
    query = text("SELECT CAST(CAST(:name AS regclass) AS oid)")
    return f"oid {int(connection.execute(query, {'name': qualified}).scalar_one())}"


def upper_identity(partition: Partition) -> str:
    """MariaDB: a partition's identity is its name (the pending file's) and its upper bound.
    Not InnoDB's table id (information_schema.INNODB_SYS_TABLES), which a rebuild of the table
    (ALTER TABLE … FORCE, OPTIMIZE TABLE) changes while the rows stay, and which needs the
    PROCESS privilege; nor CREATE_TIME, the whole table's, which any ALTER (the drop of another
    partition too) changes. A partition created again under the name with the same bound reads
    as the same (docs/audit.md)."""
    upper = "MAXVALUE" if partition.upper is None else partition.upper.isoformat()
    return f"upper {upper}"


def still_there(connection: Connection, table: str, name: str, identity: str) -> bool:
    """Given a table, the name of a partition whose drop a crash interrupted and the identity
    its intent recorded, return whether that very partition is still there. PostgreSQL: a
    relation of its OID exists (attached, detached or renamed: whatever its name now);
    MariaDB: a partition of the table has its name and its upper bound."""
    kind, _, value = identity.partition(" ")
    if kind == "oid":
        query = text("SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = CAST(:oid AS oid))")
        return bool(connection.execute(query, {"oid": value}).scalar_one())
    if kind != "upper":
        raise RetentionError(f"partition {name!r}: an identity of no known kind was recorded")
    partitioning = read_partitioning(connection, table)
    return partitioning is not None and any(
        partition.name == name and upper_identity(partition) == identity
        for partition in partitioning.partitions
    )
