"""Child rows deleted with their parents are in the trail one by one (issue 13): each child
row's leaf is in its batch's intent, beside its parents', so that `audit prove` proves it and
a proof bundle of it round-trips with the public key file alone; `audit show`/`export` and the
report count child rows from the signed entries; on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Column, Integer, MetaData, Table, text

from retention.audit.bundle import check_bundle
from retention.audit.entries import canonical, entry_hash, read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.verify import verify_trail
from retention.cli import main
from retention.errors import ExitCode
from tests.support import config_text, create_tables
from tests.test_audit_bundles import single_byte_edits_that_pass
from tests.test_child_counts import RULES, _database

# What the `accounts` rule deletes with accounts 1, 5 and 6 (test_child_counts.py).
DELETED = {
    "orders": (10, 11, 50, 60, 61),
    "order_lines": (100, 101, 110, 500, 600),
    "notes": (1, 3),
    "mails": (1, 2, 4),
}
KEPT = {"orders": 20, "order_lines": 200, "notes": 4, "mails": 3}


def cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "--config", str(config), *arguments])


def purged(database_url: str, tmp_path: Path) -> Path:
    """The test_child_counts database, purged once with the audit trail on."""
    _database(database_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, RULES, audit_directory=tmp_path / "audit"))
    held = cli(config, "hold", "add", "--rule", "accounts", "--key", "2", "--reason", "case-7")
    assert held.exit_code == 0, held.output
    ran = cli(config, "run", "--yes")
    assert ran.exit_code == 0, ran.output
    return config


def keys_file(tmp_path: Path) -> Path:
    found = sorted(tmp_path.glob("**/*public*keys*.json"))
    assert found, "no public key file"
    return found[0]


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "locked-select"])
def test_every_child_row_deleted_is_proven_and_its_bundle_round_trips(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """Both ways of deleting child rows: DELETE … RETURNING (the three databases have it) and
    the locking SELECT then DELETE of a dialect without it."""
    from retention.stores import sql_purge

    if not returning:
        monkeypatch.setattr(sql_purge, "_children_by_returning", lambda store: False)
    config = purged(database_url, tmp_path)
    public_keys = load_verification_keys(keys_file(tmp_path))
    for table, ids in DELETED.items():
        for key in ids:
            bundle = tmp_path / f"{table}-{key}.json"
            proven = cli(
                config, "audit", "prove", "--store", "db", "--table", table, "--key", str(key),
                "--bundle", str(bundle),
            )  # fmt: skip
            assert proven.exit_code == 0, (table, key, proven.output)
            assert f"db/{table}/{key}: purged" in proven.stdout
            checked = check_bundle(bundle.read_bytes(), public_keys)
            assert checked.entry["rule"] == "accounts"
            assert table in checked.entry["children"]
        kept = cli(
            config, "audit", "prove", "--store", "db", "--table", table, "--key", str(KEPT[table])
        )
        assert kept.exit_code == ExitCode.PARTIAL_FAILURE, (table, kept.output)
    assert verify_trail(tmp_path / "audit", public_keys, []).valid


def test_any_single_byte_changed_in_a_child_row_bundle_fails(
    database_url: str, tmp_path: Path
) -> None:
    config = purged(database_url, tmp_path)
    bundle = tmp_path / "proof.json"
    proven = cli(
        config, "audit", "prove", "--store", "db", "--table", "order_lines", "--key", "500",
        "--bundle", str(bundle),
    )  # fmt: skip
    assert proven.exit_code == 0, proven.output
    assert single_byte_edits_that_pass(bundle.read_bytes(), keys_file(tmp_path)) == []


def test_show_export_and_report_count_the_child_rows_the_trail_names(
    database_url: str, tmp_path: Path
) -> None:
    config = purged(database_url, tmp_path)
    entries = [stored.content for stored in read_entries(tmp_path / "audit")]
    intents = [e for e in entries if e["type"] == "batch.intent" and e["rule"] == "accounts"]
    named = sum(sum(intent["children"].values()) for intent in intents)
    assert named == sum(len(ids) for ids in DELETED.values()) == 15
    exported = cli(config, "audit", "export")
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sum(row["children_deleted"] for row in rows if row["entry"] == "run") == 15
    shown = cli(config, "audit", "show")
    assert "(and 15 child rows with them)" in shown.stdout
    output = tmp_path / "report.json"
    reported = cli(
        config, "audit", "report", "--keys", str(keys_file(tmp_path)), "--format", "json",
        "-o", str(output),
    )  # fmt: skip
    assert reported.exit_code == 0, reported.output
    document = json.loads(output.read_text())
    assert document["totals"]["overall"]["child_rows"] == 15
    by_rule = {row["rule"]: row for row in document["totals"]["by_rule"]}
    assert by_rule["accounts"]["child_rows"] == 15


def test_a_result_that_claims_other_child_rows_than_its_intent_fails_verify(
    sqlite_url: str, tmp_path: Path
) -> None:
    purged(sqlite_url, tmp_path)
    segment = tmp_path / "audit" / "trail" / "00000001.jsonl"
    lines = segment.read_bytes().splitlines()
    seq = next(
        i for i, line in enumerate(lines) if b'"type":"batch.result"' in line
        and b'"rule":"accounts"' in line and b'"children_deleted":0' not in line
    )  # fmt: skip
    content = json.loads(lines[seq])
    assert content["children_deleted"] > 0
    content["children_deleted"] += 1
    lines[seq] = canonical(content)
    # Re-chain what follows, as a forger would; only the checkpoint's signature stays wrong,
    # so verify must name this entry first.
    for index in range(seq + 1, len(lines)):
        following = json.loads(lines[index])
        following["prev"] = entry_hash(lines[index - 1])
        lines[index] = canonical(following)
    segment.write_bytes(b"".join(line + b"\n" for line in lines))
    result = verify_trail(tmp_path / "audit", load_verification_keys(keys_file(tmp_path)), [])
    assert not result.valid
    assert result.problem is not None
    assert result.problem.seq == seq
    assert "children_deleted" in str(result.problem)


def test_a_child_table_without_a_primary_key_is_refused_before_anything_is_deleted(
    sqlite_url: str, tmp_path: Path
) -> None:
    metadata = MetaData()
    Table("parents", metadata, Column("id", Integer, primary_key=True), Column("at", Integer))
    Table("loose", metadata, Column("parent_id", Integer))
    engine = create_tables(sqlite_url, metadata)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO parents VALUES (1, 0)"))
        connection.execute(text("INSERT INTO loose VALUES (1)"))
    rules = (
        '[[rules]]\nname = "parents"\nstore = "db"\ntable = "parents"\nkey = "id"\n'
        'clock = "at"\nperiod = "1d"\naction = "delete"\n\n'
        '[[rules.children]]\ntable = "loose"\nforeign_key = "parent_id"\n'
    )
    config = tmp_path / "retention.toml"
    config.write_text(config_text(sqlite_url, rules, audit_directory=tmp_path / "audit"))
    result = cli(config, "run", "--yes")
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    assert "rules[0].children[0].table" in result.output
    assert "no primary key" in result.output
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM loose")).scalar_one() == 1


def test_child_rows_of_a_batch_reconciled_after_a_crash_are_proven(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.audit.recorder import TrailRecorder
    from tests.test_audit_reports import Crash

    _database(sqlite_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(sqlite_url, RULES, audit_directory=tmp_path / "audit"))
    held = cli(config, "hold", "add", "--rule", "accounts", "--key", "2", "--reason", "case-7")
    assert held.exit_code == 0, held.output
    original = TrailRecorder.result

    def crash_on_a_result_with_children(self: TrailRecorder, *arguments: Any) -> None:
        if arguments[1].rule.name == "accounts":
            raise Crash
        original(self, *arguments)

    monkeypatch.setattr(TrailRecorder, "result", crash_on_a_result_with_children)
    with pytest.raises(Crash):
        cli(config, "run", "--yes")
    monkeypatch.undo()
    assert cli(config, "run", "--yes").exit_code == 0
    entries = [stored.content for stored in read_entries(tmp_path / "audit")]
    reconciled = [entry for entry in entries if entry["type"] == "batch.reconciled"]
    assert len(reconciled) == 1
    assert reconciled[0]["children_deleted"] == sum(reconciled[0]["children"].values()) > 0
    bundle = tmp_path / "proof.json"
    proven = cli(
        config, "audit", "prove", "--store", "db", "--table", "orders", "--key", "10",
        "--bundle", str(bundle),
    )  # fmt: skip
    assert proven.exit_code == 0, proven.output
    assert "batch.reconciled" in proven.stdout
    checked = check_bundle(bundle.read_bytes(), load_verification_keys(keys_file(tmp_path)))
    assert checked.settlement is None
    exported = cli(config, "audit", "export")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sum(row["children_deleted"] for row in rows if row["entry"] == "run") == 15


def _slip_a_mail_in_after_the_first_intent(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, int, dict[int, dict[str, Any]]]:
    """Purge the accounts with a mail to a@example.com inserted, by another connection, right
    after the first intent of the `accounts` rule was written (its batch not yet committed);
    return the config, the intent's seq and the trail's entries by seq."""
    from sqlalchemy import create_engine

    from retention.audit.recorder import TrailRecorder

    _database(postgres_url)
    config = tmp_path / "retention.toml"
    config.write_text(config_text(postgres_url, RULES, audit_directory=tmp_path / "audit"))
    held = cli(config, "hold", "add", "--rule", "accounts", "--key", "2", "--reason", "case-7")
    assert held.exit_code == 0, held.output
    original = TrailRecorder.intent
    slipped: list[int] = []
    other = create_engine(postgres_url)

    def intent_then_a_new_mail(self: TrailRecorder, *arguments: Any) -> int:
        seq = original(self, *arguments)
        if arguments[0].rule.name == "accounts" and not slipped:
            with other.begin() as connection:
                connection.execute(text("INSERT INTO mails VALUES (99, 'a@example.com')"))
            slipped.append(seq)
        return seq

    monkeypatch.setattr(TrailRecorder, "intent", intent_then_a_new_mail)
    ran = cli(config, "run", "--yes")
    other.dispose()
    assert ran.exit_code == 0, ran.output
    entries = {stored.content["seq"]: stored.content for stored in read_entries(tmp_path / "audit")}
    return config, slipped[0], entries


def test_a_child_row_slipped_in_after_its_delete_returned_waits_for_a_batch_that_records_it(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mails.address` is no foreign key: the database lets a row in beside those of a batch.
    Each child table's DELETE … RETURNING gives the intent exactly the rows it deleted, so a
    row that comes in after it is not deleted by that batch: the batch commits without it, and
    the batch of the other account with that address deletes it and records it."""
    config, slipped, entries = _slip_a_mail_in_after_the_first_intent(
        postgres_url, tmp_path, monkeypatch
    )
    settled = {e["intent"]: e for e in entries.values() if e["type"] == "batch.result"}
    assert settled[slipped]["status"] == "committed"
    assert entries[slipped]["children"]["mails"] == 3
    assert settled[slipped]["children_deleted"] == sum(entries[slipped]["children"].values())
    proven = cli(config, "audit", "prove", "--store", "db", "--table", "mails", "--key", "99")
    assert proven.exit_code == 0, proven.output
    assert f"seq {slipped} " not in proven.stdout
    assert verify_trail(tmp_path / "audit", load_verification_keys(keys_file(tmp_path)), []).valid


def test_a_child_row_slipped_in_after_the_lock_rolls_its_batch_back_without_returning(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a dialect has no DELETE … RETURNING, the child rows are locked and read first:
    the batch that would delete a row slipped in since, unrecorded, rolls back, and the next
    attempt records it."""
    from retention.stores import sql_purge

    monkeypatch.setattr(sql_purge, "_children_by_returning", lambda store: False)
    config, slipped, entries = _slip_a_mail_in_after_the_first_intent(
        postgres_url, tmp_path, monkeypatch
    )
    settled = {e["intent"]: e for e in entries.values() if e["type"] == "batch.result"}
    assert settled[slipped]["status"] == "rolled_back"
    assert settled[slipped]["children_deleted"] == 0
    proven = cli(config, "audit", "prove", "--store", "db", "--table", "mails", "--key", "99")
    assert proven.exit_code == 0, proven.output
    assert f"seq {slipped} " not in proven.stdout
    assert verify_trail(tmp_path / "audit", load_verification_keys(keys_file(tmp_path)), []).valid
