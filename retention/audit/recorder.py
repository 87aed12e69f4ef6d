"""What a run writes into the trail, in order:

``config.changed`` (when the config digest differs from the last run's), ``batch.reconciled`` for
each batch a crash left without a result, ``run.started``, then per batch ``batch.intent``
(durable before anything is written to the store) and ``batch.result``, then ``run.finished`` and
a signed ``checkpoint``. Entries hold counts and Merkle roots of keyed hashes, never record ids
or personal values; the raw keys of an in-flight batch sit in ``pending/`` until its result is
written, so that a crash can be reconciled against the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retention.audit.batch_detail import counted_detail, pending_detail
from retention.audit.leaves import integer_key_lines, subject_digest
from retention.audit.opening import identity, open_trail
from retention.audit.pending_files import UnauthenticPending
from retention.audit.reconcile import (
    CHAINED,
    SETTLED_BY,
    authentic_pending,
    pending_rejected,
    reconcile,
    reconcile_one,
)
from retention.audit.rule_definition import batch_method, rule_definition
from retention.audit.trail import TrailWriter
from retention.config import S3_KEY, Config
from retention.errors import AuditFailure, StoreUnavailable, error_text
from retention.planner import Plan, RulePlan
from retention.run_report import RunReport
from retention.runtime.faults import crash_point
from retention.selection import KeyValues
from retention.store_protocol import NO_DETAIL, Batch, IntentDetail, Keys, RecordStore, SpelledKeys


@contextmanager
def _fail_closed(doing: str, keys: object = None) -> Iterator[None]:
    """Whatever goes wrong while recording (a bug included) stops the purge: AuditFailure. But
    what reading spelled ``keys`` raised is their store's, raised as it is (a partition that
    changed: BatchConflict)."""
    try:
        yield
    except AuditFailure:
        raise
    except Exception as error:
        if isinstance(keys, SpelledKeys) and error is keys.error:
            raise
        raise AuditFailure(f"cannot {doing}: {error_text(error)}") from error


@dataclass
class TrailRecorder:
    """The executor's Audit port, writing to one trail for one run."""

    writer: TrailWriter
    run_id: str
    plan: Plan
    # Per intent in flight, its keys and detail: its result counts the markers and bytes of
    # the keys it purged.
    _details: dict[int, tuple[tuple[KeyValues, ...], IntentDetail]] = field(default_factory=dict)
    # Per intent in flight, what its trail entry recorded that a reconcile reads (``CHAINED``,
    # what settles it, its pending file's HMAC).
    _chained: dict[int, dict[str, Any]] = field(default_factory=dict)

    def _base(self, rule_plan: RulePlan) -> dict[str, Any]:
        rule = rule_plan.rule
        selection = rule_plan.selection
        base: dict[str, Any] = {
            "run_id": self.run_id,
            "rule": rule.name,
            "policy": rule.policy,
            "category": rule.category,
            "store": rule.store,
            "dataset": rule.table,
            "action": rule.action,
            "cutoff": selection.default.cutoff.isoformat() if selection else None,
        }
        if self.plan.erasure is not None:
            # No cutoff: the records go because their person asked, whatever their age.
            base["cutoff"] = None
            base["erasure"] = self.plan.erasure.reference
        return base

    def intent(
        self,
        rule_plan: RulePlan,
        keys: Keys,
        partition: str | None = None,
        detail: IntentDetail = NO_DETAIL,
    ) -> int:
        with _fail_closed("record a batch intent", keys):
            return self._intent(rule_plan, keys, partition, detail)

    def _intent(
        self,
        rule_plan: RulePlan,
        keys: Keys,
        partition: str | None,
        detail: IntentDetail,
    ) -> int:
        crash_point("before_intent")
        rule = rule_plan.rule
        values: tuple[KeyValues, ...]
        lines: bytes | None = None
        leaves: Sequence[bytes]
        if isinstance(keys, SpelledKeys):
            # A partition's keys, as its database spelled them: hashed piece by piece as they
            # are read (nothing else of them is recorded), then counted.
            if partition is None or detail.children or detail.markers or detail.sizes:
                raise AuditFailure("spelled keys can only be a whole partition's")
            leaves = self.writer.record_spelled_leaves(rule.store, rule.table, keys)
            selected, values = keys.count, ()
        else:
            # The usual integer ids spelled once, for their leaves and their pending keys.
            lines = integer_key_lines(keys) if partition is None else None
            leaves = self.writer.record_leaves(rule.store, rule.table, keys, lines)
            selected, values = len(keys), keys
        if detail.children:
            # The child rows that go with the parents are leaves of the same batch, so that
            # each can be proven; their locators name their own table.
            every = list(leaves)
            for child in detail.children:
                every += self.writer.record_leaves(rule.store, child.table, child.keys)
            every.sort()
            leaves = every
        root = self.writer.leaves_root(leaves)
        seq = self.writer.next_seq
        pending: dict[str, Any] = {
            "rule": rule.name,
            "store": rule.store,
            "dataset": rule.table,
            "key_columns": list(rule.key),
            "marker_column": rule.marker_column,
            "leaves_root": root,
        }
        key_values = None
        if partition is None:
            # Keys as JSON arrays (a one-column key's values as one flat array, which costs
            # less to write); other values (dates, decimals, UUIDs) as their str(), which is
            # also how record_locator spells them. Integer ids: their digits spelled already.
            if lines is not None:
                key_values = b"[" + lines.replace(b"\n", b",") + b"]"
            else:
                try:
                    pending["key_values"] = [value for (value,) in values]
                except ValueError:
                    pending["keys"] = values
            pending.update(pending_detail(detail))
        else:
            # A partition goes whole or not at all: whether it is still there settles the batch,
            # and its leaves are the intent's own.
            pending["partition"] = partition
            if detail.partition_identity is not None:
                pending["partition_identity"] = detail.partition_identity
        # Leaves and pending keys first, durable: an intent in the trail always has both
        # beside it (written side by side, their fsyncs overlapping).
        extra: dict[str, Any] = counted_detail(detail, values)
        versions = [key[1] for key in values] if rule.key == S3_KEY else None
        pending_mac, digest = self.writer.write_intent_files(
            seq, leaves, pending, versions, key_values
        )
        if digest is not None:
            extra["versions_digest"] = digest
        fields: dict[str, Any] = {
            **self._base(rule_plan),
            "method": batch_method(rule) if partition is None else "sql-drop-partition",
            "selected": selected,
            "leaves_root": root,
            **extra,
            **identity(),
        }
        if partition is not None:
            fields["partition"] = partition
        # What settles the batch after a crash (its transaction; the partition's identity) is
        # in the chained entry too: the reconcile trusts it there, not the pending file's copy.
        settled_by = {name: pending[name] for name in SETTLED_BY if name in pending}
        fields.update(settled_by)
        # The pending file's HMAC: whatever else the reconcile reads there (the keys, their
        # columns, the child rows) is believed only if it checks.
        fields["pending_mac"] = pending_mac
        written = self.writer.append("batch.intent", fields)
        self._chained[written] = {
            name: fields[name] for name in (*CHAINED, *SETTLED_BY, "pending_mac") if name in fields
        }
        if detail.markers or detail.sizes:
            self._details[written] = (values, detail)
        crash_point("after_intent")
        return written

    def result(self, intent: int, rule_plan: RulePlan, status: str, batch: Batch | None) -> None:
        with _fail_closed("record a batch result"):
            self._result(intent, rule_plan, status, batch)

    def _result(self, intent: int, rule_plan: RulePlan, status: str, batch: Batch | None) -> None:
        crash_point("before_result")
        committed = batch is not None and status == "committed"
        done = batch.done if batch is not None and committed else 0
        content: dict[str, Any] = {
            **self._base(rule_plan),
            "intent": intent,
            "status": status,
            "done": done,
            "held": batch.held if batch is not None else 0,
            "failed": batch.failed if batch is not None else 0,
            "children_deleted": batch.children_deleted if batch is not None else 0,
        }
        if batch is not None and committed and batch.not_done_keys:
            # Selected by the intent but not purged: their leaves, so that nobody can prove a
            # deletion that did not happen.
            rule = rule_plan.rule
            leaves = self.writer.record_leaves(rule.store, rule.table, batch.not_done_keys)
            self.writer.write_leaves(self.writer.next_seq, leaves)
            content["not_done"] = len(leaves)
            content["not_done_root"] = self.writer.leaves_root(leaves)
        self._chained.pop(intent, None)
        keys, detail = self._details.pop(intent, ((), NO_DETAIL))
        if keys:
            not_done = set(batch.not_done_keys) if committed and batch is not None else set(keys)
            content.update(counted_detail(detail, keys, not_done))
        # Made durable by the trail's next fsync (the next intent's, or the run's end); until
        # then the intent's pending keys stay, so that a crash leaves it to be reconciled.
        self.writer.append("batch.result", content, durable=False)
        self.writer.settle_pending(intent)
        crash_point("after_result")

    def not_done(self, intent: int, keys: tuple[KeyValues, ...]) -> None:
        """Given an intent whose batch's transaction is about to commit, record durably (beside
        its pending keys) the keys that batch did not purge: if the COMMIT is the last thing
        that happens, the reconcile then knows which of the intent's records that transaction
        did not delete."""
        with _fail_closed("record the keys a batch did not purge"):
            self.writer.write_not_done(intent, keys)

    def unresolved(self, intent: int, store: RecordStore) -> None:
        """A batch failed in a way that may or may not have committed: look at the store now
        (if it cannot be reached, the pending keys wait for the next run)."""
        chained = self._chained.pop(intent, {})
        for seq, pending in self.writer.pending():
            if seq == intent and pending is not None:
                try:
                    authentic = authentic_pending(self.writer, seq, pending, chained)
                except UnauthenticPending as error:
                    pending_rejected(seq, chained, error)
                    return
                try:
                    reconcile_one(self.writer, self.run_id, seq, authentic, store, chained)
                except StoreUnavailable:
                    return

    def run_finished(self, report: RunReport) -> None:
        self.writer.append(
            "run.finished",
            {
                "run_id": self.run_id,
                "plan_id": self.plan.plan_id,
                "exit_code": int(report.exit_code),
                "outcomes": [
                    {"rule": outcome.rule, "status": outcome.status, **outcome.counters()}
                    for outcome in report.outcomes
                ],
            },
        )
        self.writer.checkpoint()


@contextmanager
def recording(
    config: Config,
    plan: Plan,
    run_id: str,
    store_for: Callable[[str], RecordStore],
    clock: Callable[[], datetime],
) -> Iterator[TrailRecorder]:
    """Open the trail for one run: settle what a crash left, note a config change, start the run.
    Any failure here raises before a single record is touched."""
    assert config.audit is not None
    with open_trail(config.audit, clock) as writer:
        reconcile(writer, run_id, store_for)
        if writer.last_config_digest != config.digest:
            writer.append(
                "config.changed",
                {
                    "run_id": run_id,
                    "previous_digest": writer.last_config_digest,
                    "digest": config.digest,
                    "source": config.source,
                },
            )
        started: dict[str, Any] = {
            "run_id": run_id,
            "plan_id": plan.plan_id,
            "config_digest": config.digest,
            "as_of": plan.as_of.isoformat(),
            "rules": [rule_plan.rule.name for rule_plan in plan.rules],
            # What each rule said, so that an auditor reads the rule in force from the trail
            # rather than from a config digest; and what the plan found before the run.
            "rule_definitions": [rule_definition(rule_plan.rule) for rule_plan in plan.rules],
            "planned": [
                {
                    "rule": rule_plan.rule.name,
                    "due": rule_plan.due,
                    "held": rule_plan.held,
                    "unreadable_clock": rule_plan.unreadable,
                    "future_clock": rule_plan.future,
                    "error": rule_plan.error is not None,
                }
                for rule_plan in plan.rules
            ],
            **identity(),
        }
        if plan.erasure is not None:
            started["erasure"] = {
                "reference": plan.erasure.reference,
                "subject": subject_digest(writer.hmac_key, plan.erasure.subject),
            }
        writer.append("run.started", started)
        yield TrailRecorder(writer, run_id, plan)
