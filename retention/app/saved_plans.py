"""Saved plans: `plan --save` writes one, `run --plan-file` purges exactly it, or refuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from retention.config import Config
from retention.errors import UsageError
from retention.planner import PLAN_SCHEMA_VERSION, Plan, plan_document
from retention.rules import EARLIEST_AS_OF, LATEST_AS_OF


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
    if saved.as_of.tzinfo is None or not EARLIEST_AS_OF <= saved.as_of < LATEST_AS_OF:
        raise UsageError(
            f"{path} is not a saved plan: as_of {document['as_of']!r} is not an instant with an "
            f"offset from {EARLIEST_AS_OF:%Y-%m-%d} to before {LATEST_AS_OF:%Y-%m-%d}"
        )
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
