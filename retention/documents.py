"""The JSON documents the commands print with ``--output json`` (docs/json.md): one
``schema_version`` each, every key always present (null when it does not apply), every instant
in one format. Pure: returns dicts, prints nothing. Their JSON Schemas are in retention/schemas/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from importlib import resources
from typing import Any

from retention.holds import Hold
from retention.planner import Plan, RulePlan
from retention.run_report import RuleOutcome, RunReport

PLAN_SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 1
HOLDS_SCHEMA_VERSION = 1


def plan_document(plan: Plan) -> dict[str, object]:
    """Given a Plan, return it as one JSON-ready document (``schema_version`` first)."""
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "plan_id": plan.plan_id,
        "as_of": plan.as_of.isoformat(),
        "config_digest": plan.config_digest,
        "sample_hashing": "clear" if plan.shows_keys else plan.sample_hashing,
        "rules": [_rule_document(rule_plan) for rule_plan in plan.rules],
    }


def _rule_document(rule_plan: RulePlan) -> dict[str, object]:
    rule = rule_plan.rule
    selection = rule_plan.selection
    document: dict[str, object] = {
        "rule": rule.name,
        "policy": rule.policy,
        "category": rule.category,
        "store": rule.store,
        "table": rule.table,
        "action": rule.action,
        "clock": rule.clock_text,
        "period": rule.period.text,
        "period_column": str(rule.period_column) if rule.period_column else None,
        "cutoff": selection.default.cutoff.isoformat() if selection else None,
        "due": rule_plan.due,
        "held": rule_plan.held,
        "in_scope": rule_plan.in_scope,
        "future_clock": rule_plan.future,
        "unreadable_clock": rule_plan.unreadable,
        "invalid_period": rule_plan.invalid_period,
        "unfit_holds": list(rule_plan.unfit_holds),
        "children": dict(rule_plan.children),
        "brake": rule_plan.brake,
        "oldest": iso_instant(rule_plan.oldest),
        "sample_keys": list(rule_plan.samples),
        "error": rule_plan.error,
        # Every key is always there: null when it does not apply to this rule (docs/json.md).
        "objects": dict(rule_plan.details) if rule.objects is not None else None,
        "subjects": (
            rule.objects.subjects.rule.name if rule.objects and rule.objects.subjects else None
        ),
        "period_overrides": None,
        "invalid_period_values": None,
        "partitions_due": None,
        "partition_notes": None,
    }
    if rule.period_column:
        document["period_overrides"] = {
            str(value): expired.cutoff.isoformat()
            for value, expired in (selection.overrides if selection else ())
        }
        document["invalid_period_values"] = list(
            selection.invalid_period_values if selection else ()
        )
    if rule_plan.partitioned:
        document["partitions_due"] = [
            {"partition": partition.name, "rows": partition.rows, "upper": partition.upper}
            for partition in rule_plan.partitions
        ]
        document["partition_notes"] = list(rule_plan.partition_notes)
    return document


def iso_instant(value: datetime | date | None) -> str | None:
    """Given an instant, a day or None, return ISO 8601 in UTC with its offset, or None: the one
    format of every instant in the JSON outputs. A day (a DATE clock) is its midnight UTC; a naive
    time is taken as UTC (the stores' convention). Example: ``iso_instant(date(2026, 1, 2))`` is
    ``"2026-01-02T00:00:00+00:00"``."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def report_document(report: RunReport, plan: dict[str, object]) -> dict[str, object]:
    """Given a run's report and its plan's document, return what `run`/`erase --output json`
    print: the plan, then each rule's outcome and the totals."""
    rules = [
        {
            "rule": outcome.rule,
            "action": outcome.action,
            "status": outcome.status,
            **outcome.counters(),
            "children": dict(outcome.children),
            "batches": outcome.batches,
            "seconds": round(outcome.seconds, 3),
            "longest_transaction_seconds": round(outcome.longest_transaction_seconds, 4),
            "error": outcome.error,
            "row_batches": outcome.row_batches,
            "partitions_dropped": _partitions_dropped(outcome),
            "partition_notes": list(outcome.partition_notes) if outcome.partitioned else None,
        }
        for outcome in report.outcomes
    ]
    totals: dict[str, int] = {}
    for outcome in report.outcomes:
        for name, count in outcome.counters().items():
            totals[name] = totals.get(name, 0) + count
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "plan_id": report.plan_id,
        "dry_run": report.dry_run,
        "exit_code": int(report.exit_code),
        "plan": plan,
        "rules": rules,
        "totals": totals,
    }


def _partitions_dropped(outcome: RuleOutcome) -> list[dict[str, object]] | None:
    """A rule on a partitioned table: the partitions it dropped whole (a dry run: would drop),
    each with its rows and batches; else None."""
    if not outcome.partitioned:
        return None
    return [
        {"partition": partition.name, "rows": partition.rows, "batches": partition.batches}
        for partition in outcome.partitions
    ]


def holds_document(holds: Sequence[Hold], now: datetime) -> dict[str, object]:
    """Given holds and the time, return what `hold list --output json` prints. Key holds give
    their number of keys, never the keys (they can be personal data)."""
    return {
        "schema_version": HOLDS_SCHEMA_VERSION,
        "as_of": iso_instant(now),
        "holds": [
            {
                "id": hold.id,
                "rule": hold.rule,
                "kind": hold.kind,
                "state": hold_state(hold, now),
                "key_count": len(hold.keys) if hold.kind == "key" else None,
                "where": hold.condition.text if hold.condition else None,
                "prefix": hold.prefix,
                "reason": hold.reason,
                "created_by": hold.created_by,
                "created_at": iso_instant(hold.created_at),
                "until": iso_instant(hold.until),
                "released_at": iso_instant(hold.released_at),
                "recorded": hold.recorded,
            }
            for hold in holds
        ],
    }


def hold_state(hold: Hold, now: datetime) -> str:
    """Given a hold and the time, return "in force", "released" or "expired"."""
    if hold.in_force(now):
        return "in force"
    return "released" if hold.released_at else "expired"


def schema(name: str) -> dict[str, Any]:
    """Given an output's name (plan, run, status, holds, ...), return its JSON Schema, as the
    package ships it. Example: ``schema("plan")["title"]``."""
    text = resources.files("retention").joinpath("schemas", f"{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded
