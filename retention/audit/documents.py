"""`audit prove` and `audit erasures` as JSON documents (docs/json.md): ``schema_version``,
every key always present, times ISO 8601 UTC with offset +00:00. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from retention.audit.prove import ErasureRun, Search
from retention.documents import iso_instant

PROVE_SCHEMA_VERSION = 1
ERASURES_SCHEMA_VERSION = 1


def _time(text: str | None) -> str | None:
    return iso_instant(datetime.fromisoformat(text)) if text else None


def proof_document(search: Search) -> dict[str, object]:
    """Given what the trail says about one record, return it as `audit prove --output json`
    prints it: each batch that purged it with its inclusion proof, and the batches that selected
    it without purging it."""
    return {
        "schema_version": PROVE_SCHEMA_VERSION,
        "locator": search.locator,
        "leaf": search.leaf.hex(),
        "purged": bool(search.proofs),
        "proven": search.proven,
        "proofs": [
            {
                "seq": proof.seq,
                "entry_type": proof.entry_type,
                "settled_by": proof.settled_by,
                "run_id": proof.run_id,
                "rule": proof.rule,
                "action": proof.action,
                "time": _time(proof.time),
                "format": proof.version,
                "leaf": proof.leaf.hex(),
                "index": proof.index,
                "size": proof.size,
                "root": proof.root.hex(),
                "path": [node.hex() for node in proof.path],
                "chunk": [leaf.hex() for leaf in proof.chunk],
                "verified": proof.verified,
                "checkpoint": proof.checkpoint,
            }
            for proof in search.proofs
        ],
        "not_purged": [{"seq": seq, "status": status} for seq, status in search.not_purged],
    }


def erasures_document(erasures: Sequence[ErasureRun]) -> dict[str, object]:
    """Given the erasure runs of one subject, return them as `audit erasures --output json`
    prints them (never the subject)."""
    return {
        "schema_version": ERASURES_SCHEMA_VERSION,
        "erasures": [
            {
                "run_id": erasure.run_id,
                "reference": erasure.reference,
                "started": _time(erasure.started),
                "finished": _time(erasure.finished),
                "exit_code": erasure.exit_code,
                "outcomes": list(erasure.outcomes),
            }
            for erasure in erasures
        ],
    }
