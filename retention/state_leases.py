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


class LeaseWatch:
    """Whether a lease held by ``leased`` is lost (``is_set()``, as a threading.Event's), asked
    before each batch: set by the renewal thread when a renewal fails, and found at once when
    the last renewal is older than half the ttl (the process was frozen, SIGSTOP or a VM paused,
    so that the lease may have expired and been taken): the lease is then renewed here, before
    the batch, and found lost when someone else has it now. Without this, a purge thawed past its
    lease's expiry deleted its next batch before the renewal thread found the lease taken."""

    def __init__(
        self,
        state: StateDatabase,
        names: Sequence[str],
        holder: str,
        ttl: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._state, self._names, self._holder = state, names, holder
        self._ttl, self._clock = ttl, clock
        self._lost = threading.Event()
        self._lock = threading.Lock()
        self.renewed_at = clock()
        # Why it was lost: another holder has it (True), or the state database did not answer
        # until it expired (False).
        self.taken = False

    def renew(self) -> bool:
        """Push every lease's expiry to now + ttl; return False (lost) when one is someone
        else's now; raise SQLAlchemyError when the state database does not answer."""
        with self._lock:
            now = self._clock()
            renewed = all(
                self._state.renew_lease(name, self._holder, now, self._ttl) for name in self._names
            )
            if renewed:
                self.renewed_at = now
            else:
                self.taken = True
                self._lost.set()
            return renewed

    def set(self) -> None:
        """The lease is lost: the state database did not answer until it expired."""
        self._lost.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._lost.wait(timeout)

    def is_set(self) -> bool:
        if self._lost.is_set() or not self._names:
            return self._lost.is_set()
        if self._clock() - self.renewed_at < self._ttl / 2:
            return False
        try:
            return not self.renew()
        except sa_exc.SQLAlchemyError:
            # The lease may have expired by now: no batch can start under it.
            if self._clock() - self.renewed_at >= self._ttl:
                self.set()
                return True
            return False


@contextmanager
def leased(
    state: StateDatabase,
    names: Sequence[str],
    holder: str,
    ttl: timedelta,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[LeaseWatch]:
    """Given lease names and who asks, hold every one while the block runs, renewed by a thread
    every third of ``ttl``; yield a LeaseWatch that says whether one is lost (taken over, or not
    renewable in time), so that the work can stop after its current step. Raise LockHeld,
    holding none, when another holder has one."""
    taken: list[str] = []
    try:
        for name in names:
            if not state.acquire_lease(name, holder, clock(), ttl):
                other, until = state.lease_holders(clock()).get(name, ("another process", clock()))
                until_text = until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                raise LockHeld(f"{name} is held by {other} (lease until {until_text})")
            taken.append(name)
        watch = LeaseWatch(state, taken, holder, ttl, clock)
        done = threading.Event()
        renewer = threading.Thread(
            target=_keep_renewed,
            args=(watch, ttl, clock, done),
            name="lease-renewal",
            daemon=True,
        )
        renewer.start()
        try:
            yield watch
        finally:
            done.set()
            renewer.join()
    finally:
        for name in taken:
            # An expired lease is harmless: giving it back is a courtesy to the next holder.
            with suppress(sa_exc.SQLAlchemyError):
                state.release_lease(name, holder)


def _keep_renewed(
    watch: LeaseWatch, ttl: timedelta, clock: Callable[[], datetime], done: threading.Event
) -> None:
    interval = ttl / 3
    while not done.wait(interval.total_seconds()):
        try:
            renewed = watch.renew()
        except sa_exc.SQLAlchemyError:
            # The database may be back before the lease runs out: try again, up to then.
            if clock() + interval >= watch.renewed_at + ttl:
                watch.set()
                return
            continue
        if not renewed:
            return
