"""Use cases shared by the CLI (and later the daemon): check, plan, run. Orchestration only:
the logic lives in the core (config, rules, planner, executor), the effects in the stores."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.audit.keys import (
    AuditKeyError,
    add_public_key,
    generate_hmac_key,
    generate_signer,
)
from retention.audit.recorder import audit_keys, identity, open_trail, recording
from retention.config import AuditSettings, Config, Rule
from retention.errors import ConfigError, ConfigIssue, ExitCode, RetentionError, UsageError
from retention.executor import FAILED, RunReport, execute
from retention.holds import Hold, parse_hold_target
from retention.planner import (
    PLAN_SCHEMA_VERSION,
    Plan,
    RecordStore,
    build_plan,
    check_against_stores,
    plan_document,
)
from retention.runtime.logging import get_logger
from retention.runtime.secrets import read_hash_key, state_url
from retention.state import StateDatabase, lease_holder_name, leased, rule_lease
from retention.state_holds import (
    add_hold,
    load_holds,
    read_holds,
    release_hold,
    state_exists,
)
from retention.stores import open_stores


def make_plan(
    config: Config,
    rules: tuple[Rule, ...],
    store_for: Callable[[str], RecordStore],
    as_of: datetime,
    *,
    show_keys: bool = False,
) -> Plan:
    """Given rules and their stores, check every rule against its store's schema (every problem
    at once: ConfigError, exit 78), then return the Plan as of ``as_of`` (sample keys in clear
    with ``show_keys``)."""
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
) -> RunReport:
    """Given a Plan, purge it (or walk it, ``dry_run``), recording every batch in the audit trail
    first, and log one ``run.finished`` line. Without an audit trail nothing is purged. With
    ``state``, each rule's run (not a dry run's) goes into the run ledger."""
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
    holds_for: Callable[[str], list[Hold]],
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
        )
        if recorder is not None and report.exit_code != ExitCode.AUDIT_FAILURE:
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

    try:
        yield finish
    except Exception as error:
        for row in rows.values():
            state.record_run_end(row, now(), status="failed", error=_error_text(error))
        raise


def _error_text(error: Exception) -> str:
    return str(error) if isinstance(error, RetentionError) else f"{type(error).__name__}: {error}"


@contextmanager
def run_ledger(
    config: Config, rules: tuple[Rule, ...], *, dry_run: bool
) -> Iterator[StateDatabase]:
    """Given the rules a run is about, open the state database and, unless ``dry_run``, hold each
    rule's lease while the block runs (LockHeld, exit 75, when a daemon or another run has one);
    yield the database, for ``run_plan(state=...)``."""
    state = StateDatabase(state_url(config.state))
    try:
        names = [] if dry_run else [rule_lease(rule.name) for rule in rules]
        with leased(state, names, lease_holder_name(), config.daemon.lease_ttl):
            for rule in () if dry_run else rules:
                state.mark_interrupted(rule.name)
            yield state
    finally:
        state.close()


def write_metrics_textfile(
    config: Config, report: RunReport, state: StateDatabase, path: Path, now: datetime
) -> None:
    """Given a finished run, write the daemon's metrics for its rules to a node-exporter textfile:
    this run's counts, each rule's last success from the ledger, the overdue records (read-only
    plan as of now minus [daemon].overdue_grace)."""
    # prometheus-client costs every other command 60 ms to import.
    from retention.runtime.metrics import (
        new_metrics,
        observe_report,
        set_last_successes,
        set_overdue,
        write_textfile,
    )

    names = [outcome.rule for outcome in report.outcomes]
    metrics = new_metrics(names)
    observe_report(metrics, report, now)
    set_last_successes(metrics, {name: state.last_success(name) for name in names})
    with open_stores(config, read_only=True) as store_for:
        rules = config.rules_named(tuple(names))
        set_overdue(
            metrics, overdue_counts(config, rules, store_for, now, config.daemon.overdue_grace)
        )
    write_textfile(metrics, path)


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


def check_secrets(config: Config) -> list[ConfigIssue]:
    """Given a config, return a problem for each secret it names that cannot be read."""
    issues: list[ConfigIssue] = []
    try:
        read_hash_key(config.settings)
    except ConfigError as error:
        issues += error.issues
    if config.audit is not None and config.audit.enabled:
        try:
            audit_keys(config.audit)
        except ConfigError as error:
            issues += error.issues
        except AuditKeyError as error:
            issues.append(ConfigIssue("audit.signing_key_file", str(error)))
    return issues


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
            opened.append(StateDatabase(url))
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
    value: dict[str, Any] = (
        {"keys": [list(key) for key in parsed_keys]}
        if kind == "key"
        else {"where": condition.text}
        if condition is not None
        else {"prefix": parsed_prefix}
    )
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
        )
    finally:
        state.close()
    _audit_hold(config, "hold.added", hold, value, now)
    return hold


def lift_hold(config: Config, hold_id: int, *, reason: str, now: datetime, by: str) -> Hold:
    """Given a hold id and why, release it and record that in the audit trail; return it."""
    if not reason.strip():
        raise UsageError("--reason is required: a release says why")
    state = StateDatabase(state_url(config.state))
    try:
        hold = release_hold(state, hold_id, reason=reason, now=now, by=by)
    finally:
        state.close()
    _audit_hold(config, "hold.released", hold, {"release_reason": reason}, now)
    return hold


def _audit_hold(
    config: Config, entry_type: str, hold: Hold, value: dict[str, Any], now: datetime
) -> None:
    """Hold changes go into the trail with their reason; what they name (record keys, a
    condition that may quote personal data) only as a keyed digest."""
    if config.audit is None or not config.audit.enabled:
        return
    with open_trail(config.audit, lambda: now) as writer:
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
                "reason": hold.reason if entry_type == "hold.added" else value["release_reason"],
                "until": hold.until.isoformat() if hold.until else None,
                **identity(),
            },
        )


@dataclass(frozen=True)
class SavedPlan:
    """A plan written by `plan --save`: what `run --plan-file` must purge, and nothing else."""

    plan_id: str
    as_of: datetime
    config_digest: str
    rules: tuple[str, ...]
    due: dict[str, int]
    cutoffs: dict[str, str | None]


def save_plan(plan: Plan, path: Path) -> None:
    """Given a Plan, write it as JSON (the plan document) for `run --plan-file`."""
    path.write_text(json.dumps(plan_document(plan), indent=2, ensure_ascii=False) + "\n")


def load_saved_plan(path: Path, config: Config) -> SavedPlan:
    """Given a saved plan file and the current config, return the saved plan; refuse (exit 2)
    when it is not a plan, or when the config changed since it was made."""
    try:
        document = json.loads(path.read_text())
        saved = SavedPlan(
            plan_id=document["plan_id"],
            as_of=datetime.fromisoformat(document["as_of"]),
            config_digest=document["config_digest"],
            rules=tuple(rule["rule"] for rule in document["rules"]),
            due={rule["rule"]: int(rule["due"]) for rule in document["rules"]},
            cutoffs={rule["rule"]: rule["cutoff"] for rule in document["rules"]},
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path} is not a saved plan ({error})") from error
    if document.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise UsageError(f"{path} has plan schema {document.get('schema_version')!r}")
    if saved.config_digest != config.digest:
        raise UsageError(
            f"the config changed since plan {saved.plan_id} was made: nothing was purged; "
            "plan again"
        )
    return saved


def check_saved_plan(saved: SavedPlan, fresh: Plan, tolerance_percent: float) -> None:
    """Given a saved plan and the same plan made again now (same rules, same instant), refuse
    (exit 2) when a cutoff differs or a due count moved by more than the tolerance."""
    problems = []
    for rule_plan in fresh.rules:
        name = rule_plan.rule.name
        cutoff = rule_plan.selection.default.cutoff.isoformat() if rule_plan.selection else None
        if cutoff != saved.cutoffs.get(name):
            problems.append(f"{name}: cutoff {cutoff} is not the plan's {saved.cutoffs.get(name)}")
        planned = saved.due.get(name, 0)
        if abs(rule_plan.due - planned) > planned * tolerance_percent / 100:
            problems.append(
                f"{name}: {rule_plan.due:,} due now, {planned:,} in the plan "
                f"(tolerance {tolerance_percent:g}%)"
            )
    if problems:
        raise UsageError(
            f"the data moved since plan {saved.plan_id}; nothing was purged: " + "; ".join(problems)
        )
