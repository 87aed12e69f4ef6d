"""Use cases shared by the CLI and the daemon: check, plan, run, the run ledger, metrics and
audit keys (legal holds in app/holds.py, saved plans in app/saved_plans.py). Orchestration
only: the logic lives in the core (config, rules, planner, executor), the effects at the edges."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retention.audit.keys import (
    add_public_key,
    generate_hmac_key,
    generate_signer,
)
from retention.audit.recorder import recording
from retention.config import AuditSettings, Config, Rule
from retention.errors import (
    ConfigError,
    ConfigIssue,
    ExitCode,
    StoreUnavailable,
    UsageError,
    error_text,
)
from retention.executor import execute
from retention.planner import Plan, build_plan
from retention.rule_checks import check_against_stores
from retention.run_ports import Progress
from retention.run_report import FAILED, RunReport
from retention.runtime.faults import pause_point
from retention.runtime.logging import get_logger
from retention.runtime.secrets import read_hash_key, state_url
from retention.runtime.subject_set import SubjectsOnDisk
from retention.selection import ErasureRequest
from retention.store_protocol import RecordStore

if TYPE_CHECKING:
    from retention.app.hold_records import CurrentHolds
    from retention.state import StateDatabase
    from retention.state_leases import LeaseWatch

# The state database and the stores (SQLAlchemy, boto3) are imported where a use case opens
# them; `config validate` needs none of this module (its secrets: secret_checks.py).


def make_plan(
    config: Config,
    rules: tuple[Rule, ...],
    store_for: Callable[[str], RecordStore],
    as_of: datetime,
    *,
    show_keys: bool = False,
    erasure: ErasureRequest | None = None,
) -> Plan:
    """Given rules and their stores, check every rule against its store's schema (every problem
    at once: ConfigError, exit 78), then return the Plan as of ``as_of`` (sample keys in clear
    with ``show_keys``; of one person's records with ``erasure``)."""
    from retention.state_holds import load_holds

    pause_point("before_plan")
    issues, _unreachable = check_against_stores(rules, store_for)
    if issues:
        raise ConfigError(issues)
    configured_key = read_hash_key(config.settings)
    # Without a configured key, samples are still hashed, with a key nobody keeps.
    hash_key = configured_key if configured_key is not None else os.urandom(32)
    return build_plan(
        config,
        rules,
        store_for,
        as_of,
        hash_key=hash_key,
        keyed=configured_key is not None,
        holds=load_holds(state_url(config.state)),
        show_keys=show_keys,
        erasure=erasure,
    )


def run_plan(
    config: Config,
    plan: Plan,
    store_for: Callable[[str], RecordStore],
    *,
    dry_run: bool,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop_requested: Callable[[], bool] = lambda: False,
    run_id: str | None = None,
    allow_over_limit: frozenset[str] = frozenset(),
    state: StateDatabase | None = None,
    progress: Progress | None = None,
    stopped_by: Callable[[], ExitCode | None] = lambda: None,
) -> RunReport:
    """Given a Plan, purge it (or walk it, ``dry_run``), recording every batch in the audit trail
    first, and log one ``run.finished`` line. Without an audit trail nothing is purged. With
    ``state``, each rule's run (not a dry run's) goes into the run ledger; ``progress`` is told
    each rule's count after every batch. ``stopped_by`` gives the exit code of the signal that
    asked a one-off purge to stop (None: none did): the report, its ``run.finished`` entry and
    log line then carry the code the process exits with."""
    from retention.app.holds import current_holds

    run_id = run_id or uuid.uuid4().hex
    rule_names = [rule_plan.rule.name for rule_plan in plan.rules]
    with (
        in_ledger(None if dry_run else state, rule_names, run_id, now) as finish,
        current_holds(config, state) as holds_for,
    ):
        report = _run_plan(
            config,
            plan,
            store_for,
            dry_run,
            now,
            stop_requested,
            run_id,
            allow_over_limit,
            holds_for,
            progress,
            stopped_by,
        )
        finish(report)
    return report


def _run_plan(
    config: Config,
    plan: Plan,
    store_for: Callable[[str], RecordStore],
    dry_run: bool,
    now: Callable[[], datetime],
    stop_requested: Callable[[], bool],
    run_id: str,
    allow_over_limit: frozenset[str],
    holds_for: CurrentHolds,
    progress: Progress | None,
    stopped_by: Callable[[], ExitCode | None],
) -> RunReport:
    logger = get_logger(plan_id=plan.plan_id, run_id=run_id)
    audited = not dry_run and config.audit is not None and config.audit.enabled
    if not dry_run and config.audit is None:
        raise ConfigError(
            [
                ConfigIssue(
                    "audit",
                    "missing: purging needs an audit trail; add an [audit] table "
                    "(docs/config.md), or `enabled = false` there for throw-away data",
                )
            ]
        )
    with recording(config, plan, run_id, store_for, now) if audited else nullcontext() as recorder:
        if recorder is not None:
            # Holds placed while the trail was held (by an earlier run, killed before it
            # recorded them), then at every batch boundary those placed during this run.
            holds_for.writer = recorder.writer
            holds_for.record()
        report = execute(
            plan,
            store_for,
            now=now,
            dry_run=dry_run,
            hash_key=read_hash_key(config.settings),
            logger=logger,
            audit=recorder,
            stop_requested=stop_requested,
            allow_over_limit=allow_over_limit,
            holds_for=holds_for,
            subject_set=SubjectsOnDisk,
            progress=progress,
            # A dry run counts the batches of a run with the config's trail.
            audited=config.audit is not None and config.audit.enabled,
        )
        if (signal_code := stopped_by()) is not None:
            report = replace(report, stopped_by=signal_code)
        if recorder is not None and report.exit_code != ExitCode.AUDIT_FAILURE:
            # A hold placed during the last batch is recorded by this run, not the next; one
            # the state database cannot mark now stays in force, for the trail's next writer.
            # (A trail that fails here fails the run, exit 70: nothing more is appended.)
            try:
                holds_for.record()
            except StoreUnavailable as error:
                logger.warning("hold.not_recorded", error=str(error))
            recorder.run_finished(report)
    counters: dict[str, Any] = {}
    for outcome in report.outcomes:
        for name, count in outcome.counters().items():
            counters[name] = counters.get(name, 0) + count
    logger.info(
        "run.finished",
        dry_run=dry_run,
        audited=audited,
        rules=len(report.outcomes),
        failed_rules=sum(outcome.status in FAILED for outcome in report.outcomes),
        exit_code=int(report.exit_code),
        **counters,
    )
    return report


class RunNotRecorded(StoreUnavailable):
    """A run ended, but what records it could not be written: the run's report (to print), and
    its exit code unless the run itself succeeded (a failed rule, 3, or the trail's failure, 70,
    says more than this 69)."""

    def __init__(self, message: str, report: RunReport) -> None:
        super().__init__(message)
        self.report = report
        if report.exit_code != ExitCode.OK:
            self.exit_code = report.exit_code


class LedgerNotWritten(RunNotRecorded):
    """The run ledger could not record a run's outcome."""


class MetricsNotWritten(RunNotRecorded):
    """A run's metrics textfile (`run --metrics-textfile`) could not be written."""


@contextmanager
def in_ledger(
    state: StateDatabase | None,
    rule_names: Sequence[str],
    run_id: str,
    now: Callable[[], datetime],
) -> Iterator[Callable[[RunReport], None]]:
    """Given the state database (None: no ledger) and the rules a run is about, record each as
    'running' now; yield the function that records the report's outcomes. A run that raises
    instead is recorded as failed, with the error."""
    if state is None:
        yield lambda _report: None
        return
    host = socket.gethostname()
    rows = {name: state.record_run_start(run_id, name, now(), host) for name in rule_names}

    def finish(report: RunReport) -> None:
        try:
            for outcome in report.outcomes:
                state.record_run_end(
                    rows[outcome.rule],
                    now(),
                    status=outcome.status,
                    due=outcome.due,
                    deleted=outcome.deleted,
                    anonymised=outcome.anonymised,
                    skipped=outcome.skipped,
                    error=outcome.error,
                )
        except StoreUnavailable as error:
            raise LedgerNotWritten(
                f"the run finished (exit {int(report.exit_code)}; its batches are in the audit "
                f"trail), but {error}: `retention status` shows it running until the next run",
                report,
            ) from error

    try:
        yield finish
    except LedgerNotWritten:
        raise
    except Exception as error:
        # Best effort: the error being raised says more than a ledger that cannot be written.
        with suppress(StoreUnavailable):
            for row in rows.values():
                state.record_run_end(row, now(), status="failed", error=error_text(error))
        raise


@contextmanager
def run_ledger(
    config: Config, rules: tuple[Rule, ...], *, dry_run: bool
) -> Iterator[tuple[StateDatabase, LeaseWatch]]:
    """Given the rules a run is about, open the state database and, unless ``dry_run``, hold each
    rule's lease while the block runs (LockHeld, exit 75, when a daemon or another run has one);
    yield the database, for ``run_plan(state=...)``, and the leases' watch: whether one was lost
    since (taken over after this process was frozen past its expiry, or not renewable while the
    state database did not answer), when the purge must stop."""
    from retention.state import StateDatabase, lease_holder_name
    from retention.state_leases import leased, rule_lease

    # A dry run writes nothing, not even the state database's tables on a fresh install.
    state = StateDatabase(state_url(config.state), read_only=dry_run)
    try:
        names = [] if dry_run else [rule_lease(rule.name) for rule in rules]
        with leased(state, names, lease_holder_name(), config.daemon.lease_ttl) as lost:
            for rule in () if dry_run else rules:
                state.mark_interrupted(rule.name)
            yield state, lost
    finally:
        state.close()


def write_metrics_textfile(
    config: Config, report: RunReport, state: StateDatabase, path: Path, now: datetime
) -> None:
    """Given a finished run, write its metrics to a node-exporter textfile: this run's counts as
    gauges, each rule's last success from the ledger, its previous and next scheduled run, the
    overdue records (read-only plan as of now minus [daemon].overdue_grace), the audit trail's
    last checkpoint and anchor."""
    # prometheus-client costs every other command 60 ms to import.
    from retention.audit.freshness import trail_moments
    from retention.runtime.metrics import write_run_textfile
    from retention.stores import open_stores

    names = [outcome.rule for outcome in report.outcomes]
    rules = config.rules_named(tuple(names))
    try:
        with open_stores(config, read_only=True) as store_for:
            overdue = overdue_counts(config, rules, store_for, now, config.daemon.overdue_grace)
        write_run_textfile(
            path,
            report,
            now,
            replace(config, rules=rules),
            {name: state.last_success(name) for name in names},
            overdue,
            trail_moments,
        )
    except (OSError, StoreUnavailable) as error:
        # The run is over (a folder that does not exist or is read-only to the unit, a full
        # disk, a store gone since): its report is still printed, the error after it.
        reason = f"{error.strerror}" if isinstance(error, OSError) and error.strerror else error
        raise MetricsNotWritten(
            f"the run finished (exit {int(report.exit_code)}; its batches are in the audit "
            f"trail), but its metrics cannot be written to {str(path)!r}: {reason}",
            report,
        ) from error


def overdue_counts(
    config: Config,
    rules: tuple[Rule, ...],
    store_for: Callable[[str], RecordStore],
    now: datetime,
    grace: timedelta,
) -> dict[str, int]:
    """Given rules and their stores (read-only is enough), return for each rule that could be
    planned how many of its records were already due ``grace`` ago: the backlog an alert
    watches, since a purge that keeps up leaves none."""
    late = make_plan(config, rules, store_for, now - grace)
    return {rule_plan.rule.name: rule_plan.due for rule_plan in late.rules if not rule_plan.error}


def create_audit_keys(
    settings: AuditSettings, now: datetime, *, rotate: bool, quiet: bool = False
) -> list[str]:
    """Given the audit settings, create what is missing: the HMAC key, the signing key and its
    public key (valid from ``now``). ``rotate`` retires the signing key in place. Return what was
    done, one line each. Keys held as credentials are the service manager's to install."""
    if settings.signing_key_file is None or settings.hmac_key_file is None:
        raise UsageError("keygen writes key files: set audit.signing_key_file and hmac_key_file")
    done = []
    if not settings.hmac_key_file.exists():
        generate_hmac_key(settings.hmac_key_file)
        done.append(f"wrote the audit HMAC key to {settings.hmac_key_file} (mode 0600)")
    signing = settings.signing_key_file
    if signing.exists() and not rotate:
        if not quiet:
            done.append(f"{signing} exists; keep it, or pass --rotate to replace it")
        return done
    if signing.exists():
        retired = signing.with_name(f"{signing.name}.retired-{now:%Y%m%dT%H%M%SZ}")
        signing.rename(retired)
        done.append(f"retired the old signing key to {retired}")
    signer = generate_signer(signing)
    add_public_key(settings.public_keys_file, signer, now)
    done.append(
        f"wrote signing key {signer.key_id} to {signing} (mode 0600) and its public key to "
        f"{settings.public_keys_file}"
    )
    return done
