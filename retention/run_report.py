"""What a run did: each rule's outcome and the exit code they add up to. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from retention.errors import ExitCode
from retention.selection import ChildCounts, KeyValues

Status = Literal["ok", "failed", "unavailable", "stopped", "audit_failed", "braked"]
FAILED = ("failed", "unavailable", "audit_failed", "braked")


@dataclass(frozen=True)
class DroppedPartition:
    """A partition a run dropped whole (a dry run: would drop): its rows, and the batches it
    took (one per trail intent of its keys; one without a trail)."""

    name: str
    rows: int
    batches: int


@dataclass(frozen=True)
class RuleOutcome:
    """What a run did for one rule; ``skipped`` counts planned rows that were not purged (they
    changed since planning, or the rule stopped or failed). ``children`` counts the child rows
    deleted (in a dry run: that would be) per child table; ``children_deleted`` is their sum.
    On a partitioned table (``partitioned``), ``partitions`` are those dropped whole (a dry
    run: that would be), their batches counted in ``batches``, and ``partition_notes`` say why
    others, or the whole rule, went by row batches (the plan's reasons, and a partition kept
    at the run: it changed since the plan)."""

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
    partitioned: bool = False
    partitions: tuple[DroppedPartition, ...] = ()
    partition_notes: tuple[str, ...] = ()

    @property
    def row_batches(self) -> int:
        """The batches of rows, those of the partitions dropped whole left out."""
        return self.batches - sum(partition.batches for partition in self.partitions)

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
