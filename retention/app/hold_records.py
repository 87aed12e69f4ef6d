"""Hold changes in the audit trail: their ``hold.added`` and ``hold.released`` entries, and the
recording of holds placed while another process (a run) held the trail's writer lock.

Such a hold is stored in force at once, marked not yet recorded; whoever holds the lock next
(the run at its next batch boundary, the next run, the daemon's heartbeat, a later ``hold``
command) appends its entry, with when it was placed, then marks it recorded. A crash between
the two neither drops nor repeats it: the seq it was being appended at is noted first, and the
next writer finds the entry there (or not) before appending it again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from retention.audit.entries import entry_at
from retention.audit.opening import identity
from retention.config import Config
from retention.holds import Hold
from retention.runtime.faults import crash_point, pause_point
from retention.runtime.secrets import state_url
from retention.state import StateDatabase
from retention.state_holds import (
    mark_recorded,
    mark_recording,
    read_holds,
    state_exists,
    unrecorded_holds,
)

if TYPE_CHECKING:
    from retention.audit.trail import TrailWriter


def hold_fields(
    writer: TrailWriter,
    hold: Hold,
    value: dict[str, Any],
    reason: str,
    who: dict[str, str],
) -> dict[str, Any]:
    """Given a hold, what it names (its stored value), the reason of the change and who made
    it (tool, host, user), return the fields of its hold.added or hold.released entry: the
    reason as written; what the hold names only as a count and a keyed digest."""
    return {
        "hold_id": hold.id,
        "rule": hold.rule,
        "kind": hold.kind,
        "target_count": len(hold.keys) if hold.kind == "key" else 1,
        "target_digest": hmac.new(
            writer.hmac_key, json.dumps(value, sort_keys=True).encode(), hashlib.sha256
        ).hexdigest(),
        "reason": reason,
        "until": hold.until.isoformat() if hold.until else None,
        **who,
    }


def record_unrecorded(writer: TrailWriter, state: StateDatabase) -> list[int]:
    """Given the trail's writer (its lock held) and the state database (writable), append the
    hold.added entry of every hold not yet recorded, oldest first, and mark each recorded;
    return their ids. The entry is the one its placer would have written (its reason, its
    placer as tool, host and user), plus ``placed_at`` (its time is when it was recorded) and
    ``recorded_by``. AuditFailure or StoreUnavailable leave the rest unrecorded, in force."""
    recorded: list[int] = []
    for pending in unrecorded_holds(state):
        hold = pending.hold
        seq = pending.recording_seq
        if seq is not None and seq < writer.next_seq:
            # A writer got as far as noting the seq: if its append reached the trail, that
            # entry is the record, and only the state database was not told.
            entry = entry_at(writer.directory, seq)
            if entry is not None and (entry.get("type"), entry.get("hold_id")) == (
                "hold.added",
                hold.id,
            ):
                mark_recorded(state, hold.id)
                continue
        mark_recording(state, hold.id, writer.next_seq)
        fields = hold_fields(writer, hold, pending.value, hold.reason, pending.placed_by)
        me = identity()
        fields["placed_at"] = hold.created_at.isoformat()
        fields["recorded_by"] = f"{me['user']}@{me['host']}"
        writer.append("hold.added", fields)
        crash_point("after_hold_recorded")
        mark_recorded(state, hold.id)
        recorded.append(hold.id)
    return recorded


class CurrentHolds:
    """A run's holds as the state database has them now, read again before every batch (call
    it with a rule's name). Once the run's trail is open (``writer``), every read that finds a
    hold not yet recorded records it first: a hold placed during the run goes into the trail
    at the next batch boundary, and protects its records from that batch on."""

    def __init__(self, config: Config, state: StateDatabase | None) -> None:
        self._url = state_url(config.state)
        self._state = state
        self._reading: StateDatabase | None = state
        self._writing: StateDatabase | None = None
        self.writer: TrailWriter | None = None

    def __call__(self, rule: str) -> list[Hold]:
        pause_point("batch_boundary")
        every = self._all()
        if self.writer is not None and any(not hold.recorded for hold in every):
            self.record()
        return [hold for hold in every if hold.rule == rule]

    def _all(self) -> Sequence[Hold]:
        if self._reading is None:
            if not state_exists(self._url):
                return []
            self._reading = StateDatabase(self._url, read_only=True)
        return read_holds(self._reading)

    def record(self) -> list[int]:
        """Record the holds not yet recorded (none without the run's trail); return their ids."""
        if self.writer is None or not state_exists(self._url):
            return []
        state = self._state if self._state is not None and not self._state.read_only else None
        if state is None:
            if self._writing is None:
                self._writing = StateDatabase(self._url)
            state = self._writing
        return record_unrecorded(self.writer, state)

    def close(self) -> None:
        for opened in (self._reading, self._writing):
            if opened is not None and opened is not self._state:
                opened.close()
        self._reading = self._writing = None


def placed_while(lock_message: str, leases: dict[str, tuple[str, datetime]]) -> str:
    """Given the writer lock's refusal and the leases in force, return what holds the trail,
    for the message of a hold placed meanwhile: the rules being run and by whom, if a lease
    says so. Example: ``another process is writing the audit trail in /var/lib/retention/audit
    (a run of logs by db1/3f2a9c1e:4242:a1b2c3)``."""
    runs = sorted(
        (name.removeprefix("rule:"), holder)
        for name, (holder, _until) in leases.items()
        if name.startswith("rule:")
    )
    if not runs:
        return lock_message
    holders = sorted({holder for _rule, holder in runs})
    names = ", ".join(rule for rule, _holder in runs)
    return f"{lock_message} (a run of {names} by {', '.join(holders)})"
