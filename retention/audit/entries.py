"""The trail's format on disk, and reading it back: canonical JSON entries (RFC 8785), one a
line, in numbered segment files, each entry carrying the SHA-256 of the previous one; and beside
them the sorted leaves (and object versions) of each batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import rfc8785

from retention.errors import AuditFailure, UsageError, os_error_said

# Version 2: a batch's leaves_root is the RFC 6962 root over chunks of LEAVES_PER_CHUNK sorted
# leaves (one tree leaf per chunk), not over single leaves as in version 1. Version 3: a record's
# leaf is keyed BLAKE2s-256 of its locator, not HMAC-SHA256 (leaves.py). Entries of every version
# verify; a writer appends version 3 from where any trail ends.
FORMAT_VERSION = 3
FORMAT_VERSIONS = (1, 2, 3)
LEAVES_PER_CHUNK = 64
GENESIS = "0" * 64
SEGMENT_GLOB = "*.jsonl"


def canonical(entry: dict[str, Any]) -> bytes:
    """Given an entry, return its RFC 8785 canonical JSON bytes."""
    return rfc8785.dumps(entry)


def entry_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def leaves_per_chunk(entry: dict[str, Any]) -> int:
    """Given an entry (its ``v``), return how many leaves make one leaf of its leaves_root's tree.

    Example: ``leaves_per_chunk({"v": 1})`` is 1; ``leaves_per_chunk({"v": 2})`` (or 3) is 64.
    """
    return 1 if entry.get("v") == 1 else LEAVES_PER_CHUNK


def checkpoint_payload(entry: dict[str, Any]) -> bytes:
    """The bytes a checkpoint's signature covers: the entry without its signature."""
    return canonical({name: value for name, value in entry.items() if name != "signature"})


@dataclass(frozen=True)
class StoredEntry:
    """One entry as read back: where it is, its exact bytes, and its parsed content."""

    segment: Path
    line: int
    raw: bytes
    content: dict[str, Any]
    # Past LONGEST_ENTRY_BYTES: raw is empty, content too (the line was skipped, not read).
    too_long: bool = False


def parse_json(raw: bytes | str) -> Any:
    """Given JSON text read from a file anyone may have written (a trail line, a bundle, a key
    file), return what it holds; ValueError when it is not JSON, nested too deep included (the
    parser's RecursionError escaped every ``except ValueError``: a traceback).
    Example: ``parse_json(b"[" * 100_000)`` raises ValueError("nested too deep")."""
    try:
        return json.loads(raw)
    except RecursionError as error:
        raise ValueError("nested too deep") from error


def require_trail(directory: Path) -> None:
    """Given an audit directory, return if it holds a trail (its trail/ folder); UsageError if
    it holds none; AuditFailure, naming the file, if this user may not look (the service's
    state folder is 0700): a reader's answer, never a traceback. Example: for
    ``/var/lib/retention/audit`` read by another user than the service's,
    ``cannot read the audit trail: Permission denied: /var/lib/retention/audit/trail``."""
    try:
        present = (directory / "trail").is_dir()
    except OSError as error:
        raise AuditFailure(f"cannot read the audit trail: {os_error_said(error)}") from error
    if not present:
        raise UsageError(f"no audit trail in {str(directory)!r} (no trail/ directory)")


def segments(directory: Path) -> list[Path]:
    return sorted((directory / "trail").glob(SEGMENT_GLOB))


# An entry holds counts, hashes and at most one rule's definition (a config is at most 16 MiB);
# a bundle, which carries entries, is at most as long. A longer line is something else, and read
# whole it would take as much memory as the host's attacker chose to write.
LONGEST_ENTRY_BYTES = 64 * 2**20


def _lines(handle: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Given a file, yield each line (with its newline, if any) and whether it was longer than
    LONGEST_ENTRY_BYTES: then the line is empty, read in bounded pieces and let go."""
    while True:
        pieces: list[bytes] = []
        size = 0
        while piece := handle.readline(2**20):
            size += len(piece)
            pieces.append(piece)
            if piece.endswith(b"\n") or size > LONGEST_ENTRY_BYTES:
                break
        if not pieces:
            return
        if size <= LONGEST_ENTRY_BYTES or pieces[-1].endswith(b"\n"):
            yield b"".join(pieces), False
            continue
        pieces.clear()
        while (rest := handle.readline(2**20)) and not rest.endswith(b"\n"):
            pass
        yield b"", True


def read_entries(directory: Path) -> Iterator[StoredEntry]:
    """Given an audit directory, yield every entry in order. A line that is not JSON, or is
    longer than LONGEST_ENTRY_BYTES, yields an entry whose content is empty, so that
    verification can name it."""
    for segment in segments(directory):
        with segment.open("rb") as handle:
            for number, (line, too_long) in enumerate(_lines(handle), start=1):
                if too_long:
                    yield StoredEntry(segment, number, b"", {}, too_long=True)
                    continue
                raw = line.rstrip(b"\n")
                try:
                    content = parse_json(raw)
                except ValueError:
                    content = {}
                yield StoredEntry(
                    segment, number, raw, content if isinstance(content, dict) else {}
                )


def entry_at(directory: Path, seq: int) -> dict[str, Any] | None:
    """Given an audit directory and a seq, return the content of the entry with that seq, or
    None. Reads back from the last segment: what the writer appended lately is found at once.
    Example: ``entry_at(directory, 0)["prev"]`` is ``GENESIS``."""
    for segment in reversed(segments(directory)):
        with segment.open("rb") as handle:
            first: int | None = None
            for line, _too_long in _lines(handle):
                try:
                    content = parse_json(line.rstrip(b"\n"))
                except ValueError:
                    continue
                if not isinstance(content, dict) or not isinstance(content.get("seq"), int):
                    continue
                first = content["seq"] if first is None else first
                if content["seq"] == seq:
                    return content
                if first > seq:
                    break
        if first is not None and first <= seq:
            return None  # this segment holds that seq's place, and no entry with it
    return None


def leaves_path(directory: Path, seq: int) -> Path:
    return directory / "leaves" / f"{seq:08d}.leaves"


def versions_path(directory: Path, seq: int) -> Path:
    return directory / "leaves" / f"{seq:08d}.versions"


def read_versions(directory: Path, seq: int) -> list[str]:
    """Given an audit directory and a batch's seq, return the object version ids its leaves
    were made of (none for a batch of rows or files, or of a trail written before them)."""
    try:
        text = versions_path(directory, seq).read_text()
    except FileNotFoundError:
        return []
    return [unquote(line) for line in text.splitlines()]


def read_leaves(directory: Path, seq: int) -> list[bytes]:
    """Given an audit directory and a batch's seq, return its leaves; ValueError when its file
    holds anything but hex (a byte that is not ASCII included)."""
    content = leaves_path(directory, seq).read_bytes()
    try:
        return [bytes.fromhex(line) for line in content.decode("ascii").split()]
    except ValueError as error:
        raise ValueError(f"leaves file {seq:08d}.leaves holds a line that is not hex") from error


def versions_text(versions: Sequence[object]) -> bytes:
    """Given object version ids, return the versions file's bytes: sorted, each once,
    percent-encoded, one a line."""
    return "".join(
        f"{quote(str(version), safe='')}\n" for version in sorted(set(map(str, versions)))
    ).encode()
