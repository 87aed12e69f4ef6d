"""Which foreign keys reference a table, and what each makes the database do when a
referenced row is deleted: delete the referencing rows along (``CASCADE``), rewrite them
(``SET NULL``, ``SET DEFAULT``) or refuse the delete (``NO ACTION``, ``RESTRICT``). A rule
that deletes from the table must account for each of them before anything is deleted
(sql_reference_checks.py)."""

from __future__ import annotations

from typing import Literal, NamedTuple

from sqlalchemy import Connection, text

OnDelete = Literal["cascade", "set null", "set default", "no action", "restrict"]

# The referencing table, its columns, the constraint's name and its ON DELETE action, for
# each foreign key into a table, from the catalog.
_POSTGRESQL = text(
    "SELECT c.conrelid::regclass::text, "
    "  array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(number, position) "
    "        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.number "
    "        ORDER BY k.position)::text[], "
    "  c.conname::text, c.confdeltype::text "
    "FROM pg_constraint c "
    # conparentid: a key on a partitioned table repeats on each partition; count it once.
    "WHERE c.contype = 'f' AND c.conparentid = 0 "
    "  AND c.confrelid = to_regclass(:table) "
    "ORDER BY 1, 2"
)
_POSTGRESQL_ACTIONS: dict[str, OnDelete] = {
    "c": "cascade",
    "n": "set null",
    "d": "set default",
    "a": "no action",
    "r": "restrict",
}
_MARIADB = text(
    "SELECT r.TABLE_NAME, GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ','), "
    "  r.CONSTRAINT_NAME, r.DELETE_RULE "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS r "
    "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA "
    "  AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME AND k.TABLE_NAME = r.TABLE_NAME "
    "WHERE r.CONSTRAINT_SCHEMA = DATABASE() AND r.UNIQUE_CONSTRAINT_SCHEMA = DATABASE() "
    "  AND r.REFERENCED_TABLE_NAME = :table "
    "GROUP BY r.TABLE_NAME, r.CONSTRAINT_NAME, r.DELETE_RULE "
    "ORDER BY 1, 2"
)
_MARIADB_ACTIONS: dict[str, OnDelete] = {
    "CASCADE": "cascade",
    "SET NULL": "set null",
    "SET DEFAULT": "set default",
    "NO ACTION": "no action",
    "RESTRICT": "restrict",
}


class Reference(NamedTuple):
    """A foreign key into a table: the referencing table and columns, the constraint's name,
    and what the database does to the referencing rows when a referenced row is deleted."""

    table: str
    columns: tuple[str, ...]
    constraint: str
    on_delete: OnDelete


def references_into(connection: Connection, table: str, quoted_table: str) -> list[Reference]:
    """Given a connection and a table (its name, and its name quoted for the dialect), return
    the foreign keys that reference it, whatever their ON DELETE action.

    SQLite enforces foreign keys only where a connection asks (``PRAGMA foreign_keys``), which
    a store's connections do not: no key there cascades, rewrites or refuses anything, and the
    list is empty.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        rows = connection.execute(_POSTGRESQL, {"table": quoted_table})
        return [
            Reference(referencing, tuple(columns), name, _POSTGRESQL_ACTIONS[action])
            for referencing, columns, name, action in rows
        ]
    if dialect in ("mysql", "mariadb"):
        rows = connection.execute(_MARIADB, {"table": table})
        return [
            Reference(
                referencing,
                tuple(columns.split(",")),
                name,
                # InnoDB's NO ACTION is its RESTRICT: it refuses the delete.
                _MARIADB_ACTIONS.get(action.upper(), "no action"),
            )
            for referencing, columns, name, action in rows
        ]
    return []
