"""Legal holds as the CLI and the executor use them: placed and lifted in the state database,
each change recorded in the audit trail, and read again before every batch of a run."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from retention.app.trail_text import refuse_personal_data
from retention.audit.opening import identity, open_trail
from retention.config import Config, Rule
from retention.errors import LockHeld, UsageError
from retention.holds import Hold, parse_hold_target
from retention.runtime.secrets import state_url
from retention.state import StateDatabase
from retention.state_holds import add_hold, read_holds, release_hold, state_exists
from retention.stores import open_stores
from retention.stores.sql import SqlStore


@contextmanager
def current_holds(
    config: Config, state: StateDatabase | None = None
) -> Iterator[Callable[[str], list[Hold]]]:
    """Given a config (and the run's state database, when it has one), yield a function giving
    a rule's holds as the state database has them now: the executor asks before every batch.
    One engine serves the whole run, and one opened here is closed with it."""
    url = state_url(config.state)
    opened: list[StateDatabase] = [state] if state is not None else []

    def holds_of(rule: str) -> list[Hold]:
        if not opened:
            if not state_exists(url):
                return []
            opened.append(StateDatabase(url, read_only=True))
        return [hold for hold in read_holds(opened[0]) if hold.rule == rule]

    try:
        yield holds_of
    finally:
        if opened and opened[0] is not state:
            opened[0].close()


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
            issues = [i for i in store_for(rule.store).check_rule(held_rule) if ".where" in i.path]
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
    # commits: a hold the trail cannot record is not placed.
    with _hold_trail(config, now) as record:
        state = StateDatabase(state_url(config.state))
        try:
            hold = add_hold(
                state,
                rule=rule.name,
                kind=kind,
                value=value,
                reason=reason,
                now=now,
                by=by,
                until=until,
                before_commit=lambda added: record("hold.added", added, value),
            )
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
    with _hold_trail(config, now) as record:
        state = StateDatabase(state_url(config.state))
        try:
            return release_hold(
                state,
                hold_id,
                reason=reason,
                now=now,
                by=by,
                before_commit=lambda released: record(
                    "hold.released", released, {"release_reason": reason}
                ),
            )
        finally:
            state.close()


@contextmanager
def _hold_trail(
    config: Config, now: datetime
) -> Iterator[Callable[[str, Hold, dict[str, Any]], None]]:
    """Given a config, yield a function that records a hold change in the audit trail (a no-op
    without a trail). Hold changes go in with their reason; what they name (record keys, a
    condition that may quote personal data) only as a keyed digest."""
    if config.audit is None or not config.audit.enabled:
        yield lambda entry_type, hold, value: None
        return
    with ExitStack() as stack:
        try:
            writer = stack.enter_context(open_trail(config.audit, lambda: now))
        except LockHeld as error:
            # The run's writer holds the trail for its whole length; its batches would go on
            # without the hold, so say how to get it in now rather than "retry later".
            raise LockHeld(
                f"{error}: a run is under way, and a hold change the trail cannot record does "
                "not happen. Stop that run (SIGTERM, or `systemctl stop retention` for the "
                "daemon: it stops after its current batch), change the hold, start it again"
            ) from error

        def record(entry_type: str, hold: Hold, value: dict[str, Any]) -> None:
            writer.append(
                entry_type,
                {
                    "hold_id": hold.id,
                    "rule": hold.rule,
                    "kind": hold.kind,
                    "target_count": len(hold.keys) if hold.kind == "key" else 1,
                    "target_digest": hmac.new(
                        writer.hmac_key, json.dumps(value, sort_keys=True).encode(), hashlib.sha256
                    ).hexdigest(),
                    "reason": hold.reason
                    if entry_type == "hold.added"
                    else value["release_reason"],
                    "until": hold.until.isoformat() if hold.until else None,
                    **identity(),
                },
            )

        yield record


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
