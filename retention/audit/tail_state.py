"""Where a trail ends, saved beside it (``tail.json``) so that the next writer need not read it
all: the last segment and its length, the last entry's hash, the next sequence number, the
Merkle frontier and the last config digest, under the audit key's HMAC. A cache: a state that
does not describe the trail's end exactly is ignored, and the trail read instead."""

from __future__ import annotations

import hmac
import json
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retention.audit.durable import last_line
from retention.audit.entries import canonical, entry_hash, parse_json
from retention.audit.merkle import MerkleFrontier
from retention.runtime.ownership import hand_over

TAIL_STATE = "tail.json"


@dataclass(frozen=True)
class TailState:
    """Where a trail ends: the next entry's seq, the last entry's hash, the Merkle frontier
    over every entry, the config digest of the last run started."""

    next_seq: int
    prev: str
    frontier: MerkleFrontier
    last_config_digest: str | None


def resumed_tail(directory: Path, hmac_key: bytes, segment: Path) -> TailState | None:
    """Given the audit directory, its key and the trail's last segment, return the saved tail
    state if it describes this trail's end exactly: the last segment at its current length,
    ending with the entry whose hash is ``prev``, and its MAC (under the audit HMAC key) checks,
    so that its Merkle frontier is the one the writer saved after that very entry. None for a
    state that does not match: the trail is read instead."""
    try:
        state = parse_json((directory / TAIL_STATE).read_text())
        if not hmac.compare_digest(str(state["mac"]), tail_state_mac(hmac_key, state)):
            return None
        if (state["segment"], state["segment_bytes"]) != (segment.name, segment.stat().st_size):
            return None
        last = last_line(segment)
        if last is None or entry_hash(last) != state["prev"]:
            return None
        if parse_json(last).get("seq") != state["next_seq"] - 1:
            return None
        frontier = MerkleFrontier(
            state["size"], [bytes.fromhex(subtree) for subtree in state["subtrees"]]
        )
        if frontier.size != state["next_seq"]:
            return None
        digest = state["last_config_digest"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return TailState(state["next_seq"], state["prev"], frontier, digest)


def tail_state_mac(hmac_key: bytes, state: dict[str, Any]) -> str:
    """The HMAC, under the audit key, of a tail state without its ``mac``: whoever edits
    the file (a subtree, the size) without the key cannot make the writer sign a wrong
    root; the writer reads the trail instead."""
    content = canonical({name: value for name, value in state.items() if name != "mac"})
    return hmac.digest(hmac_key, b"retention tail state\x00" + content, "sha256").hex()


def save_tail_state(directory: Path, hmac_key: bytes, segment: Path, tail: TailState) -> bool:
    """Given the audit directory, its key, the trail's last segment and where the trail ends,
    save it, so that the next writer need not read it all; return whether the state was made
    (False: the segment could not be measured). Best effort: a state that is missing or behind
    is detected and rebuilt."""
    temporary = directory / f"{TAIL_STATE}.tmp"
    made = False
    try:
        state = {
            "segment": segment.name,
            "segment_bytes": segment.stat().st_size,
            "next_seq": tail.next_seq,
            "prev": tail.prev,
            "size": tail.frontier.size,
            "subtrees": [subtree.hex() for subtree in tail.frontier.subtrees],
            "last_config_digest": tail.last_config_digest,
        }
        state["mac"] = tail_state_mac(hmac_key, state)
        made = True
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
        )
        try:
            hand_over(temporary, descriptor)
            os.write(descriptor, json.dumps(state).encode())
        finally:
            os.close(descriptor)
        os.replace(temporary, directory / TAIL_STATE)
    except OSError:
        # A stale state is detected on the next open anyway; removing it saves that check.
        with suppress(OSError):
            (directory / TAIL_STATE).unlink(missing_ok=True)
    return made
