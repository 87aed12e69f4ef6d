"""What a run writes into the trail, in order:

``config.changed`` (when the config digest differs from the last run's), ``batch.reconciled`` for
each batch a crash left without a result, ``run.started``, then per batch ``batch.intent``
(durable before anything is written to the store) and ``batch.result``, then ``run.finished`` and
a signed ``checkpoint``. Entries hold counts and Merkle roots of keyed hashes, never record ids
or personal values; the raw keys of an in-flight batch sit in ``pending/`` until its result is
written, so that a crash can be reconciled against the store.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retention import __version__
from retention.audit.batch_detail import counted_detail, detail_of_pending, pending_detail
from retention.audit.keys import AuditKeyError, load_public_keys, load_signer
from retention.audit.trail import (
    TrailWriter,
    leaves_root,
    read_entries,
    read_leaves,
    subject_digest,
)
from retention.config import S3_KEY, AuditSettings, Child, Config, Rule
from retention.errors import (
    AuditFailure,
    ConfigError,
    ConfigIssue,
    StoreUnavailable,
    error_text,
)
from retention.executor import RunReport
from retention.planner import (
    NO_DETAIL,
    Batch,
    IntentDetail,
    KeyValues,
    Plan,
    RecordStore,
    RulePlan,
)
from retention.runtime.faults import crash_point
from retention.runtime.logging import get_logger
from retention.runtime.secrets import read_secret, secret_path

TOOL = f"retention {__version__}"


def identity() -> dict[str, str]:
    """Who is running: tool version, host name and user (for the auditor's "who/what ran it")."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"tool": TOOL, "host": socket.gethostname(), "user": user}


@contextmanager
def _fail_closed(doing: str) -> Iterator[None]:
    """Whatever goes wrong while recording (a bug included) stops the purge: AuditFailure."""
    try:
        yield
    except AuditFailure:
        raise
    except Exception as error:
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
        keys: tuple[KeyValues, ...],
        partition: str | None = None,
        detail: IntentDetail = NO_DETAIL,
    ) -> int:
        with _fail_closed("record a batch intent"):
            return self._intent(rule_plan, keys, partition, detail)

    def _intent(
        self,
        rule_plan: RulePlan,
        keys: tuple[KeyValues, ...],
        partition: str | None,
        detail: IntentDetail,
    ) -> int:
        crash_point("before_intent")
        rule = rule_plan.rule
        leaves = self.writer.record_leaves(rule.store, rule.table, keys)
        if detail.children:
            # The child rows that go with the parents are leaves of the same batch, so that
            # each can be proven; their locators name their own table.
            for child in detail.children:
                leaves += self.writer.record_leaves(rule.store, child.table, child.keys)
            leaves.sort()
        root = leaves_root(leaves)
        seq = self.writer.next_seq
        pending: dict[str, Any] = {
            "rule": rule.name,
            "store": rule.store,
            "dataset": rule.table,
            "key_columns": list(rule.key),
            "marker_column": rule.marker_column,
            "leaves_root": root,
        }
        if partition is None:
            # Tuples as JSON arrays; other values (dates, decimals, UUIDs) as their str(),
            # which is also how record_locator spells them.
            pending["keys"] = keys
            pending.update(pending_detail(detail))
        else:
            # A partition goes whole or not at all: whether it is still there settles the batch,
            # and its leaves are the intent's own.
            pending["partition"] = partition
        # Leaves and pending first: an intent in the trail always has both beside it. They are
        # written side by side (fsync releases the GIL): each waits for its file's and its
        # directory's fsync, and the intent is appended only once both are durable.
        extra: dict[str, Any] = counted_detail(detail, keys)
        with ThreadPoolExecutor(max_workers=1) as beside:
            leaves_written = beside.submit(self.writer.write_leaves, seq, leaves)
            try:
                if rule.key == S3_KEY:
                    versions = [key[1] for key in keys]
                    extra["versions_digest"] = self.writer.write_versions(seq, versions)
                self.writer.write_pending(seq, pending)
            finally:
                _leaves_or_no_pending(self.writer, seq, leaves_written)
        fields: dict[str, Any] = {
            **self._base(rule_plan),
            "method": _method(rule) if partition is None else "sql-drop-partition",
            "selected": len(keys),
            "leaves_root": root,
            **extra,
            **identity(),
        }
        if partition is not None:
            fields["partition"] = partition
        written = self.writer.append("batch.intent", fields)
        if detail.markers or detail.sizes:
            self._details[written] = (keys, detail)
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
            content["not_done_root"] = leaves_root(leaves)
        keys, detail = self._details.pop(intent, ((), NO_DETAIL))
        if keys:
            not_done = set(batch.not_done_keys) if committed and batch is not None else set(keys)
            content.update(counted_detail(detail, keys, not_done))
        self.writer.append("batch.result", content)
        self.writer.clear_pending(intent)

    def unresolved(self, intent: int, store: RecordStore) -> None:
        """A batch failed in a way that may or may not have committed: look at the store now
        (if it cannot be reached, the pending keys wait for the next run)."""
        for seq, pending in self.writer.pending():
            if seq == intent and pending is not None:
                try:
                    _reconcile_one(self.writer, self.run_id, seq, pending, store)
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


def _leaves_or_no_pending(writer: TrailWriter, seq: int, leaves_written: Future[None]) -> None:
    """Wait for a batch's leaves; when they could not be written (a record named twice, a full
    disk), take back its pending keys too: no intent follows, so nothing of it may stay."""
    try:
        leaves_written.result()
    except BaseException:
        with suppress(AuditFailure):
            writer.clear_pending(seq)
        raise


def _reconcile_one(
    writer: TrailWriter, run_id: str, seq: int, pending: dict[str, Any], store: RecordStore
) -> None:
    extra: dict[str, Any] = {}
    if "partition" in pending:
        leaves = read_leaves(writer.directory, seq)
        not_done_count = len(leaves)
        if _partition_exists(store, pending["dataset"], pending["partition"]):
            leaves = []
        else:
            not_done_count = 0
        done_count = len(leaves)
    else:
        keys = [tuple(key) for key in pending["keys"]]
        not_done = store.existing_keys(
            pending["dataset"], pending["key_columns"], keys, pending.get("marker_column")
        )
        not_done_count = len(not_done)
        done = [key for key in keys if key not in not_done]
        done_count = len(done)
        leaves = writer.record_leaves(pending["store"], pending["dataset"], done)
        detail = detail_of_pending(pending)
        extra = counted_detail(detail, tuple(keys), not_done)
        if detail.children:
            # A child row still there was not deleted (its parent's transaction rolled back).
            counts: dict[str, int] = {}
            for child in detail.children:
                left = store.existing_keys(child.table, list(child.key), list(child.keys))
                gone = [key for key in child.keys if key not in left]
                counts[child.table] = len(gone)
                leaves += writer.record_leaves(pending["store"], child.table, gone)
            leaves.sort()
            extra = {**extra, "children": counts, "children_deleted": sum(counts.values())}
    reconciled_seq = writer.next_seq
    writer.write_leaves(reconciled_seq, leaves)
    if "partition" not in pending and tuple(pending["key_columns"]) == S3_KEY:
        extra["versions_digest"] = writer.write_versions(reconciled_seq, [key[1] for key in done])
    writer.append(
        "batch.reconciled",
        {
            "run_id": run_id,
            "intent": seq,
            "rule": pending["rule"],
            "store": pending["store"],
            "dataset": pending["dataset"],
            "done": done_count,
            "not_done": not_done_count,
            "leaves_root": leaves_root(leaves),
            **extra,
        },
    )
    writer.clear_pending(seq)


def _partition_exists(store: RecordStore, table: str, partition: str) -> bool:
    """Whether a partition whose drop a crash interrupted is still there: then nothing of it
    was dropped (its drop is one transaction, or atomic DDL); else all of it was."""
    exists = getattr(store, "partition_exists", None)
    if exists is None:
        raise AuditFailure(f"store {store!r} cannot say whether partition {partition!r} is there")
    return bool(exists(table, partition))


def reconcile(writer: TrailWriter, run_id: str, store_for: Callable[[str], RecordStore]) -> int:
    """Given the trail and the stores, settle every batch a crash left without a result: record
    which of its records are gone (or anonymised) and which are not. Return how many were settled.
    """
    writer.clear_unfinished_pending()
    pending = writer.pending()
    if not pending:
        return 0
    entries = {
        stored.content.get("seq"): stored.content for stored in read_entries(writer.directory)
    }
    settled_intents = {
        content.get("intent")
        for content in entries.values()
        if content.get("type") in ("batch.result", "batch.reconciled")
    }
    settled = 0
    for seq, keys in pending:
        intent = entries.get(seq, {})
        if keys is None:
            _unreadable_pending(writer, seq, intent, seq in settled_intents)
            continue
        if intent.get("type") != "batch.intent" or intent.get("leaves_root") != keys["leaves_root"]:
            # The intent never reached the trail, so nothing was written to the store.
            writer.clear_pending(seq)
            continue
        if seq in settled_intents:
            writer.clear_pending(seq)
            continue
        try:
            _reconcile_one(writer, run_id, seq, keys, store_for(keys["store"]))
        except StoreUnavailable:
            continue
        settled += 1
    return settled


def _unreadable_pending(
    writer: TrailWriter, seq: int, intent: dict[str, Any], settled: bool
) -> None:
    """An empty or torn pending file (a full disk, with a version that did not write it
    atomically) was never acknowledged: its writing failed, so the intent after it was never
    appended and nothing was written to the store. Drop it. Only when an unsettled intent of
    that seq is in the trail (a short write that went unnoticed) can its records have gone:
    without their keys nobody can tell which, so the file stays, the intent stays unsettled
    (``audit show`` counts it), and every run says so, rather than claim anything."""
    if intent.get("type") != "batch.intent" or settled:
        get_logger().warning("audit.pending_unreadable_dropped", intent=seq)
        writer.clear_pending(seq)
        return
    get_logger().error(
        "audit.pending_unreadable",
        intent=seq,
        rule=intent.get("rule"),
        selected=intent.get("selected"),
        kept=f"pending/{seq:08d}.json: its intent cannot be reconciled and stays unsettled",
    )


def audit_keys(settings: AuditSettings) -> tuple[bytes, Any]:
    """Given the audit settings, return the HMAC key and the signer; ConfigError if missing."""
    hmac_key = read_secret(
        settings.hmac_key_file,
        settings.hmac_key_credential,
        "audit.hmac_key_file",
        "audit.hmac_key_credential",
    )
    signing_path = secret_path(
        settings.signing_key_file, settings.signing_key_credential, "audit.signing_key_credential"
    )
    if hmac_key is None or signing_path is None:
        raise ConfigError([ConfigIssue("audit", "the audit keys are not configured")])
    if not signing_path.exists():
        raise ConfigError(
            [
                ConfigIssue(
                    "audit.signing_key_file",
                    f"{str(signing_path)!r} does not exist (create keys: retention audit keygen)",
                )
            ]
        )
    return hmac_key, load_signer(signing_path)


@contextmanager
def open_trail(settings: AuditSettings, clock: Callable[[], datetime]) -> Iterator[TrailWriter]:
    """Open the trail for writing; refuse (AuditFailure) a signing key that auditors could not
    verify: missing from the public key file, or outside its validity window."""
    hmac_key, signer = audit_keys(settings)
    now = clock()
    try:
        published = load_public_keys(settings.public_keys_file)
    except AuditKeyError as error:
        raise AuditFailure(f"{error}: create keys with `retention audit keygen`") from error
    if not any(key.key_id == signer.key_id and key.covers(now) for key in published):
        raise AuditFailure(
            f"signing key {signer.key_id} is not valid now in {settings.public_keys_file}: "
            "its checkpoints would not verify (rotate with `retention audit keygen --rotate`)"
        )
    with TrailWriter(settings.directory, hmac_key, signer, clock) as writer:
        yield writer


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


def _children(children: tuple[Child, ...]) -> list[dict[str, Any]]:
    return [
        {
            "table": child.table,
            "foreign_key": child.foreign_key,
            "references": child.references,
            "children": _children(child.children),
        }
        for child in children
    ]


def rule_definition(rule: Rule) -> dict[str, Any]:
    """Given a rule, return its normalised definition for the trail: what it purges, by which
    clock, after which period, under which conditions, and how. Never a secret: the config
    holds none in a rule (store URLs and keys live elsewhere), and a hash strategy's key is
    named by the strategy, not given.

    Example: a rule deleting ``logs`` a year after ``logged_at`` gives ``{"name": "logs",
    "store": "db", "table": "logs", "clock": "logged_at", "period": "1y", "action":
    "delete", ...}``.
    """
    definition: dict[str, Any] = {
        "name": rule.name,
        "policy": rule.policy,
        "category": rule.category,
        "store": rule.store,
        "table": rule.table,
        "key": list(rule.key),
        "clock": rule.clock_text,
        "period": rule.period.text,
        "period_column": str(rule.period_column) if rule.period_column else None,
        "conditions": [condition.text for condition in rule.conditions],
        "where_sql": rule.where_sql,
        "match_all": rule.match_all,
        "joins": [
            {"name": join.name, "table": join.table, "on": list(join.local_columns)}
            for join in rule.joins
        ],
        "action": rule.action,
        "method": _method(rule),
        "anonymise": {
            column: strategy.kind
            if strategy.value is None
            else {strategy.kind: str(strategy.value)}
            for column, strategy in rule.anonymise
        },
        "marker_column": rule.marker_column,
        "children": _children(rule.children),
        "erase_by": str(rule.erase_by) if rule.erase_by else None,
        "batch_size": rule.batch_size,
        "max_delete": rule.max_delete,
        "max_fraction": rule.max_fraction,
    }
    if rule.objects is not None:
        definition["objects"] = {
            "prefix": rule.objects.prefix,
            "glob": rule.objects.glob,
            "date_pattern": rule.objects.date_pattern,
            "subjects": rule.objects.subjects.rule.name if rule.objects.subjects else None,
        }
    return definition


def _method(rule: Rule) -> str:
    """How a batch purges: ``sql-delete``, ``sql-anonymise``, ``s3-delete`` or ``files-delete``."""
    if rule.objects is not None:
        return "s3-delete" if rule.key == S3_KEY else "files-delete"
    return "sql-delete" if rule.action == "delete" else "sql-anonymise"
