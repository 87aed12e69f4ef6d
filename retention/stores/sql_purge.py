"""The purge of one batch, in one transaction: its intent recorded (``before_write``) before
anything is committed, the due condition checked again inside every DELETE/UPDATE."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    not_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import RowMapping

from retention.anonymise import anonymise_value
from retention.config import Rule
from retention.errors import BatchConflict
from retention.runtime.faults import crash_point
from retention.selection import ChildCounts, KeyValues, Selection, child_paths
from retention.store_protocol import (
    Batch,
    BeforeCommit,
    BeforeWrite,
    ChildRows,
    IntentDetail,
    KeyFilter,
)
from retention.stores import sql_children, sql_probed, sql_spans
from retention.stores.sql_columns import (
    column_value,
    read_stored,
    stored_as_text,
    written_as_stored,
)
from retention.stores.sql_dialect import (
    WRITE_OPTION,
    OneStatementDelete,
    clock_kind,
    one_statement_delete,
    ordered_limit,
)
from retention.stores.sql_keys import after_key, key_between, key_in, only_accepted, result_keys
from retention.stores.sql_predicate import batch_query, bound, predicate, range_delete
from retention.stores.sql_survey import count_children, kept_before, still_there

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


def purge_batch(
    store: SqlStore,
    selection: Selection,
    *,
    after: KeyValues | None,
    limit: int,
    dry_run: bool,
    now: datetime,
    hash_key: bytes | None,
    before_write: BeforeWrite | None = None,
    only: KeyFilter | None = None,
    before_commit: BeforeCommit | None = None,
) -> Batch:
    """Given a Selection and the last key already handled, purge the next batch of due rows.

    One transaction: lock the next ``limit`` due rows in key order, call ``before_write`` with
    their keys and their child rows' (the audit intent: if it raises, the transaction rolls
    back and nothing is deleted), delete their children, then delete (or anonymise) them with
    the due condition checked again inside the statement. The child rows are deleted before the
    intent where the dialect has DELETE … RETURNING (each DELETE returns the keys the intent
    names; a child row that comes in afterwards is not deleted by this batch), else locked by a
    SELECT … FOR UPDATE and deleted after it (a child table that then loses other rows than
    those locked rolls the batch back: BatchConflict). If the database reports another number
    of parent rows than were locked, a row changed under us: the batch rolls back and
    BatchConflict is raised.
    With ``only`` (a subjects' rule: the subjects whose objects were visited), the locked
    rows it does not accept are left untouched, as if held, until a later run. On PostgreSQL
    the intent's detail names the batch's transaction (all of its rows go in it, or none). A
    plain delete rule without ``only`` takes the shorter way of ``_delete_range``, on
    PostgreSQL pipelined (``sql_probed``, the only one that calls ``before_commit``).
    ``dry_run`` only selects.
    """
    rule = selection.rule
    extra = [child.references for child in rule.children]
    extra += [column for column, _strategy in rule.anonymise]
    if dry_run:
        # Rows the rules before this one delete are gone when the run gets here: those of its
        # table, and those its joins reach (leaving no clock, or a condition changed).
        kept = still_there(store, selection)
        query: Select[Any] | None = batch_query(store, selection, after, limit, extra, kept)
        with store.reachable(), store.engine.connect() as connection:
            if query is not None and selection.removed_before:
                # Gone by the time the run gets here: an earlier rule of the run deleted them.
                query = query.where(kept_before(store, selection, rule.table))
            if query is not None and selection.whole_partitions:
                query = _outside_whole_partitions(store, connection, selection, query)
            rows = connection.execute(query).mappings().all() if query is not None else []
            keys = tuple(tuple(row[key] for key in rule.key) for row in rows)
            resume_after: KeyValues | None = None
            more: bool | None = None
            if only is not None and keys:
                _, keys, resume_after, more = only_accepted(rows, keys, only, limit)
            children: ChildCounts = ()
            if keys and rule.children:
                key_columns = store.key_columns(rule)
                before = None
                if after is not None:
                    before = and_(
                        predicate(store, selection, kept), not_(after_key(key_columns, after))
                    )
                children = count_children(
                    store, connection, selection, key_in(key_columns, keys), before
                )
        return Batch(
            keys,
            done=0,
            children_deleted=sum(count for _name, count in children),
            children=children,
            resume_after=resume_after,
            more=more,
        )
    # The schema is read before the transaction opens: on SQLite a second connection would
    # share the batch's one, and its BEGIN fail.
    for name in (rule.table, *(join.table for join in rule.joins)):
        store.table(name)
    for _name, path in child_paths(rule.children):
        store.table(path[-1].table)
    if only is None and _probes_ahead(store, rule):
        return sql_probed.delete_probed(store, selection, after, limit, before_write, before_commit)
    started = time.monotonic()
    locked = only is not None or not _deletes_by_range(store, rule)
    # Built before the transaction: it may read the schema, on SQLite through the store's one
    # connection, which must not be opened again inside it.
    locking = batch_query(store, selection, after, limit, extra) if locked else None
    with (
        store.reachable(),
        store.engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
        connection.begin(),
    ):
        form = one_statement_delete(store.engine.dialect)
        if locking is None and _by_spans(store, rule, form, before_write):
            batch = sql_spans.delete_span(store, connection, selection, after, limit)
        elif locking is None and form is not None:
            batch = _delete_next(store, connection, selection, after, limit, before_write, form)
        elif locking is None:
            batch = _delete_range(store, connection, selection, after, limit, before_write)
        else:
            batch = _purge_locked(
                store, connection, selection, locking, now, hash_key, before_write, only, limit
            )
        if batch.keys or batch.done:
            crash_point("mid_batch")
    if batch.keys or batch.done:
        crash_point("after_commit")
    return replace(batch, transaction_seconds=time.monotonic() - started)


def _outside_whole_partitions(
    store: SqlStore, connection: Connection, selection: Selection, query: Select[Any]
) -> Select[Any] | None:
    """A dry run's batch query restricted to the rows outside the partitions a run drops whole
    first (None: no row is outside them)."""
    from retention.stores.partition_catalog import outside_partitions, read_partitioning

    partitioning = read_partitioning(connection, selection.rule.table)
    if partitioning is None:
        return query
    names = set(selection.whole_partitions)
    whole = [partition for partition in partitioning.partitions if partition.name in names]
    if not whole:
        return query
    table = store.table(selection.rule.table)
    return outside_partitions(query, table, partitioning, whole, store.engine.dialect.name)


def _deletes_by_range(store: SqlStore, rule: Rule) -> bool:
    """A plain delete (no children to delete first, no values to read) on a dialect with
    DELETE … RETURNING needs no locking select: the DELETE itself says which rows went."""
    returning = bool(store.engine.dialect.delete_returning)
    return rule.action == "delete" and not rule.children and returning


def _probes_ahead(store: SqlStore, rule: Rule) -> bool:
    """A plain delete on PostgreSQL reads each batch's keys ahead, and deletes them while its
    intent is written (sql_probed)."""
    return store.engine.dialect.name == "postgresql" and _deletes_by_range(store, rule)


def _by_spans(
    store: SqlStore, rule: Rule, form: OneStatementDelete | None, before_write: BeforeWrite | None
) -> bool:
    """Whether a plain delete batch goes by a span of keys, returning no keys
    (stores/sql_spans.py): on MariaDB, where nobody needs them (no audit intent)."""
    return (
        form == "ordered_limit"
        and before_write is None
        and sql_spans.spans_apply(store, store.key_columns(rule))
    )


def _delete_next(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    after: KeyValues | None,
    limit: int,
    before_write: BeforeWrite | None,
    form: OneStatementDelete,
) -> Batch:
    """Delete the next batch of a plain delete rule in one statement that picks the next
    ``limit`` due rows in key order, deletes them with the due condition checked again, and
    returns their keys in key order (see ``one_statement_delete``). ``before_write`` (the
    audit intent) gets exactly those keys before the COMMIT: if it raises, the transaction
    rolls back and nothing was deleted.

    A row that changed since the statement's snapshot is checked again by the database
    (MariaDB reads under lock) and a row that stopped being due stays (it waits for the next
    run). The next batch starts after the last key deleted.
    """
    rule = selection.rule
    key_columns = store.key_columns(rule)
    table = store.table(rule.table)
    due = predicate(store, selection)
    window = due if after is None else and_(after_key(key_columns, after), due)
    if form == "ordered_limit" and after is None:
        # MariaDB walks the key's index for DELETE … ORDER BY … LIMIT only when the WHERE
        # bounds the key: unbounded, it would sort every due row by the clock's index
        # (measured: 6 s for 500,000 due rows). The table's first key bounds it (its first
        # column; key columns are NOT NULL, check_rule says so), read from the key's index.
        first = connection.execute(select(*key_columns).order_by(*key_columns).limit(1)).first()
        if first is None:
            return Batch((), 0, more=False)
        window = and_(key_columns[0] >= first[0], due)
    statement = (
        delete(table).where(window).ext(ordered_limit(key_columns, limit)).returning(*key_columns)
    )
    keys = tuple(result_keys(connection.execute(statement), store.plain_integer_keys(key_columns)))
    if keys and before_write is not None:
        before_write(keys)
    # MariaDB's LIMIT counts only rows still due, so a short batch was the last.
    more = len(keys) >= limit
    return Batch(keys, done=len(keys), more=more)


def _delete_range(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    after: KeyValues | None,
    limit: int,
    before_write: BeforeWrite | None,
) -> Batch:
    """Delete the next batch of a plain delete rule in two statements: find the last of the
    next ``limit`` due keys (an index walk, no rows sent back but one), then delete every
    row up to it that is still due, the condition checked inside the DELETE, RETURNING
    their keys. ``before_write`` (the audit intent) gets exactly those keys before the
    COMMIT: if it raises, the transaction rolls back and nothing was deleted.

    A row that stopped being due since the first statement stays; one that became due in
    the range goes with the others and is in the keys. The next batch starts after the
    range's end (``resume_after``), whatever was deleted; a range of fewer than ``limit``
    due keys was the last.
    """
    rule = selection.rule
    key_columns = store.key_columns(rule)
    window = batch_query(store, selection, after, limit).subquery()
    # The window's size comes back with its last key: a short window is the rule's last
    # batch, so no further probe walks the rest of the index again.
    last = connection.execute(
        select(*window.c, func.count().over())
        .order_by(*(column.desc() for column in window.c))
        .limit(1)
    ).first()
    if last is None:
        return Batch((), 0, more=False)
    end, size = tuple(last[:-1]), int(last[-1])
    statement = range_delete(store, selection, after, end)
    keys = tuple(result_keys(connection.execute(statement), store.plain_integer_keys(key_columns)))
    if keys and before_write is not None:
        before_write(keys)
    return Batch(keys, done=len(keys), resume_after=end, more=size >= limit)


def _purge_locked(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    query: Select[Any],
    now: datetime,
    hash_key: bytes | None,
    before_write: BeforeWrite | None,
    only: KeyFilter | None,
    limit: int,
) -> Batch:
    rule = selection.rule
    rows = connection.execute(query.with_for_update()).mappings().all()
    if not rows:
        return Batch((), 0)
    keys = tuple(tuple(row[key] for key in rule.key) for row in rows)
    resume_after: KeyValues | None = None
    more: bool | None = None
    if only is not None:
        # The rows ``only`` refuses stay locked and untouched.
        rows, keys, resume_after, more = only_accepted(rows, keys, only, limit)
        if not keys:
            return Batch((), 0, resume_after=resume_after, more=more)
    parent_values: dict[str, Sequence[Any] | Select[Any]] = {
        child.references: [row[child.references] for row in rows] for child in rule.children
    }
    names = {path: name for name, path in child_paths(rule.children)}
    child_rows: tuple[ChildRows, ...] = ()
    deleted: dict[str, int] = {}
    returning = bool(rule.action == "delete" and rule.children and _children_by_returning(store))
    if returning:
        # One statement per child table: the DELETE says which rows went, in the same open
        # transaction, and the intent below names exactly those before anything is committed.
        found: dict[str, tuple[tuple[str, ...], dict[KeyValues, None]]] = {}
        deleted = sql_children.delete_children(
            store, connection, rule.children, parent_values, names, found=found
        )
        child_rows = tuple(ChildRows(name, key, tuple(rows)) for name, (key, rows) in found.items())
    elif rule.action == "delete" and rule.children:
        # The child rows go in the same transaction: their keys are in the same intent, each
        # row locked so that the deletes below reach exactly these.
        child_rows = sql_children.locked_child_rows(store, connection, rule.children, parent_values)
    if before_write is not None:
        before_write(keys, IntentDetail(children=child_rows, transaction=_named(connection)))
    table = store.table(rule.table)
    key_columns = store.key_columns(rule)
    recheck = predicate(store, selection)
    dialect = store.engine.dialect.name
    children: ChildCounts = ()
    if rule.action == "delete":
        if not returning:
            deleted = sql_children.delete_children(
                store, connection, rule.children, parent_values, names
            )
            sql_children.check_child_counts(deleted, names, child_rows)
        children = tuple((name, deleted.get(name, 0)) for name in dict.fromkeys(names.values()))
        # A key range would also reach the rows ``only`` refused.
        _delete_exactly(store, connection, table, key_columns, keys, recheck, by_range=only is None)
    else:
        result = connection.execute(
            update(table)
            .where(
                *(column == bindparam(f"key_{column.name}") for column in key_columns),
                recheck,
            )
            .values(
                {
                    **{
                        column: type_coerce(bindparam(f"new_{column}"), String)
                        if stored_as_text(table.c[column], dialect)
                        else bindparam(f"new_{column}")
                        for column, _ in rule.anonymise
                    },
                    rule.marker_column: bindparam("new_marker"),
                }
            ),
            [_anonymised(store, rule, row, now, hash_key) for row in rows],
        )
        if result.rowcount != len(keys):
            raise BatchConflict(f"{result.rowcount} of {len(keys)} locked rows changed")
    return Batch(
        keys,
        done=len(keys),
        children_deleted=sum(count for _name, count in children),
        children=children,
        resume_after=resume_after,
        more=more,
    )


def _delete_exactly(
    store: SqlStore,
    connection: Connection,
    table: Table,
    key_columns: list[Column[Any]],
    keys: tuple[KeyValues, ...],
    recheck: ColumnElement[bool],
    *,
    by_range: bool,
) -> None:
    """Delete the locked rows, the due condition checked again; BatchConflict unless
    exactly those rows went. With RETURNING and ``by_range`` the statement names the batch
    by its key range (binding one parameter per key cost more than the delete) and the
    returned keys prove the set; else by the list of keys and the row count."""
    if by_range and store.engine.dialect.delete_returning:
        deleted = connection.execute(
            delete(table)
            .where(key_between(key_columns, keys[0], keys[-1]), recheck)
            .returning(*key_columns)
        ).all()
        if len(deleted) != len(keys) or {tuple(row) for row in deleted} != set(keys):
            raise BatchConflict(f"{len(deleted)} rows deleted, {len(keys)} locked")
        return
    result = connection.execute(delete(table).where(key_in(key_columns, keys), recheck))
    if result.rowcount != len(keys):
        raise BatchConflict(f"{result.rowcount} of {len(keys)} locked rows changed")


def _named(connection: Connection) -> Future[int] | None:
    """On PostgreSQL, the id of the batch's transaction, for its intent: its rows are locked,
    and all of them (and the child rows its intent names) go in it or none, so after a crash
    whether it committed says which, whatever another session did to them since
    (reconcile.py). Elsewhere None: the reconcile looks for the records."""
    if connection.dialect.name != "postgresql":
        return None
    transaction: Future[int] = Future()
    transaction.set_result(sql_probed.current_transaction(connection))
    return transaction


def _anonymised(
    store: SqlStore, rule: Rule, row: RowMapping, now: datetime, hash_key: bytes | None
) -> dict[str, Any]:
    table = store.table(rule.table)
    assert rule.marker_column is not None
    marker_kind = clock_kind(table.c[rule.marker_column], store.engine.dialect.name)
    marker: datetime | date = now if marker_kind != "date" else now.date()
    if isinstance(marker, datetime) and marker_kind is not None:
        marker = bound(store, marker, marker_kind)
    parameters: dict[str, Any] = {f"key_{column}": row[column] for column in rule.key}
    dialect = store.engine.dialect
    for column, strategy in rule.anonymise:
        as_text = stored_as_text(table.c[column], dialect.name)
        current = read_stored(table.c[column], row[column], dialect) if as_text else row[column]
        value = anonymise_value(strategy, current, hash_key=hash_key)
        if strategy.kind == "fixed" and strategy.value is not None and value is not None:
            # The value check_rule checked, as the column takes it (a date, a UUID).
            value = column_value(table.c[column], strategy.value, dialect.name)
        parameters[f"new_{column}"] = (
            written_as_stored(table.c[column], value, dialect) if as_text else value
        )
    parameters["new_marker"] = marker
    return parameters


def _children_by_returning(store: SqlStore) -> bool:
    """Whether a batch's child rows are deleted by one DELETE … RETURNING per child table
    (else locked by a SELECT … FOR UPDATE first, then deleted and counted)."""
    return bool(store.engine.dialect.delete_returning)
