"""Settling the batches a crash left without a result: for each intent whose pending keys are
still there, ask the store which of its records are gone (or, when the intent named its
transaction, whether that transaction committed), and record that (``batch.reconciled``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from retention.audit.batch_detail import counted_detail, detail_of_pending
from retention.audit.entries import FORMAT_VERSION, read_entries, read_leaves
from retention.audit.pending_files import UnauthenticNote, UnauthenticPending
from retention.audit.trail import TrailWriter
from retention.config import S3_KEY
from retention.errors import AuditFailure, StoreUnavailable
from retention.runtime.logging import get_logger
from retention.store_protocol import RecordStore

# The fields of a batch's intent entry that settle it after a crash, when it has them: its
# transaction (whether it committed), a dropped partition's identity (whether it is there).
SETTLED_BY = ("transaction", "partition_identity")
# The fields of a batch's intent entry that its pending file repeats, read from the entry: the
# pending file is not chained (an older version's carries no HMAC either).
CHAINED = ("rule", "store", "dataset", "partition")


def reconcile_one(
    writer: TrailWriter,
    run_id: str,
    seq: int,
    pending: dict[str, Any],
    store: RecordStore,
    intent: Mapping[str, Any],
) -> None:
    """Given the trail, an intent's seq, its pending file's content, its store and its entry in
    the trail (``intent``: what settles it, SETTLED_BY, is read there: the pending file is not
    chained, and an entry without them settles by looking, as before), record which of its
    records are gone (``batch.reconciled``) and clear its pending file."""
    extra: dict[str, Any] = {}
    if "partition" in pending:
        leaves = read_leaves(writer.directory, seq)
        not_done_count = len(leaves)
        if _partition_exists(
            store, pending["dataset"], pending["partition"], intent.get("partition_identity")
        ):
            leaves = []
        else:
            not_done_count = 0
        done_count = len(leaves)
    else:
        keys = pending_keys(pending)
        status, not_done = _not_done(writer, seq, pending, keys, store, intent.get("transaction"))
        not_done_count = len(not_done)
        done = [key for key in keys if key not in not_done]
        done_count = len(done)
        leaves = writer.record_leaves(pending["store"], pending["dataset"], done)
        detail = detail_of_pending(pending)
        extra = counted_detail(detail, tuple(keys), not_done)
        if detail.children:
            counts: dict[str, int] = {}
            for child in detail.children:
                # The child rows the intent names went in its transaction, with their parents:
                # all of them if it committed, none if not; without it, a child row still
                # there was not deleted (its parent's transaction rolled back).
                if status is None:
                    left = store.existing_keys(child.table, list(child.key), list(child.keys))
                else:
                    left = set(child.keys) if status == "aborted" else set()
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
            "leaves_root": writer.leaves_root(leaves),
            **extra,
        },
    )
    writer.clear_pending(seq)


def _not_done(
    writer: TrailWriter,
    seq: int,
    pending: dict[str, Any],
    keys: list[tuple[Any, ...]],
    store: RecordStore,
    transaction: int | None,
) -> tuple[str | None, set[tuple[Any, ...]]]:
    """Whether an interrupted batch's transaction "committed" or "aborted" (None: unknown, or
    not named), and which of its records it did not purge. When its intent named its
    transaction, exactly: none of them if that transaction did not commit, else those it
    recorded before its COMMIT as not purged (none if it recorded nothing: a batch that locked
    its rows purges all or rolls back), whatever happened to the records since. Otherwise
    (MariaDB, SQLite, objects, files, older trails, a transaction the database no longer
    knows): those still there, or still not anonymised."""
    if transaction is not None:
        status = _transaction_status(store, int(transaction))
        if status == "aborted":
            return status, set(keys)
        if status == "committed":
            try:
                return status, set(writer.not_done_keys(seq) or ())
            except UnauthenticNote as error:
                # Believe neither it nor its absence: look, as for a batch without a note.
                get_logger().error(
                    "audit.note_rejected",
                    intent=seq,
                    rule=pending.get("rule"),
                    reason=f"{error}: its records still there are taken as not purged, the "
                    "others as purged",
                )
                return None, _still_there(pending, keys, store)
        get_logger().warning(
            "audit.transaction_forgotten",
            intent=seq,
            rule=pending.get("rule"),
            reason="the database no longer knows whether the batch's transaction committed: "
            "its records still there are taken as not purged, the others as purged",
        )
    return None, _still_there(pending, keys, store)


def _still_there(
    pending: dict[str, Any], keys: list[tuple[Any, ...]], store: RecordStore
) -> set[tuple[Any, ...]]:
    return store.existing_keys(
        pending["dataset"], pending["key_columns"], keys, pending.get("marker_column")
    )


def _transaction_status(store: RecordStore, transaction: int) -> str | None:
    status = getattr(store, "transaction_status", None)
    if status is None:
        raise AuditFailure(
            f"store {store!r} cannot say whether transaction {transaction} committed"
        )
    result: str | None = status(transaction)
    return result


def _partition_exists(store: RecordStore, table: str, partition: str, identity: str | None) -> bool:
    """Whether a partition whose drop a crash interrupted is still there: then nothing of it
    was dropped (its drop is one transaction, or atomic DDL); else all of it was. With its
    identity (recorded by this version), the same partition, not one created since under its
    name; without (an older version's pending file), any partition of that name."""
    exists = getattr(store, "partition_exists", None)
    if exists is None:
        raise AuditFailure(f"store {store!r} cannot say whether partition {partition!r} is there")
    return bool(exists(table, partition, identity))


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
        if intent.get("type") != "batch.intent" or (
            "pending_mac" not in intent and intent.get("leaves_root") != keys.get("leaves_root")
        ):
            # The intent never reached the trail, so nothing was written to the store. (An
            # intent with its pending file's HMAC says which file is its own: the check below.)
            writer.clear_pending(seq)
            continue
        if seq in settled_intents:
            writer.clear_pending(seq)
            continue
        try:
            authentic = authentic_pending(writer, seq, keys, intent)
        except UnauthenticPending as error:
            pending_rejected(seq, intent, error)
            continue
        try:
            reconcile_one(writer, run_id, seq, authentic, store_for(authentic["store"]), intent)
        except StoreUnavailable:
            continue
        settled += 1
    return settled


def authentic_pending(
    writer: TrailWriter, seq: int, pending: dict[str, Any], intent: Mapping[str, Any]
) -> dict[str, Any]:
    """Given the trail, an intent's seq, its pending file's content and its entry in the trail,
    return what to settle it by: a dropped partition's (named by its entry), the entry's
    alone; otherwise the pending file's content if its HMAC checks against the entry's
    ``pending_mac`` (an older version's entry has none: its keys and child rows must make the
    entry's ``leaves_root``), with the entry's ``CHAINED`` fields. UnauthenticPending if not.

    Example: a pending file edited to name another table, or other keys, is refused.
    """
    if isinstance(intent.get("partition"), str):
        # Whether that partition is still there settles it: nothing of the file is needed.
        return {name: intent[name] for name in (*CHAINED, *SETTLED_BY) if name in intent}
    mac = intent.get("pending_mac")
    content = (
        writer.authentic_pending(seq, str(mac))
        if mac is not None
        else _checked_by_leaves(writer, seq, pending, intent)
    )
    return {**content, **{name: intent[name] for name in CHAINED if name in intent}}


def _checked_by_leaves(
    writer: TrailWriter, seq: int, pending: dict[str, Any], intent: Mapping[str, Any]
) -> dict[str, Any]:
    """An older version's pending file (no HMAC in its entry): its keys and child rows, hashed
    under the entry's store and dataset, must make the entry's ``leaves_root``. Its key
    columns, marker column, markers and sizes cannot be checked (docs/audit.md)."""
    if "partition" in pending or intent.get("v") != FORMAT_VERSION:
        return pending  # no keys to hash, or leaves of another format: as before
    store, dataset = intent.get("store"), intent.get("dataset")
    try:
        if not isinstance(store, str) or not isinstance(dataset, str):
            raise TypeError("its entry names no store and dataset")
        leaves = writer.record_leaves(store, dataset, pending_keys(pending))
        for child in detail_of_pending(pending).children:
            leaves += writer.record_leaves(store, child.table, child.keys)
        leaves.sort()
        root = writer.leaves_root(leaves)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise UnauthenticPending(f"pending/{seq:08d}.json is malformed: {error}") from error
    if root != intent.get("leaves_root"):
        raise UnauthenticPending(
            f"pending/{seq:08d}.json does not name the records its intent's leaves_root does "
            "(edited)"
        )
    return pending


def pending_rejected(seq: int, intent: Mapping[str, Any], error: UnauthenticPending) -> None:
    """A pending file not believed: nothing is claimed of its batch, which stays unsettled
    (``audit show`` counts it), its file kept for whoever looks into it; every run says so."""
    get_logger().error(
        "audit.pending_rejected",
        intent=seq,
        rule=intent.get("rule"),
        reason=f"{error}: its batch stays unsettled, nothing of it claimed; look at who wrote "
        "to the audit directory",
    )


def _unreadable_pending(
    writer: TrailWriter, seq: int, intent: dict[str, Any], settled: bool
) -> None:
    """An empty or torn pending file (a crash or a full disk while it was written: a batch's
    files are created at once and written in place, then fsynced, before its intent) was never
    acknowledged: its writing failed, so the intent after it was never appended and nothing
    was written to the store. Drop it. Only when an unsettled intent of
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


def pending_keys(pending: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Given a pending file's content, return its records' keys as tuples: from ``keys`` (each
    an array) or ``key_values`` (the values of a one-column key).

    Example: ``pending_keys({"key_values": [4, 7]})`` is ``[(4,), (7,)]``.
    """
    if "key_values" in pending:
        return [(value,) for value in pending["key_values"]]
    return [tuple(key) for key in pending["keys"]]
