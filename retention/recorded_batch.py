"""One batch of a rule, recorded: the audit intent before the write, its result after; a batch
whose rows changed under it is tried again; the next batch's size is steered by how long this
one's transaction took; holds are read again before every batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from retention.errors import AuditFailure, BatchConflict, RetentionError
from retention.holds import Hold
from retention.planner import RulePlan
from retention.run_ports import Audit
from retention.selection import KeyValues
from retention.store_protocol import NO_DETAIL, Batch, IntentDetail, KeyFilter, RecordStore

CONFLICT_RETRIES = 3
# A store whose batches are database transactions (``steered_batches``) gets each next batch
# sized so that its transaction takes about this long, never more rows than the rule's
# batch_size: locks stay short on a busy server (the limit is 250 ms), as Percona's tools steer
# chunks by --chunk-time.
TRANSACTION_TARGET_SECONDS = 0.15
SMALLEST_BATCH = 100


def with_current_holds(rule_plan: RulePlan, holds_for: Callable[[str], Sequence[Hold]]) -> RulePlan:
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


def purge_one_batch(
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

        def record_not_done(not_done: tuple[KeyValues, ...], intents: list[int] = intents) -> None:
            if audit is not None and intents:
                audit.not_done(intents[-1], not_done)

        try:
            batch = store.purge_batch(
                rule_plan.selection,
                after=after,
                limit=limit,
                dry_run=dry_run,
                now=now(),
                hash_key=hash_key,
                # Without a trail nothing needs the keys before the write: a store may
                # then leave them out of the batch (sql_spans).
                before_write=record_intent if audit is not None else None,
                only=only,
                before_commit=record_not_done if audit is not None else None,
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
