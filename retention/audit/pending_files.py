"""The pending files of the batches in flight, beside the trail: ``pending/<seq>.json``, the
raw keys of intent ``<seq>`` until its result is durable (so that a crash can be reconciled),
and ``pending/<seq>.not_done.json``, those its transaction did not purge (written before it
commits). Neither is chained: the audit key's HMAC vouches for each."""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retention.audit.durable import write_durably
from retention.audit.entries import parse_json
from retention.errors import AuditFailure


class UnauthenticNote(AuditFailure):
    """A note of the keys a batch did not purge whose HMAC does not check: not to be believed."""


class UnauthenticPending(AuditFailure):
    """A pending file whose HMAC (in its intent's entry) does not check, or whose keys are not
    those its intent's leaves name: edited, or another's; nothing it says is believed."""


def pending_path(directory: Path, seq: int) -> Path:
    return directory / "pending" / f"{seq:08d}.json"


def not_done_path(directory: Path, seq: int) -> Path:
    return directory / "pending" / f"{seq:08d}.not_done.json"


def pending_text(pending: dict[str, Any], key_values: bytes | None) -> bytes:
    """The pending file's JSON: ``pending``, plus ``key_values`` spelled already (an array)."""
    text = json.dumps(pending, default=str).encode()
    if key_values is None:
        return text
    return text[:-1] + b', "key_values": ' + key_values + b"}"


def pending_mac(hmac_key: bytes, seq: int, content: bytes) -> str:
    """The HMAC, under the audit key, of intent ``seq``'s pending file (its bytes)."""
    message = b"retention pending\x00%d\x00" % seq + content
    return hmac.digest(hmac_key, message, "sha256").hex()


def authentic_pending(directory: Path, hmac_key: bytes, seq: int, mac: str) -> dict[str, Any]:
    """Given intent ``seq`` and the ``pending_mac`` its entry records, return its pending
    file's content, read from the bytes that HMAC was checked against.
    UnauthenticPending when it does not check (the file edited, or another intent's) or
    is not a JSON object."""
    try:
        content = pending_path(directory, seq).read_bytes()
    except OSError as error:
        raise AuditFailure(f"cannot read the pending keys of entry {seq}: {error}") from error
    if not hmac.compare_digest(mac, pending_mac(hmac_key, seq, content)):
        raise UnauthenticPending(
            f"pending/{seq:08d}.json is not the file its intent's pending_mac names (edited)"
        )
    try:
        parsed = parse_json(content)
    except ValueError as error:
        raise UnauthenticPending(f"pending/{seq:08d}.json is not JSON") from error
    if not isinstance(parsed, dict):
        raise UnauthenticPending(f"pending/{seq:08d}.json is not a JSON object")
    return parsed


def clear_pending(directory: Path, seq: int) -> None:
    """Given intent ``seq``, remove its pending keys and its note of keys not purged."""
    try:
        # The note first: a crash between the two leaves no note without its pending keys
        # (an intent cleared is settled, so its note is never read).
        not_done_path(directory, seq).unlink(missing_ok=True)
        pending_path(directory, seq).unlink(missing_ok=True)
    except OSError as error:
        raise AuditFailure(f"cannot clear the pending keys of entry {seq}: {error}") from error


def write_not_done(
    directory: Path, hmac_key: bytes, seq: int, keys: Sequence[Sequence[object]]
) -> None:
    """Given intent ``seq`` and the keys of it that its batch's transaction did not purge,
    write them durably beside its pending keys (each an array, spelled as they are), before
    that transaction commits, with their HMAC under the audit key (``not_done_keys``)."""
    keys_text = json.dumps([list(key) for key in keys], default=str)
    mac = not_done_mac(hmac_key, seq, keys_text)
    text = f'{{"mac": "{mac}", "keys": {keys_text}}}'.encode()
    try:
        write_durably(not_done_path(directory, seq), text)
    except OSError as error:
        raise AuditFailure(f"cannot write the keys entry {seq} did not purge: {error}") from error


def not_done_keys(directory: Path, hmac_key: bytes, seq: int) -> list[tuple[Any, ...]] | None:
    """The keys ``write_not_done`` wrote for intent ``seq``, as tuples; None if it wrote
    none (its batch's transaction purged all of them, or never committed).
    UnauthenticNote when the note's HMAC does not check (edited, or written for another
    intent): the pending files are not chained, so only the audit key vouches for it."""
    try:
        content = parse_json(not_done_path(directory, seq).read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        raise AuditFailure(f"cannot read the keys entry {seq} did not purge: {error}") from error
    except ValueError as error:
        raise UnauthenticNote(
            f"the note of the keys entry {seq} did not purge is not JSON"
        ) from error
    keys = content.get("keys") if isinstance(content, dict) else None
    mac = content.get("mac") if isinstance(content, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, list) for key in keys):
        raise UnauthenticNote(f"the note of the keys entry {seq} did not purge is malformed")
    if not isinstance(mac, str) or not hmac.compare_digest(
        mac, not_done_mac(hmac_key, seq, json.dumps(keys))
    ):
        raise UnauthenticNote(f"the note of the keys entry {seq} did not purge does not check")
    return [tuple(key) for key in keys]


def not_done_mac(hmac_key: bytes, seq: int, keys_text: str) -> str:
    """The HMAC, under the audit key, of intent ``seq``'s note of keys not purged (their
    JSON text, as ``json.dumps`` spells it on writing and again on reading)."""
    message = b"retention not done\x00%d\x00" % seq + keys_text.encode()
    return hmac.digest(hmac_key, message, "sha256").hex()


def pending_keys(directory: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """The raw keys of every batch in flight, by the seq of its intent; None for a file
    that is empty or torn (its writing never finished, so it was never acknowledged)."""
    found: list[tuple[int, dict[str, Any] | None]] = []
    for path in sorted((directory / "pending").glob("*.json")):
        if not path.stem.isdigit():
            continue
        try:
            content = parse_json(path.read_bytes())
        except ValueError:
            content = None
        readable = isinstance(content, dict) and any(
            isinstance(content.get(name), kind)
            for name, kind in (("keys", list), ("key_values", list), ("partition", str))
        )
        found.append((int(path.stem), content if readable else None))
    return found


def clear_unfinished_pending(directory: Path) -> None:
    """Remove the temporary files of pending keys whose writing a crash cut short (an older
    version wrote them aside, then renamed them): never renamed into place, so their intent
    was never appended."""
    try:
        for path in (directory / "pending").glob("*.json.tmp"):
            path.unlink(missing_ok=True)
    except OSError as error:
        raise AuditFailure(f"cannot clear unfinished pending keys: {error}") from error
