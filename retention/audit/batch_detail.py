"""What a batch entry records beside its records' count, and how a reader checks it.

- ``children`` (a ``batch.intent`` of a rule with ``[[rules.children]]``, and the
  ``batch.reconciled`` settling one): per child table, how many of its rows go (went) with the
  batch's parent rows. Their leaves are in the entry's own leaves file, beside the parents', so
  the file holds ``selected`` (or ``done``) + the sum of ``children`` leaves.
- ``markers`` and ``bytes`` (intents, results and reconciliations of objects and files): how
  many of the records are delete markers, and their size in bytes; a result's and a
  reconciliation's count only what was purged.
- ``versions_digest``: the SHA-256 of ``leaves/<seq>.versions`` (a batch of objects), so that
  the signed entry covers that file too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from retention.audit.entries import versions_path
from retention.selection import KeyValues
from retention.store_protocol import ChildRows, IntentDetail


def children_count(content: dict[str, Any]) -> int:
    """Given a batch entry, return how many child rows its leaves hold (0 without ``children``).

    Example: ``children_count({"children": {"orders": 3, "notes": 1}})`` is 4.
    """
    children = content.get("children")
    if not isinstance(children, dict):
        return 0
    return sum(count for count in children.values() if _count(count))


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def detail_problem(content: dict[str, Any]) -> str | None:
    """Given a batch entry, return why its ``children``, ``markers`` or ``bytes`` are malformed
    or do not add up, or None.

    Example: ``detail_problem({"done": 2, "markers": 3})`` says markers exceed done.
    """
    children = content.get("children")
    if "children" in content:
        if not isinstance(children, dict) or not all(
            isinstance(table, str) and _count(count) for table, count in children.items()
        ):
            return "field 'children' is not an object of child tables and row counts"
        if content.get("type") == "batch.reconciled" and content.get(
            "children_deleted"
        ) != children_count(content):
            return "children_deleted is not the sum of children"
    for name in ("markers", "bytes"):
        if name in content and not _count(content[name]):
            return f"field {name!r} is not a count"
    count = content.get("selected", content.get("done"))
    if "markers" in content and isinstance(count, int) and content["markers"] > count:
        return f"markers is {content['markers']}, more than its {count} records"
    return None


def versions_problem(directory: Path, seq: int, content: dict[str, Any]) -> str | None:
    """Given an audit directory and a batch entry, return why its versions file does not match
    the entry's ``versions_digest``, or None (also when the entry records none: a batch of no
    objects, or a trail written before the digest was recorded)."""
    digest = content.get("versions_digest")
    if digest is None:
        return None
    path = versions_path(directory, seq)
    try:
        with path.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return f"its versions file {path.name} is missing"
    except OSError as error:
        return f"its versions file {path.name} cannot be read: {error.strerror}"
    if actual != digest:
        return f"its versions file {path.name} is not the one versions_digest names (altered)"
    return None


def pending_detail(detail: IntentDetail) -> dict[str, Any]:
    """Given a batch's detail, return what its pending file keeps of it for a reconcile."""
    pending: dict[str, Any] = {}
    if detail.children:
        pending["children"] = [
            {"table": child.table, "key_columns": list(child.key), "keys": child.keys}
            for child in detail.children
        ]
    if detail.markers:
        pending["markers"] = list(detail.markers)
    if detail.sizes:
        pending["sizes"] = list(detail.sizes)
    if detail.transaction is not None:
        pending["transaction"] = detail.transaction.result()
    return pending


def detail_of_pending(pending: dict[str, Any]) -> IntentDetail:
    """Given a pending file's content, return the detail its intent was written with."""
    return IntentDetail(
        children=tuple(
            ChildRows(
                str(child["table"]),
                tuple(child["key_columns"]),
                tuple(tuple(key) for key in child["keys"]),
            )
            for child in pending.get("children", ())
        ),
        markers=tuple(bool(marker) for marker in pending.get("markers", ())),
        sizes=tuple(int(size) for size in pending.get("sizes", ())),
    )


def counted_detail(
    detail: IntentDetail, keys: tuple[KeyValues, ...], left: Collection[KeyValues] = ()
) -> dict[str, Any]:
    """Given a batch's detail, its keys and those of them not purged (``left``), return the
    counts an entry records: ``children`` (rows per child table, an intent's), ``markers``
    (delete markers among the keys purged) and ``bytes`` (their sizes)."""
    counted: dict[str, Any] = {}
    if detail.children and not left:
        counted["children"] = {child.table: len(child.keys) for child in detail.children}
    if detail.markers:
        counted["markers"] = sum(
            1
            for key, marker in zip(keys, detail.markers, strict=True)
            if marker and key not in left
        )
    if detail.sizes:
        counted["bytes"] = sum(
            size for key, size in zip(keys, detail.sizes, strict=True) if key not in left
        )
    return counted
