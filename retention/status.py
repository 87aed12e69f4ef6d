"""What `retention status` says: each rule's last run, outcome and next run from the run ledger,
who holds its lease and whether that holder is still there, and the daemons' heartbeats.

A run's ledger row says 'running' from its start until its outcome is written; a process that
was killed (SIGKILL, a host that died) leaves it so, and leaves its lease until the lease
expires or the next holder takes it over (and marks the run interrupted). Status therefore says
a run is in progress only when its lease is in force and its holder is not known to be gone."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from retention.config import Config
from retention.documents import iso_instant
from retention.layout import wrap
from retention.runtime.holders import HolderProcess, holder_pid, holder_process
from retention.runtime.secrets import state_url
from retention.scheduler import is_overdue, next_run
from retention.state import DaemonBeat, RunRecord, StateDatabase
from retention.state_leases import rule_lease

STATUS_SCHEMA_VERSION = 1

# What status can tell about a rule's lease (the JSON's lease.state).
LEASE_RUNNING = "running"  # in force; its holder is a process of this host, checked there
LEASE_HELD = "held"  # in force; its holder cannot be checked from here (another host)
LEASE_HOLDER_GONE = "holder_gone"  # in force, but its holder was of this host and is gone
LEASE_EXPIRED = "expired"  # past its expiry: nobody renews it


@dataclass(frozen=True)
class LeaseStatus:
    """A rule's lease as status sees it: its holder, its expiry, what can be told of the holder
    (``state``, one of the LEASE_* values) and why, in words (``detail``; empty for running)."""

    holder: str
    expires_at: datetime
    state: str
    detail: str


@dataclass(frozen=True)
class RuleStatus:
    """One rule as the run ledger sees it."""

    rule: str
    schedule: str
    last_run: RunRecord | None
    last_success: datetime | None
    next_run: datetime | None
    overdue: bool
    # Who runs it now: the holder of a lease in force that is not known to be gone.
    running_on: str | None
    # When a daemon alive runs the rule next (its scheduler's own time, postponements included);
    # None when no daemon is alive.
    daemon_next_run: datetime | None = None
    lease: LeaseStatus | None = None


def lease_status(holder: str, expires_at: datetime, now: datetime) -> LeaseStatus:
    """Given a lease's holder and expiry and now, return what status says about it: expired,
    or in force and running (its holder's process is here, checked), held (not checkable from
    this host) or holder_gone (a process of this host that no longer exists, or whose pid
    another process has now).

    Example: a lease of ``elsewhere/0:4242:a1b2c3`` until 10:32 seen at 10:31 is ``held``, with
    the detail ``"another host: its process is not checked from here"``."""
    process = holder_process(holder)
    pid = holder_pid(holder)
    detail = {
        HolderProcess.ALIVE: "",
        HolderProcess.PID_EXISTS: f"pid {pid} exists here, not checked to be the holder's "
        "process (no start time recorded or readable)",
        HolderProcess.GONE: f"pid {pid} no longer exists on this host",
        HolderProcess.REUSED: f"pid {pid} is another process now, started after the holder",
        HolderProcess.ELSEWHERE: "another host: its process is not checked from here",
    }[process]
    if expires_at <= now:
        state = LEASE_EXPIRED
    elif process in (HolderProcess.GONE, HolderProcess.REUSED):
        state = LEASE_HOLDER_GONE
    elif process is HolderProcess.ALIVE:
        state = LEASE_RUNNING
    else:
        state = LEASE_HELD
    return LeaseStatus(holder=holder, expires_at=expires_at, state=state, detail=detail)


def rule_statuses(
    config: Config, state: StateDatabase, now: datetime, daemons: Sequence[DaemonBeat] = ()
) -> list[RuleStatus]:
    """Given the config, the state database, now and the daemons' heartbeats, return each
    rule's status in config order: last run, last success, next scheduled run, whether it is
    overdue, its lease and who runs it now, and when a daemon alive runs it next."""
    zone = config.daemon.timezone
    recorded = state.recorded_leases()
    alive = [daemon for daemon in daemons if daemon.alive]
    statuses = []
    for rule in config.rules:
        last = state.last_runs(rule.name, 1)
        success = state.last_success(rule.name)
        row = recorded.get(rule_lease(rule.name))
        lease = lease_status(row[0], row[1], now) if row else None
        scheduled = _local(next_run(rule.schedule, zone, now), zone)
        # Objects run with their subjects' rule, on its job; a rule the daemon does not know
        # yet (before a reload) runs on its schedule.
        subjects = rule.objects.subjects if rule.objects else None
        job = subjects.rule.name if subjects is not None else rule.name
        daemon_times = [daemon.next_runs.get(job, scheduled) for daemon in alive]
        known = [moment for moment in daemon_times if moment is not None]
        statuses.append(
            RuleStatus(
                rule=rule.name,
                schedule=rule.schedule.text,
                last_run=last[0] if last else None,
                last_success=success,
                next_run=scheduled,
                overdue=is_overdue(rule.schedule, zone, success, now),
                running_on=lease.holder if lease and _in_progress(lease) else None,
                daemon_next_run=_local(min(known), zone) if known else None,
                lease=lease,
            )
        )
    return statuses


def _in_progress(lease: LeaseStatus) -> bool:
    return lease.state in (LEASE_RUNNING, LEASE_HELD)


def _local(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    return moment.astimezone(zone) if moment else None


def load_status(config: Config, now: datetime) -> tuple[list[RuleStatus], list[DaemonBeat]]:
    """Given the config and now, open the state database read-only (a fresh install's is not
    made: status writes nothing) and return each rule's status and every daemon heartbeat
    (alive or stale)."""
    state = StateDatabase(state_url(config.state), read_only=True)
    try:
        daemons = state.daemon_beats(now)
        return rule_statuses(config, state, now, daemons), daemons
    finally:
        state.close()


def status_document(
    statuses: list[RuleStatus], daemons: Sequence[DaemonBeat] = ()
) -> dict[str, Any]:
    """Given rule statuses and the daemons' heartbeats, return them as a JSON-ready document."""

    moment = iso_instant

    rules = []
    for status in statuses:
        last, lease = status.last_run, status.lease
        rules.append(
            {
                "rule": status.rule,
                "schedule": status.schedule,
                "last_run": None
                if last is None
                else {
                    "run_id": last.run_id,
                    "started_at": moment(last.started_at),
                    "finished_at": moment(last.finished_at),
                    "outcome": last.status,
                    "due": last.due,
                    "deleted": last.deleted,
                    "anonymised": last.anonymised,
                    "skipped": last.skipped,
                    "host": last.host,
                    "error": last.error,
                },
                "last_success": moment(status.last_success),
                "next_run": moment(status.next_run),
                "overdue": status.overdue,
                "running_on": status.running_on,
                "daemon_next_run": moment(status.daemon_next_run),
                "lease": None
                if lease is None
                else {
                    "holder": lease.holder,
                    "expires_at": moment(lease.expires_at),
                    "state": lease.state,
                    "detail": lease.detail or None,
                },
            }
        )
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "daemons": [
            {
                "host": daemon.host,
                "pid": daemon.pid,
                "holder": daemon.holder,
                "since": moment(daemon.started_at),
                "last_beat": moment(daemon.beat_at),
                "beat_seconds": daemon.beat_seconds,
                "alive": daemon.alive,
            }
            for daemon in daemons
        ],
        "rules": rules,
    }


def shown_outcome(status: RuleStatus) -> str:
    """Given a rule's status, return its last run's outcome as the table shows it: the ledger's,
    except a 'running' no lease in force backs (its process died, or ended without writing its
    outcome), shown as ``unknown``."""
    last = status.last_run
    if last is None:
        return "-"
    if last.status == "running" and status.running_on is None:
        return "unknown"
    return last.status


def lease_note(status: RuleStatus, zone: ZoneInfo) -> str:
    """Given a rule's status and the time zone to show times in, return what the table says
    about its lease and an unfinished run (empty: nothing to say)."""
    lease, last = status.lease, status.last_run
    unfinished = last is not None and last.status == "running" and status.running_on is None

    def time(moment: datetime) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    if lease is None:
        return "no lease held: its run ended without recording its outcome" if unfinished else ""
    if lease.state == LEASE_RUNNING:
        return f"running on {lease.holder}"
    if lease.state == LEASE_HELD:
        return f"running on {lease.holder}? ({lease.detail}; lease until {time(lease.expires_at)})"
    then = "; the next run takes over and marks the run interrupted" if unfinished else ""
    if lease.state == LEASE_HOLDER_GONE:
        return f"holder gone: {lease.holder} ({lease.detail}){then}"
    return f"lease expired {time(lease.expires_at)}, held by {lease.holder}{then}"


def render_status(
    statuses: list[RuleStatus],
    zone: ZoneInfo,
    daemons: Sequence[DaemonBeat] = (),
    width: int | None = None,
) -> str:
    """Given rule statuses, the time zone to show times in and the daemons' heartbeats, return
    a table for people, under a line per daemon alive (or one saying none is); fit to ``width``
    columns (None: no limit), the notes going under their row when the table is wider."""

    def local(value: datetime | None) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else "-"

    def beat_time(value: datetime) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    alive = [daemon for daemon in daemons if daemon.alive]
    heading = [
        f"daemon alive on {daemon.host} (pid {daemon.pid}) since {local(daemon.started_at)}, "
        f"last heartbeat {beat_time(daemon.beat_at)}"
        for daemon in alive
    ]
    if not alive:
        stale = (
            f" (last heartbeat {beat_time(daemons[0].beat_at)} from {daemons[0].host}, "
            f"pid {daemons[0].pid})"
            if daemons
            else ""
        )
        heading.append(f"no daemon alive{stale}")

    header = ("rule", "last run", "outcome", "due", "done", "skipped", "next run", "")
    rows = [header]
    for status in statuses:
        last = status.last_run
        notes = [note] if (note := lease_note(status, zone)) else []
        if status.running_on is not None or not status.overdue:
            pass
        elif status.daemon_next_run is not None:
            notes.append(f"overdue: the daemon runs it at {local(status.daemon_next_run)}")
        else:
            notes.append("overdue" if alive else "overdue: runs when the daemon starts")
        if last is not None and last.error:
            notes.append(last.error)
        rows.append(
            (
                status.rule,
                local(last.started_at) if last else "never",
                shown_outcome(status),
                f"{last.due:,}" if last else "-",
                f"{last.deleted + last.anonymised:,}" if last else "-",
                f"{last.skipped:,}" if last else "-",
                local(status.daemon_next_run or status.next_run),
                "; ".join(notes),
            )
        )
    lines = _columns(rows)
    if width is not None and max(len(line) for line in lines) > width:
        lines = []
        for row, line in zip(rows, _columns([row[:-1] for row in rows]), strict=True):
            lines.append(line)
            lines += textwrap.wrap(row[-1], width, initial_indent="    ", subsequent_indent="    ")
    footer = f"(times in {zone.key})"
    return "\n".join(wrap([*heading, *lines, footer], width))


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(size) for cell, size in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
