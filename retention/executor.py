"""Apply a Plan batch by batch. One rule failing does not stop the others; a stop request is
honoured between batches, never inside one. Time, the stop signal and logging are parameters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from retention.errors import (
    AuditFailure,
    BatchConflict,
    ExitCode,
    RetentionError,
    StoreUnavailable,
    error_text,
)
from retention.holds import Hold
from retention.planner import (
    NO_DETAIL,
    Batch,
    ChildCounts,
    IntentDetail,
    KeyFilter,
    KeyValues,
    Plan,
    RecordStore,
    RulePlan,
)

Status = Literal["ok", "failed", "unavailable", "stopped", "audit_failed", "braked"]
CONFLICT_RETRIES = 3
# A store whose batches are database transactions (``steered_batches``) gets each next batch
# sized so that its transaction takes about this long, never more rows than the rule's
# batch_size: locks stay short on a busy server (the limit is 250 ms), as Percona's tools steer
# chunks by --chunk-time.
TRANSACTION_TARGET_SECONDS = 0.15
SMALLEST_BATCH = 100
FAILED = ("failed", "unavailable", "audit_failed", "braked")


class Audit(Protocol):
    """Where batches are recorded (audit/recorder.py). ``intent`` must be durable before it
    returns: it is called before anything the batch writes is committed."""

    def intent(
        self,
        rule_plan: RulePlan,
        keys: tuple[KeyValues, ...],
        partition: str | None = None,
        detail: IntentDetail = NO_DETAIL,
    ) -> int: ...

    def result(
        self, intent: int, rule_plan: RulePlan, status: str, batch: Batch | None
    ) -> None: ...

    def unresolved(self, intent: int, store: RecordStore) -> None: ...


class SubjectSet(Protocol):
    """The subjects a cross-store rule finished listing in this run: its subjects' rule may
    delete only their rows. runtime/subject_set.py keeps them on disk; ``SubjectsInMemory``
    is the plain set."""

    def add(self, subjects: Sequence[KeyValues]) -> None: ...

    def among(self, keys: Sequence[KeyValues]) -> set[KeyValues]: ...

    def close(self) -> None: ...


class SubjectsInMemory:
    """A SubjectSet in a Python set (tests, small runs)."""

    def __init__(self) -> None:
        self._subjects: set[KeyValues] = set()

    def add(self, subjects: Sequence[KeyValues]) -> None:
        self._subjects.update(subjects)

    def among(self, keys: Sequence[KeyValues]) -> set[KeyValues]:
        return {key for key in keys if key in self._subjects}

    def close(self) -> None:
        self._subjects.clear()


class Progress(Protocol):
    """Told how far each rule got, batch by batch (a terminal's progress display)."""

    def rule_started(self, rule: str, due: int) -> None: ...

    def rule_advanced(self, rule: str, done: int) -> None: ...

    def rule_finished(self, rule: str) -> None: ...


class Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def error(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True)
class RuleOutcome:
    """What a run did for one rule; ``skipped`` counts planned rows that were not purged (they
    changed since planning, or the rule stopped or failed). ``children`` counts the child rows
    deleted (in a dry run: that would be) per child table; ``children_deleted`` is their sum."""

    rule: str
    action: str
    status: Status
    due: int
    held: int = 0
    deleted: int = 0
    anonymised: int = 0
    children_deleted: int = 0
    children: ChildCounts = ()
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_transaction_seconds: float = 0.0
    error: str | None = None
    # Ran to its end, only some records failed: their subjects are in kept_subjects.
    partial: bool = False
    kept_subjects: tuple[KeyValues, ...] = ()

    @property
    def done(self) -> int:
        return self.deleted + self.anonymised

    @property
    def skipped(self) -> int:
        return max(0, self.due - self.done - self.failed)

    def counters(self) -> dict[str, int]:
        """The outcome's counts by name, as logs, the trail and the ledger report them."""
        return {
            "due": self.due,
            "held": self.held,
            "deleted": self.deleted,
            "anonymised": self.anonymised,
            "children_deleted": self.children_deleted,
            "failed": self.failed,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class RunReport:
    """A whole run: per-rule outcomes and the exit code they add up to. ``stopped_by`` is the
    code of the signal that stopped a one-off purge (130 for SIGINT, 143 for SIGTERM), if any."""

    plan_id: str
    dry_run: bool
    outcomes: tuple[RuleOutcome, ...]
    stopped_by: ExitCode | None = None

    @property
    def exit_code(self) -> ExitCode:
        """70 when the audit trail failed; else ``stopped_by`` when a signal stopped the run;
        0 when every rule succeeded; 69 when every failure was an unreachable store; else 3."""
        if any(outcome.status == "audit_failed" for outcome in self.outcomes):
            return ExitCode.AUDIT_FAILURE
        if self.stopped_by is not None:
            return self.stopped_by
        failures = [outcome for outcome in self.outcomes if outcome.status in FAILED]
        if not failures:
            return ExitCode.OK
        if all(outcome.status == "unavailable" for outcome in failures):
            return ExitCode.STORE_UNAVAILABLE
        return ExitCode.PARTIAL_FAILURE


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
) -> RunReport:
    """Given a Plan and a way to reach stores, purge every planned rule and return the report.

    Each rule runs in keyset batches of its ``batch_size``; ``dry_run`` walks the same batches
    without writing. With ``audit``, every batch is recorded before it is written; if the
    trail fails, that batch rolls back and the whole run stops. Example: for a plan with one rule
    due 2,500 rows and batch_size 1000, ``execute(...).outcomes[0]`` has ``deleted=2500,
    batches=3``.

    A cross-store rule runs before its subjects' rule, which then deletes only the rows of the
    subjects whose objects it finished listing: a subject that became due in between keeps its
    row (and so stays findable) until the next run deletes its objects first.
    """
    outcomes: list[RuleOutcome] = []
    with _subject_sets() as visited:
        for rule_plan in plan.rules:
            if stop_requested() or any(o.status == "audit_failed" for o in outcomes):
                outcomes.append(_outcome(rule_plan, "stopped"))
                continue
            brake = _brake(rule_plan, plan, allow_over_limit)
            blocked = None if dry_run else _blocked_by_objects(rule_plan, plan, outcomes)
            if brake is not None:
                outcome = _outcome(rule_plan, "braked", brake)
            elif blocked is not None:
                outcome = _outcome(rule_plan, "failed", blocked)
            else:
                rule_plan = _keeping_subjects(rule_plan, plan, outcomes)
                objects = rule_plan.rule.objects
                subjects_rule = objects.subjects.rule.name if objects and objects.subjects else None
                seen = visited.get(rule_plan.rule.name)
                collect = None
                if subjects_rule is not None:
                    collect = visited[subjects_rule] = subject_set()
                outcome = _execute_rule(
                    rule_plan,
                    store_for,
                    now,
                    dry_run,
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
            if rule_plan.unreadable:
                # Never due, so never overdue either: without this line an unattended daemon
                # would keep these rows forever in silence.
                logger.warning(
                    "rule.unreadable_clock",
                    rule=outcome.rule,
                    rows=rule_plan.unreadable,
                    kept="their clock is not a timestamp this store can compare (docs/config.md)",
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


@contextmanager
def _subject_sets() -> Iterator[dict[str, SubjectSet]]:
    """The subjects each cross-store rule listed in this run, by its subjects' rule: closed at
    the end of the run."""
    sets: dict[str, SubjectSet] = {}
    try:
        yield sets
    finally:
        for subjects in sets.values():
            subjects.close()


def _brake(rule_plan: RulePlan, plan: Plan, allow_over_limit: frozenset[str]) -> str | None:
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


def _objects_outcome(
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


def _blocked_by_objects(
    rule_plan: RulePlan, plan: Plan, outcomes: Sequence[RuleOutcome]
) -> str | None:
    """A SQL rule whose records own objects (a cross-store rule names it) runs after that rule,
    and only when it ran to its end: deleting a subject whose objects are still there would
    leave them with nobody to find them by."""
    objects = _objects_outcome(rule_plan, plan, outcomes)
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


def _keeping_subjects(rule_plan: RulePlan, plan: Plan, outcomes: Sequence[RuleOutcome]) -> RulePlan:
    """A subjects' rule runs with its subjects whose objects stayed (held or failed) held too:
    a row goes only with the last of its objects."""
    objects = _objects_outcome(rule_plan, plan, outcomes)
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


def _outcome(rule_plan: RulePlan, status: Status, error: str | None = None) -> RuleOutcome:
    return RuleOutcome(
        rule=rule_plan.rule.name,
        action=rule_plan.rule.action,
        status=status,
        due=rule_plan.due,
        held=rule_plan.held,
        error=error,
    )


def _execute_rule(
    rule_plan: RulePlan,
    store_for: Callable[[str], RecordStore],
    now: Callable[[], datetime],
    dry_run: bool,
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
    longest = 0.0
    status: Status = "ok"
    error = None
    after: KeyValues | None = None
    limit = rule.batch_size
    if progress is not None:
        progress.rule_started(rule.name, rule_plan.due)
    try:
        store = store_for(rule.store)
        if rule_plan.partitions and not dry_run:
            whole = _drop_whole_partitions(
                rule_plan, store, audit, holds_for, stop_requested, logger, only
            )
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
                rule_plan = _with_current_holds(rule_plan, holds_for)
            batch = _purge_one_batch(
                rule_plan,
                store,
                after,
                limit,
                now,
                dry_run,
                hash_key,
                None if dry_run else audit,
                only,
            )
            if collect is not None and batch.visited_subjects:
                collect.add(batch.visited_subjects)
            more = batch.more if batch.more is not None else len(batch.keys) >= limit
            if batch.keys:
                batches += 1
                selected += len(batch.keys)
                done += batch.done
                children_deleted += batch.children_deleted
                for name, count in batch.children:
                    children[name] = children.get(name, 0) + count
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
    )


def _drop_whole_partitions(
    rule_plan: RulePlan,
    store: RecordStore,
    audit: Audit | None,
    holds_for: Callable[[str], Sequence[Hold]] | None,
    stop_requested: Callable[[], bool],
    logger: Logger,
    only: KeyFilter | None,
) -> _WholePartitions:
    """Drop the partitions the plan found wholly due, each recorded (one intent per chunk of its
    keys, before the drop; the results after). A partition that changed or could not be locked
    is left to the row batches that follow."""
    drop = getattr(store, "drop_partition", None)
    if drop is None or only is not None:
        # A subjects' rule deletes only the rows whose objects went first: row by row.
        return _WholePartitions()
    batches = done = 0
    longest = 0.0
    for partition in rule_plan.partitions:
        if stop_requested():
            break
        if holds_for is not None:
            rule_plan = _with_current_holds(rule_plan, holds_for)
        intents: list[tuple[int, int]] = []

        def record_intent(
            keys: tuple[KeyValues, ...],
            detail: IntentDetail = NO_DETAIL,
            intents: list[tuple[int, int]] = intents,
            rule_plan: RulePlan = rule_plan,
            name: str = partition.name,
        ) -> None:
            if audit is not None:
                intents.append((audit.intent(rule_plan, keys, name, detail), len(keys)))

        try:
            dropped = drop(rule_plan.selection, partition.name, before_write=record_intent)
        except BatchConflict as conflict:
            for intent, _size in intents:
                if audit is not None:
                    audit.result(intent, rule_plan, "rolled_back", None)
            logger.warning(
                "partition.kept",
                rule=rule_plan.rule.name,
                partition=partition.name,
                reason=f"{conflict}: its rows go by row batches",
            )
            continue
        except AuditFailure:
            raise
        except Exception:
            for intent, _size in intents:
                if audit is not None:
                    audit.unresolved(intent, store)
            raise
        for intent, size in intents:
            if audit is not None:
                audit.result(intent, rule_plan, "committed", Batch((), done=size))
        batches += max(1, len(intents))
        done += dropped.done
        longest = max(longest, dropped.transaction_seconds)
        logger.info(
            "partition.dropped",
            rule=rule_plan.rule.name,
            partition=partition.name,
            rows=dropped.done,
            lock_seconds=round(dropped.transaction_seconds, 4),
        )
    return _WholePartitions(batches, done, longest)


@dataclass(frozen=True)
class _WholePartitions:
    """What dropping whole partitions did: batches recorded, rows dropped, longest lock."""

    batches: int = 0
    done: int = 0
    transaction_seconds: float = 0.0


def _with_current_holds(
    rule_plan: RulePlan, holds_for: Callable[[str], Sequence[Hold]]
) -> RulePlan:
    """Holds are read again before every batch: one placed during a run protects its records at
    once; one released during a run keeps protecting them until the next run."""
    assert rule_plan.selection is not None
    current = [
        hold for hold in holds_for(rule_plan.rule.name) if hold.in_force(rule_plan.selection.as_of)
    ]
    merged = tuple(dict.fromkeys((*rule_plan.selection.holds, *current)))
    if merged == rule_plan.selection.holds:
        return rule_plan
    return replace(rule_plan, selection=replace(rule_plan.selection, holds=merged))


def next_limit(limit: int, batch_size: int, transaction_seconds: float) -> int:
    """Given a batch's limit, the rule's batch_size and how long the batch's transaction took,
    return the next batch's limit: scaled towards TRANSACTION_TARGET_SECONDS, at most
    batch_size, at least SMALLEST_BATCH (or batch_size, if smaller). Example: a batch of
    10,000 that took 0.6 s gives ``next_limit(10_000, 10_000, 0.6) == 2_500``; one that took
    0.03 s gives back up to ``batch_size``."""
    if transaction_seconds <= 0:
        return limit
    if transaction_seconds > TRANSACTION_TARGET_SECONDS:
        wanted = int(limit * TRANSACTION_TARGET_SECONDS / transaction_seconds)
    elif transaction_seconds < TRANSACTION_TARGET_SECONDS / 2:
        wanted = limit * 2
    else:
        wanted = limit
    return max(min(SMALLEST_BATCH, batch_size), min(batch_size, wanted))


def _purge_one_batch(
    rule_plan: RulePlan,
    store: RecordStore,
    after: KeyValues | None,
    limit: int,
    now: Callable[[], datetime],
    dry_run: bool,
    hash_key: bytes | None,
    audit: Audit | None,
    only: KeyFilter | None,
) -> Batch:
    """One batch, recorded: intent before the write, then its result. A batch whose rows changed
    under it is rolled back, recorded as such, and selected again."""
    assert rule_plan.selection is not None
    for _attempt in range(CONFLICT_RETRIES):
        intents: list[int] = []

        def record_intent(
            keys: tuple[KeyValues, ...],
            detail: IntentDetail = NO_DETAIL,
            intents: list[int] = intents,
        ) -> None:
            if audit is not None:
                intents.append(audit.intent(rule_plan, keys, None, detail))

        try:
            batch = store.purge_batch(
                rule_plan.selection,
                after=after,
                limit=limit,
                dry_run=dry_run,
                now=now(),
                hash_key=hash_key,
                before_write=record_intent,
                only=only,
            )
        except BatchConflict:
            if audit is not None and intents:
                audit.result(intents[-1], rule_plan, "rolled_back", None)
            continue
        except AuditFailure:
            raise
        except Exception:
            # The write may or may not have committed (a failed COMMIT): look, do not guess.
            if audit is not None and intents:
                audit.unresolved(intents[-1], store)
            raise
        if audit is not None and intents:
            audit.result(intents[-1], rule_plan, "committed", batch)
        return batch
    raise RetentionError(
        f"rows of {rule_plan.rule.table!r} kept changing while being purged "
        f"({CONFLICT_RETRIES} tries)"
    )
