"""Whole expired partitions dropped, each recorded in the audit trail (one intent per chunk of
its keys before the drop, the results after), ahead of a rule's row batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retention.errors import AuditFailure, BatchConflict
from retention.holds import Hold
from retention.planner import RulePlan
from retention.recorded_batch import with_current_holds
from retention.run_ports import Audit, Logger
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
    keys, before the drop; the results after), the next one's keys read meanwhile. A partition
    that changed or could not be locked is left to the row batches that follow."""
    dropping = getattr(store, "dropping_partitions", None)
    if dropping is None or only is not None:
        # A subjects' rule deletes only the rows whose objects went first: row by row.
        return WholePartitions()
    batches = done = 0
    longest = 0.0
    due = rule_plan.partitions
    with dropping() as drop:
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
                    # Spelled keys are counted as the intent hashes them: all of them by now.
                    size = keys.count if isinstance(keys, SpelledKeys) else len(keys)
                    intents.append((intent, size))

            # The partition after this one: its keys are read while this one is recorded.
            following = due[index + 1] if index + 1 < len(due) else None
            try:
                dropped = drop(
                    rule_plan.selection,
                    partition.name,
                    before_write=record_intent,
                    planned_rows=partition.rows,
                    then=None if following is None else (following.name, following.rows),
                )
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
    return WholePartitions(batches, done, longest)


@dataclass(frozen=True)
class WholePartitions:
    """What dropping whole partitions did: batches recorded, rows dropped, longest lock."""

    batches: int = 0
    done: int = 0
    transaction_seconds: float = 0.0
