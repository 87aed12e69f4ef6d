"""Plans and run reports as text for people. Pure: returns strings, prints nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from retention.config import Rule
from retention.layout import table, wrap
from retention.planner import UNREADABLE_CLOCK, UNREADABLE_CLOCK_DOCS, Plan, RulePlan
from retention.run_report import FAILED, RunReport
from retention.wording import counted, one_line


def _moment(value: datetime | date | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return value.isoformat()


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    *,
    width: int | None = None,
    folded: Sequence[int] = (),
) -> list[str]:
    return table(headers, rows, numeric, width=width, folded=folded)


def _cutoff(rule_plan: RulePlan) -> str:
    if rule_plan.selection is None:
        return "-"
    cutoff = _moment(rule_plan.selection.default.cutoff)
    if rule_plan.selection.overrides:
        cutoff += f" (+{len(rule_plan.selection.overrides)} per-row)"
    return cutoff


def _partitions(plan: Plan) -> list[str]:
    """The partitions that go whole, with their rows, and why others go by row batches."""
    partitioned = [rule_plan for rule_plan in plan.rules if rule_plan.partitioned]
    if not partitioned:
        return []
    lines = ["", "Partitioned tables (whole expired partitions are dropped, not deleted by rows):"]
    for rule_plan in partitioned:
        rows = sum(partition.rows for partition in rule_plan.partitions)
        lines.append(
            f"  {rule_plan.rule.name}: {counted(len(rule_plan.partitions), 'partition')} dropped "
            f"whole, {rows:,} of the {counted(rule_plan.due, 'row')} due"
        )
        lines += [
            f"    {partition.name}  {counted(partition.rows, 'row')}  (below {partition.upper})"
            for partition in rule_plan.partitions
        ]
        lines += [f"    {note}" for note in rule_plan.partition_notes]
    return lines


def render_plan(plan: Plan, zone_name: str, width: int | None = None) -> str:
    """Given a Plan, return it as a readable table with samples and errors below, fit to
    ``width`` columns (None: no limit): wide columns fold under each row, long lines wrap.

    Times are UTC; the calendar arithmetic itself happened in ``zone_name``.
    """
    if plan.erasure is not None:
        return _render_erasure_plan(plan, width)
    headers = [
        "RULE",
        "ACTION",
        "STORE.TABLE",
        "CLOCK",
        "PERIOD",
        "CUTOFF (UTC)",
        "DUE",
        "HELD",
        "OLDEST",
    ]
    rows = []
    for rule_plan in plan.rules:
        rule = rule_plan.rule
        period = rule.period.text + (f" | {rule.period_column}" if rule.period_column else "")
        rows.append(
            [
                rule.name,
                rule.action,
                f"{rule.store}.{rule.table}",
                rule.clock_text,
                period,
                _cutoff(rule_plan),
                "ERROR" if rule_plan.error else f"{rule_plan.due:,}",
                f"{rule_plan.held:,}",
                _moment(rule_plan.oldest),
            ]
        )
    lines = [
        f"Plan {plan.plan_id} as of {_moment(plan.as_of)} UTC "
        f"(periods counted on the {zone_name} calendar; read-only, nothing was changed)",
        "",
        *_table(headers, rows, numeric={6, 7}, width=width, folded=(2, 3, 4, 5)),
        "",
    ]
    total = sum(rule_plan.due for rule_plan in plan.rules)
    children = sum(rule_plan.children_due for rule_plan in plan.rules)
    lines.append(
        f"{counted(total, 'record')} due in {counted(len(plan.rules), 'rule')}"
        + (f", and {counted(children, 'child row')} with them." if children else ".")
    )
    lines += _children_lines(plan)
    with_objects = [rule_plan for rule_plan in plan.rules if rule_plan.details]
    if with_objects:
        lines += ["", "Objects and files due:"]
        name_width = max(len(rule_plan.rule.name) for rule_plan in with_objects)
        lines += [
            f"  {rule_plan.rule.name.ljust(name_width)}  "
            + ", ".join(
                _detail(name, value)
                for index, (name, value) in enumerate(rule_plan.details)
                # Counts that are zero say nothing, except the first (how many are due).
                if value or index == 0
            )
            for rule_plan in with_objects
        ]
    lines += _partitions(plan)
    with_samples = [rule_plan for rule_plan in plan.rules if rule_plan.samples]
    if with_samples:
        kind = "keyed" if plan.sample_hashing == "keyed" else "one-off (no hash key configured)"
        if plan.shows_keys:
            lines += ["", "Sample keys of due records (in clear: --show-keys):"]
        else:
            lines += ["", f"Sample keys of due records ({kind} hashes, never raw values):"]
        name_width = max(len(rule_plan.rule.name) for rule_plan in with_samples)
        lines += [
            f"  {rule_plan.rule.name.ljust(name_width)}  "
            + " ".join(one_line(sample) for sample in rule_plan.samples)
            for rule_plan in with_samples
        ]
    warnings = [
        f"  {rule_plan.rule.name}: {counted(rule_plan.invalid_period, 'row')} with "
        f"{rule_plan.rule.period_column} = "
        + ", ".join(repr(value) for value in rule_plan.selection.invalid_period_values)
        + ": not a period, kept (see docs/config.md, period_column)"
        for rule_plan in plan.rules
        if rule_plan.selection and rule_plan.selection.invalid_period_values
    ]
    warnings += [
        f"  {rule_plan.rule.name}: hold {hold_id} names a key that is no value of "
        f"{'/'.join(rule_plan.rule.key)}: such a key holds nothing (release it, hold the right key)"
        for rule_plan in plan.rules
        for hold_id in rule_plan.unfit_holds
    ]
    errors = [
        f"  {rule_plan.rule.name}: {rule_plan.error}" for rule_plan in plan.rules if rule_plan.error
    ]
    warnings += [
        f"  {rule_plan.rule.name}: {counted(rule_plan.future, 'row')} with a clock after "
        "the plan's instant (not due before then)"
        for rule_plan in plan.rules
        if rule_plan.future
    ]
    warnings += [
        f"  {rule_plan.rule.name}: {counted(rule_plan.unreadable, 'row')} with a clock value "
        f"that is {UNREADABLE_CLOCK} (kept; see {UNREADABLE_CLOCK_DOCS})"
        for rule_plan in plan.rules
        if rule_plan.unreadable
    ]
    brakes = [
        f"  {rule_plan.rule.name}: {rule_plan.brake}"
        for rule_plan in plan.rules
        if rule_plan.brake and not rule_plan.error
    ]
    if brakes:
        lines += [
            "",
            "Brakes (run purges nothing of these rules without --allow-over-limit RULE):",
            *brakes,
        ]
    if warnings:
        lines += ["", "Warnings:", *warnings]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(wrap(lines, width))


def _render_erasure_plan(plan: Plan, width: int | None) -> str:
    """Given the plan of an erasure request, return it for people: per rule, what of that
    person would go (never the subject itself), then what holds keep and what failed."""
    assert plan.erasure is not None
    headers = ["RULE", "ACTION", "STORE.TABLE", "ERASE BY", "DUE", "HELD"]
    rows = []
    for rule_plan in plan.rules:
        rule = rule_plan.rule
        subjects = rule.objects.subjects if rule.objects else None
        erase_by = f"objects of {subjects.rule.name}" if subjects else str(rule.erase_by)
        rows.append(
            [
                rule.name,
                rule.action,
                f"{rule.store}.{rule.table}",
                erase_by,
                "ERROR" if rule_plan.error else f"{rule_plan.due:,}",
                f"{rule_plan.held:,}",
            ]
        )
    total = sum(rule_plan.due for rule_plan in plan.rules)
    lines = [
        f"Erasure plan {plan.plan_id} for request {plan.erasure.reference!r} as of "
        f"{_moment(plan.as_of)} UTC: every record whose erase_by column holds the subject, "
        "whatever its age (read-only, nothing was changed)",
        "",
        *_table(headers, rows, numeric={4, 5}, width=width, folded=(2, 3)),
        "",
        f"{counted(total, 'record')} of this person in {counted(len(plan.rules), 'rule')}.",
    ]
    if not total and not any(rule_plan.held or rule_plan.error for rule_plan in plan.rules):
        lines.append(
            "No record holds this subject. The match is exact (case counts): check how the "
            "erase_by columns spell it."
        )
    with_objects = [rule_plan for rule_plan in plan.rules if rule_plan.details]
    lines += [
        f"  {rule_plan.rule.name}: "
        + ", ".join(
            _detail(name, value)
            for index, (name, value) in enumerate(rule_plan.details)
            # As in the plan: the first count (how many are due) even when it is zero.
            if value or index == 0
        )
        for rule_plan in with_objects
    ]
    lines += _children_lines(plan)
    held = [
        f"  {rule_plan.rule.name}: {rule_plan.held:,} kept by a legal hold"
        for rule_plan in plan.rules
        if rule_plan.held
    ]
    if held:
        lines += ["", "Kept (legal holds outrank erasure):", *held]
    errors = [
        f"  {rule_plan.rule.name}: {rule_plan.error}" for rule_plan in plan.rules if rule_plan.error
    ]
    if errors:
        lines += ["", "Errors:", *errors]
    return "\n".join(wrap(lines, width))


def _children_lines(plan: Plan) -> list[str]:
    """The child rows that would go with each rule's rows, per child table."""
    with_children = [
        (rule_plan.rule.name, rule_plan.children) for rule_plan in plan.rules if rule_plan.children
    ]
    if not with_children:
        return []
    return ["", "Child rows that go with them:", *_child_counts(with_children)]


def _child_counts(rules: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> list[str]:
    width = max(len(name) for name, _counts in rules)
    return [
        f"  {name.ljust(width)}  " + ", ".join(f"{count:,} {table}" for table, count in counts)
        for name, counts in rules
    ]


def render_erasure_scope(
    reached: Sequence[Rule], left_out: Sequence[Rule], width: int | None = None
) -> str:
    """Given the rules an erasure request reaches and those it does not (no erase_by), return
    what becomes of the latter's records: erased through another rule on the same table, or
    kept until the end of their own period."""
    if not left_out:
        return "Every rule is reached by erase_by."
    lines = ["Rules without erase_by:"]
    for rule in left_out:
        same_table = next(
            (other for other in reached if (other.store, other.table) == (rule.store, rule.table)),
            None,
        )
        if same_table is not None:
            lines.append(f"  {rule.name}: its table is erased through {same_table.name}")
        else:
            lines.append(
                f"  {rule.name}: not erased on request; its records go at "
                f"{rule.clock_text} + {rule.period.text}"
            )
    return "\n".join(wrap(lines, width))


def _detail(name: str, value: int) -> str:
    if name == "bytes":
        return f"{_size(value)}"
    if name == "not_regular_files":
        return f"{value:,} skipped: not a regular file (FIFO, socket or device)"
    singular = _DETAIL_NOUNS.get(name)
    if singular is None:  # an adjective: "3 locked", "1 unmatched"
        return f"{value:,} {name.replace('_', ' ')}"
    noun, skipped, _rest = singular.partition(" skipped")
    return counted(value, noun) + skipped


# The stores' detail names (plural) and the noun of one of them.
_DETAIL_NOUNS = {
    "current_versions": "current version",
    "noncurrent_versions": "noncurrent version",
    "delete_markers": "delete marker",
    "subjects": "subject",
    "files": "file",
    "symlinks_skipped": "symlink skipped",
    "unreadable_directories": "unreadable directory",
    "undecodable_names": "undecodable name",
}


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_report(report: RunReport, width: int | None = None, plan: Plan | None = None) -> str:
    """Given a RunReport, return the per-rule summary table and a closing total line, fit to
    ``width`` columns (None: no limit); given the plan it ran, also what its folders' rules
    passed over (symlinks, FIFOs, sockets, devices, ...: left in place, as the plan counted)."""
    headers = [
        "RULE",
        "STATUS",
        "DUE",
        "DELETED",
        "ANONYMISED",
        "CHILDREN",
        "FAILED",
        "SKIPPED",
        "BATCHES",
        "SECONDS",
    ]
    rows = [
        [
            outcome.rule,
            outcome.status,
            f"{outcome.due:,}",
            f"{outcome.deleted:,}",
            f"{outcome.anonymised:,}",
            f"{outcome.children_deleted:,}",
            f"{outcome.failed:,}",
            f"{outcome.skipped:,}",
            str(outcome.batches),
            f"{outcome.seconds:.2f}",
        ]
        for outcome in report.outcomes
    ]
    verb = "would purge" if report.dry_run else "purged"
    done = sum(outcome.done for outcome in report.outcomes)
    failed = [outcome for outcome in report.outcomes if outcome.status in FAILED]
    lines = [
        ("Dry run (nothing was changed) " if report.dry_run else "Run ")
        + f"of plan {report.plan_id}",
        "",
        *_table(
            headers, rows, numeric={2, 3, 4, 5, 6, 7, 8, 9}, width=width, folded=(4, 5, 7, 8, 9)
        ),
        "",
        f"{verb} {counted(done, 'record')}; "
        f"{len(failed)} of {counted(len(report.outcomes), 'rule')} failed.",
    ]
    lines += [f"  {outcome.rule}: {outcome.error}" for outcome in failed]
    with_children = [(outcome.rule, outcome.children) for outcome in report.outcomes]
    with_children = [(name, counts) for name, counts in with_children if counts]
    if with_children:
        heading = "would be deleted" if report.dry_run else "deleted"
        lines += ["", f"Child rows {heading} with them:", *_child_counts(with_children)]
    lines += _partitions_dropped(report)
    lines += _passed_over(plan, report.dry_run)
    return "\n".join(wrap(lines, width))


# What a folder's survey counts without purging it: never deleted, so a run says so too.
_PASSED_OVER = (
    "symlinks_skipped",
    "not_regular_files",
    "unreadable_directories",
    "undecodable_names",
)


def _passed_over(plan: Plan | None, dry_run: bool) -> list[str]:
    lines = []
    for rule_plan in plan.rules if plan is not None else ():
        counts = [(name, value) for name, value in rule_plan.details if name in _PASSED_OVER]
        if shown := ", ".join(_detail(name, value) for name, value in counts if value):
            lines.append(f"  {rule_plan.rule.name}: {shown}")
    heading = "Would be left in place" if dry_run else "Left in place"
    return ["", f"{heading}, not purged (as the plan counted them):", *lines] if lines else []


def _partitions_dropped(report: RunReport) -> list[str]:
    """The partitions a run dropped whole (a dry run: would drop), with their rows and
    batches, the rows that went (would go) by row batches, and why others did."""
    partitioned = [outcome for outcome in report.outcomes if outcome.partitioned]
    if not partitioned:
        return []
    verb = "would be dropped" if report.dry_run else "dropped"
    lines = ["", f"Partitioned tables (whole expired partitions {verb}, not deleted by rows):"]
    for outcome in partitioned:
        rows = sum(partition.rows for partition in outcome.partitions)
        batches = outcome.batches - outcome.row_batches
        lines.append(
            f"  {outcome.rule}: {counted(len(outcome.partitions), 'partition')} {verb} whole "
            f"({counted(rows, 'row')}, {counted(batches, 'batch')}); "
            f"{counted(outcome.done - rows, 'row')} in {counted(outcome.row_batches, 'row batch')}"
        )
        lines += [
            f"    {partition.name}  {counted(partition.rows, 'row')}  "
            f"({counted(partition.batches, 'batch')})"
            for partition in outcome.partitions
        ]
        lines += [f"    {note}" for note in outcome.partition_notes]
    return lines
