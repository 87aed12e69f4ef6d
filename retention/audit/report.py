"""What auditors read: per run and rule, what was purged, when, under which policy.

One pass over the trail builds one row per (run, rule): the rule's policy, category, store and
dataset, action and method, cutoff, batches, counts (selected, done, held, failed), the time of
its first and last batch, and who ran it (tool, host, user, from ``run.started``). Records a
crash left unsettled and a later run reconciled count for the run that purged them. Each legal
hold placed or released is a row too (``entry`` ``hold.added`` / ``hold.released``).

A row any of whose entries comes after the last checkpoint is marked ``signed: false``: no
signature vouches for it yet, so the totals leave it out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retention.audit.entries import require_trail
from retention.audit.entry_checks import in_utc, parse_time
from retention.audit.entry_shape import readable_entries
from retention.errors import UsageError


@dataclass
class RuleRun:
    """What one rule did in one run, as the trail records it. Times are ISO 8601 UTC."""

    run_id: str | None
    run_started: str | None
    run_finished: str | None
    rule: str
    policy: str | None = None
    category: str | None = None
    store: str | None = None
    dataset: str | None = None
    action: str | None = None
    method: str | None = None
    cutoff: str | None = None
    # The request's reference when the run carried out an erasure request (no cutoff then).
    erasure: str | None = None
    first_batch: str | None = None
    last_batch: str | None = None
    status: str | None = None
    batches: int = 0
    committed: int = 0
    rolled_back: int = 0
    reconciled: int = 0
    unsettled: int = 0
    selected: int = 0
    done: int = 0
    done_by_reconciliation: int = 0
    held: int = 0
    failed: int = 0
    children_deleted: int = 0
    # Of ``done``: delete markers among the object versions purged; bytes of what was purged
    # (objects, files), as their batches recorded them.
    markers: int = 0
    bytes: int = 0
    due: int | None = None
    skipped: int | None = None
    tool: str | None = None
    host: str | None = None
    user: str | None = None
    # False while an entry of the row comes after the last signed checkpoint.
    signed: bool = True
    # "run" for a rule in a run; "hold.added" / "hold.released" for a legal hold's change.
    entry: str = "run"
    time: str | None = None
    hold_id: int | None = None
    hold_kind: str | None = None
    hold_targets: int | None = None
    hold_reason: str | None = None
    hold_until: str | None = None
    # hold.added: when the hold was placed; later than ``time`` never, earlier when a run held
    # the trail then and recorded it at its next batch (the entry's ``placed_at``).
    hold_placed: str | None = None


@dataclass
class _Run:
    """A run's run.started entry and, once written, its run.finished entry."""

    started: dict[str, Any]
    finished: dict[str, Any] | None = None


def utc_text(value: object) -> str | None:
    """Given an entry's time (ISO 8601 with offset), return it in UTC ending in Z, else None.

    Example: ``utc_text("2026-01-01T13:00:00+01:00")`` returns ``"2026-01-01T12:00:00Z"``.
    """
    moment = parse_time(value)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def parse_bound(text: str | None, option: str) -> datetime | None:
    """Given --since/--until (an ISO 8601 date or time; UTC without an offset), return it."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 date or time") from error
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not in_utc(moment):
        raise UsageError(f"{option} {text!r} is out of range (years 1 to 9999 in UTC)")
    return moment


class _Collector:
    """The state of one pass over the trail: runs, and rows per (run, rule)."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self.rows: dict[tuple[str, str], RuleRun] = {}
        self.intents: dict[int, RuleRun] = {}
        # The seq of the last entry that made each row (by id), and of the last checkpoint.
        self.last_seq: dict[int, int] = {}
        self.last_checkpoint = -1

    def row(self, run_id: str, rule: str) -> RuleRun:
        """Given a run and a rule, return their row, creating it (with the run's who and when)."""
        key = (run_id, rule)
        if key not in self.rows:
            run = self.runs.get(run_id)
            started = run.started if run else {}
            self.rows[key] = RuleRun(
                run_id=run_id,
                run_started=utc_text(started.get("time")),
                run_finished=None,
                rule=rule,
                tool=started.get("tool"),
                host=started.get("host"),
                user=started.get("user"),
            )
        return self.rows[key]

    def touch(self, row: RuleRun, content: dict[str, Any]) -> None:
        """Given a row and an entry that adds to it, remember the entry's seq."""
        seq = content.get("seq")
        if isinstance(seq, int):
            self.last_seq[id(row)] = max(seq, self.last_seq.get(id(row), -1))

    def mark_signed(self) -> None:
        """After the pass: mark each row whether a checkpoint covers all its entries."""
        for row in self.rows.values():
            row.signed = self.last_seq.get(id(row), 0) < self.last_checkpoint

    def add(self, content: dict[str, Any]) -> None:
        """Given the next entry, fold it into the runs and rows."""
        entry_type = content.get("type")
        if entry_type == "checkpoint" and isinstance(content.get("seq"), int):
            self.last_checkpoint = content["seq"]
        elif entry_type == "run.started":
            self.runs[content["run_id"]] = _Run(content)
            for rule in content.get("rules", []):
                self.touch(self.row(content["run_id"], rule), content)
        elif entry_type in ("hold.added", "hold.released"):
            self._hold(content)
        elif entry_type == "batch.intent":
            self._intent(content)
        elif entry_type == "batch.result":
            self._result(content)
        elif entry_type == "batch.reconciled":
            self._reconciled(content)
        elif entry_type == "run.finished" and content.get("run_id") in self.runs:
            self._finished(content)

    def _hold(self, content: dict[str, Any]) -> None:
        """Given a hold.added or hold.released, add its row."""
        row = RuleRun(
            run_id=None,
            run_started=None,
            run_finished=None,
            rule=str(content.get("rule")),
            tool=content.get("tool"),
            host=content.get("host"),
            user=content.get("user"),
            entry=str(content["type"]),
            time=utc_text(content.get("time")),
            hold_id=content.get("hold_id"),
            hold_kind=content.get("kind"),
            hold_targets=content.get("target_count"),
            hold_reason=content.get("reason"),
            hold_until=utc_text(content.get("until")),
            hold_placed=utc_text(content.get("placed_at") or content.get("time"))
            if content["type"] == "hold.added"
            else None,
        )
        self.rows[("hold", str(content.get("seq")))] = row
        self.touch(row, content)

    def _intent(self, content: dict[str, Any]) -> None:
        """Given a batch.intent, count it for its run and rule."""
        row = self.row(content["run_id"], content["rule"])
        self.touch(row, content)
        for name in ("policy", "category", "store", "dataset", "action", "method"):
            setattr(row, name, content.get(name))
        row.cutoff = utc_text(content.get("cutoff"))
        row.erasure = content.get("erasure")
        row.first_batch = row.first_batch or utc_text(content.get("time"))
        row.last_batch = utc_text(content.get("time"))
        row.batches += 1
        row.unsettled += 1
        row.selected += content.get("selected", 0)
        self.intents[content["seq"]] = row

    def _settled(self, content: dict[str, Any]) -> RuleRun:
        """The row of the intent an entry settles (the run that wrote the store)."""
        row = self.intents.get(content.get("intent", -1))
        if row is None:
            row = self.row(content["run_id"], content["rule"])
        row.unsettled = max(0, row.unsettled - 1)
        row.last_batch = utc_text(content.get("time"))
        self.touch(row, content)
        return row

    def _result(self, content: dict[str, Any]) -> None:
        """Given a batch.result, count it for the intent it settles."""
        row = self._settled(content)
        if content.get("status") == "committed":
            row.committed += 1
            row.done += content.get("done", 0)
        else:
            row.rolled_back += 1
        row.held += content.get("held", 0)
        row.failed += content.get("failed", 0)
        row.children_deleted += content.get("children_deleted", 0)
        row.markers += content.get("markers", 0)
        row.bytes += content.get("bytes", 0)

    def _reconciled(self, content: dict[str, Any]) -> None:
        """Given a batch.reconciled, count its done records for the run that purged them."""
        row = self._settled(content)
        row.reconciled += 1
        row.done += content.get("done", 0)
        row.done_by_reconciliation += content.get("done", 0)
        row.children_deleted += content.get("children_deleted", 0)
        row.markers += content.get("markers", 0)
        row.bytes += content.get("bytes", 0)

    def _finished(self, content: dict[str, Any]) -> None:
        """Given a run.finished, note each rule's outcome and the run's end."""
        finished = utc_text(content.get("time"))
        self.runs[content["run_id"]].finished = content
        for outcome in content.get("outcomes", []):
            row = self.row(content["run_id"], outcome.get("rule"))
            row.status = outcome.get("status")
            row.due = outcome.get("due")
            row.skipped = outcome.get("skipped")
        for (run_id, _rule), row in self.rows.items():
            if run_id == content["run_id"]:
                row.run_finished = finished
                self.touch(row, content)


def unknown_name(
    option: str, given: Iterable[str], what: str, known: Iterable[str], note: str = ""
) -> UsageError:
    """Given an option, the names it was given that nothing knows, what they should have named
    and the names that are known, return the usage error to raise (exit 2): a typo is never
    answered with "not in the trail".

    Example: ``unknown_name("--rule", ["ld"], "a rule of the trail", ["logs"])`` says
    ``--rule 'ld' is not a rule of the trail (logs)``.
    """
    names = ", ".join(repr(name) for name in given)
    listed = ", ".join(sorted(known)) or "none"
    return UsageError(f"{option} {names} is not {what} ({listed}{'; ' + note if note else ''})")


def rule_runs(
    directory: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    rules: Sequence[str] = (),
    config_rules: Collection[str] | None = None,
) -> list[RuleRun]:
    """Given an audit directory, return one row per run and rule, in trail order, keeping runs
    started in [since, until) and, when ``rules`` is given, only those rules. A rule named that
    neither the trail nor ``config_rules`` (None: no config was read) knows is a UsageError."""
    require_trail(directory)
    collector = _Collector()
    for stored in readable_entries(directory):
        collector.add(stored.content)
    collector.mark_signed()
    known = {row.rule for row in collector.rows.values()} | set(config_rules or ())
    unknown = [rule for rule in dict.fromkeys(rules) if rule not in known]
    if unknown:
        if config_rules is None:
            note = "no config read: give --config to add its rules"
            raise unknown_name("--rule", unknown, "a rule of the trail", known, note)
        raise unknown_name("--rule", unknown, "a rule of the config or the trail", known)

    def kept(row: RuleRun) -> bool:
        """Given a row, return whether the filters keep it."""
        run = collector.runs.get(row.run_id) if row.run_id else None
        started = parse_time(run.started.get("time")) if run else parse_time(row.time)
        if (since or until) and started is None:
            return False
        in_range = started is None or (
            (since is None or started >= since) and (until is None or started < until)
        )
        return in_range and (not rules or row.rule in rules)

    return [row for row in collector.rows.values() if kept(row)]
