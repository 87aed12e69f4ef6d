"""Legal holds as the CLI and the executor use them: placed and lifted in the state database,
each change recorded in the audit trail, and read again before every batch of a run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from retention.app.hold_records import (
    CurrentHolds,
    hold_fields,
    placed_while,
    record_unrecorded,
)
from retention.app.trail_text import refuse_personal_data
from retention.audit.opening import identity, open_trail
from retention.config import Config, Rule
from retention.errors import LockHeld, RetentionError, UsageError
from retention.holds import Hold, parse_hold_target
from retention.runtime.secrets import state_url
from retention.state import StateDatabase
from retention.state_holds import add_hold, list_holds, release_hold
from retention.stores import open_stores
from retention.stores.sql import SqlStore

if TYPE_CHECKING:
    from retention.audit.trail import TrailWriter


@contextmanager
def current_holds(config: Config, state: StateDatabase | None = None) -> Iterator[CurrentHolds]:
    """Given a config (and the run's state database, when it has one), yield a function giving
    a rule's holds as the state database has them now: the executor asks before every batch.
    Once the run's trail is open (``writer``), it also records the holds placed meanwhile.
    One engine serves the whole run, and one opened here is closed with it."""
    holds_of = CurrentHolds(config, state)
    try:
        yield holds_of
    finally:
        holds_of.close()


def place_hold(
    config: Config,
    *,
    rule_name: str,
    keys: tuple[str, ...],
    where: str | None,
    prefix: str | None,
    reason: str,
    until: datetime | None,
    now: datetime,
    by: str,
) -> Hold:
    """Given a rule and what to hold (keys, a condition or a prefix), check it against the rule's
    schema, store the hold and record it in the audit trail; return it."""
    rule = next(rule for rule in config.rules_named((rule_name,)) if rule.name == rule_name)
    if not reason.strip():
        raise UsageError("--reason is required: a hold says why")
    _check_reason(reason)
    try:
        kind, parsed_keys, condition, parsed_prefix = parse_hold_target(rule, keys, where, prefix)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if condition is not None:
        with open_stores(config, read_only=True) as store_for:
            held_rule = replace(rule, conditions=(condition,))
            issues = [
                issue
                for issue in store_for(rule.store).check_rule(held_rule)
                if ".where" in issue.path and not issue.warning
            ]
        if issues:
            raise UsageError(f"--where: {issues[0].message}")
    if kind == "key" and rule.objects is None:
        _check_keys(config, rule, parsed_keys)
    value: dict[str, Any] = (
        {"keys": [list(key) for key in parsed_keys]}
        if kind == "key"
        else {"where": condition.text}
        if condition is not None
        else {"prefix": parsed_prefix}
    )
    # The trail is opened before the state changes, and the entry appended before the change
    # commits: a hold the trail cannot record is not placed. But while a run holds the trail,
    # the hold goes in at once, in force and marked unrecorded; the run (or the trail's next
    # writer) records it. In force before it is recorded can only keep more records.
    state = StateDatabase(state_url(config.state))
    try:
        with _hold_trail(config, state, now, waiting=True) as trail:
            hold = add_hold(
                state,
                rule=rule.name,
                kind=kind,
                value=value,
                reason=reason,
                now=now,
                by=by,
                until=until,
                before_commit=lambda added: trail.record("hold.added", added, value, reason),
                unrecorded=None if trail.held is None else (identity(), trail.held),
            )
        if trail.held is not None:
            # The run may have ended meanwhile: then record the hold now rather than wait.
            # Anything else failing there leaves it as it is: in force, recorded later.
            with suppress(RetentionError), _hold_trail(config, state, now):
                pass
            hold = next(held for held in list_holds(state) if held.id == hold.id)
    finally:
        state.close()
    return hold


def _check_keys(config: Config, rule: Rule, keys: tuple[tuple[str, ...], ...]) -> None:
    """A key that no row can have ('abc' for an integer id) would hold nothing: refuse it
    rather than let legal staff believe a record is protected."""
    with open_stores(config, read_only=True) as store_for:
        store = store_for(rule.store)
        assert isinstance(store, SqlStore), "a rule without objects is on a SQL store"
        unfit = store.unfit_keys(rule, keys)
    if unfit:
        columns = ", ".join(f"{rule.table}.{column}" for column in rule.key)
        raise UsageError(
            f"--key {'/'.join(unfit[0])!r} is not a value of {columns}: no row can have it, so "
            "it would hold nothing (check the key; `plan --show-keys` shows keys as they are)"
        )


def lift_hold(config: Config, hold_id: int, *, reason: str, now: datetime, by: str) -> Hold:
    """Given a hold id and why, release it and record that in the audit trail; return it."""
    if not reason.strip():
        raise UsageError("--reason is required: a release says why")
    _check_reason(reason)
    # A release the trail cannot record would let records go with nothing saying why: the
    # entry is appended before the release commits, and a failure keeps the hold in force.
    # While a run holds the trail, LockHeld: the hold stays in force (the run would keep it
    # anyway, until its end).
    state = StateDatabase(state_url(config.state))
    try:
        with _hold_trail(config, state, now) as trail:
            return release_hold(
                state,
                hold_id,
                reason=reason,
                now=now,
                by=by,
                before_commit=lambda released: trail.record(
                    "hold.released", released, {"release_reason": reason}, reason
                ),
            )
    finally:
        state.close()


@dataclass
class _Trail:
    """The trail as a hold command has it: ``record`` appends a hold change (a no-op without
    a trail, or while another process holds it: then ``held`` says what holds it)."""

    writer: TrailWriter | None = None
    held: str | None = None

    def record(self, entry_type: str, hold: Hold, value: dict[str, Any], reason: str) -> None:
        if self.writer is not None:
            self.writer.append(
                entry_type, hold_fields(self.writer, hold, value, reason, identity())
            )


@contextmanager
def _hold_trail(
    config: Config, state: StateDatabase, now: datetime, *, waiting: bool = False
) -> Iterator[_Trail]:
    """Given a config and the state database, open the audit trail for a hold change and
    record first the holds placed while it was held; yield it. Without a trail, a no-op. While
    another process holds its lock: LockHeld, or, ``waiting`` (a hold being placed), a trail
    that records nothing and says what holds it. Hold changes go in with their reason; what
    they name (record keys, a condition that may quote personal data) only as a keyed
    digest."""
    if config.audit is None or not config.audit.enabled:
        yield _Trail()
        return
    with ExitStack() as stack:
        held = None
        try:
            writer = stack.enter_context(open_trail(config.audit, lambda: now))
        except LockHeld as error:
            if not waiting:
                # The run's writer holds the trail for its whole length, and keeps the hold
                # until its end anyway: say how to release it now rather than "retry later".
                raise LockHeld(
                    f"{error}: a run is under way, and a hold's release must be in the trail "
                    "before its records can go, so the hold stays in force. Release it when "
                    "the run has ended, or stop that run (SIGTERM, or `systemctl stop "
                    "retention` for the daemon: it stops after its current batch), release "
                    "it, start it again"
                ) from error
            held = placed_while(str(error), _leases(state, now))
        if held is not None:
            yield _Trail(held=held)
            return
        record_unrecorded(writer, state)
        yield _Trail(writer)


def _leases(state: StateDatabase, now: datetime) -> dict[str, tuple[str, datetime]]:
    """The leases in force, to name the run that holds the trail (none if unreadable)."""
    try:
        return state.lease_holders(now)
    except RetentionError:
        return {}


# As an erasure request's reference: a case or ticket reference, not a letter.
MAX_REASON_LENGTH = 200


def _check_reason(reason: str) -> None:
    """A reason goes into the audit trail as written, and `hold list`, `audit show` and the
    report print it so: refuse one longer than a reference, one with control characters (a
    newline forged a line of the listing, an escape sequence rewrote the terminal, a bidi
    override reversed the text), one holding an e-mail address or an IP address, and say what
    to write instead."""
    if len(reason) > MAX_REASON_LENGTH:
        raise UsageError(
            f"--reason longer than {MAX_REASON_LENGTH} characters: give a case or ticket "
            "reference (e.g. 'litigation hold L-17')"
        )
    if not reason.isprintable():
        raise UsageError(
            "--reason holds control characters (a newline, an escape sequence, a bidi "
            "override): it is printed as written; give a case or ticket reference"
        )
    refuse_personal_data("--reason", reason, "'litigation hold L-17'")
