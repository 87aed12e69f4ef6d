"""Rules x stores -> an immutable Plan: per rule, what is due, its cutoff, the oldest clock value
and a few pseudonymised sample keys. Pure: stores are reached only through the RecordStore
protocol, and ``as_of`` is a parameter."""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from retention.anonymise import keyed_hash, record_locator
from retention.config import Config, Rule
from retention.errors import RetentionError, StoreUnavailable
from retention.holds import Hold
from retention.selection import (
    ChildCounts,
    ErasureRequest,
    KeyValues,
    Selection,
    make_selection,
)
from retention.store_protocol import PartitionDue, RecordStore

SAMPLE_SIZE = 5

# Why a rule's rows counted in ``unreadable`` are kept, and where the user reads what to do:
# the plan's warning and the run's ``rule.unreadable_clock`` line say it in the same words.
UNREADABLE_CLOCK = "not a timestamp this store can compare"
UNREADABLE_CLOCK_DOCS = "docs/config.md, SQLite timestamps, MariaDB/MySQL zero dates"


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
    followed = {
        rule.objects.subjects.rule.name
        for rule in rules
        if rule.objects is not None and rule.objects.subjects is not None
    }
    return Plan(
        as_of=as_of,
        config_digest=config.digest,
        rules=tuple(
            _by_row_batches(rule_plan) if rule_plan.rule.name in followed else rule_plan
            for rule_plan in rule_plans
        ),
        sample_hashing="keyed" if keyed else "ephemeral",
        shows_keys=show_keys,
        erasure=erasure,
    )


# Why a subjects' rule drops no partition whole, in its plan and so in its run's report.
SUBJECTS_NOTE = (
    "row batches: its objects' rule runs first, and only the rows whose objects went may go"
)


def _by_row_batches(rule_plan: RulePlan) -> RulePlan:
    """A subjects' rule, run after its cross-store rule, deletes only the rows whose objects
    went: no partition of its table goes whole, however due."""
    if not rule_plan.partitioned:
        return rule_plan
    notes = (*rule_plan.partition_notes, SUBJECTS_NOTE)
    return replace(rule_plan, partitions=(), partition_notes=notes)


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
        removed_before=removed_before,
    )


def plan_totals(plan: Plan) -> Mapping[str, int]:
    """Given a Plan, return the rows due in total, the child rows that go with them and the
    number of rules that failed."""
    return {
        "due": sum(rule_plan.due for rule_plan in plan.rules),
        "children": sum(rule_plan.children_due for rule_plan in plan.rules),
        "failed": sum(rule_plan.error is not None for rule_plan in plan.rules),
    }
