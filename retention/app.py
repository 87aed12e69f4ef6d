"""Use cases shared by the CLI (and later the daemon): check, plan, run. Orchestration only:
the logic lives in the core (config, rules, planner, executor), the effects in the stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from retention.audit.keys import (
    AuditKeyError,
    add_public_key,
    generate_hmac_key,
    generate_signer,
)
from retention.audit.recorder import audit_keys, recording
from retention.config import AuditSettings, Config, Rule
from retention.errors import ConfigError, ConfigIssue, ExitCode, UsageError
from retention.executor import FAILED, RunReport, execute
from retention.planner import Plan, RecordStore, build_plan, check_against_stores
from retention.runtime.logging import get_logger
from retention.runtime.secrets import read_hash_key


def make_plan(
    config: Config,
    rules: tuple[Rule, ...],
    store_for: Callable[[str], RecordStore],
    as_of: datetime,
) -> Plan:
    """Given rules and their stores, check every rule against its store's schema (every problem
    at once: ConfigError, exit 78), then return the Plan as of ``as_of``."""
    issues, _unreachable = check_against_stores(rules, store_for)
    if issues:
        raise ConfigError(issues)
    configured_key = read_hash_key(config.settings)
    # Without a configured key, samples are still hashed, with a key nobody keeps.
    hash_key = configured_key if configured_key is not None else os.urandom(32)
    return build_plan(
        config, rules, store_for, as_of, hash_key=hash_key, keyed=configured_key is not None
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
) -> RunReport:
    """Given a Plan, purge it (or walk it, ``dry_run``), recording every batch in the audit trail
    first, and log one ``run.finished`` line. Without an audit trail nothing is purged."""
    run_id = run_id or uuid.uuid4().hex
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
        )
        if recorder is not None and report.exit_code != ExitCode.AUDIT_FAILURE:
            recorder.run_finished(report)
    counters: dict[str, Any] = {
        field: sum(getattr(outcome, field) for outcome in report.outcomes)
        for field in ("due", "deleted", "anonymised", "children_deleted", "skipped")
    }
    logger.info(
        "run.finished",
        dry_run=dry_run,
        audited=audited,
        rules=len(report.outcomes),
        failed=sum(outcome.status in FAILED for outcome in report.outcomes),
        exit_code=int(report.exit_code),
        **counters,
    )
    return report


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
