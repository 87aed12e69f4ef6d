"""Which foreign keys make the database itself delete rows when a rule's rows go: an
``ON DELETE CASCADE`` into a table the rule does not list as a child would delete rows that
nobody recorded, so such a rule is refused before anything is deleted."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection, text

# The referencing table and columns of each cascading key into a table, from the catalog.
_POSTGRESQL = text(
    "SELECT c.conrelid::regclass::text, "
    "  array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(number, position) "
    "        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.number "
    "        ORDER BY k.position)::text[] "
    "FROM pg_constraint c "
    # conparentid: a key on a partitioned table repeats on each partition; count it once.
    "WHERE c.contype = 'f' AND c.confdeltype = 'c' AND c.conparentid = 0 "
    "  AND c.confrelid = to_regclass(:table) "
    "ORDER BY 1, 2"
)
_MARIADB = text(
    "SELECT r.TABLE_NAME, GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ',') "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS r "
    "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA "
    "  AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME AND k.TABLE_NAME = r.TABLE_NAME "
    "WHERE r.CONSTRAINT_SCHEMA = DATABASE() AND r.UNIQUE_CONSTRAINT_SCHEMA = DATABASE() "
    "  AND r.REFERENCED_TABLE_NAME = :table AND r.DELETE_RULE = 'CASCADE' "
    "GROUP BY r.TABLE_NAME, r.CONSTRAINT_NAME "
    "ORDER BY 1, 2"
)


class Cascade(NamedTuple):
    """A foreign key whose rows the database deletes with the rows they reference."""

    table: str
    columns: tuple[str, ...]


def cascades_into(connection: Connection, table: str, quoted_table: str) -> list[Cascade]:
    """Given a connection and a table (its name, and its name quoted for the dialect), return
    the foreign keys that reference it with ``ON DELETE CASCADE``.

    SQLite enforces foreign keys only where a connection asks (``PRAGMA foreign_keys``), which
    a store's connections do not: nothing cascades there, and the list is empty.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        rows = connection.execute(_POSTGRESQL, {"table": quoted_table})
        return [Cascade(referencing, tuple(columns)) for referencing, columns in rows]
    if dialect in ("mysql", "mariadb"):
        rows = connection.execute(_MARIADB, {"table": table})
        return [Cascade(referencing, tuple(columns.split(","))) for referencing, columns in rows]
    return []
