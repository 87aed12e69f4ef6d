"""Saved plans: `plan --save` writes one, sealed; `run --plan-file` purges exactly it, or refuses.

The seal is an HMAC-SHA256, under the audit HMAC key (the settings hash key when there is no
audit trail), of the plan document in canonical JSON: a plan edited by hand (its instant, a
cutoff, a count, its id) or made by another installation does not match, and nothing of it runs.
A config with neither key (throw-away data, no audit trail) saves plans without a seal; their
``plan_id`` must still be the digest of their content.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retention.audit.entries import canonical
from retention.audit.prove import audit_hmac_key
from retention.config import Config, read_at_most
from retention.documents import PLAN_SCHEMA_VERSION, plan_document
from retention.errors import UsageError
from retention.planner import Plan, plan_digest
from retention.rules import EARLIEST_AS_OF, LATEST_AS_OF
from retention.runtime.secrets import read_hash_key

SEAL = "seal"


@dataclass(frozen=True)
class SavedPlan:
    """A plan written by `plan --save`: what `run --plan-file` must purge, and nothing else."""

    plan_id: str
    as_of: datetime
    config_digest: str
    rules: tuple[str, ...]
    due: dict[str, int]
    cutoffs: dict[str, str | None]
    # Per rule, the child rows per child table that go with its rows due.
    children: dict[str, dict[str, int]]


# A plan lists its rules; past this the file is something else (/dev/zero never ends).
LONGEST_PLAN_BYTES = 64 * 2**20


def save_plan(plan: Plan, path: Path, config: Config) -> None:
    """Given a Plan, write it as JSON (the plan document) with its seal, for `run --plan-file`."""
    # The document as it will be read back (tuples become lists), so that the seal matches.
    document = json.loads(json.dumps(plan_document(plan), ensure_ascii=False))
    key = seal_key(config)
    if key is not None:
        document[SEAL] = _seal(document, key)
    try:
        path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    except OSError as error:
        raise UsageError(f"--save: cannot write {path}: {error.strerror or error}") from error


def seal_key(config: Config) -> bytes | None:
    """Given the config, return the key that seals saved plans: the audit HMAC key (ConfigError,
    exit 78, when an enabled audit trail has none), or without an enabled audit trail the
    settings hash key; None when there is neither."""
    if config.audit is not None and config.audit.enabled:
        return audit_hmac_key(config.audit)
    return read_hash_key(config.settings)


def _sealed(document: dict[str, Any], seal: object, key: bytes) -> bool:
    """Whether ``seal`` is the seal of ``document`` under ``key``; False too for a document
    JSON canonicalisation refuses (an integer past 2**53, a float past its range: edited)."""
    if not isinstance(seal, str):
        return False
    try:
        expected = _seal(document, key)
    except (ValueError, RecursionError):
        return False
    return hmac.compare_digest(seal, expected)


def _seal(document: dict[str, Any], key: bytes) -> str:
    content = canonical({name: value for name, value in document.items() if name != SEAL})
    return hmac.digest(key, b"retention saved plan\x00" + content, "sha256").hex()


def load_saved_plan(path: Path, config: Config) -> SavedPlan:
    """Given a saved plan file and the current config, return the saved plan; refuse (exit 2)
    when it is not a plan, when its seal does not match its content (edited, or sealed with
    another key), or when the config changed since it was made."""
    try:
        content = read_at_most(path, LONGEST_PLAN_BYTES)
        if content is None:
            raise ValueError(f"longer than {LONGEST_PLAN_BYTES // 2**20} MiB")
        document = json.loads(content)
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is not a saved plan ({error})") from error
    except RecursionError as error:
        raise UsageError(f"{path} is not a saved plan (nested too deep)") from error
    if not isinstance(document, dict):
        raise UsageError(f"{path} is not a saved plan (not a JSON object)")
    # The seal first: a plan edited by hand is refused as such, whatever it was made to hold.
    key, seal = seal_key(config), document.get(SEAL)
    if key is not None and not _sealed(document, seal, key):
        raise UsageError(
            f"{path} does not match its seal: it was edited since `plan --save` wrote it, "
            "sealed with another key, or never sealed; nothing was purged; plan again"
        )
    try:
        saved = SavedPlan(
            plan_id=document["plan_id"],
            as_of=datetime.fromisoformat(document["as_of"]),
            config_digest=document["config_digest"],
            rules=tuple(rule["rule"] for rule in document["rules"]),
            due={rule["rule"]: int(rule["due"]) for rule in document["rules"]},
            cutoffs={rule["rule"]: rule["cutoff"] for rule in document["rules"]},
            children={
                rule["rule"]: {
                    str(table): int(count) for table, count in rule.get("children", {}).items()
                }
                for rule in document["rules"]
            },
        )
    except KeyError as error:
        raise UsageError(f"{path} is not a saved plan (no {error.args[0]!r})") from error
    except (ValueError, TypeError, AttributeError) as error:
        raise UsageError(f"{path} is not a saved plan (a field of the wrong type)") from error
    if saved.as_of.tzinfo is None or not EARLIEST_AS_OF <= saved.as_of < LATEST_AS_OF:
        raise UsageError(
            f"{path} is not a saved plan: as_of {document['as_of']!r} is not an instant with an "
            f"offset from {EARLIEST_AS_OF:%Y-%m-%d} to before {LATEST_AS_OF:%Y-%m-%d}"
        )
    if document.get("schema_version") != PLAN_SCHEMA_VERSION:
        raise UsageError(f"{path} has plan schema {document.get('schema_version')!r}")
    summary = [
        (name, saved.due[name], saved.cutoffs[name], tuple(saved.children[name].items()))
        for name in saved.rules
    ]
    if plan_digest(saved.config_digest, document["as_of"], summary) != saved.plan_id:
        raise UsageError(
            f"{path} does not match its plan id {saved.plan_id}: it was edited since "
            "`plan --save` wrote it; nothing was purged; plan again"
        )
    if saved.config_digest != config.digest:
        raise UsageError(
            f"the config changed since plan {saved.plan_id} was made: nothing was purged; "
            "plan again"
        )
    return saved


def check_saved_plan(saved: SavedPlan, fresh: Plan, tolerance_percent: float) -> None:
    """Given a saved plan and the same plan made again now (same rules, same instant), refuse
    (exit 2) when a cutoff differs, or a due count or a child table's count moved by more than
    the tolerance."""
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
        saved_children = saved.children.get(name, {})
        for table, count in rule_plan.children:
            planned = saved_children.get(table, 0)
            if abs(count - planned) > planned * tolerance_percent / 100:
                problems.append(
                    f"{name}: {count:,} {table} rows go with it now, {planned:,} in the plan "
                    f"(tolerance {tolerance_percent:g}%)"
                )
    if problems:
        raise UsageError(
            f"the data moved since plan {saved.plan_id}; nothing was purged: " + "; ".join(problems)
        )
