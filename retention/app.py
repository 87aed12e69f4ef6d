"""Use cases shared by the CLI (and later the daemon): check, plan, run. Orchestration only:
the logic lives in the core (config, rules, planner, executor), the effects in the stores."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from retention.config import Config, Rule
from retention.errors import ConfigError
from retention.executor import RunReport, execute
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
) -> RunReport:
    """Given a Plan, purge it (or walk it, ``dry_run``) and log one ``run.finished`` line."""
    logger = get_logger(plan_id=plan.plan_id)
    report = execute(
        plan,
        store_for,
        now=now,
        dry_run=dry_run,
        hash_key=read_hash_key(config.settings),
        logger=logger,
        stop_requested=stop_requested,
    )
    counters: dict[str, Any] = {
        field: sum(getattr(outcome, field) for outcome in report.outcomes)
        for field in ("due", "deleted", "anonymised", "children_deleted", "skipped")
    }
    logger.info(
        "run.finished",
        dry_run=dry_run,
        rules=len(report.outcomes),
        failed=sum(outcome.status in ("failed", "unavailable") for outcome in report.outcomes),
        exit_code=int(report.exit_code),
        **counters,
    )
    return report
