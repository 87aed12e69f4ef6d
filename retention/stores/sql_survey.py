"""A rule's survey in one pass (due, held, future, unreadable, oldest, samples) and the child rows
a purge reaches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    case,
    func,
    inspect,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)

from retention.config import Child
from retention.rules import to_wall_time
from retention.selection import ChildCounts, Selection, child_paths
from retention.store_protocol import Survey
from retention.stores.partition_survey import PartitionSurvey, survey_partitions
from retention.stores.sql_keys import not_true
from retention.stores.sql_predicate import (
    Kept,
    batch_query,
    bound,
    earliest_meaning,
    expired_all,
    held,
    instant,
    invalid_period,
    plainly_expired,
    predicate,
    rule_clock,
    scope,
    when_readable,
    zero_in_date_expired,
)

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore


def survey(store: SqlStore, selection: Selection, sample_size: int) -> Survey:
    """Given a Selection, return in one pass over the rule's scope: rows due, held and with a
    future clock, the oldest due clock; then the first due keys (the run's own query)."""
    rule = selection.rule
    clock = rule_clock(store, rule)
    expired = expired_all(store, selection, clock)
    holding = held(store, selection)
    due = expired if holding is None else and_(expired, not_(holding))
    erasure = selection.erasure is not None
    future = when_readable(
        clock,
        clock.expression > to_wall_time(selection.as_of, selection.zone).date()
        if clock.kind == "date"
        else clock.expression > bound(store, selection.as_of, clock.kind),
    )

    def how_many(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    # Rows whose clock compares as due but cannot be trusted (SQLite text in another spelling,
    # a MariaDB zero-in-date value): those the guards keep.
    unguarded = replace(clock, readable=None, zero_in_date=False)
    unreadable = (
        literal(0)
        if (clock.readable is None and not clock.zero_in_date) or erasure
        else how_many(and_(expired_all(store, selection, unguarded), not_(expired)))
    )

    no_period = None if erasure else invalid_period(store, selection)
    counting = (
        select(
            func.count(),
            how_many(due),
            how_many(and_(expired, holding)) if holding is not None else literal(0),
            literal(0) if erasure else how_many(future),
            unreadable,
            literal(0) if no_period is None else how_many(no_period),
            # An erasure ignores the clock, which may not even be readable.
            null() if erasure else func.min(case((due, clock.expression), else_=None)),
        )
        .select_from(store.table(rule.table))
        .where(scope(store, selection))
    )
    with store.reachable(), store.engine.connect() as connection:
        # The partitions that go whole first: the counts below cover only the rows outside them.
        whole = survey_partitions(store, connection, selection)
        table = store.table(rule.table)
        if holding is None and _counts_by_ranges(store, connection, selection, no_period, whole):
            # One snapshot still: the counts below are reads of the same transaction.
            in_scope_where = scope(store, selection)

            def outside(query: Any) -> Any:
                return whole.outside(query.select_from(table), store, rule.table)

            total = _count(connection, outside(select(func.count()).where(in_scope_where)))
            later = _count(connection, outside(select(func.count()).where(in_scope_where, future)))
            zero_in_date = zero_in_date_expired(store, clock, selection.default)
            kept_back = _count(
                connection, outside(select(func.count()).where(in_scope_where, zero_in_date))
            )
            plain = plainly_expired(store, selection, clock)
            if plain is None:
                first_due = select(func.count(), func.min(clock.expression))
                due_rows, first = _count(
                    connection, outside(first_due.where(in_scope_where, due)), (0, None)
                )
            else:
                # The plain range less what the guard keeps back, and the first due value in
                # the index's order: MariaDB evaluates the guard on every row it counts (0.06 s
                # of a 0.15 s count of 500,000 rows, issue 17), not on a range count.
                plainly = outside(select(func.count()).where(in_scope_where, plain))
                due_rows = _count(connection, plainly) - kept_back
                oldest_due = outside(
                    select(clock.expression)
                    .where(in_scope_where, due)
                    .order_by(clock.expression)
                    .limit(1)
                )
                first = None
                if due_rows and oldest_due is not None:
                    first = connection.execute(oldest_due).scalar()
            counts = (total, due_rows, 0, later, kept_back, 0, first)
        else:
            rest = whole.outside(counting, store, rule.table)
            counts = _count(connection, rest, (0, 0, 0, 0, 0, 0, None))
        samples = connection.execute(batch_query(store, selection, None, sample_size)).all()
        children: ChildCounts = ()
        if rule.children:
            # The parents as the run finds them: a row whose joined row an earlier rule
            # deletes has no clock left, and keeps its children.
            parents = predicate(store, selection, still_there(store, selection))
            children = count_children(store, connection, selection, parents)
    in_scope, due_count, held_count, future_count, unreadable_count, invalid_count, oldest = counts
    # Every row of a partition that goes whole is in scope and due (and none held or future).
    in_scope, due_count = int(in_scope) + whole.rows, int(due_count) + whole.rows
    # A zero-in-date value comes as text: compared as the first day it could mean.
    oldest = earliest_meaning(oldest, clock.kind)
    whole_oldest = earliest_meaning(whole.oldest, clock.kind)
    if whole_oldest is not None and (oldest is None or whole_oldest < oldest):
        oldest = whole_oldest
    return Survey(
        due=int(due_count),
        oldest=instant(store, oldest, clock.kind),
        sample_keys=tuple(tuple(row) for row in samples),
        in_scope=int(in_scope),
        held=int(held_count),
        future=int(future_count),
        unreadable=int(unreadable_count),
        invalid_period=int(invalid_count),
        unfit_holds=tuple(
            hold.id
            for hold in selection.holds
            if hold.kind == "key" and store.unfit_keys(rule, hold.keys)
        ),
        partitioned=whole.partitioned,
        partitions=whole.due,
        partition_notes=whole.notes,
        children=children,
    )


def _count(connection: Connection, query: Any, nothing: Any = 0) -> Any:
    """One row of counts (a scalar for one column), or ``nothing`` when there is no row to
    count (``query`` is None: every row is in a partition that goes whole)."""
    if query is None:
        return nothing
    row = connection.execute(query).one()
    return row[0] if len(row) == 1 else tuple(row)


def _counts_by_ranges(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    no_period: Any,
    whole: PartitionSurvey,
) -> bool:
    """Whether the survey counts a rule's rows with one statement per count, each a range of
    the clock's index, rather than in one pass computing a CASE per row: MariaDB evaluates
    those expressions slowly (measured at load 5 on 1,000,000 rows, half due: 1.3–1.6 s for
    the one pass, 0.4–0.8 s for the three counts). Only for a plain clock column that leads
    an index or partitions the table by range (which the server prunes to the partitions the
    range meets; else each count would scan the table), with no hold to count and no period
    read from a column (those stay in the one pass). On PostgreSQL only for a table
    partitioned by the clock with partitions that go whole: the due rows left outside them are
    in the few partitions the cutoff splits, which the due and oldest ranges prune to (the
    bench's 1,000,000 rows outside the partitions that go whole: 116 ms in one pass, about
    75 ms by ranges); on a plain table, or with every due row outside, those ranges would read
    the due rows again, and the one pass, run by parallel workers, is as fast."""
    rule = selection.rule
    dialect = store.engine.dialect.name
    if dialect not in ("mysql", "mariadb", "postgresql"):
        return False
    if selection.erasure is not None or no_period is not None or len(rule.clock) != 1:
        return False
    clock = rule.clock[0]
    if clock.join is not None:
        return False
    partitioned_by_clock = (
        whole.partitioning is not None and whole.partitioning.column == clock.column
    )
    if dialect == "postgresql":
        return partitioned_by_clock and bool(whole.whole)
    if partitioned_by_clock:
        return True
    indexes = inspect(connection).get_indexes(rule.table)
    return any(index["column_names"][:1] == [clock.column] for index in indexes)


def count_children(
    store: SqlStore,
    connection: Connection,
    selection: Selection,
    parents: ColumnElement[bool],
    before: ColumnElement[bool] | None = None,
) -> ChildCounts:
    """Per child table, how many rows a purge of the rule's rows matching ``parents`` deletes:
    one COUNT each, a semi-join on the parents (no row comes back to Python). With
    ``before`` (a dry run's earlier batches), the child rows those batches already reached
    are left out, as the run deletes them there; they can only overlap when a
    ``references`` column is not unique."""
    rule = selection.rule
    counts = []
    for name, path in child_paths(rule.children):
        child_table, reached = _child_rows(store, selection, path, parents)
        if before is not None and not _unique_path(store, rule.table, path):
            _, earlier = _child_rows(store, selection, path, before)
            reached = and_(reached, not_true(earlier))
        count = connection.execute(
            select(func.count()).select_from(child_table).where(reached)
        ).scalar_one()
        counts.append((name, int(count)))
    return tuple(counts)


def _child_rows(
    store: SqlStore, selection: Selection, path: Sequence[Child], parents: ColumnElement[bool]
) -> tuple[Table, ColumnElement[bool]]:
    """The last table of a child path, and the condition true for its rows that a purge of
    the rule's rows matching ``parents`` deletes: those whose foreign key holds a value of
    a parent still there. At every level, rows that the rules of ``removed_before`` delete
    first are no longer there (nor reach anything)."""
    table = store.table(selection.rule.table)
    reached = and_(parents, kept_before(store, selection, table.name))
    for child in path:
        child_table = store.table(child.table)
        referenced = table.c[child.references]
        # correlate(None): a table met again lower in the path is another row, not this one.
        values = select(referenced).where(reached, referenced.is_not(None)).correlate(None)
        reached = and_(
            child_table.c[child.foreign_key].in_(values),
            kept_before(store, selection, child_table.name),
        )
        table = child_table
    return table, reached


def kept_before(store: SqlStore, selection: Selection, table_name: str) -> ColumnElement[bool]:
    """True for the rows of ``table_name`` that no rule of ``removed_before`` deletes, as
    its rows due or as their children."""
    kept = _kept(store, selection, table_name)
    return true() if kept is None else kept


def still_there(store: SqlStore, selection: Selection) -> Kept | None:
    """Given a Selection, return what a run still finds of each table when the rule's turn
    comes, the rows of ``removed_before`` gone (None when no earlier rule deletes anything):
    for the tables its joins reach, whose rows gone leave no clock, no period or another
    condition to the rows that reached them."""
    if not selection.removed_before:
        return None
    return lambda table_name: _kept(store, selection, table_name)


def _kept(store: SqlStore, selection: Selection, table_name: str) -> ColumnElement[bool] | None:
    gone: list[ColumnElement[bool]] = []
    for earlier in selection.removed_before:
        paths = [path for _name, path in child_paths(earlier.rule.children)]
        reached = [path for path in paths if path[-1].table == table_name]
        if earlier.rule.table != table_name and not reached:
            continue
        # The earlier rule's rows as its own turn finds them: its joins may reach rows that
        # rules before it deleted.
        deleted = predicate(store, earlier, still_there(store, earlier))
        if earlier.rule.table == table_name:
            gone.append(deleted)
        gone += [_child_rows(store, earlier, path, deleted)[1] for path in reached]
    return not_true(or_(*gone)) if gone else None


def _unique_path(store: SqlStore, table_name: str, path: Sequence[Child]) -> bool:
    """Whether every ``references`` along a child path is unique in its table: then two
    batches never reach the same child row."""
    for child in path:
        if {child.references} not in store.unique_column_sets(table_name):
            return False
        table_name = child.table
    return True
