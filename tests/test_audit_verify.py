"""`audit verify` and `audit anchor` on a real trail: a valid trail verifies, and every kind of
tampering (the tamper corpus) is caught and pinned on the right entry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert

from retention.audit import trail as trail_module
from retention.audit.entries import (
    GENESIS,
    LEAVES_PER_CHUNK,
    canonical,
    checkpoint_payload,
    entry_hash,
    read_entries,
    read_leaves,
)
from retention.audit.entry_checks import load_verification_keys
from retention.audit.keys import Signer, add_public_key, load_signer
from retention.audit.merkle import chunked_root, leaf_hash, root_from_leaf_hashes
from retention.audit.recorder import TrailRecorder
from retention.audit.trail import TrailWriter
from retention.audit.verify import Verification, verify_trail
from retention.cli import main
from retention.config import Config
from retention.errors import AuditFailure, ExitCode
from retention.run_report import RunReport
from tests.support import create_tables, make_config, plan, plan_and_run

FIRST_RUN = datetime(2026, 1, 1, 12, tzinfo=UTC)
SECOND_RUN = datetime(2026, 11, 23, 12, tzinfo=UTC)
CUSTOMERS = 36
ORDERS = 24
CONTACTS = 12

RULES = """
[[rules]]
name = "stale-customers"
policy = "P-7 §2: customers are deleted a year after their last visit"
category = "customer accounts"
store = "db"
table = "customers"
key = "code"
clock = "last_seen"
period = "1y"
action = "delete"
batch_size = 5

[[rules]]
name = "old-orders"
policy = "P-7 §4: orders are deleted after six months"
category = "orders"
store = "db"
table = "orders"
key = ["customer_code", "order_no"]
clock = "placed_at"
period = "6mo"
action = "delete"
batch_size = 10

[[rules]]
name = "dormant-contacts"
policy = "P-7 §5: contacts are anonymised two years after their last update"
category = "contacts"
store = "db"
table = "contacts"
key = "id"
clock = "updated_at"
period = "2y"
action = "anonymise"
marker_column = "anonymised_at"

[rules.anonymise]
email = "null"
name = { fixed = "anonymous" }
"""


def customer_code(number: int) -> str:
    return f"CUST-Q7X-{number:03d}"


def email(number: int) -> str:
    return f"zelda.quinch{number}@example.org"


def person(number: int) -> str:
    return f"Zelda Quinchbury {number}"


def _last_seen(number: int) -> datetime:
    """A third due at the first run, a third at the second, a third kept."""
    if number <= CUSTOMERS // 3:
        return datetime(2019, 3, number)
    if number <= 2 * CUSTOMERS // 3:
        return datetime(2025, 6, 1)
    return datetime(2026, 11, 1)


def create_database(url: str) -> None:
    """Given a SQLite URL, create the customers, orders and contacts the rules purge."""
    metadata = MetaData()
    customers = Table(
        "customers",
        metadata,
        Column("code", String(20), primary_key=True),
        Column("email", String(80)),
        Column("name", String(80)),
        Column("last_seen", DateTime),
    )
    orders = Table(
        "orders",
        metadata,
        Column("customer_code", String(20), primary_key=True),
        Column("order_no", Integer, primary_key=True, autoincrement=False),
        Column("placed_at", DateTime),
    )
    contacts = Table(
        "contacts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("email", String(80), nullable=True),
        Column("name", String(80)),
        Column("updated_at", DateTime),
        Column("anonymised_at", DateTime, nullable=True),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(customers),
            [
                {
                    "code": customer_code(n),
                    "email": email(n),
                    "name": person(n),
                    "last_seen": _last_seen(n),
                }
                for n in range(1, CUSTOMERS + 1)
            ],
        )
        connection.execute(
            insert(orders),
            [
                {
                    "customer_code": customer_code(1 + n % 5),
                    "order_no": n,
                    "placed_at": datetime(2024, 1, 1) if n <= 12 else datetime(2026, 3, 1),
                }
                for n in range(1, ORDERS + 1)
            ],
        )
        connection.execute(
            insert(contacts),
            [
                {
                    "id": 500 + n,
                    "email": email(100 + n),
                    "name": person(100 + n),
                    "updated_at": datetime(2018, 1, 1) if n <= 8 else datetime(2026, 1, 1),
                    "anonymised_at": None,
                }
                for n in range(1, CONTACTS + 1)
            ],
        )
    engine.dispose()


@dataclass(frozen=True)
class Trail:
    """A real trail written by two audited runs (two checkpoints), and what made it."""

    root: Path
    url: str
    config: Config
    reports: tuple[RunReport, ...]

    @property
    def directory(self) -> Path:
        return self.root / "audit"

    @property
    def keys_file(self) -> Path:
        return self.directory / "public-keys.json"

    @property
    def signer(self) -> Signer:
        return load_signer(self.root / "audit-keys" / "signing.pem")

    @property
    def hmac_key(self) -> bytes:
        return (self.root / "audit-keys" / "hmac.key").read_bytes().strip()


def build_trail(root: Path) -> Trail:
    """Given an empty directory, create the database, purge it twice with the audit trail on,
    and return the trail."""
    url = f"sqlite:///{root / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=root / "audit")
    reports = tuple(plan_and_run(config, moment)[1] for moment in (FIRST_RUN, SECOND_RUN))
    return Trail(root, url, config, reports)


def copy_trail(built: Trail, root: Path) -> Trail:
    """Given a built trail, return a copy under ``root`` (keys included) to tamper with."""
    shutil.copytree(built.directory, root / "audit")
    shutil.copytree(built.root / "audit-keys", root / "audit-keys")
    return Trail(root, built.url, built.config, built.reports)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("built"))


@pytest.fixture
def trail(built: Trail, tmp_path: Path) -> Trail:
    return copy_trail(built, tmp_path)


# --- helpers ------------------------------------------------------------------------------


def segment(trail: Trail) -> Path:
    return trail.directory / "trail" / "00000001.jsonl"


def lines(trail: Trail) -> list[bytes]:
    return segment(trail).read_bytes().splitlines()


def write_lines(trail: Trail, new_lines: list[bytes]) -> None:
    segment(trail).write_bytes(b"".join(line + b"\n" for line in new_lines))


def contents(trail: Trail) -> list[dict[str, Any]]:
    return [stored.content for stored in read_entries(trail.directory)]


def seq_of(trail: Trail, test: Callable[[dict[str, Any]], bool], nth: int = 0) -> int:
    """The seq of the nth entry that passes ``test``."""
    return int([entry["seq"] for entry in contents(trail) if test(entry)][nth])


def checkpoints(trail: Trail) -> list[int]:
    return [entry["seq"] for entry in contents(trail) if entry["type"] == "checkpoint"]


def verify(trail: Trail, anchors: list[tuple[str, bytes]] | None = None) -> Verification:
    return verify_trail(trail.directory, load_verification_keys(trail.keys_file), anchors or [])


def assert_invalid(result: Verification, seq: int, *words: str) -> None:
    """The trail is invalid and the first bad entry is ``seq``, on its own line of segment 1,
    for a reason containing every word."""
    assert result.problem is not None, "tampering went undetected"
    assert result.problem.seq == seq, str(result.problem)
    assert result.problem.line == seq + 1, str(result.problem)
    assert result.problem.segment is not None
    assert result.problem.segment.name == "00000001.jsonl"
    for word in words:
        assert word in result.problem.reason, str(result.problem)


def rechain(entries: list[dict[str, Any]], signer: Signer | None) -> list[bytes]:
    """Given entries, return their lines with seq, prev and checkpoint size/root recomputed as a
    forger would; checkpoints are re-signed only when the forger holds a signing key."""
    raws: list[bytes] = []
    hashes: list[bytes] = []
    prev = GENESIS
    for seq, original in enumerate(entries):
        entry = {**original, "seq": seq, "prev": prev}
        if entry["type"] == "checkpoint":
            entry |= {"size": seq, "root": root_from_leaf_hashes(hashes).hex()}
            if signer is not None:
                entry["key_id"] = signer.key_id
                entry["signature"] = signer.sign(checkpoint_payload(entry)).hex()
        raw = canonical(entry)
        raws.append(raw)
        hashes.append(leaf_hash(raw))
        prev = entry_hash(raw)
    return raws


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *arguments])


def export_anchor(trail: Trail, destination: Path) -> Result:
    return invoke(
        "audit",
        "anchor",
        "--to",
        str(destination),
        "--dir",
        str(trail.directory),
        "--keys",
        str(trail.keys_file),
    )


# --- a valid trail ------------------------------------------------------------------------


def test_the_trail_of_two_runs_verifies_with_its_summary(built: Trail) -> None:
    result = verify(built)
    assert result.valid, str(result.problem)
    purged = sum(outcome.done for report in built.reports for outcome in report.outcomes)
    assert purged == 12 + 12 + 12 + 12 + 8  # customers and orders twice, contacts once
    assert result.records_purged == purged
    assert result.runs == 2
    assert len(checkpoints(built)) == 2
    assert result.last_checkpoint is not None
    assert result.last_checkpoint.content["seq"] == result.entries - 1
    assert result.unsigned == 0


def test_verify_needs_no_config_with_dir_and_keys(
    built: Trail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    result = invoke(
        "audit", "verify", "--dir", str(built.directory), "--keys", str(built.keys_file)
    )
    assert result.exit_code == 0, result.output
    assert "valid:" in result.stdout
    assert "56 records purged" in result.stdout
    assert f"last checkpoint: seq {checkpoints(built)[-1]}" in result.stdout
    assert "not yet signed: 0 entries" in result.stdout
    without_keys = invoke("audit", "verify", "--dir", str(built.directory))
    assert without_keys.exit_code == ExitCode.USAGE, without_keys.output
    assert "no configuration file" in without_keys.stderr


def test_a_trail_this_user_may_not_look_into_is_exit_70_naming_it(
    built: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's state folder is 0700 (StateDirectoryMode=): an auditor's own account may
    not enter it. verify, show and export say the trail cannot be read, naming the folder, and
    exit 70; they ended in PermissionError's traceback (exit 1)."""
    denied_folder = built.directory / "trail"
    real_stat = Path.stat

    def denied(path: Path, *arguments: object, **options: object) -> object:
        # What the system says of a folder inside one this user may not enter (root may).
        if path == denied_folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *arguments, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", denied)
    directory = ("--dir", str(built.directory))
    for command in (
        ("verify", *directory, "--keys", str(built.keys_file)),
        ("show", *directory),
        ("export", *directory),
    ):
        result = invoke("audit", *command)
        assert result.exit_code == ExitCode.AUDIT_FAILURE, f"{command}: {result.exception!r}"
        assert result.stderr == (
            f"error: cannot read the audit trail: Permission denied: {denied_folder}\n"
        ), command


def test_entries_after_the_last_checkpoint_are_reported_as_not_yet_signed(trail: Trail) -> None:
    with TrailWriter(trail.directory, trail.hmac_key, None, lambda: datetime.now(UTC)) as writer:
        writer.append("config.changed", {"run_id": "r", "digest": "d", "previous_digest": None})
    result = verify(trail)
    assert result.valid, str(result.problem)
    assert result.unsigned == 1


def test_legal_hold_changes_are_known_entries(trail: Trail) -> None:
    hold = {"hold_id": 7, "rule": "stale-customers", "kind": "key", "target_count": 1}
    with TrailWriter(trail.directory, trail.hmac_key, None, lambda: datetime.now(UTC)) as writer:
        writer.append("hold.added", {**hold, "target_digest": "ab" * 32, "reason": "case 12"})
        writer.append("hold.released", {**hold, "reason": "case closed"})
        writer.append("hold.renamed", {**hold})
    assert_invalid(verify(trail), len(lines(trail)) - 1, "unknown entry type 'hold.renamed'")


def test_a_trail_over_several_segments_verifies_and_names_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trail_module, "SEGMENT_LIMIT_BYTES", 4096)
    small = build_trail(tmp_path)
    files = sorted((small.directory / "trail").glob("*.jsonl"))
    assert len(files) >= 3
    result = verify(small)
    assert result.valid, str(result.problem)
    assert result.segments == len(files)
    second = files[1].read_bytes().splitlines()
    first_seq = json.loads(second[0])["seq"]
    files[1].write_bytes(b"".join(line + b"\n" for line in [second[1], second[0], *second[2:]]))
    problem = verify(small).problem
    assert problem is not None
    assert (problem.segment, problem.line, problem.seq) == (files[1], 1, first_seq)


# --- the tamper corpus --------------------------------------------------------------------


def test_one_changed_digit_in_a_count_is_pinned_on_that_entry(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.result" and e["done"] == 5, nth=1)
    original = lines(trail)
    tampered = original[seq].replace(b'"done":5', b'"done":4')
    assert tampered != original[seq]
    write_lines(trail, [*original[:seq], tampered, *original[seq + 1 :]])
    assert_invalid(verify(trail), seq, "altered")


def test_a_changed_selected_count_disagrees_with_the_leaves_file(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.intent" and e["selected"] == 10)
    original = lines(trail)
    write_lines(
        trail,
        [*original[:seq], original[seq].replace(b'"selected":10', b'"selected":19'),
         *original[seq + 1 :]],
    )  # fmt: skip
    assert_invalid(verify(trail), seq, "selected is 19", "holds 10")


def test_one_changed_byte_in_a_leaves_file_is_pinned_on_its_intent(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.intent", nth=3)
    leaves = trail.directory / "leaves" / f"{seq:08d}.leaves"
    content = bytearray(leaves.read_bytes())
    content[70] = ord("0") if content[70] != ord("0") else ord("1")  # in the second leaf
    leaves.write_bytes(bytes(content))
    assert_invalid(verify(trail), seq, "leaves file")


def test_a_missing_leaves_file_is_pinned_on_its_intent(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.intent", nth=2)
    (trail.directory / "leaves" / f"{seq:08d}.leaves").unlink()
    assert_invalid(verify(trail), seq, "missing")


def test_a_deleted_entry_is_named_by_its_place(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.result", nth=2)
    original = lines(trail)
    write_lines(trail, [*original[:seq], *original[seq + 1 :]])
    assert_invalid(verify(trail), seq, f"seq is {seq + 1} where {seq} was expected")


def test_two_reordered_entries_are_named(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "batch.intent", nth=4)
    original = lines(trail)
    write_lines(trail, [*original[:seq], original[seq + 1], original[seq], *original[seq + 2 :]])
    assert_invalid(verify(trail), seq, "out of order")


def test_a_forged_entry_with_a_recomputed_chain_fails_the_checkpoint_signature(
    trail: Trail,
) -> None:
    entries = contents(trail)
    forged = {
        "type": "config.changed",
        "v": 1,
        "run_id": entries[-2]["run_id"],
        "digest": "0" * 64,
        "previous_digest": None,
        "time": entries[-2]["time"],
    }
    new_lines = rechain([*entries[:-1], forged, entries[-1]], signer=None)
    write_lines(trail, new_lines)
    # The forged entry itself is well formed and chained; the checkpoint after it is not signed
    # over what the trail now holds.
    assert_invalid(verify(trail), len(entries), "signature does not verify")


def test_a_forged_entry_without_recomputing_the_checkpoint_fails_its_size(trail: Trail) -> None:
    entries = contents(trail)
    last = entries[-1]
    chained = rechain(
        [*entries[:-1], {**entries[-2], "type": "config.changed", "digest": "x"}], signer=None
    )
    stale_checkpoint = canonical({**last, "seq": len(entries), "prev": entry_hash(chained[-1])})
    write_lines(trail, [*chained, stale_checkpoint])
    assert_invalid(verify(trail), len(entries), f"size is {len(entries) - 1}")


def test_a_non_canonical_reserialisation_of_the_same_entry_is_caught(trail: Trail) -> None:
    seq = seq_of(trail, lambda e: e["type"] == "run.started", nth=1)
    original = lines(trail)
    spaced = json.dumps(json.loads(original[seq]), sort_keys=True, ensure_ascii=False).encode()
    assert json.loads(spaced) == json.loads(original[seq])
    write_lines(trail, [*original[:seq], spaced, *original[seq + 1 :]])
    assert_invalid(verify(trail), seq, "not canonical")


def test_a_checkpoint_re_signed_with_an_unknown_key_is_caught(trail: Trail) -> None:
    intruder = Signer(Ed25519PrivateKey.generate())
    entries = contents(trail)
    first = checkpoints(trail)[0]
    new_lines = lines(trail)
    entry = {**entries[first], "key_id": intruder.key_id}
    entry["signature"] = intruder.sign(checkpoint_payload(entry)).hex()
    new_lines[first] = canonical(entry)
    write_lines(trail, new_lines)
    assert_invalid(verify(trail), first, intruder.key_id, "not in the public key file")


def test_a_checkpoint_signed_by_a_retired_key_after_its_window_is_caught(trail: Trail) -> None:
    rotated_at = datetime.now(UTC)
    later = rotated_at + timedelta(minutes=1)
    successor = Signer(Ed25519PrivateKey.generate())
    add_public_key(trail.keys_file, successor, rotated_at)  # closes the old key's window
    with TrailWriter(trail.directory, trail.hmac_key, successor, lambda: later) as writer:
        writer.checkpoint()
    assert verify(trail).valid, "old checkpoints (inside the old window) and the new key verify"
    with TrailWriter(trail.directory, trail.hmac_key, trail.signer, lambda: later) as writer:
        seq = writer.checkpoint()
    assert_invalid(verify(trail), seq, trail.signer.key_id, "outside its window")


def test_a_checkpoint_backdated_into_a_retired_key_window_is_caught(trail: Trail) -> None:
    rotated_at = datetime.now(UTC)
    successor = Signer(Ed25519PrivateKey.generate())
    add_public_key(trail.keys_file, successor, rotated_at)
    with TrailWriter(trail.directory, trail.hmac_key, successor, lambda: rotated_at) as writer:
        writer.checkpoint()
    backdated = rotated_at - timedelta(seconds=1)  # inside the old key's window
    with TrailWriter(trail.directory, trail.hmac_key, trail.signer, lambda: backdated) as writer:
        seq = writer.checkpoint()
    assert_invalid(verify(trail), seq, "before the previous checkpoint", "backdated")


def test_a_truncated_tail_verifies_alone_but_not_against_an_earlier_anchor(
    trail: Trail, tmp_path: Path
) -> None:
    exported = export_anchor(trail, tmp_path / "anchors")
    assert exported.exit_code == 0, exported.output
    original = lines(trail)
    anchor = tmp_path / "anchors" / f"checkpoint-{checkpoints(trail)[-1]:012d}.jsonl"
    assert anchor.read_bytes() == original[-1] + b"\n", "the anchor is the checkpoint's line"
    write_lines(trail, original[:-3])
    assert verify(trail).valid, "truncation alone is undetectable"
    result = verify(trail, [(str(anchor), anchor.read_bytes())])
    assert result.problem is not None
    assert result.problem.seq == len(original) - 3
    assert "truncated" in result.problem.reason
    cli = invoke(
        "audit",
        "verify",
        "--dir",
        str(trail.directory),
        "--keys",
        str(trail.keys_file),
        "--anchor",
        str(anchor),
    )
    assert cli.exit_code == ExitCode.AUDIT_FAILURE, cli.output
    assert "truncated" in cli.stderr
    assert f"00000001.jsonl line {len(original) - 2} (seq {len(original) - 3})" in cli.stderr


def test_history_rewritten_and_re_signed_after_anchoring_is_caught_by_the_anchor(
    trail: Trail, tmp_path: Path
) -> None:
    assert export_anchor(trail, tmp_path).exit_code == 0  # a directory: one file per checkpoint
    entries = contents(trail)
    seq = seq_of(trail, lambda e: e["type"] == "batch.result" and e["done"] == 5)
    entries[seq] = {**entries[seq], "done": 4}
    write_lines(trail, rechain(entries, trail.signer))  # the host's own key re-signs it all
    assert verify(trail).valid, "with the signing key, a rewrite verifies on its own"
    anchors = [(str(path), path.read_bytes()) for path in tmp_path.glob("checkpoint-*.jsonl")]
    assert_invalid(verify(trail, anchors), checkpoints(trail)[-1], "anchored", "rewritten")


def test_an_anchor_that_is_not_a_valid_signed_checkpoint_is_refused(trail: Trail) -> None:
    last = lines(trail)[-1]
    forged = last.replace(b'"size":', b'"size":1')
    with pytest.raises(AuditFailure, match="anchor forged"):
        verify(trail, [("forged", forged)])
    with pytest.raises(AuditFailure, match="not one checkpoint"):
        verify(trail, [("run", lines(trail)[1])])


def test_a_torn_last_line_is_reported(trail: Trail) -> None:
    content = segment(trail).read_bytes()
    segment(trail).write_bytes(content + b'{"v":1,"seq":')
    result = verify(trail)
    assert_invalid(result, len(lines(trail)) - 1, "torn")


@pytest.mark.parametrize(
    "forgery",
    ["claims more than selected", "settles an intent twice", "settles another rule's intent"],
)
def test_semantic_forgeries_are_caught_even_when_re_signed(trail: Trail, forgery: str) -> None:
    entries = contents(trail)
    seq = seq_of(trail, lambda e: e["type"] == "batch.result" and e["done"] == 5)
    result_entry = entries[seq]
    if forgery == "claims more than selected":
        entries[seq] = {**result_entry, "done": 6}
        reason = "more than the 5"
    elif forgery == "settles an intent twice":
        entries.insert(seq + 1, result_entry)
        seq += 1
        reason = "already settled"
    else:
        entries[seq] = {**result_entry, "rule": "old-orders"}
        reason = "no earlier batch.intent of rule 'old-orders'"
    write_lines(trail, rechain(entries, trail.signer))
    assert_invalid(verify(trail), seq, reason)


def test_a_leaves_file_that_names_one_record_twice_is_caught_even_when_re_signed(
    trail: Trail,
) -> None:
    """A forger with the signing key makes a batch of 10 count a record twice: its leaves stay
    sorted, the count and root agree, every checkpoint is re-signed. A batch names each record
    once, so a repeated leaf is itself the forgery."""
    entries = contents(trail)
    seq = seq_of(trail, lambda e: e["type"] == "batch.intent" and e["selected"] == 10)
    path = trail.directory / "leaves" / f"{seq:08d}.leaves"
    leaves = path.read_bytes().splitlines()
    forged = [leaves[0], leaves[0], *leaves[2:]]
    assert len(forged) == 10
    assert forged == sorted(forged)
    path.write_bytes(b"".join(leaf + b"\n" for leaf in forged))
    root = chunked_root([bytes.fromhex(leaf.decode()) for leaf in forged], LEAVES_PER_CHUNK)
    entries[seq] = {**entries[seq], "leaves_root": root.hex()}
    write_lines(trail, rechain(entries, trail.signer))

    assert_invalid(verify(trail), seq, f"{seq:08d}.leaves line 2 repeats the leaf before it")
    result = invoke(
        "audit", "verify", "--dir", str(trail.directory), "--keys", str(trail.keys_file)
    )
    assert result.exit_code == ExitCode.AUDIT_FAILURE, result.output
    assert "repeats the leaf before it" in result.output


def test_the_recorder_refuses_a_batch_that_names_one_record_twice(trail: Trail) -> None:
    the_plan = plan(trail.config, SECOND_RUN, "stale-customers")
    [rule_plan] = the_plan.rules
    before = lines(trail)
    leaves_before = sorted((trail.directory / "leaves").iterdir())
    code = customer_code(1)

    with TrailWriter(trail.directory, trail.hmac_key, trail.signer, lambda: SECOND_RUN) as writer:
        recorder = TrailRecorder(writer, "run-twice", the_plan)
        with pytest.raises(AuditFailure, match="repeat 1 record"):
            recorder.intent(rule_plan, ((code,), (customer_code(2),), (code,)))

    # Nothing recorded: no intent, no leaves, no pending keys (and so nothing deleted).
    assert lines(trail) == before
    assert sorted((trail.directory / "leaves").iterdir()) == leaves_before
    assert list((trail.directory / "pending").iterdir()) == []
    assert verify(trail).valid


def test_the_pending_keys_of_integer_ids_read_back_as_those_ids(trail: Trail) -> None:
    """Integer ids are spelled once, for their leaves and their pending keys' JSON array: what a
    reconcile reads back is the ids themselves, negative and 64-bit ones too."""
    from retention.audit.leaves import record_leaf
    from retention.audit.reconcile import pending_keys

    the_plan = plan(trail.config, SECOND_RUN, "stale-customers")
    [rule_plan] = the_plan.rules
    keys = ((7,), (-3,), (2**63 - 1,), (0,))
    with TrailWriter(trail.directory, trail.hmac_key, trail.signer, lambda: SECOND_RUN) as writer:
        seq = TrailRecorder(writer, "run-ids", the_plan).intent(rule_plan, keys)
        pending = dict(writer.pending())[seq]

    assert pending is not None
    assert pending_keys(pending) == list(keys)
    store, table = rule_plan.rule.store, rule_plan.rule.table
    assert read_leaves(trail.directory, seq) == sorted(
        record_leaf(trail.hmac_key, store, table, key) for key in keys
    )


# --- S3 anchors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str
    client: Any


@pytest.fixture
def s3(s3_server: str) -> S3:
    import boto3  # type: ignore[import-untyped]

    return S3(s3_server, boto3.client("s3", endpoint_url=s3_server))


def test_s3_anchor_roundtrip_with_object_lock(trail: Trail, s3: S3) -> None:
    exported = invoke(
        "audit",
        "anchor",
        "--to",
        "s3://locked-anchors/host-1",
        "--endpoint-url",
        s3.endpoint,
        "--retain-days",
        "7",
        "--dir",
        str(trail.directory),
        "--keys",
        str(trail.keys_file),
    )
    assert exported.exit_code == 0, exported.output
    last = checkpoints(trail)[-1]
    key = f"host-1/checkpoint-{last:012d}.jsonl"
    assert f"s3://locked-anchors/{key}" in exported.stdout
    head = s3.client.head_object(Bucket="locked-anchors", Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    retained = head["ObjectLockRetainUntilDate"] - datetime.now(UTC)
    assert timedelta(days=6) < retained <= timedelta(days=7)
    body = s3.client.get_object(Bucket="locked-anchors", Key=key)["Body"].read()
    assert body == lines(trail)[-1] + b"\n"

    def verify_against_s3() -> Result:
        return invoke(
            "audit",
            "verify",
            "--dir",
            str(trail.directory),
            "--keys",
            str(trail.keys_file),
            "--anchor",
            "s3://locked-anchors/host-1",
            "--endpoint-url",
            s3.endpoint,
        )

    valid = verify_against_s3()
    assert valid.exit_code == 0, valid.output
    assert f"anchor: checkpoint seq {last} from s3://locked-anchors/{key} matches" in valid.stdout
    write_lines(trail, lines(trail)[:-2])
    truncated = verify_against_s3()
    assert truncated.exit_code == ExitCode.AUDIT_FAILURE, truncated.output
    assert "the tail was truncated" in truncated.stderr


def test_s3_anchor_to_a_bucket_without_object_lock(trail: Trail, s3: S3) -> None:
    arguments = ["--dir", str(trail.directory), "--keys", str(trail.keys_file)]
    destination = ["--to", "s3://plain-anchors/x", "--endpoint-url", s3.endpoint]
    refused = invoke("audit", "anchor", *destination, "--retain-days", "7", *arguments)
    assert refused.exit_code == ExitCode.AUDIT_FAILURE, refused.output
    assert "has no Object Lock" in refused.stderr
    assert "Contents" not in s3.client.list_objects_v2(Bucket="plain-anchors", Prefix="x/")
    unlocked = invoke("audit", "anchor", *destination, *arguments)
    assert unlocked.exit_code == 0, unlocked.output
    assert "warning: bucket 'plain-anchors' has no Object Lock" in unlocked.stderr
    assert s3.client.list_objects_v2(Bucket="plain-anchors", Prefix="x/")["KeyCount"] == 1


DEEP = b"[" * 100_000  # past the JSON parser's recursion depth


def test_a_line_nested_too_deep_is_invalid_not_a_crash(trail: Trail, tmp_path: Path) -> None:
    """An auditor's commands on a trail with a forged line nested past the parser's depth:
    the RecursionError escaped every `except ValueError` (a traceback, exit 1); now the line
    is invalid like any that is not JSON (exit 70), and `show` still lists the runs."""
    write_lines(trail, [*lines(trail), DEEP])
    keys = str(trail.keys_file)

    assert_invalid(verify(trail), len(lines(trail)) - 1, "not a JSON object")
    for arguments, code in (
        (["verify", "--keys", keys], ExitCode.AUDIT_FAILURE),
        (["report", "--keys", keys, "-o", str(tmp_path / "report.html")], ExitCode.AUDIT_FAILURE),
        (["show"], 0),
        (["export"], 0),
    ):
        result = CliRunner().invoke(main, ["audit", *arguments, "--dir", str(trail.directory)])
        assert result.exit_code == code, (arguments, result.output)
        assert not isinstance(result.exception, RecursionError)


def test_a_public_key_file_or_bundle_nested_too_deep_is_refused(trail: Trail) -> None:
    deep = trail.root / "deep.json"
    deep.write_bytes(b'{"keys": ' + DEEP)
    result = CliRunner().invoke(
        main, ["audit", "verify", "--dir", str(trail.directory), "--keys", str(deep)]
    )
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    assert "nested too deep" in result.stderr

    checked = CliRunner().invoke(main, ["audit", "check-proof", str(deep), "--keys", str(deep)])
    assert checked.exit_code != 1, checked.output
    assert not isinstance(checked.exception, RecursionError)


def test_a_line_read_while_the_writer_appends_it_is_not_reported_as_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`audit verify` beside a running daemon: a reader can see an append before its last bytes
    (Linux copies a write into the page cache piece by piece), so the trail's last line was
    read without its end and reported as a torn write, exit 70, on a sound trail. Here the
    writer ends the line just after verify's first walk read it half-written."""
    from retention.audit import verify as verify_module
    from tests.support import audit_table

    audit = tmp_path / "audit"
    audit_table(audit)
    keys_dir = tmp_path / "audit-keys"
    hmac_key = (keys_dir / "hmac.key").read_bytes().strip()
    with TrailWriter(
        audit, hmac_key, load_signer(keys_dir / "signing.pem"), lambda: datetime.now(UTC)
    ) as writer:
        for _ in range(3):
            writer.checkpoint()
    (segment,) = sorted((audit / "trail").glob("*.jsonl"))
    content = segment.read_bytes()
    last = content[:-1].rfind(b"\n") + 1
    segment.write_bytes(content[: last + (len(content) - last) // 2])
    rest = content[len(segment.read_bytes()) :]
    walks = []
    read = verify_module.read_entries

    def read_while_written(directory: Path) -> Any:
        walks.append(directory)
        try:
            yield from read(directory)
        finally:
            if len(walks) == 1:
                with segment.open("ab") as handle:
                    handle.write(rest)  # the writer's append ends after the first walk

    monkeypatch.setattr(verify_module, "read_entries", read_while_written)
    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.problem is None, result.problem
    assert result.entries == 3
    # Torn for good (a crash), the line is still reported, whatever the walks.
    monkeypatch.setattr(verify_module, "read_entries", read)
    segment.write_bytes(content[: last + 10])
    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.problem is not None
    assert "torn write" in result.problem.reason
