"""What a rule selects at one instant: the Selection that stores turn into a predicate, the
erasure request that narrows it to one person, and the names of a rule's child tables. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from retention.config import Child, Rule
from retention.holds import Hold
from retention.rules import Expired, PeriodError, expired_as_of, parse_period

KeyValues = tuple[object, ...]
ChildCounts = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ErasureRequest:
    """One person's request to be erased (policies.md row 13). ``subject`` is the value that
    person's rows hold in each rule's ``erase_by`` column, such as an e-mail address: personal
    data, so it is never printed, logged or written to the trail. ``reference`` is the
    operator's own name for the request (a ticket number), which the trail keeps."""

    subject: str = field(repr=False)
    reference: str


@dataclass(frozen=True)
class Selection:
    """Exactly which records a rule selects at one instant; stores turn it into a predicate.

    A cross-store rule's ``subjects`` is the selection of its subjects' SQL rule: the objects
    due are everything under the prefixes of the records that selection finds due.

    ``overrides`` pairs each raw value found in the rule's period column with what that value's
    period has expired; rows whose value is in ``invalid_period_values`` match nothing (kept).

    With ``erasure``, the clock, the period and the rule's conditions do not count: the records
    selected are those whose ``erase_by`` column holds the request's subject (legal holds and
    an anonymise rule's marker still do).

    ``removed_before`` are the selections of the delete rules that run earlier in the same plan
    on the same store: the rows they delete (and their children) are gone by the time this rule
    runs, so they are not counted among this rule's children (the demo's `user-accounts`
    children are a safety net that the row 7 rules empty first), nor do the rows of the
    tables its joins reach still give a clock, a period or a condition (a row whose joined row
    went has none: kept). Only counts and a dry run's batches use it.

    ``whole_partitions`` name the partitions of the rule's table that a run drops whole before
    its row batches: a dry run, which drops nothing, walks its row batches outside them, as the
    run would find them (only a dry run's batches use it).
    """

    rule: Rule
    as_of: datetime
    zone: ZoneInfo
    default: Expired
    overrides: tuple[tuple[object, Expired], ...] = ()
    invalid_period_values: tuple[str, ...] = ()
    holds: tuple[Hold, ...] = ()
    subjects: Selection | None = None
    erasure: ErasureRequest | None = None
    removed_before: tuple[Selection, ...] = ()
    whole_partitions: tuple[str, ...] = ()


def child_paths(children: Sequence[Child]) -> tuple[tuple[str, tuple[Child, ...]], ...]:
    """Given a rule's children, return every declared child table with its path from the rule's
    table, each named as plan, dry run and run report count it: the table's name, below its
    parent's name for a nested child, with its foreign key when siblings share a table.

    Example: for a rule with children ``actions`` (itself with children ``clicks``) and
    ``notes``, the names are ``"actions"``, ``"actions/clicks"`` and ``"notes"``.
    """
    paths: list[tuple[str, tuple[Child, ...]]] = []

    def walk(level: Sequence[Child], prefix: str, above: tuple[Child, ...]) -> None:
        tables = [child.table for child in level]
        for child in level:
            name = child.table
            if tables.count(child.table) > 1:
                name = f"{child.table}({child.foreign_key})"
            path = (*above, child)
            paths.append((prefix + name, path))
            walk(child.children, f"{prefix}{name}/", path)

    walk(children, "", ())
    return tuple(paths)


def make_selection(
    rule: Rule,
    as_of: datetime,
    zone: ZoneInfo,
    period_values: Sequence[object] = (),
    holds: Sequence[Hold] = (),
    erasure: ErasureRequest | None = None,
) -> Selection:
    """Given a rule, an aware ``as_of``, the policy zone and the raw values of the rule's period
    column, return the Selection (of one person's records, with ``erasure``).

    Example: for the ``connection-logs`` rule (period 1y) and ``as_of`` 2026-11-23 12:00 UTC in
    UTC, ``make_selection(rule, as_of, ZoneInfo("UTC")).default.cutoff`` is 2025-11-23 12:00 UTC.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    overrides: list[tuple[object, Expired]] = []
    invalid: list[str] = []
    for value in period_values:
        text = f"{value}{rule.period_unit}" if rule.period_unit else str(value)
        try:
            overrides.append((value, expired_as_of(parse_period(text), as_of, zone)))
        except PeriodError:
            invalid.append(str(value))
    return Selection(
        rule=rule,
        as_of=as_of,
        zone=zone,
        default=expired_as_of(rule.period, as_of, zone),
        overrides=tuple(overrides),
        invalid_period_values=tuple(sorted(invalid)),
        holds=tuple(hold for hold in holds if hold.rule == rule.name and hold.in_force(as_of)),
        erasure=erasure,
    )


def partition_fallback(selection: Selection) -> str | None:
    """Given a Selection, return why its rule purges a partitioned table only in row batches
    whatever its partitions, or None when whole expired partitions may go whole.

    Example: for a rule with ``action = "anonymise"``, returns ``"anonymise keeps the rows"``;
    for a plain delete rule on one clock column of its table, None.
    """
    rule = selection.rule
    if not rule.drop_partitions:
        return "drop_partitions = false"
    if selection.erasure is not None:
        return "an erasure selects rows by person, not by age"
    if rule.action != "delete":
        return "anonymise keeps the rows"
    if rule.children:
        return "its child rows go first, row by row"
    if len(rule.clock) != 1 or rule.clock[0].join is not None:
        return "the clock is not one column of the table"
    return None
