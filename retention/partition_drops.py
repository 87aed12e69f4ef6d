"""Whole expired partitions dropped, each recorded in the audit trail (one intent per chunk of
its keys before the drop, the results after), ahead of a rule's row batches; and what a dry run
says of them: the same partitions, rows and batches, nothing dropped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from retention.errors import AuditFailure, BatchConflict
from retention.holds import Hold
from retention.planner import RulePlan
from retention.recorded_batch import with_current_holds
from retention.run_ports import Audit, Logger
from retention.run_report import DroppedPartition
from retention.store_protocol import (
    Batch,
    IntentDetail,
    KeyFilter,
    Keys,
    RecordStore,
    SpelledKeys,
)


def drop_whole_partitions(
    rule_plan: RulePlan,
    store: RecordStore,
    audit: Audit | None,
    holds_for: Callable[[str], Sequence[Hold]] | None,
    stop_requested: Callable[[], bool],
    logger: Logger,
    only: KeyFilter | None,
) -> WholePartitions:
    """Drop the partitions the plan found wholly due, each recorded (one intent per chunk of its
    keys, before the drop; the results after). A partition is dropped while the next one is
    recorded, its keys read meanwhile; its results are written once its drop has ended. A
    partition that changed or could not be locked is left to the row batches that follow."""
    dropping = getattr(store, "dropping_partitions", None)
    if dropping is None or only is not None:
        # A subjects' rule (``only``) was planned with none: the plan says why.
        return WholePartitions()
    totals = WholePartitions()
    due = rule_plan.partitions
    with dropping() as drops:
        in_flight: _InFlight | None = None
        try:
            for index, partition in enumerate(due):
                if stop_requested():
                    break
                if holds_for is not None:
                    rule_plan = with_current_holds(rule_plan, holds_for)
                intents: list[tuple[int, int]] = []

                def record_intent(
                    keys: Keys,
                    identity: str | None = None,
                    intents: list[tuple[int, int]] = intents,
                    rule_plan: RulePlan = rule_plan,
                    name: str = partition.name,
                ) -> None:
                    if audit is not None:
                        intent = audit.intent(
                            rule_plan, keys, name, IntentDetail(partition_identity=identity)
                        )
                        # Spelled keys are counted as the intent hashes them: all of them now.
                        size = keys.count if isinstance(keys, SpelledKeys) else len(keys)
                        intents.append((intent, size))

                # The partition after this one: its keys are read while this one is recorded.
                following = due[index + 1] if index + 1 < len(due) else None
                try:
                    recorded = drops.record(
                        rule_plan.selection,
                        partition.name,
                        before_write=record_intent,
                        planned_rows=partition.rows,
                        then=None if following is None else (following.name, following.rows),
                    )
                except BatchConflict as conflict:
                    _kept(audit, logger, rule_plan, partition.name, intents, conflict)
                    totals = totals.plus(_kept_note(partition.name, conflict))
                    continue
                except AuditFailure:
                    raise
                except Exception:
                    _unresolved(audit, store, intents)
                    raise
                flight = _InFlight(partition.name, rule_plan, intents, None)
                going = False
                try:
                    if in_flight is not None:
                        previous, in_flight = in_flight, None
                        totals = totals.plus(_settled(previous, audit, store, logger))
                    going = not stop_requested()
                finally:
                    if not going:
                        # Recorded, never dropped (the previous drop failed, or a stop came):
                        # its intents say so.
                        _kept(audit, logger, rule_plan, partition.name, intents, None)
                if not going:
                    break
                started = drops.finish(rule_plan.selection, recorded)
                in_flight = _InFlight(flight.name, flight.rule_plan, flight.intents, started)
        finally:
            if in_flight is not None:
                totals = totals.plus(_settled(in_flight, audit, store, logger))
    return totals


@dataclass(frozen=True)
class _InFlight:
    """A partition recorded whose drop is under way: its intents and the drop's outcome."""

    name: str
    rule_plan: RulePlan
    intents: list[tuple[int, int]]
    dropped: Future[Batch] | None


def _settled(
    flight: _InFlight, audit: Audit | None, store: RecordStore, logger: Logger
) -> WholePartitions:
    """Wait for a partition's drop; write its results (committed, or rolled back when it was
    kept); return what it did. Anything else it raised: its intents unresolved, raised."""
    assert flight.dropped is not None
    rule_plan = flight.rule_plan
    try:
        dropped = flight.dropped.result()
    except BatchConflict as conflict:
        _kept(audit, logger, rule_plan, flight.name, flight.intents, conflict)
        return _kept_note(flight.name, conflict)
    except Exception:
        _unresolved(audit, store, flight.intents)
        raise
    for intent, size in flight.intents:
        if audit is not None:
            audit.result(intent, rule_plan, "committed", Batch((), done=size))
    logger.info(
        "partition.dropped",
        rule=rule_plan.rule.name,
        partition=flight.name,
        rows=dropped.done,
        lock_seconds=round(dropped.transaction_seconds, 4),
    )
    batches = max(1, len(flight.intents))
    return WholePartitions(
        batches,
        dropped.done,
        dropped.transaction_seconds,
        (DroppedPartition(flight.name, dropped.done, batches),),
    )


def would_drop_whole_partitions(
    rule_plan: RulePlan,
    store: RecordStore,
    audited: bool,
    stop_requested: Callable[[], bool],
    only: KeyFilter | None,
) -> tuple[WholePartitions, RulePlan]:
    """Given a rule's plan, what a run with the trail on (``audited``) or off would drop whole
    (dropping nothing, locking nothing): the partitions the plan found wholly due, each with
    its rows and its batches (one per trail intent of its keys; one without a trail); and the
    rule's plan whose row batches leave out their rows, as a run's would find them gone.

    Example: with the trail on, 100,000 keys an intent, the plan's partitions of 10 and
    250,000 rows give ``batches == 4``, ``done == 250_010``."""
    dropping = getattr(store, "dropping_partitions", None)
    if dropping is None or only is not None:
        return WholePartitions(), rule_plan
    intents = getattr(store, "partition_intents", lambda rows: 1)
    totals = WholePartitions()
    for partition in rule_plan.partitions:
        if stop_requested():
            break
        batches = max(1, intents(partition.rows)) if audited else 1
        totals = totals.plus(
            WholePartitions(
                batches,
                partition.rows,
                dropped=(DroppedPartition(partition.name, partition.rows, batches),),
            )
        )
    if rule_plan.selection is not None and totals.dropped:
        names = tuple(partition.name for partition in totals.dropped)
        selection = replace(rule_plan.selection, whole_partitions=names)
        rule_plan = replace(rule_plan, selection=selection)
    return totals, rule_plan


def _kept_note(name: str, conflict: BatchConflict) -> WholePartitions:
    return WholePartitions(notes=(f"{name}: kept at the run ({conflict}): row batches",))


def _kept(
    audit: Audit | None,
    logger: Logger,
    rule_plan: RulePlan,
    name: str,
    intents: list[tuple[int, int]],
    conflict: BatchConflict | None,
) -> None:
    """A partition not dropped: its intents rolled back; with a conflict, why (its rows go by
    row batches)."""
    for intent, _size in intents:
        if audit is not None:
            audit.result(intent, rule_plan, "rolled_back", None)
    if conflict is not None:
        logger.warning(
            "partition.kept",
            rule=rule_plan.rule.name,
            partition=name,
            reason=f"{conflict}: its rows go by row batches",
        )


def _unresolved(audit: Audit | None, store: RecordStore, intents: list[tuple[int, int]]) -> None:
    for intent, _size in intents:
        if audit is not None:
            audit.unresolved(intent, store)


@dataclass(frozen=True)
class WholePartitions:
    """What dropping whole partitions did: batches recorded, rows dropped, longest lock; the
    partitions dropped, and why others planned whole went by row batches instead."""

    batches: int = 0
    done: int = 0
    transaction_seconds: float = 0.0
    dropped: tuple[DroppedPartition, ...] = ()
    notes: tuple[str, ...] = ()

    def plus(self, other: WholePartitions) -> WholePartitions:
        """Both together (the longer of their longest locks)."""
        return WholePartitions(
            self.batches + other.batches,
            self.done + other.done,
            max(self.transaction_seconds, other.transaction_seconds),
            self.dropped + other.dropped,
            self.notes + other.notes,
        )
