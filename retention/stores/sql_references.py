"""Which foreign keys reference a table, and what each makes the database do when a
referenced row is deleted: delete the referencing rows along (``CASCADE``), rewrite them
(``SET NULL``, ``SET DEFAULT``) or refuse the delete (``NO ACTION``, ``RESTRICT``). A rule
that deletes from the table must account for each of them before anything is deleted
(sql_reference_checks.py).

Every such key is read, wherever its table is: on PostgreSQL in any schema of the database,
on MariaDB/MySQL in any database of the server that the store's user may see (a key declared
in another database cascades into it all the same). On SQLite, every key declared in the
database's tables: the store's connections do not enforce them (``PRAGMA foreign_keys`` is off
unless a connection turns it on), but the application that declared them may, and expects what
they say done; deleting the rows they reference without it would leave rows pointing at rows
that are gone."""

from __future__ import annotations

from typing import Literal, NamedTuple

from sqlalchemy import Connection, text

from retention.config import IDENTIFIER

# "unknown": MariaDB/MySQL shows the key but not its action to a user with only table
# privileges on the referencing table (information_schema.REFERENTIAL_CONSTRAINTS).
OnDelete = Literal["cascade", "set null", "set default", "no action", "restrict", "unknown"]

# For each foreign key into a table: the referencing table's schema and name, whether the
# store's unqualified names reach it (the search_path finds that very table: a same-named
# table earlier in it hides it), its name as SQL spells it there, its columns, the
# constraint's name and its ON DELETE action, from the catalog.
_POSTGRESQL = text(
    "SELECT n.nspname::text, r.relname::text, pg_table_is_visible(c.conrelid), "
    "  c.conrelid::regclass::text, "
    "  array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(number, position) "
    "        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.number "
    "        ORDER BY k.position)::text[], "
    "  c.conname::text, c.confdeltype::text "
    "FROM pg_constraint c "
    "JOIN pg_class r ON r.oid = c.conrelid "
    "JOIN pg_namespace n ON n.oid = r.relnamespace "
    # conparentid: a key on a partitioned table repeats on each partition; count it once.
    "WHERE c.contype = 'f' AND c.conparentid = 0 "
    "  AND c.confrelid = to_regclass(:table) "
    "ORDER BY 4, 5, 6"
)
_POSTGRESQL_ACTIONS: dict[str, OnDelete] = {
    "c": "cascade",
    "n": "set null",
    "d": "set default",
    "a": "no action",
    "r": "restrict",
}
# Keys declared in any database (TABLE_SCHEMA) into the store's own; the store's unqualified
# names reach its own only. From KEY_COLUMN_USAGE, which shows a key to a user with any
# privilege on its table: REFERENTIAL_CONSTRAINTS, the only one with the ON DELETE action,
# hides it from one with table privileges only (MariaDB 10.11), and its action is then NULL.
_MARIADB = text(
    "SELECT k.TABLE_SCHEMA, k.TABLE_NAME, k.TABLE_SCHEMA = DATABASE(), "
    "  GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR ','), "
    "  k.CONSTRAINT_NAME, MAX(r.DELETE_RULE) "
    "FROM information_schema.KEY_COLUMN_USAGE k "
    "LEFT JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
    "  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
    "  AND r.TABLE_NAME = k.TABLE_NAME "
    "WHERE k.REFERENCED_TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME = :table "
    "GROUP BY k.TABLE_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME "
    "ORDER BY 3 DESC, 1, 2, 4"
)
# SQLite: the keys declared into a table, one row per column, from every table of the main
# database (SQLite's table names are compared without case). The pragma names no constraint.
_SQLITE = text(
    'SELECT m.name, f.id, f."from", f.on_delete '
    "FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND f.\"table\" = :table COLLATE NOCASE "
    "ORDER BY m.name, f.id, f.seq"
)
_ACTIONS_BY_NAME: dict[str, OnDelete] = {
    "CASCADE": "cascade",
    "SET NULL": "set null",
    "SET DEFAULT": "set default",
    "NO ACTION": "no action",
    "RESTRICT": "restrict",
}


class Reference(NamedTuple):
    """A foreign key into a table: the referencing table (as SQL spells it from the store:
    ``orders``, ``archive.orders``, ``"Order Items"``) and its columns, the constraint's name,
    what the database does to the referencing rows when a referenced row is deleted; and
    where that table is: its schema (its database on MariaDB/MySQL), its own name, and
    whether the store's unqualified names reach it (``local``), as a rule's tables are named;
    and whether the store's connections enforce it (``enforced``: not on SQLite).
    """

    table: str
    columns: tuple[str, ...]
    constraint: str
    on_delete: OnDelete
    schema: str
    name: str
    local: bool
    enforced: bool = True


def references_into(connection: Connection, table: str, quoted_table: str) -> list[Reference]:
    """Given a connection and a table (its name, and its name quoted for the dialect), return
    the foreign keys that reference it, whatever their ON DELETE action and wherever their
    table.

    Example: on MariaDB, a key of ``archive.orders`` into the store's ``clients`` gives
    ``Reference("archive.orders", ("client_id",), "orders_ibfk_1", "cascade", "archive",
    "orders", False)``.

    SQLite enforces foreign keys only where a connection asks (``PRAGMA foreign_keys``), which
    a store's connections do not: its keys come back with ``enforced`` False, named by their
    table and number (``foreign key 0 of tickets``).
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        rows = connection.execute(_POSTGRESQL, {"table": quoted_table})
        return [
            Reference(
                spelled, tuple(columns), name, _POSTGRESQL_ACTIONS[action], schema, relation, local
            )
            for schema, relation, local, spelled, columns, name, action in rows
        ]
    if dialect in ("mysql", "mariadb"):
        rows = connection.execute(_MARIADB, {"table": table})
        return [
            Reference(
                _mariadb_spelled(schema, relation, bool(local)),
                tuple(columns.split(",")),
                name,
                # InnoDB's NO ACTION is its RESTRICT: it refuses the delete.
                "unknown" if action is None else _ACTIONS_BY_NAME.get(action.upper(), "no action"),
                schema,
                relation,
                bool(local),
            )
            for schema, relation, local, columns, name, action in rows
        ]
    if dialect == "sqlite":
        return _sqlite_references(connection, table)
    return []


def _sqlite_references(connection: Connection, table: str) -> list[Reference]:
    keys: dict[tuple[str, int], tuple[str, list[str]]] = {}
    for relation, number, column, action in connection.execute(_SQLITE, {"table": table}):
        keys.setdefault((relation, number), (action, []))[1].append(column)
    return [
        Reference(
            _spelled((relation,), '"'),
            tuple(columns),
            f"foreign key {number} of {relation}",
            _ACTIONS_BY_NAME.get(action.upper(), "no action"),
            "main",
            relation,
            True,
            enforced=False,
        )
        for (relation, number), (action, columns) in keys.items()
    ]


def _mariadb_spelled(schema: str, name: str, local: bool) -> str:
    """``orders`` in the store's database, ``archive.orders`` in another, each part between
    backquotes where it is not a plain identifier."""
    return _spelled((name,) if local else (schema, name), "`")


def _spelled(parts: tuple[str, ...], quote: str) -> str:
    """The parts of a name joined by dots, each as it is where it is a plain identifier, else
    between ``quote`` characters (one inside doubled)."""
    return ".".join(
        part if IDENTIFIER.fullmatch(part) else quote + part.replace(quote, quote * 2) + quote
        for part in parts
    )
