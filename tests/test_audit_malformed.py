"""A trail that holds a malformed entry, or files an auditor's copy should not hold: `verify`
names the entry, and `show`, `export`, `report`, `prove` and `erasures` answer with what they
can read and a clear message, never a traceback. Each entry below is appended after the last
checkpoint, as anyone who can write the audit directory could (no signing key needed)."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retention.audit.entries import LONGEST_ENTRY_BYTES, canonical
from retention.audit.verify import Verification
from retention.cli import main
from retention.cli.shared import Context
from retention.errors import ExitCode
from tests.test_audit_verify import (
    Trail,
    assert_invalid,
    build_trail,
    contents,
    copy_trail,
    customer_code,
    lines,
    segment,
    verify,
    write_lines,
)

TOO_LATE_FOR_UTC = "9999-12-31T23:59:59-14:00"
TOO_EARLY_FOR_UTC = "0001-01-01T00:00:00+14:00"
# A record the trail's runs purged.
PROVE = ("--store", "db", "--table", "customers", "--key", customer_code(3))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("malformed"))


@pytest.fixture
def trail(built: Trail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trail:
    monkeypatch.setattr(Context, "config", lambda self: built.config)
    return copy_trail(built, tmp_path)


def append(trail: Trail, entry: dict[str, Any], raw: bytes | None = None) -> int:
    """Append ``entry`` (or these exact bytes, given its content) chained after the last line,
    with the next seq; return that seq."""
    existing = lines(trail)
    seq = len(existing)
    entry = {**entry, "seq": seq, "prev": hashlib.sha256(existing[-1]).hexdigest()}
    write_lines(trail, [*existing, raw if raw is not None else canonical(entry)])
    return seq


def last_of(trail: Trail, entry_type: str) -> dict[str, Any]:
    return [entry for entry in contents(trail) if entry["type"] == entry_type][-1]


def a_hold(trail: Trail, **fields: Any) -> dict[str, Any]:
    """A well-formed hold.added (the trail's own holds are none), with ``fields`` changed."""
    some = last_of(trail, "checkpoint")
    return {
        "v": some["v"],
        "type": "hold.added",
        "time": some["time"],
        "hold_id": 1,
        "rule": "stale-customers",
        "kind": "key",
        "target_count": 1,
        "target_digest": "0" * 64,
        "reason": "CASE-1",
        "until": None,
        "tool": "retention",
        "host": "h",
        "user": "u",
        **fields,
    }


def a_run(trail: Trail, started: dict[str, Any], finished: dict[str, Any]) -> None:
    """Append a new run's run.started and run.finished, copies of the last ones with
    ``started`` and ``finished`` changed."""
    run_id = "f" * 32
    append(trail, {**last_of(trail, "run.started"), "run_id": run_id, **started})
    append(trail, {**last_of(trail, "run.finished"), "run_id": run_id, **finished})


def audit(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "audit", *arguments])


def assert_every_reader_answers(trail: Trail, tmp_path: Path, *, report_code: int) -> None:
    """Every command that reads the trail ends with an exit code of its own, none a traceback;
    those that read it without checking it leave the malformed entry out, and say so."""
    directory = ["--dir", str(trail.directory)]
    keys = ["--keys", str(trail.keys_file)]
    answers = {
        "show": (audit("show", *directory), 0),
        "show json": (audit("show", "--format", "json", *directory), 0),
        "export csv": (audit("export", "--format", "csv", *directory), 0),
        "report": (
            audit("report", "--format", "json", "-o", str(tmp_path / "r.json"), *directory, *keys),
            report_code,
        ),
        "report html": (
            audit("report", "-o", str(tmp_path / "r.html"), *directory, *keys),
            report_code,
        ),
        "prove": (audit("prove", *PROVE, *directory), 0),
        "erasures": (audit("erasures", "--subject", "someone@example.com", *directory), 3),
    }
    for name, (result, code) in answers.items():
        assert result.exit_code == code, (name, result.output, result.exception)
        if code == 0 and name != "prove":
            assert "audit.entry_left_out" in result.stderr, name


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"time": TOO_LATE_FOR_UTC}, "is not ISO 8601 with offset (in years 1 to 9999 UTC)"),
        ({"until": TOO_LATE_FOR_UTC}, "field 'until'"),
        ({"placed_at": TOO_EARLY_FOR_UTC}, "field 'placed_at'"),
        ({"target_count": "many"}, "field 'target_count' is not a whole number >= 0"),
        ({"target_count": -3}, "field 'target_count' is not a whole number >= 0"),
    ],
    ids=["time", "until", "placed_at", "count-text", "count-negative"],
)
def test_a_malformed_hold_entry_is_invalid_and_no_reader_fails_on_it(
    trail: Trail, tmp_path: Path, forgery: dict[str, Any], reason: str
) -> None:
    """A time UTC cannot hold (year 10000 once turned to UTC) passed verify and made show,
    export, report and erasures fail with a traceback (OverflowError); so did a count that
    is not one (TypeError)."""
    seq = append(trail, a_hold(trail, **forgery))
    assert_invalid(verify(trail), seq, reason)
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


@pytest.mark.parametrize(
    ("started", "finished", "reason"),
    [
        ({"as_of": TOO_LATE_FOR_UTC}, {}, "field 'as_of'"),
        ({"time": TOO_EARLY_FOR_UTC}, {}, "is not ISO 8601 with offset"),
        ({"rules": [1, None]}, {}, "field 'rules' holds an item that is not a rule name"),
        ({"planned": "all"}, {}, "field 'planned' is not a list"),
        ({"planned": [1]}, {}, "field 'planned' holds an item"),
        ({"rule_definitions": ["x"]}, {}, "field 'rule_definitions'"),
        ({"erasure": "DSR-1"}, {}, "field 'erasure'"),
        ({}, {"outcomes": [1, "x"]}, "field 'outcomes' holds an item"),
        ({}, {"outcomes": [{"rule": "r", "due": "x"}]}, "field 'outcomes' holds a count"),
        ({}, {"exit_code": -1}, "field 'exit_code' is not an exit code"),
    ],
)
def test_a_malformed_run_entry_is_invalid_and_no_reader_fails_on_it(
    trail: Trail,
    tmp_path: Path,
    started: dict[str, Any],
    finished: dict[str, Any],
    reason: str,
) -> None:
    """Each passed verify (its required fields were right) and made show, export, report or
    erasures fail with a traceback: AttributeError, TypeError or OverflowError."""
    a_run(trail, started, finished)
    seq = len(lines(trail)) - (1 if finished else 2)
    assert_invalid(verify(trail), seq, reason)
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


def test_a_result_claiming_fewer_than_no_records_is_invalid(trail: Trail, tmp_path: Path) -> None:
    """A result of done -5 passed verify (5 fewer records purged in its summary)."""
    entries = contents(trail)
    intent = next(entry for entry in entries if entry["type"] == "batch.intent")
    result = next(
        entry
        for entry in entries
        if entry["type"] == "batch.result" and entry["intent"] == intent["seq"]
    )
    started = next(
        entry
        for entry in entries
        if entry["type"] == "run.started" and entry["run_id"] == intent["run_id"]
    )
    run_id = "e" * 32
    append(trail, {**started, "run_id": run_id})
    intent_seq = len(lines(trail))
    leaves = trail.directory / "leaves"
    (leaves / f"{intent_seq:08d}.leaves").write_bytes(
        (leaves / f"{intent['seq']:08d}.leaves").read_bytes()
    )
    append(trail, {**intent, "run_id": run_id})
    seq = append(trail, {**result, "run_id": run_id, "intent": intent_seq, "done": -5})
    assert_invalid(verify(trail), seq, "field 'done' is not a whole number >= 0")
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


@pytest.mark.parametrize("forged_type", [[], {}, ["hold.added"]], ids=["list", "object", "listed"])
def test_an_entry_type_that_is_no_string_fails_no_reader(
    trail: Trail, tmp_path: Path, forged_type: object
) -> None:
    """A type of [] or {} was looked up in the table of known types: TypeError (unhashable),
    a traceback in verify, show, export, report, prove and erasures."""
    seq = append(trail, a_hold(trail, type=forged_type))
    assert_invalid(verify(trail), seq, f"unknown entry type {forged_type!r}")
    directory = ["--dir", str(trail.directory)]
    answers = {
        "show": (audit("show", *directory), 0),
        "export": (audit("export", *directory), 0),
        "report": (
            audit(
                "report", "-o", str(tmp_path / "r.html"), *directory, "--keys", str(trail.keys_file)
            ),
            ExitCode.AUDIT_FAILURE,
        ),
        "prove": (audit("prove", *PROVE, *directory), 0),
        "erasures": (audit("erasures", "--subject", "someone@example.com", *directory), 3),
    }
    for name, (result, code) in answers.items():
        assert result.exit_code == code, (name, result.output, result.exception)


def test_an_entry_without_its_seq_is_left_out_by_every_reader(trail: Trail, tmp_path: Path) -> None:
    """A batch.intent without seq passed the readers' shape check, and show, export and report
    failed on it with a traceback (KeyError)."""
    existing = lines(trail)
    intent = {
        **last_of(trail, "batch.intent"),
        "run_id": "d" * 32,
        "prev": hashlib.sha256(existing[-1]).hexdigest(),
    }
    del intent["seq"]
    seq = append(trail, intent, canonical(intent))
    assert_invalid(verify(trail), seq, "seq is None where")
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


@pytest.mark.parametrize("in_its_place", [None, b"[]", b'"text"'])
def test_no_bundle_is_written_when_an_entry_before_its_checkpoint_was_removed(
    trail: Trail, tmp_path: Path, in_its_place: bytes | None
) -> None:
    """The proof of a batch holds (it checks leaves), but the bundle took its entries by their
    place in the file: one line removed between the batch and its checkpoint was a traceback
    (KeyError) instead of the trail's alteration being named."""
    proof = json.loads(
        audit("prove", *PROVE, "--dir", str(trail.directory), "--output", "json").stdout
    )
    settled = proof["proofs"][0]["settled_by"]
    entries = contents(trail)
    checkpoint = next(e["seq"] for e in entries if e["type"] == "checkpoint" and e["seq"] > settled)
    assert checkpoint > settled + 1, "the trail has an entry to remove between the two"
    existing = lines(trail)
    altered = existing[: settled + 1] + existing[settled + 2 :]
    if in_its_place is not None:
        # Where the checkpoint was, now a line that is JSON but no entry (a traceback too).
        altered.insert(checkpoint, in_its_place)
    write_lines(trail, altered)
    bundle = tmp_path / "bundle.json"
    result = audit("prove", *PROVE, "--dir", str(trail.directory), "--bundle", str(bundle))
    assert result.exit_code == ExitCode.AUDIT_FAILURE, (result.output, result.exception)
    assert f"error: the trail's entry at seq {checkpoint} is missing or holds another seq" in (
        result.stderr
    )
    assert not bundle.exists()


def test_half_a_surrogate_pair_in_a_string_fails_no_reader(trail: Trail, tmp_path: Path) -> None:
    """JSON may escape half of a UTF-16 pair; no UTF-8 output can write it: show, export and
    prove failed with a traceback (UnicodeEncodeError). verify names it as not canonical."""
    hold = a_hold(trail, reason="CASE-\ud800")
    existing = lines(trail)
    hold |= {"seq": len(existing), "prev": hashlib.sha256(existing[-1]).hexdigest()}
    raw = json.dumps(hold, sort_keys=True, separators=(",", ":")).encode()
    seq = append(trail, hold, raw)
    assert_invalid(verify(trail), seq, "not representable as canonical JSON")
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


def test_a_leaves_file_with_a_byte_that_is_not_ascii_fails_prove_cleanly(trail: Trail) -> None:
    """prove read a leaves file as text: a byte that is not UTF-8 was a traceback
    (UnicodeDecodeError); now the proof is refused (exit 70), pointing to verify."""
    for path in (trail.directory / "leaves").glob("*.leaves"):
        path.write_bytes(path.read_bytes() + b"\xff\n")
    result = audit("prove", *PROVE, "--dir", str(trail.directory))
    assert result.exit_code == ExitCode.AUDIT_FAILURE, (result.output, result.exception)
    assert "holds a line that is not hex; run `audit verify`" in result.stderr


def test_a_directory_named_like_a_segment_fails_no_reader(trail: Trail, tmp_path: Path) -> None:
    """show, export, prove and erasures failed with a traceback (IsADirectoryError)."""
    (trail.directory / "trail" / "00000002.jsonl").mkdir()
    directory = ["--dir", str(trail.directory)]
    for arguments in (
        ["verify", "--keys", str(trail.keys_file)],
        ["show"],
        ["export"],
        ["prove", *PROVE],
        ["erasures", "--subject", "someone@example.com"],
    ):
        result = audit(*arguments, *directory)
        assert result.exit_code == ExitCode.AUDIT_FAILURE, (arguments, result.output)
        assert "cannot read the audit trail" in result.stderr, arguments


def test_a_segment_name_that_is_not_utf8_is_shown_escaped(trail: Trail, tmp_path: Path) -> None:
    """A file in trail/ named with a byte that is not UTF-8 and a line break: verify's message
    broke across lines, and report failed to write it (UnicodeEncodeError, a traceback)."""
    name = b"\xe9\n.jsonl"
    (trail.directory / "trail").joinpath(name.decode("utf-8", "surrogateescape")).write_bytes(
        b"{}\n"
    )
    result = audit("verify", "--dir", str(trail.directory), "--keys", str(trail.keys_file))
    assert result.exit_code == ExitCode.AUDIT_FAILURE, result.output
    assert "trail/\\xe9\\n.jsonl line 1" in result.stderr
    report = tmp_path / "report.json"
    written = audit(
        "report", "--format", "json", "-o", str(report),
        "--dir", str(trail.directory), "--keys", str(trail.keys_file),
    )  # fmt: skip
    assert written.exit_code == ExitCode.AUDIT_FAILURE, (written.output, written.exception)
    assert "\\\\xe9\\\\n.jsonl" in report.read_text()


def test_a_key_window_utc_cannot_hold_is_a_malformed_key_file(trail: Trail, tmp_path: Path) -> None:
    """verify said valid and report failed with a traceback (OverflowError) on a key whose
    not_before is 0001-01-01T00:00:00+14:00, before year 1 in UTC."""
    document = json.loads(trail.keys_file.read_text())
    document["keys"][0]["not_before"] = TOO_EARLY_FOR_UTC
    trail.keys_file.write_text(json.dumps(document))
    directory, keys = ["--dir", str(trail.directory)], ["--keys", str(trail.keys_file)]
    for arguments in (["verify"], ["report", "-o", str(tmp_path / "r.html")]):
        result = audit(*arguments, *directory, *keys)
        assert result.exit_code == ExitCode.BAD_CONFIG, (arguments, result.output)
        assert "has a time that UTC cannot hold" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["report", "--to", "9999-12-31"],
        ["report", "--from", TOO_LATE_FOR_UTC],
        ["show", "--since", TOO_EARLY_FOR_UTC],
        ["export", "--until", TOO_LATE_FOR_UTC],
    ],
)
def test_a_period_bound_utc_cannot_hold_is_a_usage_error(
    trail: Trail, tmp_path: Path, arguments: list[str]
) -> None:
    """report --to 9999-12-31 (the whole day: up to 10000-01-01) was a traceback
    (OverflowError); the other bounds were taken, and the report's period said null."""
    if arguments[0] == "report":
        arguments = [*arguments, "-o", str(tmp_path / "r.html"), "--keys", str(trail.keys_file)]
    result = audit(*arguments, "--dir", str(trail.directory))
    assert result.exit_code == ExitCode.USAGE, (result.output, result.exception)
    assert f"{arguments[1]} '{arguments[2]}' is out of range" in result.stderr


def _append_a_line(path: Path, mebibytes: int) -> None:
    """Append one line of ``mebibytes`` MiB of hex digits, written a MiB at a time."""
    with path.open("ab") as handle:
        for _ in range(mebibytes):
            handle.write(b"f" * 2**20)
        handle.write(b"\n")


def _verified_with_peak(trail: Trail) -> tuple[Verification, int]:
    """verify's result, and the most memory Python allocated while it ran."""
    tracemalloc.start()
    try:
        result = verify(trail)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_line_past_the_longest_entry_is_named_not_read_whole(
    trail: Trail, tmp_path: Path
) -> None:
    """Anyone who can write the audit directory could append a line of gigabytes: every reader
    read each line whole, taking as much memory (MemoryError, a traceback, or the host's OOM
    killer). A line past LONGEST_ENTRY_BYTES is now skipped in bounded reads and named."""
    seq = len(lines(trail))
    _append_a_line(segment(trail), LONGEST_ENTRY_BYTES // 2**20 + 36)
    result, peak = _verified_with_peak(trail)
    assert_invalid(result, seq, "longer than 64 MiB: not an entry (not read)")
    assert peak < LONGEST_ENTRY_BYTES + 16 * 2**20, peak
    assert_every_reader_answers(trail, tmp_path, report_code=ExitCode.AUDIT_FAILURE)


def test_a_leaves_file_with_a_line_of_a_hundred_mib_is_malformed_not_read_whole(
    trail: Trail,
) -> None:
    """verify streamed a leaves file line by line, but a line was read whole, however long."""
    path = sorted((trail.directory / "leaves").glob("*.leaves"))[0]
    _append_a_line(path, 100)
    result, peak = _verified_with_peak(trail)
    assert result.problem is not None
    assert f"leaves file {path.name} line " in result.problem.reason, result.problem
    assert "is not a 32-byte hex leaf" in result.problem.reason, result.problem
    assert peak < 64 * 2**20, peak  # it was 3.5 times the line
