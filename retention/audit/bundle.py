"""Proof bundles: one record's purge, in a file an auditor checks alone.

A bundle holds the record's leaf, the exact line of the batch entry whose leaves hold it (a
``batch.intent`` and the ``batch.result`` that committed it, or a ``batch.reconciled``), the
inclusion path of the leaf under the entry's ``leaves_root``, the exact line of a signed
checkpoint after them, and the inclusion paths of those entry lines under the checkpoint's
``root``. Checking it needs the public key file only: no config, no HMAC key, no trail.

The bundle is canonical JSON (RFC 8785) with no field that is not checked, so that a change to
any of its bytes makes the check fail. It does not name the record: linking a leaf to a record
takes the HMAC key, which only the operator holds (``audit prove`` prints the record beside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retention.audit.batch_detail import children_count
from retention.audit.entries import (
    FORMAT_VERSIONS,
    canonical,
    leaves_per_chunk,
    parse_json,
    read_entries,
    read_leaves,
)
from retention.audit.entry_checks import hex_problem, json_object, signature_problem
from retention.audit.keys import PublicKey
from retention.audit.leaves import LEAF_FUNCTIONS
from retention.audit.merkle import (
    chunked_root,
    hashed_inclusion_proof,
    leaf_hash,
    verify_chunked_inclusion,
    verify_inclusion,
)
from retention.audit.prove import Proof, Search
from retention.config import read_within
from retention.errors import AuditFailure, UsageError

BUNDLE_FORMAT = "retention-proof"
SCHEMA_VERSION = 1
BUNDLE_FIELDS = {
    "format",
    "schema_version",
    "leaf",
    "entry",
    "inclusion",
    "chunk",
    "settlement",
    "not_done_leaves",
    "checkpoint",
    "entry_inclusion",
    "settlement_inclusion",
}
PATH_FIELDS = {"index", "size", "path"}


def _path(index: int, size: int, path: Sequence[bytes]) -> dict[str, Any]:
    return {"index": index, "size": size, "path": [node.hex() for node in path]}


def make_bundle(directory: Path, search: Search, proof: Proof) -> bytes:
    """Given an audit directory, a search and one of its verified proofs, return the bundle's
    bytes (canonical JSON); AuditFailure when no signed checkpoint covers the proof yet, or when
    the entries it names are not where their seq says (the trail was altered)."""
    if proof.checkpoint is None or not proof.verified:
        raise AuditFailure(
            f"batch seq {proof.seq} is not yet covered by a signed checkpoint: no bundle written"
        )
    hashes: list[bytes] = []
    lines: dict[int, bytes] = {}
    seqs: dict[int, object] = {}
    wanted = {proof.seq, proof.checkpoint} | (
        set() if proof.settled_by is None else {proof.settled_by}
    )
    for stored in read_entries(directory):
        if len(hashes) > proof.checkpoint:
            break
        if len(hashes) in wanted:
            lines[len(hashes)] = stored.raw
            seqs[len(hashes)] = stored.content.get("seq")
        hashes.append(leaf_hash(stored.raw))
    # The proof found its entries by the seq they hold; a line removed before them (which the
    # proof, checking leaves, does not see) leaves them elsewhere in the file than their seq.
    misplaced = sorted(seq for seq in wanted if seq not in lines or seqs[seq] != seq)
    if misplaced:
        raise AuditFailure(
            f"the trail's entry at seq {misplaced[0]} is missing or holds another seq: it was "
            "altered (an entry removed or inserted; run `retention audit verify`): no bundle "
            "written"
        )
    size = proof.checkpoint
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "leaf": proof.leaf.hex(),
        "entry": lines[proof.seq].decode(),
        "inclusion": _path(proof.index, proof.size, proof.path),
        "checkpoint": lines[proof.checkpoint].decode(),
        "entry_inclusion": _path(proof.seq, size, hashed_inclusion_proof(hashes[:size], proof.seq)),
    }
    if proof.chunk:
        bundle["chunk"] = [leaf.hex() for leaf in proof.chunk]
    if proof.settled_by is not None:
        settlement = lines[proof.settled_by]
        bundle["settlement"] = settlement.decode()
        bundle["settlement_inclusion"] = _path(
            proof.settled_by, size, hashed_inclusion_proof(hashes[:size], proof.settled_by)
        )
        if "not_done_root" in parse_json(settlement):
            bundle["not_done_leaves"] = [
                leaf.hex() for leaf in read_leaves(directory, proof.settled_by)
            ]
    return canonical(bundle)


@dataclass(frozen=True)
class CheckedProof:
    """What a valid bundle proves: a leaf purged in a batch, covered by a signed checkpoint."""

    leaf: str
    entry: dict[str, Any]
    settlement: dict[str, Any] | None
    checkpoint: dict[str, Any]


def _line(bundle: dict[str, Any], name: str) -> tuple[bytes, dict[str, Any]]:
    """Given the bundle and the name of a field holding an entry's line, return its bytes and
    content; AuditFailure unless it is canonical JSON."""
    text = bundle.get(name)
    if not isinstance(text, str):
        raise AuditFailure(f"{name}: missing or not a string")
    raw = text.encode()
    try:
        content = json_object(raw)
        is_canonical = canonical(content) == raw
    except ValueError:
        is_canonical, content = False, {}
    if not is_canonical or hex_problem(content):
        raise AuditFailure(f"{name}: not an entry in canonical JSON")
    return raw, content


def _inclusion(bundle: dict[str, Any], name: str) -> tuple[int, int, list[bytes]]:
    """Given the bundle and the name of an inclusion path field, return (index, size, path)."""
    value = bundle.get(name)
    if not isinstance(value, dict) or set(value) != PATH_FIELDS:
        raise AuditFailure(f"{name}: not an inclusion path (index, size, path)")
    index, size, path = value["index"], value["size"], value["path"]
    if not (isinstance(index, int) and isinstance(size, int) and isinstance(path, list)):
        raise AuditFailure(f"{name}: not an inclusion path (index, size, path)")
    if any(hex_problem({"root": node}) for node in path):
        raise AuditFailure(f"{name}: a node of its path is not 64 lowercase hex digits")
    return index, size, [bytes.fromhex(node) for node in path]


def _in_checkpoint(
    bundle: dict[str, Any],
    name: str,
    raw: bytes,
    content: dict[str, Any],
    checkpoint: dict[str, Any],
) -> None:
    """Check that an entry's line is in the checkpoint's tree at its seq."""
    index, size, path = _inclusion(bundle, f"{name}_inclusion")
    if index != content.get("seq") or size != checkpoint["size"]:
        raise AuditFailure(
            f"{name}: its path is not for seq {content.get('seq')} of the checkpoint"
        )
    if not verify_inclusion(raw, index, size, path, bytes.fromhex(checkpoint["root"])):
        raise AuditFailure(f"{name}: not in the tree the checkpoint signed")


def check_bundle(raw_bundle: bytes, keys: Sequence[PublicKey]) -> CheckedProof:
    """Given a bundle's bytes and the public keys, return what it proves; AuditFailure with the
    reason when any part of it does not check."""
    try:
        bundle = json_object(raw_bundle.rstrip(b"\n"))
        is_canonical = canonical(bundle) == raw_bundle.rstrip(b"\n")
    except ValueError as error:
        raise AuditFailure(f"not a proof bundle (JSON): {error}") from error
    if not is_canonical:
        raise AuditFailure("not canonical JSON (RFC 8785): the bundle was edited")
    if bundle.get("format") != BUNDLE_FORMAT or bundle.get("schema_version") != SCHEMA_VERSION:
        raise AuditFailure(f"not a {BUNDLE_FORMAT} bundle of schema_version {SCHEMA_VERSION}")
    if not set(bundle) <= BUNDLE_FIELDS:
        raise AuditFailure(f"unknown fields {sorted(set(bundle) - BUNDLE_FIELDS)}")
    leaf_text = bundle.get("leaf")
    if not isinstance(leaf_text, str) or hex_problem({"root": leaf_text}):
        raise AuditFailure("leaf: not 64 lowercase hex digits")
    leaf = bytes.fromhex(leaf_text)
    _, checkpoint = _line(bundle, "checkpoint")
    if checkpoint.get("type") != "checkpoint" or not isinstance(checkpoint.get("size"), int):
        raise AuditFailure("checkpoint: not a checkpoint entry")
    problem = signature_problem(checkpoint, keys)
    if problem:
        raise AuditFailure(f"checkpoint: {problem}")
    entry_raw, entry = _line(bundle, "entry")
    if entry.get("v") not in FORMAT_VERSIONS or isinstance(entry.get("v"), bool):
        raise AuditFailure(f"entry: unknown trail format version {entry.get('v')!r}")
    _in_checkpoint(bundle, "entry", entry_raw, entry, checkpoint)
    settlement = _check_settlement(bundle, entry, checkpoint)
    index, size, path = _inclusion(bundle, "inclusion")
    count = entry.get("selected") if entry.get("type") == "batch.intent" else entry.get("done")
    if isinstance(count, int):
        # The leaves of the child rows deleted with the batch's records are in the same tree.
        count += children_count(entry)
    root = entry.get("leaves_root")
    if size != count or not isinstance(root, str):
        raise AuditFailure(f"inclusion: tree size {size} is not the entry's count {count}")
    per_chunk = leaves_per_chunk(entry)
    chunk = _chunk(bundle, leaf, per_chunk)
    if not verify_chunked_inclusion(leaf, index, size, chunk, path, bytes.fromhex(root), per_chunk):
        raise AuditFailure("inclusion: the leaf is not in the entry's leaves_root")
    return CheckedProof(leaf_text, entry, settlement, checkpoint)


def _chunk(bundle: dict[str, Any], leaf: bytes, per_chunk: int) -> list[bytes]:
    """Given the bundle, its leaf and the entry's leaves per chunk, return the leaves of the
    leaf's chunk: the bundle's ``chunk`` (format 2), or the leaf alone (format 1, no ``chunk``)."""
    chunk = bundle.get("chunk")
    if per_chunk == 1:
        if chunk is not None:
            raise AuditFailure("chunk: given for an entry whose tree has one leaf per record")
        return [leaf]
    if not isinstance(chunk, list) or any(hex_problem({"root": text}) for text in chunk):
        raise AuditFailure("chunk: missing or not a list of leaves")
    return [bytes.fromhex(text) for text in chunk]


def _check_settlement(
    bundle: dict[str, Any], entry: dict[str, Any], checkpoint: dict[str, Any]
) -> dict[str, Any] | None:
    """Check how the entry's batch was settled: a reconciled entry settles itself; an intent
    needs its committed batch.result, and the leaf must not be among the leaves it did not
    purge. Return the result, or None for a reconciled entry."""
    if entry.get("type") == "batch.reconciled":
        if "settlement" in bundle or "not_done_leaves" in bundle:
            raise AuditFailure("a reconciled batch has no settlement")
        return None
    if entry.get("type") != "batch.intent":
        raise AuditFailure("entry: neither a batch.intent nor a batch.reconciled")
    raw, settlement = _line(bundle, "settlement")
    _in_checkpoint(bundle, "settlement", raw, settlement, checkpoint)
    if (
        settlement.get("type") != "batch.result"
        or settlement.get("intent") != entry.get("seq")
        or settlement.get("status") != "committed"
    ):
        raise AuditFailure("settlement: not the committed batch.result of this intent")
    if "children" in entry and settlement.get("children_deleted") != children_count(entry):
        raise AuditFailure("settlement: it did not delete the child rows its intent named")
    not_done = bundle.get("not_done_leaves")
    if "not_done_root" in settlement:
        if not isinstance(not_done, list) or any(hex_problem({"root": x}) for x in not_done):
            raise AuditFailure("not_done_leaves: missing or not a list of leaves")
        leaves = [bytes.fromhex(text) for text in not_done]
        root = chunked_root(leaves, leaves_per_chunk(settlement))
        if root.hex() != settlement["not_done_root"]:
            raise AuditFailure("not_done_leaves: not the leaves of not_done_root")
        if bundle["leaf"] in not_done:
            raise AuditFailure("the batch committed, but not this record: it was not purged")
    elif not_done is not None:
        raise AuditFailure("not_done_leaves given for a batch that purged all it selected")
    return settlement


# A bundle holds one record's path and its batch's leaves not purged (a batch holds at most
# 100,000 records); past this the file is something else (/dev/zero never ends).
LONGEST_BUNDLE_BYTES = 64 * 2**20


def read_bundle(path: Path) -> bytes:
    """Given a bundle's path, return its bytes; UsageError when it cannot be read."""
    return read_within(path, LONGEST_BUNDLE_BYTES, "a proof bundle", UsageError)


def render_checked(checked: CheckedProof) -> str:
    """Given a valid bundle's content, say what it proves, for people."""
    entry, checkpoint = checked.entry, checked.checkpoint
    how = (
        f"committed by batch.result seq {checked.settlement['seq']} at {checked.settlement['time']}"
        if checked.settlement
        else f"reconciled after a crash at {entry['time']}"
    )
    return "\n".join(
        [
            f"valid: leaf {checked.leaf} was purged",
            f"  batch      seq {entry['seq']} ({entry['type']}) of run {entry['run_id']}",
            f"  rule       {entry['rule']} ({entry.get('action', '?')}) on "
            f"{entry['store']}/{entry['dataset']}",
            *(
                [f"  with       its child rows in {', '.join(sorted(entry['children']))}"]
                if isinstance(entry.get("children"), dict) and entry["children"]
                else []
            ),
            f"  policy     {entry.get('policy') or '-'}",
            f"  format     {entry['v']}: the leaf is {LEAF_FUNCTIONS[entry['v']]} of the record's "
            "locator under the audit key",
            f"  settled    {how}",
            f"  signed     checkpoint seq {checkpoint['seq']} at {checkpoint['time']}, key "
            f"{checkpoint['key_id']}, covering {checkpoint['size']} entries",
        ]
    )
