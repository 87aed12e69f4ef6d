"""Apply a Plan batch by batch. One rule failing does not stop the others; a stop request is
honoured between batches, never inside one. Time, the stop signal and logging are parameters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from retention.errors import AuditFailure, RetentionError, StoreUnavailable, error_text
from retention.holds import Hold
from retention.partition_drops import (
    WholePartitions,
    drop_whole_partitions,
    would_drop_whole_partitions,
)
from retention.planner import UNREADABLE_CLOCK, UNREADABLE_CLOCK_DOCS, Plan, RulePlan
from retention.recorded_batch import next_limit, purge_one_batch, with_current_holds
from retention.rule_gates import blocked_by_objects, brake_of, keeping_subjects, subject_sets
from retention.run_ports import Audit, Logger, Progress, SubjectSet, SubjectsInMemory
from retention.run_report import FAILED, RuleOutcome, RunReport, Status
from retention.selection import KeyValues, Selection
from retention.store_protocol import KeyFilter, RecordStore


def execute(
    plan: Plan,
    store_for: Callable[[str], RecordStore],
    *,
    now: Callable[[], datetime],
    dry_run: bool,
    hash_key: bytes | None,
    logger: Logger,
    audit: Audit | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    allow_over_limit: frozenset[str] = frozenset(),
    holds_for: Callable[[str], Sequence[Hold]] | None = None,
    subject_set: Callable[[], SubjectSet] = SubjectsInMemory,
    progress: Progress | None = None,
    audited: bool | None = None,
) -> RunReport:
    """Given a Plan and a way to reach stores, purge every planned rule and return the report.

    Each rule runs in keyset batches of its ``batch_size``, after the partitions its plan found
    wholly due (dropped whole); ``dry_run`` counts the same partitions and walks the same
    batches without writing, as a run with the trail on (``audited``; None: whether ``audit``
    is given) would. With ``audit``, every batch is recorded before it is written; if the
    trail fails, that batch rolls back and the whole run stops. Example: for a plan with one rule
    due 2,500 rows and batch_size 1000, ``execute(...).outcomes[0]`` has ``deleted=2500,
    batches=3``.

    A cross-store rule runs before its subjects' rule, which then deletes only the rows of the
    subjects whose objects it finished listing: a subject that became due in between keeps its
    row (and so stays findable) until the next run deletes its objects first.
    """
    outcomes: list[RuleOutcome] = []
    walked: list[RulePlan] = []  # each rule as it ran: in a dry run, as its run would find it
    with subject_sets() as visited:
        for rule_plan in plan.rules:
            if stop_requested() or any(o.status == "audit_failed" for o in outcomes):
                outcomes.append(_outcome(rule_plan, "stopped"))
                continue
            brake = brake_of(rule_plan, plan, allow_over_limit)
            blocked = None if dry_run else blocked_by_objects(rule_plan, plan, outcomes)
            if brake is not None:
                outcome = _outcome(rule_plan, "braked", brake)
            elif blocked is not None:
                outcome = _outcome(rule_plan, "failed", blocked)
            else:
                rule_plan = keeping_subjects(rule_plan, plan, outcomes)
                if dry_run:
                    rule_plan = after_earlier_rules(rule_plan, walked, outcomes)
                objects = rule_plan.rule.objects
                subjects_rule = objects.subjects.rule.name if objects and objects.subjects else None
                seen = visited.get(rule_plan.rule.name)
                collect = None
                if subjects_rule is not None:
                    collect = visited[subjects_rule] = subject_set()
                lifted = rule_plan.rule.name in allow_over_limit
                outcome = _execute_rule(
                    rule_plan,
                    None if lifted else rule_plan.rule.max_delete,
                    store_for,
                    now,
                    dry_run,
                    audit is not None if audited is None else audited,
                    hash_key,
                    stop_requested,
                    clock,
                    logger,
                    audit,
                    holds_for,
                    collect=collect,
                    only=seen.among if seen is not None else None,
                    progress=progress,
                )
            outcomes.append(outcome)
            walked.append(rule_plan)
            if rule_plan.unreadable:
                # Never due, so never overdue either: without this line an unattended daemon
                # would keep these rows forever in silence.
                logger.warning(
                    "rule.unreadable_clock",
                    rule=outcome.rule,
                    rows=rule_plan.unreadable,
                    kept=f"their clock is {UNREADABLE_CLOCK} (see {UNREADABLE_CLOCK_DOCS})",
                )
            if rule_plan.invalid_period:
                logger.warning(
                    "rule.invalid_period",
                    rule=outcome.rule,
                    rows=rule_plan.invalid_period,
                    kept=f"their {rule_plan.rule.period_column} is not a period (docs/config.md)",
                )
            if rule_plan.unfit_holds:
                logger.warning(
                    "rule.unfit_hold",
                    rule=outcome.rule,
                    holds=list(rule_plan.unfit_holds),
                    reason="they name keys that are not values of the key column: they hold "
                    "nothing (release them, hold the right keys)",
                )
            log = logger.error if outcome.status in FAILED else logger.info
            log(
                "rule.finished",
                rule=outcome.rule,
                status=outcome.status,
                action=outcome.action,
                **outcome.counters(),
                batches=outcome.batches,
                seconds=round(outcome.seconds, 3),
                longest_transaction_seconds=round(outcome.longest_transaction_seconds, 4),
                dry_run=dry_run,
                error=outcome.error,
            )
    return RunReport(plan_id=plan.plan_id, dry_run=dry_run, outcomes=tuple(outcomes))


def _still_due(
    rule_plan: RulePlan,
    store: RecordStore,
    after: KeyValues | None,
    now: Callable[[], datetime],
    only: KeyFilter | None,
) -> bool:
    """Whether a record after ``after`` is still due, read without writing (a one-record dry
    batch): a rule that reached its brake's count is braked only if something is left."""
    probe = purge_one_batch(rule_plan, store, after, 1, now, True, None, None, only)
    return bool(probe.keys or probe.done)


def _braked_during_run(rule_plan: RulePlan, purged: int) -> str:
    # max_fraction stays the plan's test: rows that enter the rule's scope during the run
    # enlarge what it is a fraction of, which only the next plan counts.
    rule = rule_plan.rule
    return (
        f"stopped at max_delete = {rule.max_delete:,} after {purged:,} purged: more became due "
        f"during the run than the {rule_plan.due:,} its plan counted (an earlier rule's "
        "deletions let them through); the next run's plan counts the rest (lift the brake for "
        f"one manual run with --allow-over-limit {rule.name})"
    )


def after_earlier_rules(
    rule_plan: RulePlan, walked: Sequence[RulePlan], outcomes: Sequence[RuleOutcome]
) -> RulePlan:
    """Given a rule's plan, and the rules before it in a dry run as they were walked with their
    outcomes, return it with the rows those of its store that deleted rows to their end have
    taken out of its way (``Selection.removed_before``, each with its own: a row an earlier
    rule finds without a clock, its joined row gone, stays): a dry run then walks the rows a
    run still finds, and counts the rest as skipped, as the run does; a cross-store rule's
    subjects likewise, on their store. Example: two rules on one table, the first due 17
    rows, the second 21 of which those 17: the second would delete 4, skip 17."""
    if rule_plan.selection is None:
        return rule_plan

    def earlier_on(store: str) -> tuple[Selection, ...]:
        return tuple(
            before.selection
            for before, outcome in zip(walked, outcomes, strict=True)
            if before.selection is not None
            and before.rule.store == store
            and before.rule.action == "delete"
            and before.rule.objects is None
            and outcome.status == "ok"
        )

    selection = replace(rule_plan.selection, removed_before=earlier_on(rule_plan.rule.store))
    subjects = selection.subjects
    if subjects is not None:
        subjects = replace(subjects, removed_before=earlier_on(subjects.rule.store))
        selection = replace(selection, subjects=subjects)
    return replace(rule_plan, selection=selection)


def _outcome(rule_plan: RulePlan, status: Status, error: str | None = None) -> RuleOutcome:
    return RuleOutcome(
        rule=rule_plan.rule.name,
        action=rule_plan.rule.action,
        status=status,
        due=rule_plan.due,
        held=rule_plan.held,
        error=error,
        partitioned=rule_plan.partitioned,
        partition_notes=rule_plan.partition_notes,
    )


def _execute_rule(
    rule_plan: RulePlan,
    most_purged: int | None,  # max_delete, unless lifted for this run
    store_for: Callable[[str], RecordStore],
    now: Callable[[], datetime],
    dry_run: bool,
    audited: bool,
    hash_key: bytes | None,
    stop_requested: Callable[[], bool],
    clock: Callable[[], float],
    logger: Logger,
    audit: Audit | None,
    holds_for: Callable[[str], Sequence[Hold]] | None,
    *,
    collect: SubjectSet | None,
    only: KeyFilter | None,
    progress: Progress | None = None,
) -> RuleOutcome:
    if rule_plan.error is not None or rule_plan.selection is None:
        return _outcome(
            rule_plan, "unavailable" if rule_plan.unavailable else "failed", rule_plan.error
        )
    rule = rule_plan.rule
    started = clock()
    # Running totals only: keeping every batch's keys would grow with the table.
    batches = selected = done = children_deleted = failed = 0
    errors: dict[str, None] = {}
    children: dict[str, int] = {}
    kept_subjects: dict[KeyValues, None] = {}
    whole = WholePartitions()
    longest = 0.0
    status: Status = "ok"
    error = None
    after: KeyValues | None = None
    limit = rule.batch_size
    if progress is not None:
        progress.rule_started(rule.name, rule_plan.due)
    try:
        store = store_for(rule.store)
        if rule_plan.partitions and dry_run:
            whole, rule_plan = would_drop_whole_partitions(
                rule_plan, store, audited, stop_requested, only
            )
        elif rule_plan.partitions:
            whole = drop_whole_partitions(
                rule_plan, store, audit, holds_for, stop_requested, logger, only
            )
        if rule_plan.partitions:
            batches += whole.batches
            selected += whole.done
            done += whole.done
            longest = max(longest, whole.transaction_seconds)
            if progress is not None and whole.done:
                progress.rule_advanced(rule.name, selected)
            if stop_requested():
                status = "stopped"
        while status == "ok":
            if holds_for is not None:
                rule_plan = with_current_holds(rule_plan, holds_for)
            # Asked again as late as can be before the batch: a process frozen since the last
            # ask (SIGSTOP, a paused VM) may have lost its lease to another run meanwhile.
            if stop_requested():
                status = "stopped"
                break
            left = None if most_purged is None else most_purged - selected
            if left is not None and left <= 0:
                if _still_due(rule_plan, store, after, now, only):
                    status, error = "braked", _braked_during_run(rule_plan, selected)
                break
            batch = purge_one_batch(
                rule_plan,
                store,
                after,
                limit if left is None else min(limit, left),
                now,
                dry_run,
                hash_key,
                None if dry_run else audit,
                only,
            )
            if collect is not None and batch.visited_subjects:
                collect.add(batch.visited_subjects)
            more = batch.more if batch.more is not None else len(batch.keys) >= limit
            if batch.keys or batch.done:
                batches += 1
                # A batch nobody asked the keys of (no trail) may leave them out.
                selected += len(batch.keys) or batch.done
                done += batch.done
                children_deleted += batch.children_deleted
                for name, count in batch.children:
                    children[name] = children.get(name, 0) + count
            # A transaction that deleted nothing held its locks too (a span of kept rows).
            longest = max(longest, batch.transaction_seconds)
            # A batch with nothing to delete can still have failed (a subject with no prefix).
            failed += batch.failed
            errors.update(dict.fromkeys(batch.errors))
            kept_subjects.update(dict.fromkeys(batch.kept_subjects))
            after = batch.next_after
            if getattr(store, "steered_batches", False):
                limit = next_limit(limit, rule.batch_size, batch.transaction_seconds)
            if progress is not None:
                progress.rule_advanced(rule.name, selected)
            if not more:
                break
            if stop_requested():
                status = "stopped"
                break
    except AuditFailure as failure:
        status, error = "audit_failed", str(failure)
    except StoreUnavailable as failure:
        status, error = "unavailable", str(failure)
    except RetentionError as failure:
        status, error = "failed", str(failure)
    except Exception as failure:  # one rule's bug must not stop the others
        status, error = "failed", error_text(failure)
        logger.error("rule.crashed", rule=rule.name, exc_info=True)
    if progress is not None:
        progress.rule_finished(rule.name)
    # A dry run writes nothing: what it "did" is what it selected.
    if dry_run:
        done = selected
    partial = bool(failed) and status == "ok"
    if partial:
        status = "failed"
        error = f"{failed:,} could not be purged: " + "; ".join(list(errors)[:5])
    return RuleOutcome(
        rule=rule.name,
        action=rule.action,
        status=status,
        due=rule_plan.due,
        held=rule_plan.held,
        deleted=done if rule.action == "delete" else 0,
        anonymised=done if rule.action == "anonymise" else 0,
        children_deleted=children_deleted,
        children=tuple(children.items()),
        failed=failed,
        batches=batches,
        seconds=clock() - started,
        longest_transaction_seconds=longest,
        error=error,
        partial=partial,
        kept_subjects=tuple(kept_subjects),
        partitioned=rule_plan.partitioned,
        partitions=whole.dropped,
        partition_notes=rule_plan.partition_notes + whole.notes,
    )
