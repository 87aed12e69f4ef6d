"""Verify refuses what cannot happen (issue 13): a batch after its run's end, a result of
another run, non-canonical hex, unknown fields in the public key file; `show`/`export` leave
unsigned entries out of their totals and list hold changes; anchors never replace each other."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.audit.leaves import leaves_root
from retention.audit.trail import TrailWriter
from tests.test_audit_verify import (
    Trail,
    assert_invalid,
    build_trail,
    checkpoints,
    contents,
    copy_trail,
    invoke,
    lines,
    segment,
    verify,
    write_lines,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("strict"))


@pytest.fixture
def trail(built: Trail, tmp_path: Path) -> Trail:
    return copy_trail(built, tmp_path)


def _writer(trail: Trail) -> TrailWriter:
    """An unsigned writer, as anyone who can write the audit directory has."""
    return TrailWriter(trail.directory, trail.hmac_key, None, lambda: datetime.now(UTC))


def forge_batch_after_the_run(trail: Trail) -> int:
    """Append a batch.intent and its batch.result for the last run, after its run.finished and
    checkpoint, with a well-formed leaves file, as a forger with write access would. Return
    the intent's seq."""
    last_run = [entry for entry in contents(trail) if entry["type"] == "run.finished"][-1]
    intent = next(
        entry
        for entry in contents(trail)
        if entry["type"] == "batch.intent" and entry["run_id"] == last_run["run_id"]
    )
    with _writer(trail) as writer:
        leaves = writer.record_leaves("db", "customers", [("CUST-FORGED-1",), ("CUST-FORGED-2",)])
        seq = writer.next_seq
        writer.write_leaves(seq, leaves)
        fields = {k: v for k, v in intent.items() if k not in ("v", "seq", "prev", "type", "time")}
        writer.append("batch.intent", {**fields, "selected": 2, "leaves_root": leaves_root(leaves)})
        writer.append(
            "batch.result",
            {
                "run_id": intent["run_id"],
                "rule": intent["rule"],
                "intent": seq,
                "status": "committed",
                "done": 2,
                "held": 0,
                "failed": 0,
                "children_deleted": 0,
            },
        )
    return seq


def test_a_batch_forged_after_its_run_finished_fails_verify_even_with_the_anchor(
    trail: Trail, tmp_path: Path
) -> None:
    anchored = invoke(
        "audit", "anchor", "--to", str(tmp_path / "anchors"),
        "--dir", str(trail.directory), "--keys", str(trail.keys_file),
    )  # fmt: skip
    assert anchored.exit_code == 0, anchored.output
    seq = forge_batch_after_the_run(trail)
    assert_invalid(verify(trail), seq, "had already finished")
    result = invoke(
        "audit", "verify", "--dir", str(trail.directory), "--keys", str(trail.keys_file),
        "--anchor", str(tmp_path / "anchors"),
    )  # fmt: skip
    assert result.exit_code == 70, result.output
    assert "had already finished" in result.stderr


def test_a_second_run_finished_for_the_same_run_is_refused(trail: Trail) -> None:
    entries = contents(trail)
    run_ids = [entry["run_id"] for entry in entries if entry["type"] == "run.started"]
    with _writer(trail) as writer:
        writer.append("run.finished", {"run_id": run_ids[0], "exit_code": 0, "outcomes": []})
    assert_invalid(verify(trail), len(entries), "had already finished")


def test_a_batch_of_a_run_that_never_started_is_refused(trail: Trail) -> None:
    original = lines(trail)
    entries = contents(trail)
    intent = next(e for e in entries if e["type"] == "batch.intent")
    with _writer(trail) as writer:
        writer.append(
            "batch.intent",
            {k: v for k, v in intent.items() if k not in ("v", "seq", "prev", "type", "time")}
            | {"run_id": "f" * 32},
        )
    assert_invalid(verify(trail), len(original), "has no earlier run.started")


def test_an_upper_case_signature_fails_verify(trail: Trail) -> None:
    original = lines(trail)
    checkpoint = json.loads(original[-1])
    upper = original[-1].replace(
        checkpoint["signature"].encode(), checkpoint["signature"].upper().encode()
    )
    assert upper != original[-1]
    write_lines(trail, [*original[:-1], upper])
    assert_invalid(verify(trail), len(original) - 1, "signature", "lowercase hex")


def test_every_single_byte_edit_of_the_last_checkpoint_is_caught(trail: Trail) -> None:
    """The last line is chained to nothing after it: only its signature and canonical form
    protect it. Each byte changed (case, digit, or a space) is caught."""
    original = segment(trail).read_bytes()
    start = original.rstrip(b"\n").rfind(b"\n") + 1
    missed = []
    for position in range(start, len(original) - 1):
        byte = chr(original[position])
        variants = {byte.swapcase(), " "}
        if byte.isdigit():
            variants.add(str((int(byte) + 1) % 10))
        for variant in variants - {byte}:
            edited = original[:position] + variant.encode() + original[position + 1 :]
            segment(trail).write_bytes(edited)
            if verify(trail).valid:
                missed.append((position - start, byte, variant))
    segment(trail).write_bytes(original)
    assert missed == []


def _keys_document(trail: Trail) -> dict[str, Any]:
    return json.loads(trail.keys_file.read_text())


def test_an_unknown_field_in_the_public_key_file_is_an_error(trail: Trail) -> None:
    document = _keys_document(trail)
    key = document["keys"][0]
    key["not_afer"] = key.pop("not_after")  # a misspelling must not reopen a window
    trail.keys_file.write_text(json.dumps(document))
    result = invoke(
        "audit", "verify", "--dir", str(trail.directory), "--keys", str(trail.keys_file)
    )
    assert result.exit_code == 78, result.output
    assert "not_afer" in result.stderr
    document = _keys_document(trail) | {"comment": "extra"}
    trail.keys_file.write_text(json.dumps(document))
    assert (
        invoke(
            "audit", "verify", "--dir", str(trail.directory), "--keys", str(trail.keys_file)
        ).exit_code
        == 78
    )


def _export(trail: Trail, *options: str) -> list[dict[str, Any]]:
    result = invoke("audit", "export", "--dir", str(trail.directory), *options)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_show_and_export_mark_unsigned_entries_and_leave_them_out_of_totals(
    trail: Trail,
) -> None:
    before = _export(trail)
    assert all(row["signed"] for row in before)
    forge_batch_after_the_run(trail)
    with _writer(trail) as writer:
        writer.append(
            "hold.added",
            {
                "hold_id": 3, "rule": "stale-customers", "kind": "key", "target_count": 2,
                "target_digest": "ab" * 32, "reason": "case LIT-7", "until": None,
                "tool": "retention test", "host": "h", "user": "u",
            },
        )  # fmt: skip
    rows = _export(trail)
    unsigned = [row for row in rows if not row["signed"]]
    assert [(row["entry"], row["rule"]) for row in unsigned] == [
        ("run", "stale-customers"),
        ("hold.added", "stale-customers"),
    ]
    hold = unsigned[1]
    assert (hold["hold_id"], hold["hold_reason"], hold["hold_targets"]) == (3, "case LIT-7", 2)
    shown = invoke("audit", "show", "--dir", str(trail.directory)).stdout
    assert "NOT YET SIGNED" in shown
    assert "hold 3 placed on stale-customers" in shown
    # The forged batch's run is no longer counted: 56 minus that run's 24.
    assert "32 records purged in 1 run." in shown
    assert "Not yet signed (not counted): 26 records in 1 run after the last checkpoint" in shown


def test_anchor_creates_its_directory_and_never_replaces_an_anchor(
    trail: Trail, tmp_path: Path
) -> None:
    def anchor(to: Path) -> Any:
        return invoke(
            "audit", "anchor", "--to", str(to),
            "--dir", str(trail.directory), "--keys", str(trail.keys_file),
        )  # fmt: skip

    target = tmp_path / "new" / "anchors"
    assert anchor(target).exit_code == 0
    written = target / f"checkpoint-{checkpoints(trail)[-1]:012d}.jsonl"
    assert written.read_bytes() == lines(trail)[-1] + b"\n"
    again = anchor(target)
    assert again.exit_code == 0, again.output
    assert "already anchored" in again.stderr
    written.write_bytes(b"another history\n")
    refused = anchor(target)
    assert refused.exit_code == 70, refused.output
    assert written.read_bytes() == b"another history\n", "an anchor is never replaced"
    a_file = tmp_path / "anchor.jsonl"
    a_file.write_text("earlier\n")
    not_a_directory = anchor(a_file)
    assert not_a_directory.exit_code == 2, not_a_directory.output
    assert a_file.read_text() == "earlier\n"
