"""The auditor's report: one document for a period, built from the trail and its verification.

It states the verification result (computed while making it), the rules in force as the trail
recorded them, what was purged per policy clause, per rule and per day, the exceptions (failed,
braked, stopped and interrupted runs, unreadable clocks, the backlog left), the legal holds, the
erasure requests and the signing keys. Only entries that a signed checkpoint covers count in
its totals; those after the last checkpoint are listed apart, as not yet signed.

``report_html`` renders it as one self-contained HTML file; ``report_document`` is the JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.audit.entry_checks import in_utc, parse_time
from retention.audit.entry_shape import readable_entries
from retention.audit.keys import PublicKey
from retention.audit.report import utc_text
from retention.audit.verify import Verification
from retention.errors import UsageError
from retention.wording import counted

SCHEMA_VERSION = 1
# What a committed record counts as, by the method of its batch.
COUNTED_AS = {
    "sql-delete": "deleted",
    "sql-anonymise": "anonymised",
    "s3-delete": "object_versions",
    "files-delete": "files",
}
# What a run's exit code says (docs/exit-codes.md), for the report's exceptions.
EXIT_MEANINGS = {
    3: "rules failed, were braked or could not reach their store",
    69: "every rule that failed could not reach its store",
    70: "the audit trail failed: the run stopped",
    130: "stopped by SIGINT (Ctrl-C) after its current batch",
    143: "stopped by SIGTERM after its current batch",
}
COUNTERS = (
    "deleted",
    "anonymised",
    "child_rows",
    "object_versions",
    "delete_markers",
    "files",
    "bytes",
)


def parse_period_bound(text: str | None, option: str, *, end: bool) -> datetime | None:
    """Given --from/--to (an ISO 8601 date or time; UTC without an offset), return the instant
    it stands for; a date given to --to means the end of that day.

    Example: ``parse_period_bound("2026-11-30", "--to", end=True)`` is 2026-12-01T00:00Z.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 date or time") from error
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    is_date = len(text) == 10
    out_of_range = UsageError(f"{option} {text!r} is out of range (years 1 to 9999 in UTC)")
    try:
        moment = moment + timedelta(days=1) if end and is_date else moment
    except OverflowError:
        raise out_of_range from None
    if not in_utc(moment):
        raise out_of_range
    return moment


def _counters() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


@dataclass
class _Pass:
    """The state of one pass over the trail for a report."""

    start: datetime | None
    end: datetime | None
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    settlements: list[tuple[int, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def in_period(self, value: object) -> bool:
        """Given an entry's time, return whether it falls in [start, end)."""
        moment = parse_time(value)
        if moment is None:
            return False
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )

    def add(self, content: dict[str, Any]) -> None:
        """Given the next entry, remember what the report needs of it."""
        entry_type, seq = content.get("type"), content.get("seq", -1)
        self.entries.append(
            {key: content.get(key) for key in ("seq", "type", "time", "run_id", "rule", "done")}
        )
        if entry_type == "batch.intent":
            self.intents[seq] = content
        elif entry_type in ("batch.result", "batch.reconciled"):
            intent = self.intents.get(content.get("intent", -1), {})
            self.settlements.append((seq, content, intent))
        elif entry_type == "run.started":
            self.runs[str(content.get("run_id"))] = {"started": content, "finished": None}
        elif entry_type == "run.finished" and str(content.get("run_id")) in self.runs:
            self.runs[str(content.get("run_id"))]["finished"] = content
        elif entry_type in ("hold.added", "hold.released"):
            self.holds.append(content)
        elif entry_type == "checkpoint":
            self.checkpoints.append(content)


def _count(
    totals: dict[str, int], content: dict[str, Any], intent: dict[str, Any]
) -> dict[str, int]:
    """Given counters, a settlement and its intent, add what the settlement purged."""
    done = content.get("done", 0) if content.get("type") == "batch.reconciled" else 0
    if content.get("type") == "batch.result" and content.get("status") == "committed":
        done = content.get("done", 0)
    if content.get("type") == "batch.result" and content.get("status") != "committed":
        return totals
    # A batch of objects counts its delete markers apart from the other versions.
    markers = min(done, content.get("markers", 0) or 0)
    totals[COUNTED_AS.get(str(intent.get("method")), "deleted")] += done - markers
    totals["delete_markers"] += markers
    totals["child_rows"] += content.get("children_deleted", 0) or 0
    totals["bytes"] += content.get("bytes", 0) or 0
    return totals


def _not_recorded(content: dict[str, Any], intent: dict[str, Any]) -> list[str]:
    """Given a counted settlement of objects or files, return what its batch did not record
    (written by a version before markers and sizes were): then the totals lack it."""
    method = intent.get("method")
    missing = []
    if method == "s3-delete" and "markers" not in content:
        missing.append("delete markers apart from object versions")
    if method in ("s3-delete", "files-delete") and "bytes" not in content:
        missing.append("bytes")
    return missing


def _totals(walk: _Pass, signed_below: int) -> dict[str, Any]:
    """Given the pass and the seq of the last checkpoint, return the totals of the signed
    settlements in the period: overall, per policy clause, per rule and per day."""
    overall = _counters()
    by_policy: dict[str, dict[str, Any]] = {}
    by_rule: dict[str, dict[str, Any]] = {}
    by_day: dict[str, dict[str, int]] = {}
    not_recorded: dict[str, int] = {}
    for seq, content, intent in walk.settlements:
        if seq >= signed_below or not walk.in_period(content.get("time")):
            continue
        for missing in _not_recorded(content, intent):
            not_recorded[missing] = not_recorded.get(missing, 0) + 1
        rule = str(content.get("rule"))
        policy = str(intent.get("policy") or "(no policy recorded)")
        day = str(utc_text(content.get("time")))[:10]
        _count(overall, content, intent)
        policy_row = by_policy.setdefault(policy, {"policy": policy, "rules": [], **_counters()})
        if rule not in policy_row["rules"]:
            policy_row["rules"].append(rule)
        _count(policy_row, content, intent)
        rule_row = by_rule.setdefault(
            rule,
            {"rule": rule, "policy": policy, "category": intent.get("category"), **_counters()},
        )
        _count(rule_row, content, intent)
        _count(by_day.setdefault(day, _counters()), content, intent)
    return {
        "overall": overall,
        "by_policy": list(by_policy.values()),
        "by_rule": list(by_rule.values()),
        "by_day": [{"day": day, **counts} for day, counts in sorted(by_day.items())],
        # Batches written by an earlier version recorded neither markers nor sizes.
        "not_recorded": [
            f"{what} (in {counted(count, 'batch')} written before it was recorded)"
            for what, count in not_recorded.items()
        ],
    }


def _rules_in_force(walk: _Pass) -> list[dict[str, Any]]:
    """Given the pass, return each rule's definitions as recorded by the runs of the period,
    with when each was first and last seen; a run that recorded none (an older trail) gives
    what its intents say."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for run in walk.runs.values():
        started = run["started"]
        if not walk.in_period(started.get("time")):
            continue
        definitions = started.get("rule_definitions")
        if definitions is None:
            definitions = [
                {
                    "name": intent.get("rule"),
                    **{k: intent.get(k) for k in ("policy", "category", "store", "action")},
                    "table": intent.get("dataset"),
                    "method": intent.get("method"),
                    "recorded": "from its batches only (this run recorded no rule definitions)",
                }
                for intent in walk.intents.values()
                if intent.get("run_id") == started.get("run_id")
            ]
        for definition in definitions:
            key = (str(definition.get("name")), repr(sorted(definition.items())))
            seen = found.setdefault(key, {"definition": definition, "first_seen": None})
            seen["first_seen"] = seen["first_seen"] or utc_text(started.get("time"))
            seen["last_seen"] = utc_text(started.get("time"))
    return sorted(found.values(), key=lambda item: (str(item["definition"].get("name")),))


def _run_problem(finished: dict[str, Any] | None) -> str | None:
    """Given a run's run.finished (None: never written), return what went wrong, else None."""
    if finished is None:
        return (
            "interrupted: no run.finished (the process died mid-run; the next run settles "
            "its last batch)"
        )
    code = finished.get("exit_code")
    stopped = [o.get("rule") for o in finished.get("outcomes", ()) if o.get("status") == "stopped"]
    if code != 0:
        meaning = EXIT_MEANINGS.get(code, "failed") if isinstance(code, int) else "failed"
        left = f"; left unfinished: {', '.join(map(str, stopped))}" if stopped else ""
        return f"exit {code}: {meaning}{left}"
    # A run the daemon's stop ended (or one written before stops recorded their signal's code)
    # records exit 0 and its rules "stopped".
    if stopped:
        return (
            "stopped before its end (a signal or the service's stop), after its current batch: "
            + ", ".join(map(str, stopped))
        )
    return None


def _exceptions(walk: _Pass) -> dict[str, Any]:
    """Given the pass, return what went wrong or was left over in the period."""
    runs, rules, unreadable, backlog = [], [], [], {}
    for run_id, run in walk.runs.items():
        started, finished = run["started"], run["finished"]
        if not walk.in_period(started.get("time")):
            continue
        when = utc_text(started.get("time"))
        problem = _run_problem(finished)
        if problem is not None:
            runs.append({"run_id": run_id, "started": when, "problem": problem})
        planned = {str(item.get("rule")): item for item in started.get("planned") or ()}
        unreadable += [
            {"run_id": run_id, "started": when, **item}
            for item in planned.values()
            if item.get("unreadable_clock")
        ]
        for outcome in (finished or {}).get("outcomes", ()):
            if outcome.get("status") != "ok":
                rules.append({"run_id": run_id, "started": when, **outcome})
            # The last run of the period tells each rule's backlog: due, not purged; unknown
            # when the rule could not be planned (its store unreachable: nothing was counted).
            if "skipped" in outcome:
                unplanned = planned.get(str(outcome.get("rule")), {}).get("error")
                backlog[outcome.get("rule")] = {
                    "rule": outcome.get("rule"),
                    "as_of": utc_text(finished.get("time")),
                    "due_not_purged": None if unplanned else outcome.get("skipped"),
                }
    batches = [
        {"seq": seq, "rule": content.get("rule"), "status": content.get("status")}
        for seq, content, _ in walk.settlements
        if content.get("status") == "rolled_back" and walk.in_period(content.get("time"))
    ]
    return {
        "runs": runs,
        "rules": rules,
        "rolled_back_batches": batches,
        "unreadable_clocks": unreadable,
        "backlog": list(backlog.values()),
    }


def _holds(walk: _Pass) -> dict[str, Any]:
    """Given the pass, return the holds placed and released in the period."""
    listed = [
        {
            "time": utc_text(hold.get("time")),
            "change": "placed" if hold.get("type") == "hold.added" else "released",
            **{k: hold.get(k) for k in ("hold_id", "rule", "kind", "target_count", "reason")},
            "until": utc_text(hold.get("until")),
            "by": f"{hold.get('user', '?')}@{hold.get('host', '?')}",
            # Placed: when it went in force; earlier than its time when a run held the trail
            # then and recorded it at its next batch. None for a release.
            "placed": utc_text(hold.get("placed_at") or hold.get("time"))
            if hold.get("type") == "hold.added"
            else None,
        }
        for hold in walk.holds
        if walk.in_period(hold.get("time"))
    ]
    return {
        "placed": sum(hold["change"] == "placed" for hold in listed),
        "released": sum(hold["change"] == "released" for hold in listed),
        "changes": listed,
    }


def _erasures(walk: _Pass) -> list[dict[str, Any]]:
    """Given the pass, return each erasure request carried out in the period."""
    found = []
    for run_id, run in walk.runs.items():
        started, finished = run["started"], run["finished"] or {}
        erasure = started.get("erasure")
        if not isinstance(erasure, dict) or not walk.in_period(started.get("time")):
            continue
        found.append(
            {
                "reference": erasure.get("reference"),
                "run_id": run_id,
                "started": utc_text(started.get("time")),
                "finished": utc_text(finished.get("time")),
                "exit_code": finished.get("exit_code"),
                "rules": [
                    {k: outcome.get(k) for k in ("rule", "status", "deleted", "anonymised")}
                    | {"kept_by_holds": outcome.get("held", 0)}
                    for outcome in finished.get("outcomes", ())
                ],
            }
        )
    return found


def _keys(walk: _Pass, keys: Sequence[PublicKey]) -> dict[str, Any]:
    """Given the pass and the public keys, return each key's window and the checkpoints it
    signed, and each rotation (a checkpoint signed by another key than the one before)."""
    signed: dict[str, list[str | None]] = {}
    rotations = []
    previous = None
    for checkpoint in walk.checkpoints:
        key_id = str(checkpoint.get("key_id"))
        signed.setdefault(key_id, []).append(utc_text(checkpoint.get("time")))
        if previous is not None and key_id != previous:
            rotations.append(
                {"time": utc_text(checkpoint.get("time")), "from": previous, "to": key_id}
            )
        previous = key_id
    return {
        "keys": [
            {
                "key_id": key.key_id,
                "not_before": utc_text(key.not_before.isoformat()),
                "not_after": utc_text(key.not_after.isoformat()) if key.not_after else None,
                "checkpoints": len(signed.get(key.key_id, [])),
                "first_checkpoint": (signed.get(key.key_id) or [None])[0],
                "last_checkpoint": (signed.get(key.key_id) or [None])[-1],
            }
            for key in keys
        ],
        "rotations": rotations,
    }


def _verification(result: Verification) -> dict[str, Any]:
    """Given the verification, return what the report says of it."""
    checkpoint = result.last_checkpoint.content if result.last_checkpoint else None
    return {
        "valid": result.valid,
        "problem": str(result.problem) if result.problem else None,
        "entries": result.entries,
        "segments": result.segments,
        "runs": result.runs,
        "batches": result.batches,
        "records_purged": result.records_purged,
        "last_checkpoint": None
        if checkpoint is None
        else {k: checkpoint.get(k) for k in ("seq", "size", "key_id")}
        | {"time": utc_text(checkpoint.get("time"))},
        "not_yet_signed": result.unsigned,
        "anchors": [{"seq": anchor.seq, "source": anchor.source} for anchor in result.anchors],
    }


def report_document(
    directory: Path,
    verification: Verification,
    keys: Sequence[PublicKey],
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """Given an audit directory, its verification, the public keys and a period [start, end),
    return the report as one JSON-ready document (``schema_version`` first)."""
    walk = _Pass(start, end)
    for stored in readable_entries(directory):
        walk.add(stored.content)
    last = walk.checkpoints[-1]["seq"] if walk.checkpoints else -1
    unsigned = [entry for entry in walk.entries if isinstance(entry["seq"], int)]
    unsigned = [
        entry | {"time": utc_text(entry["time"])} for entry in unsigned if entry["seq"] > last
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": utc_text(now.isoformat()),
        "trail": str(directory),
        "period": {
            "from": utc_text(start.isoformat()) if start else None,
            "to": utc_text(end.isoformat()) if end else None,
        },
        "verification": _verification(verification),
        "rules_in_force": _rules_in_force(walk),
        "totals": _totals(walk, last),
        "exceptions": _exceptions(walk),
        "holds": _holds(walk),
        "erasures": _erasures(walk),
        "keys": _keys(walk, keys),
        "not_yet_signed": [entry for entry in unsigned if entry["type"] != "checkpoint"],
    }
