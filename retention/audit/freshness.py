"""How fresh the audit trail's safeguards are: when its last signed checkpoint was written, and
when `retention audit anchor` last exported one (the metrics an operator alerts on).

Both are read without the trail's lock and without reading the whole trail: the last checkpoint
from the end of the last segment (a run ends with one, and an idle trail gets one every
heartbeat), the last anchor from a small file that `audit anchor` leaves in the audit directory.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from retention.audit.entries import parse_json, segments
from retention.runtime.ownership import hand_over

ANCHORED = "anchored.json"
# A checkpoint further back than this from the trail's end is not looked for: a scrape must stay
# cheap, and a trail whose last checkpoint is that far back is stale anyway.
_TAIL_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024
_CHECKPOINT = b'"type":"checkpoint"'


def last_checkpoint_time(directory: Path) -> datetime | None:
    """Given an audit directory, return when its last signed checkpoint was written, or None when
    there is none near the trail's end (or no trail)."""
    try:
        last = segments(directory)[-1]
        with last.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            for size in (_CHUNK, _TAIL_BYTES):
                start = max(0, end - size)
                handle.seek(start)
                found = _last_checkpoint(handle.read(end - start), whole_first_line=start == 0)
                if found is not None or start == 0:
                    return found
    except (OSError, IndexError):
        return None
    return None


def _last_checkpoint(tail: bytes, *, whole_first_line: bool) -> datetime | None:
    lines = tail.split(b"\n")
    if not whole_first_line:
        lines = lines[1:]  # it may start mid-line
    for line in reversed(lines):
        if _CHECKPOINT not in line:
            continue
        try:
            return datetime.fromisoformat(parse_json(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def record_anchor(directory: Path, seq: int, moment: datetime) -> None:
    """Given an audit directory, the seq of the checkpoint just anchored and when, note it in
    ``anchored.json`` there (readable by the daemon's metrics). Best effort: OSError when the
    directory is not writable, for the caller to warn about."""
    temporary = directory / f".{ANCHORED}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        hand_over(temporary, descriptor)
        os.write(descriptor, json.dumps({"seq": seq, "time": moment.isoformat()}).encode())
    finally:
        os.close(descriptor)
    os.replace(temporary, directory / ANCHORED)


def trail_moments(directory: Path) -> tuple[datetime | None, datetime | None]:
    """Given an audit directory, return when its last signed checkpoint was written and when
    `audit anchor` last exported one, each None when unknown (what the metrics serve), e.g.
    ``(datetime(2026, 5, 10, 4, 0, tzinfo=UTC), None)`` for a trail never anchored."""
    return last_checkpoint_time(directory), last_anchor_time(directory)


def last_anchor_time(directory: Path) -> datetime | None:
    """Given an audit directory, return when `audit anchor` last exported a checkpoint from it,
    or None when it never did (or the note is unreadable)."""
    try:
        return datetime.fromisoformat(parse_json((directory / ANCHORED).read_text())["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
