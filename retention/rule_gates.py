"""Whether a planned rule may run, and with what held: the mass-deletion brakes, and the order
of a cross-store rule and its subjects' rule (objects first; a row goes only with the last of its
objects). Pure."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from retention.holds import Hold
from retention.planner import Plan, RulePlan
from retention.run_ports import SubjectSet
from retention.run_report import RuleOutcome


@contextmanager
def subject_sets() -> Iterator[dict[str, SubjectSet]]:
    """The subjects each cross-store rule listed in this run, by its subjects' rule: closed at
    the end of the run."""
    sets: dict[str, SubjectSet] = {}
    try:
        yield sets
    finally:
        for subjects in sets.values():
            subjects.close()


def brake_of(rule_plan: RulePlan, plan: Plan, allow_over_limit: frozenset[str]) -> str | None:
    """Why a rule may not run (a brake), or None. A cross-store rule shares its subjects'
    brake: purging the objects of subjects whose rows are braked is the mass deletion the
    brake is there to stop."""
    rule = rule_plan.rule
    subjects = rule.objects.subjects if rule.objects else None
    partners = [rule_plan]
    if subjects is not None:
        partners += [other for other in plan.rules if other.rule.name == subjects.rule.name]
    for partner in partners:
        brake = partner.brake
        name = partner.rule.name
        if brake is not None and name not in allow_over_limit:
            by = "" if partner is rule_plan else f" (the brake of its subjects' rule {name!r})"
            return (
                f"{brake}{by}: nothing purged; lift it for one manual run with "
                f"--allow-over-limit {name}"
            )
    return None


def objects_outcome(
    rule_plan: RulePlan, plan: Plan, outcomes: Sequence[RuleOutcome]
) -> tuple[str, RuleOutcome | None] | None:
    """Given a rule, return the cross-store rule of the plan whose subjects it selects, with
    that rule's outcome so far (None: not run yet); None when no cross-store rule names it."""
    for other in plan.rules:
        subjects = other.rule.objects.subjects if other.rule.objects else None
        if subjects is not None and subjects.rule.name == rule_plan.rule.name:
            name = other.rule.name
            return name, next((outcome for outcome in outcomes if outcome.rule == name), None)
    return None


def blocked_by_objects(
    rule_plan: RulePlan, plan: Plan, outcomes: Sequence[RuleOutcome]
) -> str | None:
    """A SQL rule whose records own objects (a cross-store rule names it) runs after that rule,
    and only when it ran to its end: deleting a subject whose objects are still there would
    leave them with nobody to find them by."""
    objects = objects_outcome(rule_plan, plan, outcomes)
    if objects is None:
        return None
    name, outcome = objects
    if outcome is None:
        return f"not run: its subjects' objects (rule {name!r}) must go first"
    if outcome.status != "ok" and not outcome.partial:
        return (
            f"not run: rule {name!r} did not purge every object of these subjects "
            f"({outcome.status}); their rows stay until it does"
        )
    return None


def keeping_subjects(rule_plan: RulePlan, plan: Plan, outcomes: Sequence[RuleOutcome]) -> RulePlan:
    """A subjects' rule runs with its subjects whose objects stayed (held or failed) held too:
    a row goes only with the last of its objects."""
    objects = objects_outcome(rule_plan, plan, outcomes)
    outcome = objects[1] if objects is not None else None
    if outcome is None or not outcome.kept_subjects or rule_plan.selection is None:
        return rule_plan
    hold = Hold(
        id=0,
        rule=rule_plan.rule.name,
        kind="key",
        reason="some of their objects stayed (held or failed)",
        created_at=rule_plan.selection.as_of,
        created_by="retention",
        keys=tuple(tuple(str(part) for part in key) for key in outcome.kept_subjects),
    )
    holds = (*rule_plan.selection.holds, hold)
    return replace(rule_plan, selection=replace(rule_plan.selection, holds=holds))
