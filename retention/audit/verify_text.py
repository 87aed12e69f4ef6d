"""A valid verification told to people: what the trail holds, its last checkpoint, what is not
yet signed, and which anchors matched."""

from __future__ import annotations

from datetime import UTC

from retention.audit.entry_checks import parse_time
from retention.audit.verify import Verification
from retention.wording import counted


def _moment(text: object) -> str:
    """Given an entry's time, return it in UTC ending in Z (``?`` when it is not a time)."""
    moment = parse_time(text)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else "?"


def _plural(count: int, one: str, many: str | None = None) -> str:
    """Given a count and a noun, return e.g. ``1 run`` or ``2 runs``."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def render_verification(result: Verification) -> str:
    """Given a valid verification, return its summary for people."""
    lines = [
        f"valid: {_plural(result.entries, 'entry', 'entries')} in "
        f"{_plural(result.segments, 'segment')}, {_plural(result.runs, 'run')}, "
        f"{_plural(result.batches, 'batch', 'batches')}, "
        f"{_plural(result.records_purged, 'record')} purged",
    ]
    checkpoint = result.last_checkpoint
    if checkpoint is None:
        lines.append("last checkpoint: none yet (no entry is signed)")
    else:
        content = checkpoint.content
        lines.append(
            f"last checkpoint: seq {content['seq']} at {_moment(content['time'])}, "
            f"key {content['key_id']}, covering {counted(content['size'], 'entry')}"
        )
    lines.append(f"not yet signed: {counted(result.unsigned, 'entry')} after the last checkpoint")
    for anchor in sorted(result.anchors, key=lambda anchor: anchor.seq):
        lines.append(f"anchor: checkpoint seq {anchor.seq} from {anchor.source} matches")
    if not result.anchors:
        lines.append(
            "no anchor given: a truncated tail cannot be detected (--anchor, docs/audit.md)"
        )
    return "\n".join(lines)
