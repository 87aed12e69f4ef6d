"""A rule as the trail records it at the start of each run (``rule_definitions``), so that an
auditor reads the rule in force from the trail itself."""

from __future__ import annotations

from typing import Any

from retention.config import S3_KEY, Child, Rule


def _children(children: tuple[Child, ...]) -> list[dict[str, Any]]:
    return [
        {
            "table": child.table,
            "foreign_key": child.foreign_key,
            "references": child.references,
            "children": _children(child.children),
        }
        for child in children
    ]


def rule_definition(rule: Rule) -> dict[str, Any]:
    """Given a rule, return its normalised definition for the trail: what it purges, by which
    clock, after which period, under which conditions, and how. Never a secret: the config
    holds none in a rule (store URLs and keys live elsewhere), and a hash strategy's key is
    named by the strategy, not given.

    Example: a rule deleting ``logs`` a year after ``logged_at`` gives ``{"name": "logs",
    "store": "db", "table": "logs", "clock": "logged_at", "period": "1y", "action":
    "delete", ...}``.
    """
    definition: dict[str, Any] = {
        "name": rule.name,
        "policy": rule.policy,
        "category": rule.category,
        "store": rule.store,
        "table": rule.table,
        "key": list(rule.key),
        "clock": rule.clock_text,
        "period": rule.period.text,
        "period_column": str(rule.period_column) if rule.period_column else None,
        "conditions": [condition.text for condition in rule.conditions],
        "where_sql": rule.where_sql,
        "match_all": rule.match_all,
        "joins": [
            {"name": join.name, "table": join.table, "on": list(join.local_columns)}
            for join in rule.joins
        ],
        "action": rule.action,
        "method": batch_method(rule),
        "anonymise": {
            column: strategy.kind
            if strategy.value is None
            else {strategy.kind: str(strategy.value)}
            for column, strategy in rule.anonymise
        },
        "marker_column": rule.marker_column,
        "children": _children(rule.children),
        "erase_by": str(rule.erase_by) if rule.erase_by else None,
        "batch_size": rule.batch_size,
        "max_delete": rule.max_delete,
        "max_fraction": rule.max_fraction,
    }
    if rule.objects is not None:
        definition["objects"] = {
            "prefix": rule.objects.prefix,
            "glob": rule.objects.glob,
            "date_pattern": rule.objects.date_pattern,
            "subjects": rule.objects.subjects.rule.name if rule.objects.subjects else None,
        }
    return definition


def batch_method(rule: Rule) -> str:
    """How a batch purges: ``sql-delete``, ``sql-anonymise``, ``s3-delete`` or ``files-delete``."""
    if rule.objects is not None:
        return "s3-delete" if rule.key == S3_KEY else "files-delete"
    return "sql-delete" if rule.action == "delete" else "sql-anonymise"
