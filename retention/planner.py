"""Rules x stores -> an immutable Plan: per rule, what is due, its cutoff, the oldest clock value
and a few pseudonymised sample keys. Pure: stores are reached only through the RecordStore
protocol, and ``as_of`` is a parameter."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from retention.anonymise import keyed_hash, record_locator
from retention.config import Child, Config, Rule
from retention.errors import ConfigIssue, RetentionError, StoreUnavailable
from retention.holds import Hold
from retention.rules import Expired, PeriodError, expired_as_of, parse_period

SAMPLE_SIZE = 5
PLAN_SCHEMA_VERSION = 1

KeyValues = tuple[object, ...]


@dataclass(frozen=True)
class ChildRows:
    """The rows of one child table that a batch deletes with its parent rows, by their key
    (the child table's primary key columns, ``key``)."""

    table: str
    key: tuple[str, ...]
    keys: tuple[KeyValues, ...]


@dataclass(frozen=True)
class IntentDetail:
    """What a batch's audit intent records beside its keys: the child rows that go with them
    (SQL); and, for objects and files, which keys are delete markers and each key's size in
    bytes, in the order of the keys (empty: not known)."""

    children: tuple[ChildRows, ...] = ()
    markers: tuple[bool, ...] = ()
    sizes: tuple[int, ...] = ()


NO_DETAIL = IntentDetail()


class BeforeWrite(Protocol):
    """Called by a store with a batch's keys (and what goes with them) before anything is
    written: the audit intent. If it raises, nothing of the batch is written."""

    def __call__(self, keys: tuple[KeyValues, ...], detail: IntentDetail = ...) -> None: ...


# Given keys, which of them may be purged (a subjects' rule: those whose objects were visited).
KeyFilter = Callable[[Sequence[KeyValues]], set[KeyValues]]


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
    children are a safety net that the row 7 rules empty first). Only counts use it.
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


ChildCounts = tuple[tuple[str, int], ...]


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


@dataclass(frozen=True)
class PartitionDue:
    """A partition of the rule's table whose whole range is expired and whose every row is due:
    it goes whole (dropped), not in row batches. ``upper`` is its upper bound as the store
    spells it (exclusive)."""

    name: str
    rows: int
    upper: str


@dataclass(frozen=True)
class Survey:
    """What a store found for a selection: rows due (not held), the oldest clock value and the
    first due keys in key order; rows in scope (the rule's conditions, any clock), rows that
    would be due but are held, rows whose clock is in the future (never due, reported), and
    rows whose clock the store cannot compare (SQLite text in another spelling: kept, reported),
    rows whose period column holds no period (kept, reported), and the key holds naming a key
    that no row can have ('abc' for an integer id: it holds nothing, reported)."""

    due: int
    oldest: datetime | date | None
    sample_keys: tuple[KeyValues, ...]
    in_scope: int = 0
    held: int = 0
    future: int = 0
    details: tuple[tuple[str, int], ...] = ()
    unreadable: int = 0
    invalid_period: int = 0
    unfit_holds: tuple[int, ...] = ()
    # A partitioned table: the partitions that go whole, and why others (or the whole rule) go
    # by row batches instead.
    partitioned: bool = False
    partitions: tuple[PartitionDue, ...] = ()
    partition_notes: tuple[str, ...] = ()
    children: ChildCounts = ()


@dataclass(frozen=True)
class Batch:
    """One purged batch: the keys it selected, how many records it deleted or anonymised.

    Object stores list more than they purge, so they say where the next batch starts
    (``resume_after``) and whether there is more to look at (``more``); SQL stores leave both
    None: the next batch starts after the last key, and a short batch was the last one.
    ``failed`` counts records the store refused to delete (``errors`` says why, grouped);
    ``held`` counts records found protected while purging (S3 Object Lock). A cross-store
    rule's batch lists in ``kept_subjects`` the subjects some of whose objects stayed (held or
    failed): their rows must stay too; and in ``visited_subjects`` those whose objects it has
    finished listing: only their rows may go in this run. ``not_done_keys`` are the keys of
    ``keys`` that were not purged (they failed, or changed or went since they were listed): the
    audit trail must not claim them. A SQL batch purges all its keys or rolls back, so it
    leaves this empty. ``children`` counts the child rows deleted (a dry run: that would be)
    per child table, ``children_deleted`` is their sum.
    """

    keys: tuple[KeyValues, ...]
    done: int
    children_deleted: int = 0
    children: ChildCounts = ()
    transaction_seconds: float = 0.0
    resume_after: KeyValues | None = None
    more: bool | None = None
    failed: int = 0
    held: int = 0
    errors: tuple[str, ...] = ()
    kept_subjects: tuple[KeyValues, ...] = ()
    not_done_keys: tuple[KeyValues, ...] = ()
    visited_subjects: tuple[KeyValues, ...] = ()

    @property
    def last_key(self) -> KeyValues | None:
        return self.keys[-1] if self.keys else None

    @property
    def next_after(self) -> KeyValues | None:
        return self.resume_after if self.resume_after is not None else self.last_key


class RecordStore(Protocol):
    """What the planner and the executor need from a store (stores/sql.py implements it)."""

    def check_rule(self, rule: Rule) -> list[ConfigIssue]: ...

    def period_values(self, rule: Rule) -> tuple[object, ...]: ...

    def survey(self, selection: Selection, sample_size: int) -> Survey: ...

    def purge_batch(
        self,
        selection: Selection,
        *,
        after: KeyValues | None,
        limit: int,
        dry_run: bool,
        now: datetime,
        hash_key: bytes | None,
        before_write: BeforeWrite | None = None,
        only: KeyFilter | None = None,
    ) -> Batch: ...

    def existing_keys(
        self,
        table_name: str,
        key_columns: Sequence[str],
        keys: Sequence[KeyValues],
        marker_column: str | None = None,
    ) -> set[KeyValues]: ...


class SubjectSource(Protocol):
    """Where a cross-store rule finds its subjects (the SQL store of the subjects' rule)."""

    def due_keys(
        self, selection: Selection, *, after: KeyValues | None, limit: int
    ) -> tuple[KeyValues, ...]: ...


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


@dataclass(frozen=True)
class RulePlan:
    """The plan of one rule. ``error`` is set (and the counts are zero) when it could not be
    planned; ``unavailable`` says the store could not be reached. ``children``: the child rows
    that go with the rows due, per child table (see ``child_paths``)."""

    rule: Rule
    selection: Selection | None
    due: int = 0
    oldest: datetime | date | None = None
    samples: tuple[str, ...] = ()
    error: str | None = None
    unavailable: bool = False
    in_scope: int = 0
    held: int = 0
    future: int = 0
    details: tuple[tuple[str, int], ...] = ()
    unreadable: int = 0
    invalid_period: int = 0
    unfit_holds: tuple[int, ...] = ()
    partitioned: bool = False
    partitions: tuple[PartitionDue, ...] = ()
    partition_notes: tuple[str, ...] = ()
    children: ChildCounts = ()

    @property
    def children_due(self) -> int:
        """The child rows that go with the rows due, all child tables together."""
        return sum(count for _name, count in self.children)

    @property
    def brake(self) -> str | None:
        """Why this rule may not run as planned (a mass-deletion brake), or None."""
        rule = self.rule
        if self.due > rule.max_delete:
            return f"{self.due:,} due is more than max_delete = {rule.max_delete:,}"
        if self.in_scope and self.due / self.in_scope > rule.max_fraction:
            share = self.due / self.in_scope
            return (
                f"{self.due:,} due of {self.in_scope:,} in scope ({share:.0%}) is more than "
                f"max_fraction = {rule.max_fraction:g}"
            )
        return None


@dataclass(frozen=True)
class Plan:
    """A whole plan; ``plan_id`` digests the config, the instant, cutoffs and counts (child
    rows included: a plan whose children moved is another plan)."""

    as_of: datetime
    config_digest: str
    rules: tuple[RulePlan, ...]
    sample_hashing: Literal["keyed", "ephemeral"]
    shows_keys: bool = False
    erasure: ErasureRequest | None = None

    @property
    def plan_id(self) -> str:
        summary = [
            (rule_plan.rule.name, rule_plan.due, _cutoff_text(rule_plan), rule_plan.children)
            for rule_plan in self.rules
        ]
        # The reference, never the subject: an unkeyed digest of an e-mail is no secret.
        erasure = self.erasure.reference if self.erasure is not None else None
        return plan_digest(self.config_digest, self.as_of.isoformat(), summary, erasure)


def plan_digest(
    config_digest: str,
    as_of: str,
    summary: Sequence[tuple[str, int, str | None, ChildCounts]],
    erasure_reference: str | None = None,
) -> str:
    """Given what a plan is (config digest, instant, and per rule its name, due count, cutoff
    in ISO 8601 and child rows per child table), return its id: 16 hex digits of their SHA-256.

    Example: ``plan_digest("ab…", "2026-11-23T12:00:00+00:00", [("logs", 3, "2025-11-23…",
    ())])`` is the ``plan_id`` of that one-rule plan, also when read back from a saved plan file.
    """
    rules = [
        [name, due, cutoff]
        # Only rules with children add them: the ids of other plans stay as they were.
        + ([[list(count) for count in children]] if children else [])
        for name, due, cutoff, children in summary
    ]
    parts: list[object] = [config_digest, as_of, rules]
    if erasure_reference is not None:
        parts.append(["erasure", erasure_reference])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _cutoff_text(rule_plan: RulePlan) -> str | None:
    if rule_plan.selection is None:
        return None
    return rule_plan.selection.default.cutoff.isoformat()


def sample_hash(hash_key: bytes, store: str, table: str, key: KeyValues) -> str:
    """Given the hash key and a record's locator, return its short pseudonym for display.

    Example: ``sample_hash(b"k", "app", "users", (42,))`` returns 16 hex digits, the same every
    time for the same key and record.
    """
    return keyed_hash(hash_key, record_locator(store, table, key))[:16]


def plan_rule(
    rule: Rule,
    store: RecordStore,
    as_of: datetime,
    zone: ZoneInfo,
    hash_key: bytes,
    holds: Sequence[Hold] = (),
    *,
    subject_store: RecordStore | None = None,
    show_keys: bool = False,
    erasure: ErasureRequest | None = None,
    removed_before: Sequence[Selection] = (),
) -> RulePlan:
    """Given a rule, its store, ``as_of``, the policy zone and a hash key, return its RulePlan.

    The rule must already fit the store's schema (see ``check_against_stores``); an unreachable
    store becomes the RulePlan's ``error``, and the caller decides what that means. A
    cross-store rule also needs its subjects' store. Sample keys are keyed hashes unless
    ``show_keys`` (object keys and rows can hold personal data). With ``erasure``, the plan is
    of one person's records (the rule must have ``erase_by``, or its subjects' rule).
    ``removed_before``: the selections of the delete rules of the same store that run first
    (see ``Selection``).
    """
    try:

        def selection_of(chosen: Rule, chosen_store: RecordStore) -> Selection:
            # An erasure ignores periods: no need to read the period column's values.
            reads_periods = chosen.period_column is not None and erasure is None
            values = chosen_store.period_values(chosen) if reads_periods else ()
            return make_selection(chosen, as_of, zone, values, holds, erasure)

        selection = replace(selection_of(rule, store), removed_before=tuple(removed_before))
        subjects = rule.objects.subjects if rule.objects else None
        if subjects is not None:
            assert subject_store is not None, "a cross-store rule is planned with its subjects"
            selection = replace(selection, subjects=selection_of(subjects.rule, subject_store))
        survey = store.survey(selection, SAMPLE_SIZE)
    except StoreUnavailable as error:
        return RulePlan(rule, None, error=str(error), unavailable=True)
    except RetentionError as error:
        # One rule that cannot be planned (an S3 error, a clock that is no date) is its own
        # failure; the other rules are still planned.
        return RulePlan(rule, None, error=str(error))
    samples = tuple(
        display_key(rule, key) if show_keys else sample_hash(hash_key, rule.store, rule.table, key)
        for key in survey.sample_keys
    )
    return RulePlan(
        rule,
        selection,
        survey.due,
        survey.oldest,
        samples,
        in_scope=survey.in_scope,
        held=survey.held,
        future=survey.future,
        details=survey.details,
        unreadable=survey.unreadable,
        invalid_period=survey.invalid_period,
        unfit_holds=survey.unfit_holds,
        partitioned=survey.partitioned,
        partitions=survey.partitions,
        partition_notes=survey.partition_notes,
        children=survey.children,
    )


def display_key(rule: Rule, key: KeyValues) -> str:
    """Given a rule and a record's key, return the key as shown with ``--show-keys``: the way
    `hold add --key` takes it.

    Example: ``(42,)`` shows as ``"42"``, a composite ``(7, 2)`` as ``"7/2"``; on an S3 rule,
    ``("a/b.tar", "v1")`` shows as ``"a/b.tar @v1"`` and an unversioned ``("a/b.tar", "null")``
    as ``"a/b.tar"``.
    """
    parts = [str(part) for part in key]
    if rule.objects is not None and len(parts) == 2:
        return parts[0] if parts[1] == "null" else f"{parts[0]} @{parts[1]}"
    return "/".join(parts)


def build_plan(
    config: Config,
    rules: Sequence[Rule],
    store_for: Callable[[str], RecordStore],
    as_of: datetime,
    *,
    hash_key: bytes,
    keyed: bool,
    holds: Sequence[Hold] = (),
    show_keys: bool = False,
    erasure: ErasureRequest | None = None,
) -> Plan:
    """Given the config, the rules to plan, a way to reach each store, ``as_of`` and the sample
    hash key, return the Plan (read-only: stores are only surveyed); with ``erasure``, the plan
    of that request."""
    zone = config.settings.timezone
    rule_plans: list[RulePlan] = []
    for rule in rules:
        removed_before = [
            earlier.selection
            for earlier in rule_plans
            if earlier.selection is not None
            and earlier.rule.store == rule.store
            and earlier.rule.action == "delete"
            and earlier.rule.objects is None
            and earlier.brake is None
        ]
        rule_plans.append(
            _plan_or_unreachable(
                rule, store_for, as_of, zone, hash_key, holds, show_keys, erasure, removed_before
            )
        )
    return Plan(
        as_of=as_of,
        config_digest=config.digest,
        rules=tuple(rule_plans),
        sample_hashing="keyed" if keyed else "ephemeral",
        shows_keys=show_keys,
        erasure=erasure,
    )


def _plan_or_unreachable(
    rule: Rule,
    store_for: Callable[[str], RecordStore],
    as_of: datetime,
    zone: ZoneInfo,
    hash_key: bytes,
    holds: Sequence[Hold],
    show_keys: bool,
    erasure: ErasureRequest | None,
    removed_before: Sequence[Selection],
) -> RulePlan:
    subjects = rule.objects.subjects if rule.objects else None
    try:
        store = store_for(rule.store)
        subject_store = store_for(subjects.rule.store) if subjects else None
    except StoreUnavailable as error:
        return RulePlan(rule, None, error=str(error), unavailable=True)
    return plan_rule(
        rule,
        store,
        as_of,
        zone,
        hash_key,
        holds,
        subject_store=subject_store,
        show_keys=show_keys,
        erasure=erasure,
        removed_before=removed_before if rule.children else (),
    )


def check_against_stores(
    rules: Sequence[Rule], store_for: Callable[[str], RecordStore]
) -> tuple[list[ConfigIssue], dict[str, str]]:
    """Given rules and a way to reach stores, return every schema problem of every rule, and the
    stores that could not be reached (name -> reason). Example: a rule naming a missing column
    gives ``[ConfigIssue("rules[2].clock", "no column 'loged_at' in 'connection_logs'")], {}``.
    """
    issues: list[ConfigIssue] = []
    unreachable: dict[str, str] = {}
    for rule in rules:
        if rule.store in unreachable:
            continue
        try:
            issues += store_for(rule.store).check_rule(rule)
        except StoreUnavailable as error:
            unreachable[rule.store] = str(error)
    return issues, unreachable


def plan_document(plan: Plan) -> dict[str, object]:
    """Given a Plan, return it as one JSON-ready document (``schema_version`` first)."""
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "plan_id": plan.plan_id,
        "as_of": plan.as_of.isoformat(),
        "config_digest": plan.config_digest,
        "sample_hashing": "clear" if plan.shows_keys else plan.sample_hashing,
        "rules": [_rule_document(rule_plan) for rule_plan in plan.rules],
    }


def _rule_document(rule_plan: RulePlan) -> dict[str, object]:
    rule = rule_plan.rule
    selection = rule_plan.selection
    document: dict[str, object] = {
        "rule": rule.name,
        "policy": rule.policy,
        "category": rule.category,
        "store": rule.store,
        "table": rule.table,
        "action": rule.action,
        "clock": rule.clock_text,
        "period": rule.period.text,
        "period_column": str(rule.period_column) if rule.period_column else None,
        "cutoff": selection.default.cutoff.isoformat() if selection else None,
        "due": rule_plan.due,
        "held": rule_plan.held,
        "in_scope": rule_plan.in_scope,
        "future_clock": rule_plan.future,
        "unreadable_clock": rule_plan.unreadable,
        "invalid_period": rule_plan.invalid_period,
        "unfit_holds": list(rule_plan.unfit_holds),
        "children": dict(rule_plan.children),
        "brake": rule_plan.brake,
        "oldest": iso_instant(rule_plan.oldest),
        "sample_keys": list(rule_plan.samples),
        "error": rule_plan.error,
        # Every key is always there: null when it does not apply to this rule (docs/json.md).
        "objects": dict(rule_plan.details) if rule.objects is not None else None,
        "subjects": (
            rule.objects.subjects.rule.name if rule.objects and rule.objects.subjects else None
        ),
        "period_overrides": None,
        "invalid_period_values": None,
        "partitions_due": None,
        "partition_notes": None,
    }
    if rule.period_column:
        document["period_overrides"] = {
            str(value): expired.cutoff.isoformat()
            for value, expired in (selection.overrides if selection else ())
        }
        document["invalid_period_values"] = list(
            selection.invalid_period_values if selection else ()
        )
    if rule_plan.partitioned:
        document["partitions_due"] = [
            {"partition": partition.name, "rows": partition.rows, "upper": partition.upper}
            for partition in rule_plan.partitions
        ]
        document["partition_notes"] = list(rule_plan.partition_notes)
    return document


def iso_instant(value: datetime | date | None) -> str | None:
    """Given an instant, a day or None, return ISO 8601 in UTC with its offset, or None: the one
    format of every instant in the JSON outputs. A day (a DATE clock) is its midnight UTC; a naive
    time is taken as UTC (the stores' convention). Example: ``iso_instant(date(2026, 1, 2))`` is
    ``"2026-01-02T00:00:00+00:00"``."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


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


def plan_totals(plan: Plan) -> Mapping[str, int]:
    """Given a Plan, return the rows due in total, the child rows that go with them and the
    number of rules that failed."""
    return {
        "due": sum(rule_plan.due for rule_plan in plan.rules),
        "children": sum(rule_plan.children_due for rule_plan in plan.rules),
        "failed": sum(rule_plan.error is not None for rule_plan in plan.rules),
    }
