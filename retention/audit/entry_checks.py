"""The checks of one entry that need nothing but the entry (and the public keys): its fields and
their types, its hex spelled canonically, its time, a checkpoint's signature; and the check of a
batch's leaves file against its root. Used by ``verify`` (the whole trail) and ``bundle`` (one
proof taken away).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.audit.entries import checkpoint_payload, parse_json
from retention.audit.keys import AuditKeyError, PublicKey, key_id_of, load_public_keys
from retention.audit.merkle import MerkleFrontier, leaf_hash

LEAF_BYTES = 32

# The fields each entry type must carry (beyond v, seq, prev, type, time), with their JSON types.
ENTRY_FIELDS: dict[str, dict[str, type]] = {
    "config.changed": {"run_id": str, "digest": str},
    "run.started": {"run_id": str, "plan_id": str, "rules": list},
    "batch.intent": {
        "run_id": str,
        "rule": str,
        "store": str,
        "dataset": str,
        "action": str,
        "selected": int,
        "leaves_root": str,
    },
    "batch.result": {
        "run_id": str,
        "rule": str,
        "intent": int,
        "status": str,
        "done": int,
        "held": int,
        "failed": int,
        "children_deleted": int,
    },
    "batch.reconciled": {
        "run_id": str,
        "rule": str,
        "intent": int,
        "done": int,
        "not_done": int,
        "leaves_root": str,
    },
    "run.finished": {"run_id": str, "exit_code": int, "outcomes": list},
    "checkpoint": {"size": int, "root": str, "key_id": str, "signature": str},
    "hold.added": {"hold_id": int, "rule": str, "kind": str, "target_digest": str, "reason": str},
    "hold.released": {"hold_id": int, "rule": str, "kind": str, "reason": str},
}

# Fields that hold hex, with their length: only the canonical spelling (lowercase, that many
# digits) is accepted, so that no digit's case can be changed without a check noticing.
HEX_FIELDS = {
    "prev": 64,
    "leaves_root": 64,
    "not_done_root": 64,
    "versions_digest": 64,
    "pending_mac": 64,
    "root": 64,
    "target_digest": 64,
    "key_id": 16,
    "signature": 128,
}
HEX_DIGITS = frozenset("0123456789abcdef")


def hex_problem(content: dict[str, Any]) -> str | None:
    """Given an entry, return which hex field is not in canonical form (lowercase, its length),
    or None; an absent field, or a null where the format allows one, is not checked here.

    Example: ``hex_problem({"signature": "AB" * 64})`` names ``signature``.
    """
    for name, length in HEX_FIELDS.items():
        value = content.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) != length or not HEX_DIGITS.issuperset(value):
            return f"field {name!r} is not {length} lowercase hex digits"
    return None


def in_utc(moment: datetime) -> bool:
    """Given an aware datetime, return whether UTC can hold it (years 1 to 9999 there too).

    Example: ``in_utc(datetime.fromisoformat("9999-12-31T23:00:00-14:00"))`` is False.
    """
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def parse_time(value: object) -> datetime | None:
    """Given an entry's time field, return it as an aware datetime, or None if it is not an
    ISO 8601 time with an offset, or one that UTC cannot hold (every reader turns it to UTC:
    ``9999-12-31T23:00:00-14:00`` would overflow there)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None and in_utc(moment) else None


def load_verification_keys(path: Path) -> tuple[PublicKey, ...]:
    """Given the public key file, return its keys; AuditKeyError (exit 78) when it cannot be read,
    a key id does not belong to its key, or a window is not a time with an offset."""
    keys = load_public_keys(path)
    for key in keys:
        if key.key_id != key_id_of(key.raw):
            raise AuditKeyError(f"{str(path)!r}: key id {key.key_id} is not its public key's id")
        for moment in (key.not_before, key.not_after):
            if moment is not None and moment.tzinfo is None:
                raise AuditKeyError(
                    f"{str(path)!r}: the window of key {key.key_id} has a time without an offset"
                )
            if moment is not None and not in_utc(moment):
                raise AuditKeyError(
                    f"{str(path)!r}: the window of key {key.key_id} has a time that UTC cannot "
                    "hold (past the years 1 to 9999)"
                )
    return keys


def signature_problem(content: dict[str, Any], keys: Sequence[PublicKey]) -> str | None:
    """Given a checkpoint and the public keys, return why its signature is not valid, or None:
    the key id must be known, its window must cover the checkpoint's time, and the Ed25519
    signature must verify over ``checkpoint_payload``."""
    key_id = content.get("key_id")
    candidates = [key for key in keys if key.key_id == key_id]
    if not candidates:
        return f"signed by key {key_id!r}, which is not in the public key file"
    moment = parse_time(content.get("time"))
    if moment is None:
        return f"time {content.get('time')!r} is not an ISO 8601 time with an offset"
    in_window = [key for key in candidates if key.covers(moment)]
    if not in_window:
        windows = ", ".join(
            f"{key.not_before.isoformat()} to {key.not_after.isoformat() if key.not_after else '…'}"
            for key in candidates
        )
        return f"signed by key {key_id} at {moment.isoformat()}, outside its window ({windows})"
    signature_text = content.get("signature")
    if not isinstance(signature_text, str) or hex_problem({"signature": signature_text}):
        return "signature is not 128 lowercase hex digits"
    signature = bytes.fromhex(signature_text)
    for key in in_window:
        try:
            if key.verify(signature, checkpoint_payload(content)):
                return None
        except ValueError:
            return f"public key {key_id} in the key file is not a valid Ed25519 key"
    return f"signature does not verify with key {key_id}"


def field_problem(content: dict[str, Any]) -> str | None:
    """Given a parsed entry of a known type, return which required field is missing or of the
    wrong type, or None."""
    for name, kind in ENTRY_FIELDS[content["type"]].items():
        value = content.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} is missing or not {kind.__name__}"
    return hex_problem(content)


def leaves_summary(path: Path, per_chunk: int = 1) -> tuple[int, bytes] | str:
    """Given a leaves file and how many leaves make one tree leaf (``leaves_per_chunk``), stream
    it and return (count, RFC 6962 root), or why it is malformed: each line must be 64 lowercase
    hex digits and a newline, in sorted order, each leaf once (a batch names each record once: a
    repeated leaf would count one deletion twice)."""
    frontier = MerkleFrontier()
    previous = b""
    chunk: list[bytes] = []
    count = 0
    try:
        with path.open("rb") as handle:
            # A line is 64 hex digits and a newline; a longer one is not read past that.
            lines = iter(lambda: handle.readline(2 * LEAF_BYTES + 2), b"")
            for number, line in enumerate(lines, start=1):
                text = line[:-1]
                try:
                    leaf = bytes.fromhex(text.decode("ascii"))
                except ValueError:
                    leaf = b""
                if line[-1:] != b"\n" or len(leaf) != LEAF_BYTES or leaf.hex().encode() != text:
                    return f"leaves file {path.name} line {number} is not a 32-byte hex leaf"
                if leaf < previous:
                    return f"leaves file {path.name} line {number} is out of order"
                if leaf == previous:
                    return (
                        f"leaves file {path.name} line {number} repeats the leaf before it: "
                        "one record counted twice"
                    )
                previous = leaf
                count += 1
                chunk.append(leaf)
                if len(chunk) == per_chunk:
                    frontier.add(leaf_hash(b"".join(chunk)))
                    chunk.clear()
    except FileNotFoundError:
        return f"its leaves file {path.name} is missing"
    except OSError as error:
        return f"its leaves file {path.name} cannot be read: {error.strerror}"
    if chunk:
        frontier.add(leaf_hash(b"".join(chunk)))
    return count, frontier.root()


def json_object(raw: bytes) -> dict[str, Any]:
    """Given a line, return the JSON object it holds; ValueError when it holds none."""
    content = parse_json(raw)
    if not isinstance(content, dict):
        raise ValueError("not a JSON object")
    return content
