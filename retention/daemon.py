"""`retention daemon`: the service systemd runs (Type=notify, deploy/systemd/retention.service).

Start: load and check the config (exit 78 before READY), open the state database (69 when it is
unreachable), serve metrics if configured, schedule one job per rule (a rule that missed a run
while the daemon was down runs at once), then ``READY=1``. While running: ``WATCHDOG=1`` at half
$WATCHDOG_USEC while the scheduler thread lives; SIGHUP reloads the config (an invalid one is
logged and the old one kept); SIGTERM or SIGINT: ``STOPPING=1``, the running purge stops after
its current batch, exit 0. A heartbeat in the state database (host, pid, since, last beat, each
rule's next run), every third of ``lease_ttl`` while the scheduler thread lives and removed on a
clean stop, tells `retention status` that a daemon is alive.

Signals are blocked in every thread and taken by the main thread with sigtimedwait, so nothing
runs inside a signal handler. Purges take turns (one worker, and the trail has one writer), and
each takes its rule's lease in the state database, so that no rule runs twice at once on any
host.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from retention.app import in_ledger, make_plan, overdue_counts, run_plan
from retention.app.hold_records import record_unrecorded
from retention.audit.freshness import trail_moments
from retention.audit.opening import open_trail
from retention.config import Config, Rule, load_config
from retention.errors import ConfigError, ExitCode, LockHeld, RetentionError, StoreUnavailable
from retention.rule_checks import check_against_stores
from retention.run_report import RunReport
from retention.runtime import metrics as prom
from retention.runtime.checkins import Checkins
from retention.runtime.secrets import state_url
from retention.runtime.systemd import PurgeStatus, notify, watchdog_interval
from retention.scheduler import (
    DEFAULT_EXECUTOR,
    is_overdue,
    new_scheduler,
    postpone,
    rule_job_id,
    schedule_rule,
    scheduler_alive,
)
from retention.secret_checks import check_secrets
from retention.state import StateDatabase, lease_holder_name
from retention.state_leases import leased, rule_lease
from retention.stores import open_stores
from retention.wording import counted

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Without a systemd watchdog, the main thread still wakes this often to check on the scheduler.
IDLE_WAKE_SECONDS = 5.0

# A lazy proxy: it follows configure_logging() even when that runs after this import.
log = structlog.get_logger("retention")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Daemon:
    """A running daemon. Jobs read ``config`` when they start; a reload replaces it."""

    config_path: Path
    config: Config
    state: StateDatabase
    scheduler: BackgroundScheduler
    metrics: prom.Metrics | None = None
    holder: str = field(default_factory=lease_holder_name)
    clock: Callable[[], datetime] = utc_now
    started_at: datetime = field(default_factory=utc_now)
    beating: threading.Thread | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    # The audit trail has one writer at a time, in this process too: purges and the heartbeat
    # take turns.
    trail_lock: threading.Lock = field(default_factory=threading.Lock)
    # The rule whose run is under way, if any: a reload does not schedule it to catch up, as
    # the running job would only be skipped (APScheduler's max_instances) with a raw warning.
    running_rule: str | None = None


def load_checked(path: Path) -> Config:
    """Given the config file, return the Config once it, its secrets and its rules (against the
    schema of every store that answers) are valid; ConfigError with every problem otherwise. A
    store that does not answer is logged, not fatal: its rules fail on their own until it is
    back."""
    config = load_config(path)
    issues = check_secrets(config)
    with open_stores(config, read_only=True) as store_for:
        schema_issues, unreachable = check_against_stores(config.rules, store_for)
    for store, reason in unreachable.items():
        log.warning("store.unreachable", store=store, reason=reason)
    if issues or schema_issues:
        raise ConfigError([*issues, *schema_issues])
    return config


def serve(config_path: Path) -> int:
    """Given the config file, run the daemon until SIGTERM or SIGINT; return the exit code: 0
    after a clean stop, 78 when the config is invalid at start, 69 when the state database or the
    metrics port is unavailable."""
    # Before any thread exists, so that every thread inherits the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log.info("daemon.starting", config=str(config_path))
    try:
        config = load_checked(config_path)
        state = StateDatabase(state_url(config.state))
    except ConfigError as error:
        for issue in error.issues:
            log.error("config.invalid", path=issue.path, problem=issue.message)
        return int(error.exit_code)
    except RetentionError as error:
        log.error("daemon.cannot_start", error=str(error), exit_code=int(error.exit_code))
        return int(error.exit_code)
    daemon = Daemon(config_path, config, state, new_scheduler(config.daemon.timezone))
    server = None
    try:
        address, port = config.daemon.metrics_address, config.daemon.metrics_port
        if port is not None:
            daemon.metrics = prom.new_metrics(
                (rule.name for rule in config.rules),
                lambda: daemon.config,
                daemon.clock,
                trail_moments,
            )
            prom.set_config_loaded(daemon.metrics, True, daemon.clock())
            prom.set_last_successes(
                daemon.metrics, {rule.name: state.last_success(rule.name) for rule in config.rules}
            )
            try:
                server = prom.serve_metrics(daemon.metrics, address, port)
            except OSError as error:
                log.error("metrics.cannot_listen", address=address, port=port, error=str(error))
                return int(ExitCode.STORE_UNAVAILABLE)
            log.info("metrics.listening", address=address, port=port)
        _schedule(daemon)
        daemon.scheduler.start()
        beat(daemon)
        daemon.beating = threading.Thread(
            target=_keep_beating, args=(daemon,), name="daemon-heartbeat", daemon=True
        )
        daemon.beating.start()
        notify("READY=1", f"STATUS={_status_line(daemon)}")
        log.info("daemon.ready", rules=len(config.rules), timezone=config.daemon.timezone.key)
        return _wait_for_signals(daemon)
    finally:
        _stop(daemon, server)


def _status_line(daemon: Daemon) -> str:
    config = daemon.config
    return f"{counted(len(config.rules), 'rule')} scheduled ({config.daemon.timezone.key})"


def _schedule(daemon: Daemon) -> None:
    """(Re)build every job from the current config: one per rule (at once when it missed a run),
    the idle heartbeat and the overdue-records refresh."""
    config, scheduler, now = daemon.config, daemon.scheduler, daemon.clock()
    names = {
        rule_job_id(rule.name)
        for rule in config.rules
        if rule.objects is None or rule.objects.subjects is None
    }
    for job in scheduler.get_jobs():
        if job.id.startswith("rule:") and job.id not in names:
            job.remove()
    for rule in config.rules:
        if rule.objects is not None and rule.objects.subjects is not None:
            continue  # it runs with its subjects' rule, on that rule's schedule
        # A rule whose run is under way is not late: that run decides for itself.
        late = rule.name != daemon.running_rule and _late(daemon, rule, now)
        schedule_rule(
            scheduler,
            rule,
            config.daemon.timezone,
            lambda name: run_rule(daemon, name),
            now=now if late else None,
        )
    if config.audit is not None and config.audit.enabled:
        scheduler.add_job(
            lambda: heartbeat(daemon),
            "interval",
            seconds=config.daemon.heartbeat.total_seconds(),
            id="heartbeat",
            executor=DEFAULT_EXECUTOR,
            replace_existing=True,
        )
    elif scheduler.get_job("heartbeat"):
        scheduler.remove_job("heartbeat")
    if daemon.metrics is not None:
        scheduler.add_job(
            lambda: refresh_overdue(daemon, daemon.config.rules),
            "interval",
            seconds=config.daemon.overdue_refresh.total_seconds(),
            next_run_time=now,
            id="overdue",
            executor=DEFAULT_EXECUTOR,
            replace_existing=True,
        )


def _wait_for_signals(daemon: Daemon) -> int:
    """Wait for signals, pinging the watchdog while the scheduler lives; return the exit code
    once asked to stop."""
    interval = watchdog_interval()
    while True:
        received = signal.sigtimedwait(HANDLED, interval or IDLE_WAKE_SECONDS)
        if received is not None and received.si_signo == signal.SIGHUP:
            reload(daemon)
        elif received is not None:
            log.info("daemon.stopping", signal=signal.Signals(received.si_signo).name)
            return int(ExitCode.OK)
        if not scheduler_alive(daemon.scheduler):
            # No more pings: systemd's watchdog restarts the service (and keeps a core dump).
            log.critical("scheduler.dead")
            if interval is None:
                return int(ExitCode.BUG)
        elif interval is not None:
            notify("WATCHDOG=1")


def _late(daemon: Daemon, rule: Rule, now: datetime) -> bool:
    """Given a rule, return whether it missed a run (logged as catching up)."""
    try:
        last_success = daemon.state.last_success(rule.name)
    except StoreUnavailable as error:
        # A reload while the state database is down: whether the rule missed a run is the
        # ledger's to say, and run_rule asks it again under the rule's lease (which cannot
        # be taken while the database is down: nothing runs then). Run it now.
        log.warning("rule.catching_up", rule=rule.name, reason=str(error))
        return True
    late = is_overdue(rule.schedule, daemon.config.daemon.timezone, last_success, now)
    if late:
        log.info("rule.catching_up", rule=rule.name)
    return late


def reload(daemon: Daemon) -> None:
    """Load the config again (SIGHUP) and rebuild the jobs from it; keep the running config, and
    say why, when the new one is invalid."""
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
    try:
        config = load_checked(daemon.config_path)
    except ConfigError as error:
        log.error(
            "config.reload_rejected",
            kept=daemon.config.digest,
            problems=[str(issue) for issue in error.issues],
        )
        if daemon.metrics is not None:
            prom.set_config_loaded(daemon.metrics, False, daemon.clock())
        notify(
            "READY=1", f"STATUS=config rejected, still on the previous one; {_status_line(daemon)}"
        )
        return
    restart_needed = [
        key
        for key, old, new in (
            ("state", daemon.config.state, config.state),
            (
                "daemon.metrics_address",
                daemon.config.daemon.metrics_address,
                config.daemon.metrics_address,
            ),
            ("daemon.metrics_port", daemon.config.daemon.metrics_port, config.daemon.metrics_port),
        )
        if old != new
    ]
    if restart_needed:
        log.warning("config.restart_needed", keys=restart_needed)
    daemon.config = config
    _schedule(daemon)
    if daemon.metrics is not None:
        prom.set_config_loaded(daemon.metrics, True, daemon.clock())
    log.info("config.reloaded", digest=config.digest, rules=len(config.rules))
    notify("READY=1", f"STATUS={_status_line(daemon)}")


def run_rule(daemon: Daemon, name: str) -> None:
    """Given a rule name (a job firing), run the rule once if it is still due: under its lease,
    recorded in the run ledger and the audit trail, counted in the metrics. Another host holding
    the rule postpones the run by one lease time; any failure is logged, never raised."""
    config = daemon.config
    rule = next((rule for rule in config.rules if rule.name == name), None)
    if rule is None or daemon.stopping.is_set():
        return
    run_id = uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(run_id=run_id, rule=name), daemon.trail_lock:
        notify(f"STATUS=purging {name}")
        daemon.running_rule = name
        try:
            _run_leased(daemon, config, rule, run_id)
        except LockHeld as held:
            log.info("rule.postponed", reason=str(held))
            postpone(daemon.scheduler, name, daemon.clock() + config.daemon.lease_ttl)
        except RetentionError as error:
            log.error("rule.failed", error=str(error), exit_code=int(error.exit_code))
            if daemon.metrics is not None:
                prom.observe_failure(daemon.metrics, name)
        except Exception:
            log.exception("rule.crashed")
            if daemon.metrics is not None:
                prom.observe_failure(daemon.metrics, name)
        finally:
            daemon.running_rule = None
            notify(f"STATUS={_status_line(daemon)}")
    if daemon.metrics is not None and not daemon.stopping.is_set():
        refresh_overdue(daemon, (rule,))


def _run_leased(daemon: Daemon, config: Config, rule: Rule, run_id: str) -> None:
    state, clock = daemon.state, daemon.clock
    # A cross-store rule runs with its subjects' rule, under both leases, in one ledger entry.
    rules = config.rules_named((rule.name,))
    names = [each.name for each in rules]
    with leased(
        state, [rule_lease(name) for name in names], daemon.holder, config.daemon.lease_ttl, clock
    ) as lost:
        if any([state.mark_interrupted(name) for name in names]):
            log.warning("rule.interrupted_run_found")
        # Another host may have run it between this job firing and the lease being free.
        if not is_overdue(
            rule.schedule, config.daemon.timezone, state.last_success(rule.name), clock()
        ):
            log.info("rule.already_done")
            return
        # The daemon's pings go on in their threads: a purge never waits for one.
        checkins = Checkins(config.checkins, log)
        checkins.ping("start")
        report: RunReport | None = None
        try:
            with (
                in_ledger(state, names, run_id, clock) as finish,
                open_stores(config, read_only=False) as store_for,
            ):
                the_plan = make_plan(config, rules, store_for, clock())
                report = run_plan(
                    config,
                    the_plan,
                    store_for,
                    dry_run=False,
                    now=clock,
                    stop_requested=lambda: daemon.stopping.is_set() or lost.is_set(),
                    run_id=run_id,
                    progress=PurgeStatus(),
                )
                finish(report)
        except BaseException:
            checkins.finished(False)
            raise
        finally:
            if report is not None:
                # The run happened, whether or not the ledger could take its end (a lease lost
                # to a state database that stopped answering cannot write it either): why it
                # stopped, and what it deleted, are said and counted all the same.
                if lost.is_set():
                    log.error("rule.lease_lost")
                _observe(daemon, report)
        checkins.finished(report.exit_code == ExitCode.OK)


def _observe(daemon: Daemon, report: RunReport) -> None:
    if daemon.metrics is not None:
        prom.observe_report(daemon.metrics, report, daemon.clock())


def heartbeat(daemon: Daemon) -> None:
    """Append a signed checkpoint to the audit trail, unless a purge is writing it (it ends
    with one) or another process holds it."""
    audit = daemon.config.audit
    if audit is None or not audit.enabled or not daemon.trail_lock.acquire(blocking=False):
        return
    try:
        with open_trail(audit, daemon.clock) as writer:
            # Holds placed while a run held the trail, and left unrecorded by it (killed); if
            # the state database cannot mark them now, they stay in force and the checkpoint
            # goes on (a trail that fails fails the heartbeat, below).
            try:
                recorded = record_unrecorded(writer, daemon.state)
            except StoreUnavailable as error:
                log.warning("audit.holds_not_recorded", error=str(error))
            else:
                if recorded:
                    log.info("audit.holds_recorded", holds=recorded)
            seq = writer.checkpoint()
        log.info("audit.heartbeat", seq=seq)
    except LockHeld as held:
        log.info("audit.heartbeat_skipped", reason=str(held))
    except RetentionError as error:
        log.error("audit.heartbeat_failed", error=str(error))
    finally:
        daemon.trail_lock.release()


def beat(daemon: Daemon) -> None:
    """Record in the state database that this daemon is alive, with when it runs each rule
    next; a failure is logged (the state database may be back by the next beat)."""
    next_runs = {
        job.name: job.next_run_time
        for job in daemon.scheduler.get_jobs()
        if job.id.startswith("rule:") and job.next_run_time is not None
    }
    try:
        daemon.state.beat_daemon(
            daemon.holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=daemon.started_at,
            now=daemon.clock(),
            every=daemon.config.daemon.lease_ttl / 3,
            next_runs=next_runs,
        )
    except RetentionError as error:
        log.warning("daemon.heartbeat_failed", error=str(error))


def _keep_beating(daemon: Daemon) -> None:
    # Its own thread, so that a slow state database neither delays purges nor the watchdog; and
    # like the watchdog, silent once the scheduler is dead.
    while not daemon.stopping.wait((daemon.config.daemon.lease_ttl / 3).total_seconds()):
        if scheduler_alive(daemon.scheduler):
            beat(daemon)


def refresh_overdue(daemon: Daemon, rules: tuple[Rule, ...]) -> None:
    """Given rules, set their overdue-records gauge from a read-only plan as of now minus the
    grace period."""
    config, metrics = daemon.config, daemon.metrics
    if metrics is None or not rules:
        return
    try:
        with open_stores(config, read_only=True) as store_for:
            counts = overdue_counts(
                config, rules, store_for, daemon.clock(), config.daemon.overdue_grace
            )
    except RetentionError as error:
        log.warning("metrics.overdue_failed", error=str(error))
        return
    prom.set_overdue(metrics, counts)


def _stop(daemon: Daemon, server: WSGIServer | None) -> None:
    notify("STOPPING=1", "STATUS=stopping after the current batch")
    daemon.stopping.set()
    if daemon.scheduler.running:
        # Waits for the running purge, which stops after its current batch.
        daemon.scheduler.shutdown(wait=True)
    if server is not None:
        server.shutdown()
        server.server_close()
    if daemon.beating is not None:
        daemon.beating.join()
    daemon.state.forget_daemon(daemon.holder)
    daemon.state.close()
    log.info("daemon.stopped")
