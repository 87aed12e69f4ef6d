"""What auditors read, rendered: the rows of ``report.rule_runs`` as text for people (a table per
run, its policies, the holds), JSON, JSON Lines or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import datetime

from retention.audit.report import RuleRun
from retention.documents import iso_instant
from retention.layout import wrap
from retention.render import _table
from retention.wording import counted

SHOW_SCHEMA_VERSION = 1
TIMES = (
    "run_started",
    "run_finished",
    "cutoff",
    "first_batch",
    "last_batch",
    "time",
    "hold_until",
    "hold_placed",
)


def render_jsonl(rows: Iterable[RuleRun]) -> str:
    """Given rows, return them as JSON Lines (one object per run and rule)."""
    return "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)


def render_json(rows: Iterable[RuleRun]) -> str:
    """Given rows, return one JSON document (docs/json.md): ``schema_version``, then ``runs``,
    one object per run and rule with every field, its times ISO 8601 UTC with offset +00:00."""
    runs = []
    for row in rows:
        document = asdict(row)
        for name in TIMES:
            value = document[name]
            document[name] = iso_instant(datetime.fromisoformat(value)) if value else None
        runs.append(document)
    document = {"schema_version": SHOW_SCHEMA_VERSION, "runs": runs}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# What a spreadsheet takes for the start of a formula (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def render_csv(rows: Iterable[RuleRun]) -> str:
    """Given rows, return them as CSV with a header line (empty cell: not recorded). A text
    that a spreadsheet would run as a formula (a hold's reason, an erasure's reference, a
    policy, or any text of an entry not yet signed) starts with ``'`` (``'=HYPERLINK(…)``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[field.name for field in fields(RuleRun)])
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                name: f"'{value}"
                if isinstance(value, str) and value.startswith(FORMULA_STARTS)
                else value
                for name, value in asdict(row).items()
            }
        )
    return buffer.getvalue()


def _count(value: int | None) -> str:
    """Given a counter (None: not recorded), return it for a table cell."""
    return "-" if value is None else f"{value:,}"


def _seconds(moment: str | None) -> str:
    """Given an ISO 8601 UTC time ending in Z, return it to the second."""
    return f"{moment[:19]}Z" if moment else "?"


def render_text(rows: Sequence[RuleRun], width: int | None = None) -> str:
    """Given rows, return them for people: one block per run (who, when), a table of its rules,
    then each rule's policy and category; fit to ``width`` columns (None: no limit), the wide
    columns folding under each row."""
    lines: list[str] = []
    by_run: dict[str, list[RuleRun]] = {}
    for row in rows:
        if row.run_id is not None:
            by_run.setdefault(row.run_id, []).append(row)
    headers = ["RULE", "ACTION", "STORE/DATASET", "CUTOFF (UTC)", "BATCHES", "SELECTED", "DONE"]
    headers += ["HELD", "FAILED", "SKIPPED", "STATUS"]
    for run_id, run_rows in by_run.items():
        first = run_rows[0]
        lines += [
            f"Run {run_id}: started {_seconds(first.run_started)}, finished "
            f"{_seconds(first.run_finished) if first.run_finished else '(not recorded)'}",
            f"  by {first.user or '?'}@{first.host or '?'} with {first.tool or '?'}",
        ]
        if not all(row.signed for row in run_rows):
            lines.append(
                "  NOT YET SIGNED: entries of this run come after the last checkpoint; "
                "no signature vouches for them, and the totals leave them out"
            )
        erasures = sorted({row.erasure for row in run_rows if row.erasure})
        lines += [
            f"  erasure request {reference}: one person's records, whatever their age"
            for reference in erasures
        ]
        lines.append("")
        table = [
            [
                row.rule,
                row.action or "-",
                f"{row.store}/{row.dataset}" if row.store else "-",
                _seconds(row.cutoff) if row.cutoff else "-",
                _count(row.batches),
                _count(row.selected),
                _count(row.done),
                _count(row.held),
                _count(row.failed),
                _count(row.skipped),
                (row.status or "?") + (f", {row.unsettled} unsettled" if row.unsettled else ""),
            ]
            for row in run_rows
        ]
        fitted = _table(
            headers,
            table,
            numeric={4, 5, 6, 7, 8, 9},
            width=None if width is None else width - 2,
            folded=(2, 3, 7, 8, 9),
        )
        lines += [f"  {line}" for line in fitted]
        lines.append("")
        for row in run_rows:
            if row.policy or row.category:
                category = f" (category: {row.category})" if row.category else ""
                lines.append(f"  {row.rule}: {row.policy or '(no policy)'}{category}")
                lines.append(
                    f"    batches {_seconds(row.first_batch)} to {_seconds(row.last_batch)}"
                )
        lines.append("")
    lines += _render_holds([row for row in rows if row.entry != "run"])
    unsigned_runs = {row.run_id for row in rows if row.run_id and not row.signed}
    signed_runs = {row.run_id for row in rows if row.run_id and row.run_id not in unsigned_runs}
    total = sum(row.done for row in rows if row.run_id in signed_runs)
    children = sum(row.children_deleted for row in rows if row.run_id in signed_runs)
    with_children = f" (and {counted(children, 'child row')} with them)" if children else ""
    lines.append(
        f"{counted(total, 'record')}{with_children} purged in {counted(len(signed_runs), 'run')}."
    )
    unsigned = [row for row in rows if row.run_id is not None and row.run_id not in signed_runs]
    if unsigned:
        lines.append(
            f"Not yet signed (not counted): {counted(sum(row.done for row in unsigned), 'record')}"
            f" in {counted(len({row.run_id for row in unsigned}), 'run')} after the last "
            "checkpoint."
        )
    return "\n".join(wrap(lines, width))


def _render_holds(holds: Sequence[RuleRun]) -> list[str]:
    """Given hold rows, return their lines: one per hold placed or released."""
    if not holds:
        return []
    lines = ["Legal holds"]
    for hold in holds:
        verb = "placed" if hold.entry == "hold.added" else "released"
        until = f", until {_seconds(hold.hold_until)}" if hold.hold_until else ""
        unsigned = " (NOT YET SIGNED)" if not hold.signed else ""
        late = ""
        if hold.hold_placed and hold.hold_placed != hold.time:
            late = f" (placed {_seconds(hold.hold_placed)}, while a run wrote the trail)"
        lines.append(
            f"  {_seconds(hold.time)}  hold {hold.hold_id} {verb} on {hold.rule} "
            f"({hold.hold_kind}, {counted(hold.hold_targets or 0, 'target')}{until}) by "
            f"{hold.user or '?'}@{hold.host or '?'}: {hold.hold_reason}{late}{unsigned}"
        )
    return [*lines, ""]


def render(rows: Sequence[RuleRun], output: str, width: int | None = None) -> str:
    """Given rows, a format (text, jsonl, csv) and the text's width (None: no limit), return
    the report."""
    if output == "json":
        return render_json(rows)
    if output == "jsonl":
        return render_jsonl(rows)
    if output == "csv":
        return render_csv(rows)
    return render_text(rows, width) + "\n"
