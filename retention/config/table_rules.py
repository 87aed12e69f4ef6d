"""The reader of rules on SQL stores: table, key, clock, joins, conditions, action, children."""

from __future__ import annotations

from collections.abc import Mapping

from retention.anonymise import Strategy, parse_strategy
from retention.config.conditions import read_conditions
from retention.config.limits import read_period, read_run_limits
from retention.config.model import (
    DEFAULT_BATCH_SIZE,
    PERIOD_UNITS,
    RULE_NAME,
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
from retention.config.reader import Reader
from retention.rules import Period

_RULE_KEYS = {
    "name",
    "policy",
    "category",
    "store",
    "table",
    "key",
    "clock",
    "period",
    "period_column",
    "period_unit",
    "where",
    "where_sql",
    "action",
    "anonymise",
    "marker_column",
    "joins",
    "children",
    "batch_size",
    "max_delete",
    "max_fraction",
    "match_all",
    "schedule",
    "jitter",
    "erase_by",
    "drop_partitions",
}


def read_rule(
    reader: Reader,
    raw: object,
    path: str,
    stores: Mapping[str, StoreConfig],
    settings: Settings | None,
) -> Rule | None:
    if not isinstance(raw, dict):
        reader.error(path, "must be a table")
        return None
    issues_before = len(reader.issues)
    name = reader.string(raw, "name", path, required=True)
    if name is not None and not RULE_NAME.fullmatch(name):
        reader.error(f"{path}.name", f"{name!r}: use lower-case letters, digits, '-', '_' or '.'")
    store = reader.string(raw, "store", path, required=True)
    if store is not None and store not in stores:
        reader.error(f"{path}.store", f"no store named {store!r} (declare it as [stores.{store}])")
    store_config = stores.get(store) if store is not None else None
    if isinstance(store_config, S3StoreConfig | FilesStoreConfig):
        return read_object_rule(reader, raw, path, name, store_config, settings)
    reader.unknown_keys(raw, path, _RULE_KEYS)
    table = reader.identifier(raw.get("table"), f"{path}.table")
    key = reader.identifiers(raw.get("key"), f"{path}.key")
    joins = _read_joins(reader, raw.get("joins", {}), f"{path}.joins")
    join_names = {join.name for join in joins}
    clock_raw = raw.get("clock")
    clock_items = [clock_raw] if isinstance(clock_raw, str) else clock_raw
    clock: list[ColumnRef] = []
    if not isinstance(clock_items, list) or not clock_items:
        reader.error(
            f"{path}.clock",
            "must be a column ('ended_at', 'contract.ended_at' through a join) or a list of "
            "columns whose latest non-NULL value counts",
        )
    else:
        for index, item in enumerate(clock_items):
            where = f"{path}.clock" if isinstance(clock_raw, str) else f"{path}.clock[{index}]"
            reference = column_ref(reader, item, where, join_names)
            if reference is not None:
                clock.append(reference)
    period = read_period(reader, raw.get("period"), f"{path}.period")
    period_column = None
    if "period_column" in raw:
        period_column = column_ref(
            reader, raw["period_column"], f"{path}.period_column", join_names
        )
    erase_by = None
    if "erase_by" in raw:
        erase_by = column_ref(reader, raw["erase_by"], f"{path}.erase_by", join_names)
    period_unit = reader.string(raw, "period_unit", path)
    if period_unit is not None and period_unit not in PERIOD_UNITS:
        reader.error(f"{path}.period_unit", f"must be one of {', '.join(PERIOD_UNITS)}")
    if period_unit is not None and period_column is None:
        reader.error(f"{path}.period_unit", "only makes sense with period_column")
    conditions = read_conditions(reader, raw.get("where", []), f"{path}.where", join_names)
    where_sql = reader.string(raw, "where_sql", path)
    action, anonymise, marker_column = _read_action(reader, raw, path)
    children = _read_children(reader, raw.get("children", []), f"{path}.children", key)
    if children and action == "anonymise":
        reader.error(f"{path}.children", "only goes with action = 'delete' (anonymised rows stay)")
    default_batch = settings.batch_size if settings else DEFAULT_BATCH_SIZE
    limits = read_run_limits(reader, raw, path, settings, default_batch)
    drop_partitions = raw.get("drop_partitions", True)
    if not isinstance(drop_partitions, bool):
        reader.error(f"{path}.drop_partitions", f"must be true or false, not {drop_partitions!r}")
    if (
        period is not None
        and period == Period(text=period.text)
        and not conditions
        and where_sql is None
        and not limits.match_all
    ):
        reader.error(
            path,
            "a period of 0 and no condition purges every row whose clock is set; add a `where` "
            "condition, or write match_all = true if that is what this rule means",
        )
    if (
        len(reader.issues) > issues_before
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
        policy=reader.string(raw, "policy", path) or "",
        category=reader.string(raw, "category", path) or "",
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
        drop_partitions=drop_partitions is not False,
    )


def column_ref(reader: Reader, raw: object, where: str, join_names: set[str]) -> ColumnRef | None:
    if not isinstance(raw, str):
        reader.error(where, f"must be a column name, not {raw!r}")
        return None
    join, dot, column = raw.rpartition(".")
    if not dot:
        return ColumnRef(column) if reader.identifier(column, where) else None
    if join not in join_names:
        known = ", ".join(sorted(join_names)) or "none declared"
        reader.error(where, f"{raw!r} goes through join {join!r}, which is not declared ({known})")
        return None
    return ColumnRef(column, join) if reader.identifier(column, where) else None


def _read_joins(reader: Reader, raw: object, path: str) -> tuple[Join, ...]:
    if not isinstance(raw, dict):
        reader.error(path, "must be a table of named joins: [rules.joins.NAME]")
        return ()
    joins = []
    for name, spec in raw.items():
        where = f"{path}.{name}"
        if reader.identifier(name, where) is None:
            continue
        if not isinstance(spec, dict):
            reader.error(where, "must be a table with table and on")
            continue
        reader.unknown_keys(spec, where, {"table", "on"})
        table = reader.identifier(spec.get("table"), f"{where}.table")
        on = spec.get("on")
        if not isinstance(on, dict) or not on:
            reader.error(f"{where}.on", "must map local columns to the joined table's columns")
            continue
        local = [reader.identifier(column, f"{where}.on") for column in on]
        remote = [reader.identifier(column, f"{where}.on.{local}") for local, column in on.items()]
        if table is None or None in local or None in remote:
            continue
        joins.append(
            Join(
                name=name,
                table=table,
                local_columns=tuple(column for column in local if column),
                remote_columns=tuple(column for column in remote if column),
            )
        )
    return tuple(joins)


def _read_action(
    reader: Reader, raw: Mapping[str, object], path: str
) -> tuple[Action | None, tuple[tuple[str, Strategy], ...], str | None]:
    action = raw.get("action")
    marker_column = raw.get("marker_column")
    strategies_raw = raw.get("anonymise")
    if action == "delete":
        if strategies_raw is not None:
            reader.error(f"{path}.anonymise", "only goes with action = 'anonymise'")
        if marker_column is not None:
            reader.error(f"{path}.marker_column", "only goes with action = 'anonymise'")
        return "delete", (), None
    if action != "anonymise":
        reader.error(f"{path}.action", f"must be 'delete' or 'anonymise', not {action!r}")
        return None, (), None
    marker = reader.identifier(marker_column, f"{path}.marker_column")
    if not isinstance(strategies_raw, dict) or not strategies_raw:
        reader.error(f"{path}.anonymise", "must map each column to a strategy")
        return "anonymise", (), marker
    strategies = []
    for column, spec in strategies_raw.items():
        where = f"{path}.anonymise.{column}"
        if reader.identifier(column, where) is None:
            continue
        try:
            strategies.append((column, parse_strategy(spec)))
        except ValueError as error:
            reader.error(where, str(error))
    if marker is not None and marker in dict(strategies):
        reader.error(f"{path}.marker_column", "cannot also be an anonymised column")
    return "anonymise", tuple(strategies), marker


def _read_children(
    reader: Reader, raw: object, path: str, parent_key: tuple[str, ...]
) -> tuple[Child, ...]:
    if not isinstance(raw, list):
        reader.error(path, "must be an array of tables: [[rules.children]]")
        return ()
    children = []
    for index, spec in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(spec, dict):
            reader.error(where, "must be a table with table and foreign_key")
            continue
        reader.unknown_keys(spec, where, {"table", "foreign_key", "references", "children"})
        table = reader.identifier(spec.get("table"), f"{where}.table")
        foreign_key = reader.identifier(spec.get("foreign_key"), f"{where}.foreign_key")
        references_raw = spec.get("references")
        if references_raw is None and len(parent_key) != 1:
            reader.error(
                f"{where}.references",
                "missing: the column of the parent table that foreign_key references "
                "(needed for nested children and composite parent keys)",
            )
        references = (
            reader.identifier(references_raw, f"{where}.references")
            if references_raw is not None
            else (parent_key[0] if len(parent_key) == 1 else None)
        )
        # A child table's key is not declared, so its own children must say what they reference.
        grandchildren = _read_children(reader, spec.get("children", []), f"{where}.children", ())
        if table and foreign_key and references:
            children.append(Child(table, foreign_key, references, grandchildren))
    return tuple(children)
