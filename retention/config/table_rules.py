"""The reader of rules on SQL stores: table, key, clock, joins, conditions, action, children."""

from __future__ import annotations

from collections.abc import Mapping

from retention.anonymise import Strategy, parse_strategy
from retention.config.conditions import read_conditions, where_sql_problem
from retention.config.limits import read_period, read_run_limits
from retention.config.model import (
    Action,
    Child,
    ColumnRef,
    FilesStoreConfig,
    Join,
    Rule,
    S3StoreConfig,
    Settings,
    StoreConfig,
)
from retention.config.object_rules import read_object_rule
from retention.config.reader import Reader, flag, names, table_at, text
from retention.rules import Period


def read_rule(
    reader: Reader,
    raw: object,
    path: str,
    stores: Mapping[str, StoreConfig],
    settings: Settings,
) -> Rule | None:
    """The rule at ``path``, as the declaration checked it; None when it has any error (the
    checks below still run, so that every error is reported at once)."""
    if not isinstance(raw, dict):
        return None  # refused by the declaration
    name = text(raw, "name")
    store = text(raw, "store")
    if store is not None and store not in stores:
        if reader.has_issues_under(f"stores.{store}"):
            return None  # declared, but refused (a backup folder's root): said there, once
        reader.error(f"{path}.store", f"no store named {store!r} (declare it as [stores.{store}])")
    store_config = stores.get(store) if store is not None else None
    if isinstance(store_config, S3StoreConfig | FilesStoreConfig):
        return read_object_rule(reader, raw, path, name, store_config, settings)
    table = text(raw, "table")
    key = names(raw.get("key"))
    joins = _read_joins(table_at(raw, "joins"))
    # Every join named, even one refused: a column through it is not "undeclared" too.
    join_names = set(table_at(raw, "joins")) | set(reader.rejected_keys(f"{path}.joins"))
    clock_raw = raw.get("clock")
    clock: list[ColumnRef] = []
    for index, item in enumerate(names(clock_raw)):
        where = f"{path}.clock" if isinstance(clock_raw, str) else f"{path}.clock[{index}]"
        reference = column_ref(reader, item, where, join_names)
        if reference is not None:
            clock.append(reference)
    period = read_period(reader, raw.get("period"), f"{path}.period")
    period_column = erase_by = None
    if isinstance(raw.get("period_column"), str):
        period_column = column_ref(
            reader, raw["period_column"], f"{path}.period_column", join_names
        )
    if isinstance(raw.get("erase_by"), str):
        erase_by = column_ref(reader, raw["erase_by"], f"{path}.erase_by", join_names)
    period_unit = text(raw, "period_unit")
    if period_unit is not None and "period_column" not in raw:
        reader.error(f"{path}.period_unit", "only makes sense with period_column")
    conditions = read_conditions(reader, raw.get("where", []), f"{path}.where", join_names)
    where_sql = text(raw, "where_sql")
    if where_sql is not None and (problem := where_sql_problem(where_sql)) is not None:
        reader.error(f"{path}.where_sql", problem)
    action, anonymise, marker_column = _read_action(reader, raw, path)
    # A key the declaration refused says nothing of what children reference.
    parent_key = key if "key" not in reader.rejected_keys(path) else ("",)
    children = _read_children(reader, raw.get("children", []), f"{path}.children", parent_key)
    if children and action == "anonymise":
        reader.error(f"{path}.children", "only goes with action = 'delete' (anonymised rows stay)")
    limits = read_run_limits(reader, raw, path, settings, settings.batch_size)
    if (
        period is not None
        and period == Period(text=period.text)
        and not conditions
        and where_sql is None
        and not limits.match_all
        and not reader.rejected_keys(path) & {"where", "where_sql", "match_all"}
    ):
        reader.error(
            path,
            "a period of 0 and no condition purges every row whose clock is set; add a `where` "
            "condition, or write match_all = true if that is what this rule means",
        )
    if (
        reader.has_issues_under(path)
        or name is None
        or store is None
        or table is None
        or not key
        or period is None
        or action is None
    ):
        return None
    return Rule(
        name=name,
        path=path,
        policy=text(raw, "policy") or "",
        category=text(raw, "category") or "",
        store=store,
        table=table,
        key=key,
        clock=tuple(clock),
        period=period,
        action=action,
        period_column=period_column,
        period_unit=period_unit,
        conditions=conditions,
        where_sql=where_sql,
        joins=joins,
        children=children,
        anonymise=anonymise,
        marker_column=marker_column,
        batch_size=limits.batch_size,
        max_delete=limits.max_delete,
        max_fraction=limits.max_fraction,
        match_all=limits.match_all,
        schedule=limits.schedule,
        jitter=limits.jitter,
        erase_by=erase_by,
        drop_partitions=flag(raw, "drop_partitions", True),
    )


def column_ref(reader: Reader, raw: str, where: str, join_names: set[str]) -> ColumnRef | None:
    """A column (its spelling checked by the declaration), through a join that must be
    declared."""
    join, dot, column = raw.rpartition(".")
    if not dot:
        return ColumnRef(column)
    if join not in join_names:
        known = ", ".join(sorted(join_names)) or "none declared"
        reader.error(where, f"{raw!r} goes through join {join!r}, which is not declared ({known})")
        return None
    return ColumnRef(column, join)


def _read_joins(raw: Mapping[str, object]) -> tuple[Join, ...]:
    joins = []
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            continue
        table, on = text(spec, "table"), table_at(spec, "on")
        if table is None or not on:
            continue
        joins.append(
            Join(
                name=name,
                table=table,
                local_columns=tuple(on),
                remote_columns=tuple(str(column) for column in on.values()),
            )
        )
    return tuple(joins)


def _read_action(
    reader: Reader, raw: Mapping[str, object], path: str
) -> tuple[Action | None, tuple[tuple[str, Strategy], ...], str | None]:
    """The keys that go with each action (the declaration knows each key, not which action it
    goes with)."""
    action = text(raw, "action")
    marker_column = text(raw, "marker_column")
    strategies_raw = raw.get("anonymise")
    if action == "delete":
        if strategies_raw is not None:
            reader.error(f"{path}.anonymise", "only goes with action = 'anonymise'")
        if marker_column is not None:
            reader.error(f"{path}.marker_column", "only goes with action = 'anonymise'")
        return "delete", (), None
    if action != "anonymise":
        return None, (), None  # refused or missing: said by the declaration
    rejected = reader.rejected_keys(path)
    if marker_column is None and "marker_column" not in rejected:
        reader.error(f"{path}.marker_column", "missing")
    if not isinstance(strategies_raw, dict) or not strategies_raw:
        if "anonymise" not in rejected:
            reader.error(f"{path}.anonymise", "must map each column to a strategy")
        return "anonymise", (), marker_column
    strategies = []
    for column, spec in strategies_raw.items():
        try:
            strategies.append((column, parse_strategy(spec)))
        except ValueError as error:
            reader.error(f"{path}.anonymise.{column}", str(error))
    if marker_column is not None and marker_column in dict(strategies):
        reader.error(f"{path}.marker_column", "cannot also be an anonymised column")
    return "anonymise", tuple(strategies), marker_column


def _read_children(
    reader: Reader, raw: object, path: str, parent_key: tuple[str, ...]
) -> tuple[Child, ...]:
    children = []
    for index, spec in enumerate(raw if isinstance(raw, list) else []):
        where = f"{path}[{index}]"
        if not isinstance(spec, dict):
            continue
        table, foreign_key = text(spec, "table"), text(spec, "foreign_key")
        references = text(spec, "references")
        if references is None and len(parent_key) != 1:
            if "references" not in reader.rejected_keys(where):
                reader.error(
                    f"{where}.references",
                    "missing: the column of the parent table that foreign_key references "
                    "(needed for nested children and composite parent keys)",
                )
        elif references is None:
            references = parent_key[0]
        # A child table's key is not declared, so its own children must say what they reference.
        grandchildren = _read_children(reader, spec.get("children", []), f"{where}.children", ())
        if table and foreign_key and references:
            children.append(Child(table, foreign_key, references, grandchildren))
    return tuple(children)
