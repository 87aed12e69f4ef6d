"""The auditor's report as one self-contained HTML file: no script, no font, no image to fetch;
styles inline; a per-day chart in inline SVG; print styles so that "print to PDF" gives a clean
document. Every value is escaped: policy texts and hold reasons are written by people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from retention.audit.auditor_report import COUNTERS
from retention.wording import counted

COUNTER_TITLES = {
    "deleted": "Records deleted",
    "anonymised": "Records anonymised",
    "child_rows": "Child rows",
    "object_versions": "Object versions",
    "delete_markers": "Delete markers",
    "files": "Files",
    "bytes": "Bytes",
}
# What the chart adds up per day: records of every kind, not their bytes.
CHARTED = tuple(name for name in COUNTERS if name != "bytes")
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #111; margin: 2rem auto; max-width: 60rem;
       padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; font-size: 1.2rem;
     border-bottom: 1px solid #999; } h3 { font-size: 1rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #bbb; padding: .2rem .4rem; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.banner { padding: .8rem 1rem; border: 3px solid; font-size: 1.1rem; margin: 1rem 0; }
.valid { border-color: #186a3b; background: #e9f7ef; } .invalid { border-color: #a01010;
         background: #fdecea; }
.muted { color: #555; } code { font-size: .9em; word-break: break-all; }
@media print { body { margin: 0; max-width: none; font-size: 11pt; }
  h2 { break-after: avoid; } table, svg, .banner { break-inside: avoid; } }
"""


def _text(value: object) -> str:
    """Given a value, return it escaped for HTML (``-`` for None)."""
    return "-" if value is None else escape(str(value))


def _number(value: object) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else _text(value)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int], table_id: str
) -> str:
    """Given headers, rows and the numeric columns, return an HTML table."""
    head = "".join(
        f'<th class="n">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_number(cell)}</td>' if i in numeric else f"<td>{_text(cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="muted">None.</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _banner(verification: dict[str, Any]) -> str:
    """The verification result, first on the page."""
    checkpoint = verification["last_checkpoint"]
    signed = (
        f"Last signed checkpoint: seq {checkpoint['seq']} at {_text(checkpoint['time'])}, key "
        f"<code>{_text(checkpoint['key_id'])}</code>, covering {checkpoint['size']:,} entries."
        if checkpoint
        else "No signed checkpoint: nothing in this trail is signed."
    )
    anchors = verification["anchors"]
    anchored = (
        "; ".join(f"seq {a['seq']} from {_text(a['source'])} matches" for a in anchors)
        if anchors
        else "No anchor was given: a truncated tail cannot be detected."
    )
    if not verification["valid"]:
        return (
            '<div class="banner invalid" id="verification" data-valid="false">'
            "<strong>THE AUDIT TRAIL IS INVALID.</strong> Its entries cannot be trusted, and "
            f"neither can the figures below.<br>First problem: {_text(verification['problem'])}"
            "</div>"
        )
    return (
        '<div class="banner valid" id="verification" data-valid="true">'
        "<strong>The audit trail verifies.</strong> "
        f"{counted(verification['entries'], 'entry')} in "
        f"{counted(verification['segments'], 'segment')}: every hash link, leaves file, "
        "Merkle root, "
        f"checkpoint signature and key window checks.<br>{signed}<br>"
        f"Not yet signed: {counted(verification['not_yet_signed'], 'entry')} after the last "
        f"checkpoint.<br>Anchors: {anchored}</div>"
    )


def _chart(days: Sequence[dict[str, Any]]) -> str:
    """Given the per-day totals, return an inline SVG bar chart of records purged a day."""
    if not days:
        return '<p class="muted">Nothing purged in the period.</p>'
    totals = [sum(day[name] for name in CHARTED) for day in days]
    peak = max(totals) or 1
    width, height, left, bottom = 720, 220, 60, 40
    bar = min(48.0, max(2.0, (width - left - 10) / len(days)))
    parts = [
        f'<svg id="per-day-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Records purged per day">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#333"/>',
        f'<text x="{left - 6}" y="14" text-anchor="end" font-size="11">{peak:,}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>',
    ]
    for index, (day, total) in enumerate(zip(days, totals, strict=True)):
        tall = (height - bottom - 10) * total / peak
        x = left + index * bar
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{height - bottom - tall:.1f}" width="{bar - 2:.1f}" '
            f'height="{tall:.1f}" fill="#2e5e8c" data-day="{escape(day["day"])}" '
            f'data-total="{total}"><title>{escape(day["day"])}: {total:,}</title></rect>'
        )
        if len(days) <= 31 or index % max(1, len(days) // 12) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle">{escape(day["day"][5:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _definition(item: dict[str, Any]) -> list[object]:
    definition = item["definition"]
    conditions = definition.get("conditions") or []
    if definition.get("where_sql"):
        conditions = [*conditions, f"where_sql: {definition['where_sql']}"]
    scope = definition.get("objects")
    return [
        definition.get("name"),
        definition.get("policy"),
        definition.get("category"),
        f"{definition.get('store')}/{definition.get('table')}",
        definition.get("clock", "-"),
        definition.get("period", "-"),
        "; ".join(conditions) or (json.dumps(scope) if scope else "none"),
        definition.get("action"),
        f"{item['first_seen']} to {item.get('last_seen')}",
    ]


def render_report_html(document: dict[str, Any]) -> str:
    """Given the report document, return it as one self-contained HTML page."""
    period = document["period"]
    totals = document["totals"]
    exceptions = document["exceptions"]
    holds = document["holds"]
    counter_headers = [COUNTER_TITLES[name] for name in COUNTERS]
    numeric_from = set(range(2, 2 + len(COUNTERS)))
    sections = [
        f'<h1>Data retention audit report</h1><p class="muted">Trail {_text(document["trail"])}'
        f"; period {_text(period['from'] or 'start of the trail')} to "
        f"{_text(period['to'] or 'end of the trail')} (UTC); generated "
        f"{_text(document['generated_at'])}; schema version {document['schema_version']}.</p>",
        _banner(document["verification"]),
        "<h2>Totals</h2><p>Only entries covered by a signed checkpoint are counted. Child "
        "rows are those deleted with their parent rows; bytes are the sizes of the object "
        "versions and files purged.</p>",
        *(
            f'<p class="muted">Not recorded: {_text(missing)}.</p>'
            for missing in totals["not_recorded"]
        ),
        _table(
            counter_headers,
            [[totals["overall"][name] for name in COUNTERS]],
            set(range(len(COUNTERS))),
            "totals-overall",
        ),
        "<h3>Per policy clause</h3>",
        _table(
            ["Policy clause", "Rules", *counter_headers],
            [
                [row["policy"], ", ".join(row["rules"]), *(row[name] for name in COUNTERS)]
                for row in totals["by_policy"]
            ],
            numeric_from,
            "totals-by-policy",
        ),
        "<h3>Per rule</h3>",
        _table(
            ["Rule", "Category", *counter_headers],
            [
                [row["rule"], row["category"], *(row[name] for name in COUNTERS)]
                for row in totals["by_rule"]
            ],
            numeric_from,
            "totals-by-rule",
        ),
        "<h3>Per day</h3>",
        _chart(totals["by_day"]),
        _table(
            ["Day (UTC)", *counter_headers],
            [[row["day"], *(row[name] for name in COUNTERS)] for row in totals["by_day"]],
            set(range(1, 1 + len(COUNTERS))),
            "totals-by-day",
        ),
        "<h2>Rules in force</h2><p>As the trail recorded them at the start of each run.</p>",
        _table(
            [
                "Rule",
                "Policy clause",
                "Category",
                "Store/table",
                "Clock",
                "Period",
                "Conditions",
                "Action",
                "Seen",
            ],
            [_definition(item) for item in document["rules_in_force"]],
            set(),
            "rules-in-force",
        ),
        "<h2>Exceptions</h2><h3>Runs that failed or were interrupted</h3>",
        _table(
            ["Run", "Started", "Problem"],
            [[r["run_id"], r["started"], r["problem"]] for r in exceptions["runs"]],
            set(),
            "exceptions-runs",
        ),
        "<h3>Rules that did not end ok (failed, braked, stopped, unavailable)</h3>",
        _table(
            ["Run", "Started", "Rule", "Status", "Due", "Failed", "Skipped"],
            [
                [
                    r["run_id"],
                    r["started"],
                    r.get("rule"),
                    r.get("status"),
                    r.get("due"),
                    r.get("failed"),
                    r.get("skipped"),
                ]
                for r in exceptions["rules"]
            ],
            {4, 5, 6},
            "exceptions-rules",
        ),
        "<h3>Rolled-back batches</h3>",
        _table(
            ["Seq", "Rule"],
            [[b["seq"], b["rule"]] for b in exceptions["rolled_back_batches"]],
            {0},
            "exceptions-batches",
        ),
        "<h3>Unreadable clocks</h3>",
        _table(
            ["Run", "Started", "Rule", "Rows whose clock could not be read"],
            [
                [u["run_id"], u["started"], u["rule"], u["unreadable_clock"]]
                for u in exceptions["unreadable_clocks"]
            ],
            {3},
            "exceptions-unreadable",
        ),
        "<h3>Backlog at the end of the period</h3>",
        _table(
            ["Rule", "As of", "Due but not purged"],
            [
                [
                    b["rule"],
                    b["as_of"],
                    "unknown (the rule could not be planned)"
                    if b["due_not_purged"] is None
                    else b["due_not_purged"],
                ]
                for b in exceptions["backlog"]
            ],
            {2},
            "exceptions-backlog",
        ),
        f"<h2>Legal holds</h2><p>{holds['placed']:,} placed, {holds['released']:,} released.</p>",
        _table(
            [
                *("Time", "Change", "Placed", "Hold", "Rule"),
                *("Kind", "Targets", "Until", "Reason", "By"),
            ],
            [
                [
                    h["time"],
                    h["change"],
                    h["placed"] if h["placed"] != h["time"] else "",
                    h["hold_id"],
                    h["rule"],
                    h["kind"],
                    h["target_count"],
                    h["until"],
                    h["reason"],
                    h["by"],
                ]
                for h in holds["changes"]
            ],
            {3, 6},
            "holds",
        ),
        "<h2>Erasure requests</h2>",
        _table(
            [
                "Reference",
                "Started",
                "Finished",
                "Exit",
                "Per rule (deleted / anonymised / kept by holds)",
            ],
            [
                [
                    e["reference"],
                    e["started"],
                    e["finished"],
                    e["exit_code"],
                    "; ".join(
                        f"{r['rule']}: {r['deleted']} / {r['anonymised']} / {r['kept_by_holds']}"
                        for r in e["rules"]
                    ),
                ]
                for e in document["erasures"]
            ],
            {3},
            "erasures",
        ),
        "<h2>Signing keys</h2>",
        _table(
            ["Key", "Valid from", "Valid until", "Checkpoints signed", "First", "Last"],
            [
                [
                    k["key_id"],
                    k["not_before"],
                    k["not_after"] or "open",
                    k["checkpoints"],
                    k["first_checkpoint"],
                    k["last_checkpoint"],
                ]
                for k in document["keys"]["keys"]
            ],
            {3},
            "keys",
        ),
        "<h3>Rotations</h3>",
        _table(
            ["First checkpoint of the new key", "From", "To"],
            [[r["time"], r["from"], r["to"]] for r in document["keys"]["rotations"]],
            set(),
            "rotations",
        ),
        "<h2>Not yet signed</h2><p>Entries after the last checkpoint. No signature vouches for "
        "them yet, so the totals leave them out.</p>",
        _table(
            ["Seq", "Type", "Time", "Run", "Rule", "Done"],
            [
                [e["seq"], e["type"], e["time"], e["run_id"], e["rule"], e["done"]]
                for e in document["not_yet_signed"]
            ],
            {0, 5},
            "not-yet-signed",
        ),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>Data retention audit report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
