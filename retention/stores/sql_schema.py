"""Whether a rule fits the live schema of its SQL store: every way it does not, with its key
path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ColumnElement, Table, literal, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import sqltypes

from retention.config import Child, ColumnRef, Condition, Rule
from retention.errors import ConfigIssue
from retention.stores.sql_columns import column_value, strategy_problem
from retention.stores.sql_dialect import clock_kind, raw_sql_term, reason
from retention.stores.sql_reference_checks import check_references

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# Strategies that write one value for many rows: a unique column cannot take them.
SHARED_VALUE_STRATEGIES = ("fixed", "mask_email", "truncate_ip", "year_only")


def check_rule(store: SqlStore, rule: Rule) -> list[ConfigIssue]:
    """Given a rule, return every way it does not fit the live schema (empty: it fits), then
    its warnings (``ConfigIssue.warning``: it fits, but an erasure can fail on it)."""
    issues: list[ConfigIssue] = []
    cautions: list[ConfigIssue] = []

    def problem(key: str, message: str) -> None:
        issues.append(ConfigIssue(f"{rule.path}.{key}", message))

    def caution(key: str, message: str) -> None:
        cautions.append(ConfigIssue(f"{rule.path}.{key}", message, warning=True))

    tables = {}
    for key, table_name in [("table", rule.table)] + [
        (f"joins.{join.name}.table", join.table) for join in rule.joins
    ]:
        try:
            tables[table_name] = store.table(table_name)
        except sa_exc.NoSuchTableError:
            problem(key, f"table {table_name!r} does not exist in store {store.name!r}")
    if rule.table not in tables:
        return issues
    table = tables[rule.table]
    missing = [column for column in rule.key if column not in table.c]
    if missing:
        problem("key", f"no column {', '.join(missing)} in {rule.table!r}")
    elif set(rule.key) not in store.unique_column_sets(rule.table):
        problem("key", f"{', '.join(rule.key)} is not a primary key or unique in {rule.table!r}")
    elif set(rule.key) != store.primary_key(rule.table):
        # A unique key may hold NULLs (many of them): such rows could not be paged through
        # by key nor named in the audit trail. (Primary key columns cannot be NULL.)
        nullable = [column for column in rule.key if table.c[column].nullable]
        if nullable:
            problem(
                "key",
                f"{', '.join(nullable)} can be NULL in {rule.table!r}: use the primary key "
                "or a unique key whose columns are NOT NULL",
            )
    for join in rule.joins:
        remote = tables.get(join.table)
        for column in join.local_columns:
            if column not in table.c:
                problem(f"joins.{join.name}.on", f"no column {column!r} in {rule.table!r}")
        if remote is None:
            continue
        absent = [column for column in join.remote_columns if column not in remote.c]
        if absent:
            problem(f"joins.{join.name}.on", f"no column {', '.join(absent)} in {join.table!r}")
        elif set(join.remote_columns) not in store.unique_column_sets(join.table):
            problem(
                f"joins.{join.name}.on",
                f"{', '.join(join.remote_columns)} is not unique in {join.table!r}: the join "
                "must reach at most one row",
            )

    def resolve(reference: ColumnRef, key: str) -> Column[Any] | None:
        owner_name = rule.table if reference.join is None else rule.join(reference.join).table
        owner = tables.get(owner_name)
        if owner is None:
            return None  # its missing table is already reported
        if reference.column not in owner.c:
            problem(key, f"no column {reference.column!r} in {owner.name!r}")
            return None
        return owner.c[reference.column]

    kinds = set()
    for index, reference in enumerate(rule.clock):
        clock_column = resolve(reference, f"clock[{index}]" if len(rule.clock) > 1 else "clock")
        if clock_column is not None:
            kind = clock_kind(clock_column, store.engine.dialect.name)
            if kind is None:
                problem("clock", f"{reference} is {clock_column.type}, not a date or timestamp")
            kinds.add(kind)
    if len(kinds - {None}) > 1:
        problem("clock", "the clock columns mix dates and timestamps of different kinds")
    if "date" in kinds and rule.period.has_time_part:
        problem("period", "a date clock cannot take a period with hours, minutes or seconds")
    if rule.period_column is not None:
        period_column = resolve(rule.period_column, "period_column")
        if period_column is not None and not _is_text(period_column) and not rule.period_unit:
            problem(
                "period_column",
                f"{rule.period_column} is {period_column.type}: "
                "give period_unit when it holds a number of units",
            )
    for index, condition in enumerate(rule.conditions):
        condition_column = resolve(condition.column, f"where[{index}]")
        if condition_column is None:
            continue
        for value in _literals(condition):
            try:
                column_value(condition_column, value, store.engine.dialect.name)
            except ValueError as error:
                problem(f"where[{index}]", str(error))
    if rule.erase_by is not None:
        resolve(rule.erase_by, "erase_by")
    for column_name, strategy in rule.anonymise:
        if column_name not in table.c:
            problem(f"anonymise.{column_name}", f"no column {column_name!r} in {rule.table!r}")
            continue
        misfit = strategy_problem(table.c[column_name], strategy, store.engine.dialect.name)
        shared = strategy.kind in SHARED_VALUE_STRATEGIES
        if misfit is None and shared and {column_name} in store.unique_column_sets(rule.table):
            misfit = (
                f"{strategy.kind} gives many rows one value, and {column_name} is unique "
                f"in {rule.table!r}"
            )
        if misfit is not None:
            problem(f"anonymise.{column_name}", misfit)
    if rule.marker_column is not None:
        if rule.marker_column not in table.c:
            problem("marker_column", f"no column {rule.marker_column!r} in {rule.table!r}")
        elif clock_kind(table.c[rule.marker_column], store.engine.dialect.name) is None:
            problem("marker_column", f"{rule.marker_column!r} must be a date or timestamp")
    _check_children(store, rule, table, rule.children, "children", problem, (rule.table,))
    if rule.action == "delete" and not issues:
        check_references(store, rule, problem, caution)
    if rule.where_sql and not issues:
        try:
            with store.engine.connect() as connection:
                connection.execute(
                    # Parenthesised as the rule's predicate splices it.
                    select(literal(1))
                    .select_from(table)
                    .where(raw_sql_term(rule.where_sql))
                    .limit(0)
                )
        except sa_exc.DBAPIError as error:
            problem("where_sql", f"the database refuses it: {reason(error)}")
    return issues + cautions


def _check_children(
    store: SqlStore,
    rule: Rule,
    parent: Table,
    children: Sequence[Child],
    path: str,
    problem: Any,
    above: tuple[str, ...],
) -> None:
    if children:
        # Read now, before any batch: a dry run asks whether each parent's referenced column
        # is unique while its own connection is open, and on SQLite a second connection
        # shares that one (a nested BEGIN fails there).
        store.unique_column_sets(parent.name)
    for index, child in enumerate(children):
        where = f"{path}[{index}]"
        if child.table in above:
            # A row due in the same batch as the row it references would be deleted twice and
            # named twice in the trail (the batch then fails); rows of one table go by its rule.
            problem(
                f"{where}.table",
                f"{child.table!r} cannot be a child of itself or of its own child (a key that "
                "references its own table): its rows go by the table's own rule",
            )
            continue
        try:
            child_table = store.table(child.table)
        except sa_exc.NoSuchTableError:
            problem(f"{where}.table", f"table {child.table!r} does not exist")
            continue
        if not child_table.primary_key.columns:
            problem(
                f"{where}.table",
                f"{child.table!r} has no primary key: its rows, deleted with their parents, "
                "could not be named one by one in the audit trail",
            )
        if child.foreign_key not in child_table.c:
            problem(f"{where}.foreign_key", f"no column {child.foreign_key!r} in {child.table!r}")
        if child.references not in parent.c:
            problem(f"{where}.references", f"no column {child.references!r} in {parent.name!r}")
        _check_children(
            store,
            rule,
            child_table,
            child.children,
            f"{where}.children",
            problem,
            (*above, child.table),
        )


def _literals(condition: Condition) -> tuple[Any, ...]:
    if condition.value is None:
        return ()
    return condition.value if isinstance(condition.value, tuple) else (condition.value,)


def _is_text(column: ColumnElement[Any]) -> bool:
    return isinstance(column.type, sqltypes.String)
