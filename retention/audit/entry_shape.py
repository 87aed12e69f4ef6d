"""What a reader may take an entry to hold: beyond its required fields (``entry_checks``), every
field that ``verify``, ``show``, ``export``, ``report``, ``prove`` and ``erasures`` read has the
type the writer gives it. A time is one that UTC can hold, a count is a whole number no less
than 0, and a list of outcomes, plans, rules or definitions holds what each reader expects.

``verify`` names the first entry that is not so; the other commands, which read a trail
without checking it, leave such an entry out with a warning (``readable_entries``) instead of
failing on it half-way through (a traceback).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retention.audit.entries import LONGEST_ENTRY_BYTES, StoredEntry, canonical, read_entries
from retention.audit.entry_checks import ENTRY_FIELDS, field_problem, parse_time
from retention.errors import AuditFailure
from retention.runtime.logging import get_logger

# Times beside ``time``: each absent, null or ISO 8601 with an offset that UTC can hold.
TIME_FIELDS = ("cutoff", "as_of", "until", "placed_at")
# Counts: each absent or a whole number no less than 0.
COUNT_FIELDS = (
    "seq",
    "selected",
    "done",
    "held",
    "failed",
    "children_deleted",
    "not_done",
    "intent",
    "size",
    "hold_id",
    "target_count",
    "markers",
    "bytes",
)
# Words: each absent, null or a string.
TEXT_FIELDS = (
    "run_id",
    "rule",
    "policy",
    "category",
    "store",
    "dataset",
    "action",
    "method",
    "status",
    "kind",
    "reason",
    "tool",
    "host",
    "user",
    "recorded_by",
    "plan_id",
    "source",
    "digest",
    "previous_digest",
    "config_digest",
)
# A run's outcomes and plan: what each rule's record holds beside its name.
OUTCOME_COUNTS = ("due", "held", "deleted", "anonymised", "children_deleted", "failed", "skipped")
PLANNED_COUNTS = ("due", "held", "unreadable_clock", "future_clock")
LONGEST_EXIT_CODE = 255
# A JSON escape of a UTF-16 surrogate: only then can a string hold one, which no output takes.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _records_problem(
    name: str, value: object, counts: tuple[str, ...], flags: tuple[str, ...] = ()
) -> str | None:
    """Given a list of per-rule records (outcomes, planned), return why one is malformed."""
    if not isinstance(value, list):
        return f"field {name!r} is not a list"
    for record in value:
        if not isinstance(record, dict) or not isinstance(record.get("rule"), str):
            return f"field {name!r} holds an item that is not an object with a rule name"
        if "status" in record and not isinstance(record["status"], str):
            return f"field {name!r} holds a status that is not a string"
        if any(record.get(count) is not None and not _is_count(record[count]) for count in counts):
            return f"field {name!r} holds a count that is not a whole number >= 0"
        if any(not isinstance(record.get(flag, False), bool) for flag in flags):
            return f"field {name!r} holds a flag that is not true or false"
    return None


def _run_started_problem(content: dict[str, Any]) -> str | None:
    """Given a run.started, return why its rules, plan, definitions or erasure are malformed."""
    if not all(isinstance(rule, str) for rule in content["rules"]):
        return "field 'rules' holds an item that is not a rule name"
    if "planned" in content:
        problem = _records_problem("planned", content["planned"], PLANNED_COUNTS, ("error",))
        if problem is not None:
            return problem
    definitions = content.get("rule_definitions", [])
    if not isinstance(definitions, list) or not all(
        isinstance(definition, dict) and isinstance(definition.get("name"), str)
        for definition in definitions
    ):
        return "field 'rule_definitions' is not a list of objects with a rule name"
    erasure = content.get("erasure")
    if "erasure" in content and not (
        isinstance(erasure, dict)
        and isinstance(erasure.get("reference"), str)
        and isinstance(erasure.get("subject"), str)
    ):
        return "field 'erasure' is not an object with a reference and a subject"
    return None


def shape_problem(content: dict[str, Any]) -> str | None:
    """Given a parsed entry of a known type, return why a reader cannot take it as its type
    says (a field missing or of another type, a time that UTC cannot hold, a count below 0),
    or None.

    Example: ``shape_problem({**result, "done": -5})`` says ``done`` is not a count.
    """
    if parse_time(content.get("time")) is None:
        return f"time {content.get('time')!r} is not ISO 8601 with offset (in years 1 to 9999 UTC)"
    problem = field_problem(content)
    if problem is not None:
        return problem
    if not _is_count(content.get("seq")):
        return "field 'seq' is missing or not a whole number >= 0"
    for name in TIME_FIELDS:
        if content.get(name) is not None and parse_time(content[name]) is None:
            return f"field {name!r} is not null nor ISO 8601 with offset (in years 1 to 9999 UTC)"
    for name in COUNT_FIELDS:
        if name in content and not _is_count(content[name]):
            return f"field {name!r} is not a whole number >= 0"
    for name in TEXT_FIELDS:
        if content.get(name) is not None and not isinstance(content[name], str):
            return f"field {name!r} is not a string"
    if content["type"] == "run.started":
        return _run_started_problem(content)
    if content["type"] == "run.finished":
        if not 0 <= content["exit_code"] <= LONGEST_EXIT_CODE:
            return f"field 'exit_code' is not an exit code (0 to {LONGEST_EXIT_CODE})"
        return _records_problem("outcomes", content["outcomes"], OUTCOME_COUNTS)
    if "erasure" in content and not isinstance(content["erasure"], (str, type(None))):
        return "field 'erasure' is not a request's reference"
    return None


def surrogate_problem(raw: bytes, content: dict[str, Any]) -> str | None:
    """Given a line and what it holds, return why its text cannot be written out (a string
    holding half of a UTF-16 pair, which no UTF-8 output takes), or None. Only a line with
    such an escape is serialised again: a reader of a million entries pays nothing.

    Example: ``surrogate_problem(b'{"a":"\\\\ud800"}', {"a": "\\ud800"})`` names it.
    """
    if not _SURROGATE_ESCAPE.search(raw):
        return None
    try:
        canonical(content)
    except ValueError:
        return "a string holds half of a UTF-16 surrogate pair: not text"
    return None


def readable_entries(directory: Path) -> Iterator[StoredEntry]:
    """Given an audit directory, yield its entries in order as ``read_entries`` does, but for
    an entry of a known type that a reader cannot take as its type says: that one is left out,
    with a warning (``audit.entry_left_out``) naming where it is and why; ``audit verify``
    names it as the trail's problem. A line that is not JSON comes as an empty entry, and one
    of an unknown type as it is: readers pass over both. AuditFailure (exit 70) when a segment
    cannot be read (a directory named like one)."""
    try:
        yield from _checked_entries(directory)
    except OSError as error:
        raise AuditFailure(f"cannot read the audit trail: {error}") from error


def _checked_entries(directory: Path) -> Iterator[StoredEntry]:
    for stored in read_entries(directory):
        content = stored.content
        entry_type = content.get("type")
        if stored.too_long:
            problem: str | None = f"longer than {LONGEST_ENTRY_BYTES // 2**20} MiB: not an entry"
        elif not isinstance(entry_type, str) or entry_type not in ENTRY_FIELDS:
            yield stored
            continue
        else:
            problem = shape_problem(content) or surrogate_problem(stored.raw, content)
        if problem is None:
            yield stored
            continue
        get_logger().warning(
            "audit.entry_left_out",
            segment=stored.segment.name.encode("unicode_escape").decode("ascii"),
            line=stored.line,
            reason=problem,
            note="this entry is malformed and was not read: run `retention audit verify`",
        )
