"""The one predicate of a rule, built from a Selection: it serves the plan's count, the run's
keyset batches and the re-check inside every DELETE/UPDATE, so the plan counts exactly what the
run purges and a row touched since it was selected survives. Values are always bound."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    delete,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
)
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.util import ClauseAdapter

from retention.config import ColumnRef, Condition, Rule, Scalar
from retention.errors import RetentionError, without_values
from retention.rules import Expired
from retention.selection import KeyValues, Selection
from retention.stores.sql_columns import column_value, stored_as_text
from retention.stores.sql_dialect import (
    ClockKind,
    clock_kind,
    greatest,
    raw_sql_term,
    sqlite_time_text,
)
from retention.stores.sql_keys import after_key, coerce, fitted, key_in, key_up_to

if TYPE_CHECKING:
    from retention.stores.sql import SqlStore

# The one value below year one a MariaDB/MySQL TIMESTAMP can hold (see zero_in_date_expired).
ZERO_TIMESTAMP = "0000-00-00 00:00:00"

# Given a table's name, the condition true for its rows that a run still finds there when the
# rule's turn comes (None: all of them): a dry run's view of the rows that the delete rules
# before it take out of the way (sql_survey.still_there).
Kept = Callable[[str], ColumnElement[bool] | None]


@dataclass(frozen=True)
class Clock:
    expression: ColumnElement[Any]
    kind: ClockKind
    # SQLite only: true where every clock column holds text this store can compare as time.
    readable: ColumnElement[bool] | None = None
    # MariaDB/MySQL: the clock may hold a zero-in-date value where sql_mode let it in
    # (2025-00-15, 2025-06-00, 0000-00-00); see guarded().
    zero_in_date: bool = False


def column_expression(
    store: SqlStore, rule: Rule, reference: ColumnRef, kept: Kept | None = None
) -> ColumnElement[Any]:
    """Given a rule and one of its column references, return the column, or for a joined one
    the value of the one row it reaches; with ``kept``, of a row still there (a row that an
    earlier rule deletes reaches nothing: NULL, as the run finds it)."""
    table = store.table(rule.table)
    if reference.join is None:
        return table.c[reference.column]
    join = rule.join(reference.join)
    remote = _joined(store, rule, join.table)
    # A correlated scalar subquery rather than a JOIN: it works unchanged inside DELETE and
    # UPDATE on every dialect, where joins do not.
    reached = select(remote.c[reference.column]).where(
        *(
            remote.c[remote_column] == table.c[local_column]
            for local_column, remote_column in zip(
                join.local_columns, join.remote_columns, strict=True
            )
        )
    )
    still = None if kept is None else kept(join.table)
    if still is not None:
        if join.table == rule.table:
            still = ClauseAdapter(remote).traverse(still)  # spelled on the table, not its alias
        reached = reached.where(still)
    return reached.correlate(table).scalar_subquery()


def _joined(store: SqlStore, rule: Rule, table_name: str) -> FromClause:
    """The table a join reaches, under a name of its own when it is the rule's own table (a
    manager's date as a report's clock): correlated with the rule's row, the subquery would
    otherwise read that row itself, not the one its join columns name."""
    remote = store.table(table_name)
    return remote.alias() if table_name == rule.table else remote


def rule_clock(store: SqlStore, rule: Rule, kept: Kept | None = None) -> Clock:
    columns = [column_expression(store, rule, reference, kept) for reference in rule.clock]
    kind = clock_kind(columns[0], store.engine.dialect.name)
    if kind is None:
        raise RetentionError(f"{rule.clock_text} is not a date or timestamp")
    readable = None
    if store.engine.dialect.name == "sqlite":
        readable = and_(
            *(
                or_(column.is_(None), sqlite_time_text(column, date_only=kind == "date"))
                for column in columns
            )
        )
    zero_in_date = store.engine.dialect.name in ("mysql", "mariadb")
    if len(columns) == 1:
        return Clock(columns[0], kind, readable, zero_in_date)
    # The latest non-NULL value: each argument falls back on the others when it is NULL, so
    # GREATEST ignores NULLs on every dialect (MariaDB's and SQLite's would return NULL).
    arguments = [
        func.coalesce(column, *(other for other in columns if other is not column))
        for column in columns
    ]
    return Clock(greatest(*arguments, type_=columns[0].type), kind, readable, zero_in_date)


def _expired(store: SqlStore, clock: Clock, expired: Expired) -> ColumnElement[bool]:
    if clock.kind == "date":
        if expired.last_date is None:
            return false()
        last_date = expired.last_date
        return when_readable(clock, guarded(clock, clock.expression <= last_date, last_date))
    parts = []
    for window in expired.windows:
        end = bound(store, window.end, clock.kind)
        upper = clock.expression <= end
        if window.start is None:
            parts.append(guarded(clock, upper, end))
        else:
            lower = clock.expression >= bound(store, window.start, clock.kind)
            parts.append(guarded(clock, and_(lower, upper), end))
    return when_readable(clock, or_(*parts))


def guarded(
    clock: Clock, comparison: ColumnElement[bool], end: datetime | date
) -> ColumnElement[bool]:
    """Given a clock, its comparison with one expired window and the window's end (in the
    column's terms), return the comparison kept to the values that are surely expired.

    A MariaDB/MySQL zero-in-date value sorts just before the dates it could mean: 2025-00-15
    between 2024-12-31 and 2025-01-01, though it may be any month of 2025; 2025-06-00 before
    2025-06-01, any day of June. Compared plainly it would be due up to a year early. Such a
    value is surely expired only when every date it could mean is: when it lies before the
    window end's year. From there on, only values with a month and a day pass; 0000-00-00
    and the rest of year 0 never do. The rows kept back are counted as unreadable."""
    if not clock.zero_in_date:
        return comparison
    year_one = datetime(1, 1, 1) if isinstance(end, datetime) else date(1, 1, 1)
    real = and_(func.month(clock.expression) != 0, func.dayofmonth(clock.expression) != 0)
    last_of_year_before = _last_of_year_before(end)
    if last_of_year_before is not None:
        # The plain comparison decides most rows alone: MariaDB stops an OR at its first truth.
        real = or_(clock.expression <= last_of_year_before, real)
    return and_(comparison, clock.expression >= year_one, real)


def zero_in_date_expired(store: SqlStore, clock: Clock, expired: Expired) -> ColumnElement[bool]:
    """Given a MariaDB/MySQL clock and what is expired, return the condition true exactly for
    the rows that compare as expired but guarded() keeps back, spelled as ranges of the clock
    (an index on it serves them): year 0, and the zero-in-date values of each window end's
    year up to the end."""
    if not clock.zero_in_date:
        return false()
    zero = or_(func.month(clock.expression) == 0, func.dayofmonth(clock.expression) == 0)
    if clock.kind == "date":
        if expired.last_date is None:
            return false()
        ends: list[datetime | date] = [expired.last_date]
        year_one: datetime | date = date(1, 1, 1)
    else:
        ends = [bound(store, window.end, clock.kind) for window in expired.windows]
        year_one = datetime(1, 1, 1)
    before_year_one = clock.expression < year_one
    if clock.kind == "utc_naive":
        # A TIMESTAMP holds 0000-00-00 00:00:00 or a time from 1970 on, so this is the same
        # test. Year one is outside the type's range: MariaDB's range optimizer gives up on
        # it and reads the whole index (0.2 s on the bench's 1,000,000 rows, issue 17).
        before_year_one = clock.expression <= literal(ZERO_TIMESTAMP, String())
    parts: list[ColumnElement[bool]] = [before_year_one]
    for end in ends:
        start = _last_of_year_before(end)
        in_year = clock.expression <= end
        if start is not None:
            in_year = and_(clock.expression > start, in_year)
        parts.append(and_(in_year, zero))
    return or_(*parts)


def plainly_expired(
    store: SqlStore, selection: Selection, clock: Clock
) -> ColumnElement[bool] | None:
    """Given a Selection and its clock, return the plain comparison that guarded() keeps to
    the surely expired values, when what is expired is one range open to the past: true
    exactly for the rows due and those zero_in_date_expired() keeps back, never for both (a
    value before year one, or in the end's year without a month or a day, is kept back; any
    other is due). None for an erasure, a period read from a column, or an expiry of several
    windows, one of which could keep back what another finds due."""
    if selection.erasure is not None or selection.rule.period_column is not None:
        return None
    expired = selection.default
    if clock.kind == "date":
        return None if expired.last_date is None else clock.expression <= expired.last_date
    if len(expired.windows) != 1 or expired.windows[0].start is not None:
        return None
    return clock.expression <= bound(store, expired.windows[0].end, clock.kind)


def _last_of_year_before(end: datetime | date) -> datetime | date | None:
    if end.year <= 1:
        return None
    if isinstance(end, datetime):
        return datetime(end.year - 1, 12, 31, 23, 59, 59, 999999)
    return date(end.year - 1, 12, 31)


def bound(store: SqlStore, instant: datetime, kind: ClockKind) -> datetime:
    if kind == "aware":
        return instant
    if kind == "utc_naive":
        return instant.astimezone(UTC).replace(tzinfo=None)
    return instant.astimezone(store.config.timezone).replace(tzinfo=None)


def predicate(
    store: SqlStore, selection: Selection, kept: Kept | None = None
) -> ColumnElement[bool]:
    """Given a Selection, return the SQL condition that is true exactly for its due rows:
    expired, in scope, and under no legal hold; with ``kept``, as they are once the rows
    that earlier rules delete are gone from the tables its joins reach."""
    rule = selection.rule
    expired = expired_all(store, selection, rule_clock(store, rule, kept), kept)
    holding = held(store, selection, kept)
    due = expired if holding is None else and_(expired, not_(holding))
    return and_(due, scope(store, selection, kept))


def range_delete(
    store: SqlStore, selection: Selection, after: KeyValues | None, end: KeyValues
) -> ReturningDelete[Any]:
    """Given a Selection and a range of its keys (after ``after``, None: from the first, up to
    ``end``), return the DELETE of the range's rows that are still due, the predicate checked
    again, RETURNING their keys."""
    key_columns = store.key_columns(selection.rule)
    in_range = key_up_to(key_columns, end)
    if after is not None:
        in_range = and_(after_key(key_columns, after), in_range)
    return (
        delete(store.table(selection.rule.table))
        .where(in_range, predicate(store, selection))
        .returning(*key_columns)
    )


def scope(store: SqlStore, selection: Selection, kept: Kept | None = None) -> ColumnElement[bool]:
    """The rows a rule is about, whatever their clock: its conditions (not for an erasure,
    which is about everything a person left), not yet anonymised."""
    rule = selection.rule
    table = store.table(rule.table)
    parts: list[ColumnElement[bool]] = [true()]
    if selection.erasure is None:
        parts += [_condition(store, rule, condition, kept) for condition in rule.conditions]
        if rule.where_sql:
            parts.append(raw_sql_term(rule.where_sql))
    if rule.marker_column is not None:
        parts.append(table.c[rule.marker_column].is_(None))
    return and_(*parts)


def held(
    store: SqlStore, selection: Selection, kept: Kept | None = None
) -> ColumnElement[bool] | None:
    """True for rows under a legal hold in force (None when the rule has none). A NULL in a
    hold's condition counts as held: not(NULL) selects nothing."""
    rule = selection.rule
    parts: list[ColumnElement[bool]] = []
    key_columns = store.key_columns(rule)
    for hold in selection.holds:
        if hold.kind == "key" and hold.keys:
            # A key that is no value of its column ('abc' for an integer id) holds nothing:
            # the survey reports its hold, and the other keys still hold their rows.
            keys = [fit for key in hold.keys if (fit := fitted(key_columns, key)) is not None]
            if keys:
                parts.append(key_in(key_columns, keys))
        elif hold.kind == "where" and hold.condition is not None:
            parts.append(_condition(store, rule, hold.condition, kept))
    return or_(*parts) if parts else None


def expired_all(
    store: SqlStore, selection: Selection, clock: Clock, kept: Kept | None = None
) -> ColumnElement[bool]:
    rule = selection.rule
    if selection.erasure is not None:
        return _erased(store, rule, selection.erasure.subject)
    expired = _expired(store, clock, selection.default)
    if rule.period_column is None:
        return expired
    period_column = column_expression(store, rule, rule.period_column, kept)
    return or_(
        and_(period_column.is_(None), expired),
        *(
            and_(period_column == value, _expired(store, clock, override))
            for value, override in selection.overrides
        ),
    )


def _erased(store: SqlStore, rule: Rule, subject_text: str) -> ColumnElement[bool]:
    """An erasure is due now, whatever the clock: every row whose erase_by column holds the
    subject. Through a join, the rows whose join columns are among those of the remote rows
    that hold it: an IN that an index on the join columns serves, where the clock's
    correlated subquery would be evaluated on every row of the table."""
    if rule.erase_by is None:
        raise RetentionError(f"rule {rule.name!r} has no erase_by column")
    reference = rule.erase_by
    owner = store.table(rule.table if reference.join is None else rule.join(reference.join).table)
    person = owner.c[reference.column]
    try:
        subject = coerce(person, subject_text)
    except ValueError:
        return false()  # "alice@example.com" is nobody's integer id
    if reference.join is None:
        return person == subject
    join = rule.join(reference.join)
    table = store.table(rule.table)
    local = [table.c[column] for column in join.local_columns]
    remote = select(*(owner.c[column] for column in join.remote_columns)).where(person == subject)
    if len(local) == 1:
        return local[0].in_(remote)
    return tuple_(*local).in_(remote)


def _condition(
    store: SqlStore, rule: Rule, condition: Condition, kept: Kept | None = None
) -> ColumnElement[bool]:
    column = column_expression(store, rule, condition.column, kept)
    # As check_rule checked it: ISO text becomes a date for a date column, and so on.
    value = cast("Scalar | tuple[Scalar, ...] | None", _bindable(store, rule, condition))
    match condition.operator:
        case "is_null":
            return column.is_(None)
        case "is_not_null":
            return column.is_not(None)
        case "in":
            return column.in_(value if isinstance(value, tuple) else (value,))
        case "not_in":
            return column.not_in(value if isinstance(value, tuple) else (value,))
        case "=":
            return column == value
        case "!=":
            return column != value
        case "<":
            return column < value
        case "<=":
            return column <= value
        case ">":
            return column > value
        case ">=":
            return column >= value
    raise AssertionError(condition.operator)


def invalid_period(store: SqlStore, selection: Selection) -> ColumnElement[bool] | None:
    """True for rows whose period column holds no period (kept: they match no override),
    None when there are none to count."""
    rule = selection.rule
    if rule.period_column is None or not selection.invalid_period_values:
        return None
    column = column_expression(store, rule, rule.period_column)
    periods = [value for value, _expired in selection.overrides]
    return and_(column.is_not(None), column.not_in(periods))


def _bindable(store: SqlStore, rule: Rule, condition: Condition) -> object:
    if condition.value is None:
        return None
    reference = condition.column
    owner = store.table(rule.table if reference.join is None else rule.join(reference.join).table)
    target, dialect = owner.c[reference.column], store.engine.dialect.name
    try:
        if isinstance(condition.value, tuple):
            return tuple(column_value(target, item, dialect) for item in condition.value)
        return column_value(target, condition.value, dialect)
    except ValueError as error:
        # check_rule refuses such a rule; a hold's condition can still hold a literal
        # that no longer fits (the column changed): the rule fails, nothing is purged.
        # A hold's literal can name a person: left out.
        raise RetentionError(
            f"rule {rule.name!r}: a condition cannot be compared: {without_values(str(error))}"
        ) from error


def batch_query(
    store: SqlStore,
    selection: Selection,
    after: KeyValues | None,
    limit: int,
    extra: Sequence[str] = (),
    kept: Kept | None = None,
) -> Select[Any]:
    """The one query that picks due rows in key order, after ``after``: keyset pagination
    (with ``kept``, as a dry run sees them: see ``predicate``)."""
    rule = selection.rule
    table = store.table(rule.table)
    keys = store.key_columns(rule)
    anonymised = {column for column, _strategy in rule.anonymise}
    dialect = store.engine.dialect.name
    columns = keys + [
        # As SQLite holds it: an impossible date must not fail the batch's read.
        type_coerce(table.c[name], String).label(name)
        if name in anonymised and stored_as_text(table.c[name], dialect)
        else table.c[name]
        for name in extra
        if name not in rule.key
    ]
    query = select(*columns).where(predicate(store, selection, kept)).order_by(*keys).limit(limit)
    if after is not None:
        query = query.where(after_key(keys, after))
    return query


def instant(store: SqlStore, value: Any, kind: ClockKind) -> datetime | date | None:
    """Given a clock's value as the driver read it, return it as an instant in UTC (a date as
    it is). A value that is no date (PyMySQL hands MariaDB's zero date, 0000-00-00, back as
    text) is the rule's failure: its rows have no time to be counted from."""
    value = earliest_meaning(value, kind)
    if value is None:
        return None
    if kind == "date" and isinstance(value, date):
        return value
    if not isinstance(value, datetime):
        raise RetentionError(
            "the clock holds a value that is no date (MariaDB's zero date, 0000-00-00, "
            "where sql_mode allows it): give those rows a date or NULL"
        )
    if kind == "aware":
        return value.astimezone(UTC)
    zone = UTC if kind == "utc_naive" else store.config.timezone
    return value.replace(tzinfo=zone).astimezone(UTC)


_ZERO_IN_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?)?")


def earliest_meaning(value: Any, kind: ClockKind) -> Any:
    """Given a clock's value as the driver read it, return it, but a MariaDB/MySQL
    zero-in-date value of a year from 1 on (PyMySQL hands 2024-00-15 and 2024-06-00 back as
    text) as the first day it could mean, 2024-01-01 and 2024-06-01: it sorts there, and
    guarded() lets such a value be due once every date it could mean is expired, so it can be
    the oldest due. Other text (0000-00-00, year 0: never due) is returned as it is."""
    if not isinstance(value, str):
        return value
    spelled = _ZERO_IN_DATE.fullmatch(value)
    if spelled is None:
        return value
    year, month, day = (int(part) for part in spelled.group(1, 2, 3))
    if year < 1 or (month and day):
        return value
    first = date(year, month or 1, 1)
    return first if kind == "date" else datetime(first.year, first.month, first.day)


def when_readable(clock: Clock, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    # The comparison first: SQLite evaluates AND in order, so the costly check of the spelling
    # only runs on the rows the comparison keeps.
    return condition if clock.readable is None else and_(condition, clock.readable)
