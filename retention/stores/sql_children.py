"""A batch's child rows (``[[rules.children]]``): deleted the deepest first, each DELETE
returning the primary keys it deleted where the dialect can, else locked by a SELECT … FOR
UPDATE before the intent and counted against it after (stores/sql_purge.py's batches)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Select, Table, delete, select

from retention.config import Child
from retention.errors import BatchConflict
from retention.selection import KeyValues
from retention.store_protocol import ChildRows

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


def delete_children(
    store: SqlStore,
    connection: Connection,
    children: Sequence[Child],
    parent_values: Mapping[str, Sequence[Any] | Select[Any]],
    names: Mapping[tuple[Child, ...], str],
    above: tuple[Child, ...] = (),
    *,
    found: dict[str, tuple[tuple[str, ...], dict[KeyValues, None]]] | None = None,
) -> dict[str, int]:
    """Delete the children of a batch, the deepest first; return the rows deleted per child
    table, named as ``child_paths`` names them. With ``found`` (a dialect with DELETE …
    RETURNING), each DELETE returns the primary keys of the rows it deleted, which are added
    to ``found`` per child table (its key columns and its keys, in the order deleted)."""
    deleted: dict[str, int] = {}
    for child in children:
        path = (*above, child)
        child_table = store.table(child.table)
        references = child_table.c[child.foreign_key].in_(parent_values[child.references])
        if child.children:
            below = delete_children(
                store,
                connection,
                child.children,
                {
                    grandchild.references: select(child_table.c[grandchild.references]).where(
                        references
                    )
                    for grandchild in child.children
                },
                names,
                path,
                found=found,
            )
            for name, count in below.items():
                deleted[name] = deleted.get(name, 0) + count
        statement = delete(child_table).where(references)
        if found is None:
            count = connection.execute(statement).rowcount
        else:
            primary = list(child_table.primary_key.columns)
            # One fetchall: iterating the result would fetch row by row.
            rows = connection.execute(statement.returning(*primary)).all()
            _columns, keys = found.setdefault(
                child_table.name, (tuple(column.name for column in primary), {})
            )
            keys.update(dict.fromkeys(map(tuple, rows)))
            count = len(rows)
        deleted[names[path]] = deleted.get(names[path], 0) + count
    return deleted


def child_conditions(
    store: SqlStore,
    children: Sequence[Child],
    parent_values: Mapping[str, Sequence[Any] | Select[Any]],
) -> list[tuple[Table, ColumnElement[bool]]]:
    """Given a batch's children and its parents' referenced values, return each child table
    with the condition true for its rows the batch deletes, as ``delete_children`` reaches
    them (nested children through the rows of their parent table)."""
    found: list[tuple[Table, ColumnElement[bool]]] = []
    for child in children:
        child_table = store.table(child.table)
        references = child_table.c[child.foreign_key].in_(parent_values[child.references])
        below = {
            grandchild.references: select(child_table.c[grandchild.references]).where(references)
            for grandchild in child.children
        }
        found += child_conditions(store, child.children, below)
        found.append((child_table, references))
    return found


def locked_child_rows(
    store: SqlStore,
    connection: Connection,
    children: Sequence[Child],
    parent_values: Mapping[str, Sequence[Any] | Select[Any]],
) -> tuple[ChildRows, ...]:
    """Given a batch's children and its parents' referenced values, lock the child rows the
    batch deletes and return their primary keys, per child table (a row two paths reach once)."""
    keys: dict[str, dict[KeyValues, None]] = {}
    columns: dict[str, tuple[str, ...]] = {}
    for child_table, condition in child_conditions(store, children, parent_values):
        primary = list(child_table.primary_key.columns)
        columns[child_table.name] = tuple(column.name for column in primary)
        found = connection.execute(select(*primary).where(condition).with_for_update()).all()
        keys.setdefault(child_table.name, {}).update(dict.fromkeys(map(tuple, found)))
    return tuple(ChildRows(name, columns[name], tuple(rows)) for name, rows in keys.items())


def check_child_counts(
    deleted: Mapping[str, int],
    names: Mapping[tuple[Child, ...], str],
    child_rows: Sequence[ChildRows],
) -> None:
    """Given the rows deleted per child path, and the child rows the intent recorded, raise
    BatchConflict unless each child table lost exactly those: a row added since (a foreign key
    the database does not enforce) would go unrecorded."""
    by_table: dict[str, int] = {}
    for name, table in {name: path[-1].table for path, name in names.items()}.items():
        by_table[table] = by_table.get(table, 0) + deleted.get(name, 0)
    for rows in child_rows:
        if by_table.get(rows.table, 0) != len(rows.keys):
            raise BatchConflict(
                f"{by_table.get(rows.table, 0)} rows of {rows.table!r} deleted, "
                f"{len(rows.keys)} locked"
            )
