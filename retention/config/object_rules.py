"""The readers of rules on S3 buckets and backup folders, and of cross-store rules' subjects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from retention.config.limits import read_period, read_run_limits
from retention.config.model import (
    FILES_KEY,
    S3_KEY,
    ColumnRef,
    FilesStoreConfig,
    ObjectClock,
    ObjectScope,
    Rule,
    S3StoreConfig,
    Settings,
    Subjects,
)
from retention.config.reader import PendingSubjects, Reader, text
from retention.rules import Period, compile_date_pattern
from retention.subject_prefix import (
    key_problems,
    parse_subject_prefix,
)

DEFAULT_OBJECT_BATCH_SIZE = 10_000
# A subject rule's own clock, period and schedule are the ones that count.
_SUBJECT_RULE_ONLY = ("period", "clock", "date_pattern", "prefix", "glob", "schedule", "jitter")


def read_object_rule(
    reader: Reader,
    raw: Mapping[str, object],
    path: str,
    name: str | None,
    store: S3StoreConfig | FilesStoreConfig,
    settings: Settings,
) -> Rule | None:
    """A rule on a bucket or a folder: the keys that go with its kind of store, and together
    (the declaration checks each key of every object rule alike)."""
    kind = store.kind
    subjects_name = text(raw, "subjects")
    subject_prefix = text(raw, "subject_prefix")
    pending: PendingSubjects | None = None
    if subjects_name is not None or subject_prefix is not None:
        if kind != "s3":
            reader.error(f"{path}.subjects", "cross-store rules purge S3 prefixes only")
        elif subjects_name is None or subject_prefix is None:
            reader.error(path, "a cross-store rule needs both subjects and subject_prefix")
        else:
            for key in _SUBJECT_RULE_ONLY:
                if key in raw:
                    reader.error(
                        f"{path}.{key}",
                        f"comes from the subjects' rule {subjects_name!r}: leave it out here",
                    )
            if not subject_prefix.endswith("/"):
                reader.error(
                    f"{path}.subject_prefix",
                    "must end with '/', or customers/1 would also reach customers/10/",
                )
            parts, problems = parse_subject_prefix(subject_prefix)
            for problem in problems:
                reader.error(f"{path}.subject_prefix", problem)
            pending = PendingSubjects(
                subjects_name, subject_prefix, parts, f"{path}.subject_prefix"
            )
    clocks: tuple[ObjectClock, ObjectClock] = (
        ("last_modified", "key_date") if kind == "s3" else ("mtime", "name_date")
    )
    clock: ObjectClock = raw.get("clock", clocks[0])  # type: ignore[assignment]  # checked next
    if clock not in clocks:
        reader.error(f"{path}.clock", f"must be {clocks[0]!r} or {clocks[1]!r} here, not {clock!r}")
        clock = clocks[0]
    date_pattern = text(raw, "date_pattern")
    if clock == clocks[1] and date_pattern is None and "date_pattern" not in raw:
        reader.error(f"{path}.date_pattern", f"missing: clock = {clocks[1]!r} reads it")
    if clock == clocks[0] and date_pattern is not None:
        reader.error(f"{path}.date_pattern", f"only goes with clock = {clocks[1]!r}")
    if date_pattern is not None:
        try:
            compile_date_pattern(date_pattern)
        except ValueError as error:
            reader.error(f"{path}.date_pattern", str(error))
    prefix = text(raw, "prefix") or ""
    if kind == "files" and "prefix" in raw:
        reader.error(f"{path}.prefix", "backup folders select files with glob, not prefix")
    glob = text(raw, "glob")
    if kind == "s3" and glob is not None:
        reader.error(f"{path}.glob", "S3 rules select objects with prefix, not glob")
    if glob is not None and ".." in Path(glob).parts:
        reader.error(f"{path}.glob", "must stay inside the root: no leading '/', no '..'")
    period = None
    if pending is None:
        if "period" not in raw and "period" not in reader.rejected_keys(path):
            reader.error(
                f"{path}.period", "missing (e.g. '90d', '1y', 'P1Y6M'; '0d' for no retention)"
            )
        period = read_period(reader, raw.get("period"), f"{path}.period")
    limits = read_run_limits(reader, raw, path, settings, DEFAULT_OBJECT_BATCH_SIZE)
    if (
        period is not None
        and period == Period(text=period.text)
        and not prefix
        and not glob
        and date_pattern is None
        and not limits.match_all
        and not reader.rejected_keys(path) & {"prefix", "glob", "date_pattern", "match_all"}
    ):
        reader.error(
            path,
            "a period of 0 and no prefix, glob or date_pattern purges everything in the store; "
            "narrow it, or write match_all = true if that is what this rule means",
        )
    if reader.has_issues_under(path) or name is None:
        return None
    dataset = store.bucket if isinstance(store, S3StoreConfig) else str(store.root)
    scope = ObjectScope(
        clock=clock,
        prefix=prefix,
        glob=glob if glob is not None or kind == "s3" else "**/*",
        date_pattern=date_pattern,
    )
    rule = Rule(
        name=name,
        path=path,
        policy=text(raw, "policy") or "",
        category=text(raw, "category") or "",
        store=store.name,
        table=dataset,
        key=S3_KEY if kind == "s3" else FILES_KEY,
        clock=(ColumnRef(clock),),
        period=period or Period(text="0d"),
        action="delete",
        batch_size=limits.batch_size,
        max_delete=limits.max_delete,
        max_fraction=limits.max_fraction,
        match_all=limits.match_all,
        schedule=limits.schedule,
        jitter=limits.jitter,
        objects=scope,
    )
    if pending is not None:
        reader.pending_subjects[path] = pending
    return rule


def resolve_subjects(reader: Reader, rules: list[Rule], declared: set[object]) -> list[Rule]:
    """Cross-store rules name their subjects' rule by name: link them once all are read. The
    subjects' rule must be a SQL rule, named by one cross-store rule at most. A subjects' rule
    that is declared but has errors of its own is not reported again here."""
    by_name = {rule.name: rule for rule in rules}
    claimed: dict[str, str] = {}
    resolved: list[Rule] = []
    for rule in rules:
        pending = reader.pending_subjects.get(rule.path)
        if pending is None or rule.objects is None:
            resolved.append(rule)
            continue
        subject = by_name.get(pending.rule_name)
        where = pending.path.rsplit(".", 1)[0] + ".subjects"
        if subject is None and pending.rule_name in declared:
            continue
        if subject is None or subject.objects is not None:
            reader.error(where, f"{pending.rule_name!r} is not the name of a rule on a SQL store")
            continue
        if pending.rule_name in claimed:
            reader.error(where, f"{pending.rule_name!r} already has {claimed[pending.rule_name]}")
            continue
        claimed[pending.rule_name] = f"cross-store rule {rule.name!r}"
        problems = key_problems(pending.parts, subject.name, subject.key)
        if problems:
            placeholders = "".join("{" + column + "}/" for column in subject.key)
            reader.error(
                pending.path,
                f"{'; '.join(problems)} (use the key columns of {subject.name!r} as "
                f"placeholders, one per path segment: '...{placeholders}')",
            )
            continue
        subjects = Subjects(rule=subject, prefix=pending.prefix, parts=pending.parts)
        resolved.append(
            replace(
                rule,
                period=subject.period,
                schedule=subject.schedule,
                jitter=subject.jitter,
                objects=replace(rule.objects, subjects=subjects),
            )
        )
    return resolved
