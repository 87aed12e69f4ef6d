"""Leases in the state database, held while work runs: a rule's runs take its lease, renewed by
a thread until the work ends, and given back then (state.py keeps the leases table)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta

from sqlalchemy import exc as sa_exc

from retention.errors import LockHeld
from retention.state import StateDatabase


def rule_lease(rule: str) -> str:
    """Given a rule name, return the name of the lease that runs of it take."""
    return f"rule:{rule}"


@contextmanager
def leased(
    state: StateDatabase,
    names: Sequence[str],
    holder: str,
    ttl: timedelta,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[threading.Event]:
    """Given lease names and who asks, hold every one while the block runs, renewed by a thread
    every third of ``ttl``; yield an Event set when one is lost (taken over, or not renewable in
    time), so that the work can stop after its current step. Raise LockHeld, holding none,
    when another holder has one."""
    taken: list[str] = []
    try:
        for name in names:
            if not state.acquire_lease(name, holder, clock(), ttl):
                other, until = state.lease_holders(clock()).get(name, ("another process", clock()))
                until_text = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                raise LockHeld(f"{name} is held by {other} (lease until {until_text})")
            taken.append(name)
        lost, done = threading.Event(), threading.Event()
        renewer = threading.Thread(
            target=_keep_renewed,
            args=(state, taken, holder, ttl, clock, done, lost),
            name="lease-renewal",
            daemon=True,
        )
        renewer.start()
        try:
            yield lost
        finally:
            done.set()
            renewer.join()
    finally:
        for name in taken:
            # An expired lease is harmless: giving it back is a courtesy to the next holder.
            with suppress(sa_exc.SQLAlchemyError):
                state.release_lease(name, holder)


def _keep_renewed(
    state: StateDatabase,
    names: Sequence[str],
    holder: str,
    ttl: timedelta,
    clock: Callable[[], datetime],
    done: threading.Event,
    lost: threading.Event,
) -> None:
    expires_at = clock() + ttl
    interval = ttl / 3
    while not done.wait(interval.total_seconds()):
        try:
            renewed = all(state.renew_lease(name, holder, clock(), ttl) for name in names)
        except sa_exc.SQLAlchemyError:
            # The database may be back before the lease runs out: try again, up to then.
            if clock() + interval >= expires_at:
                lost.set()
                return
            continue
        if not renewed:
            lost.set()
            return
        expires_at = clock() + ttl
