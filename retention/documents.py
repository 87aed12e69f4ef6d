"""The JSON documents the commands print with ``--output json`` (docs/json.md): one
``schema_version`` each, every key always present (null when it does not apply), every instant
in one format. Pure: returns dicts, prints nothing. Their JSON Schemas are in retention/schemas/.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from retention.executor import RunReport
from retention.holds import Hold
from retention.planner import iso_instant

REPORT_SCHEMA_VERSION = 1
HOLDS_SCHEMA_VERSION = 1


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
