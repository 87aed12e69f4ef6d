"""Fail closed, and crash-consistent: the trail accounts for every deleted record, exactly once,
and claims nothing that did not happen — whether the purge is killed (SIGKILL) at any point of a
batch, the trail cannot be written, or another process holds it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from retention.audit.entries import canonical, read_entries
from retention.audit.leaves import record_leaf
from retention.audit.trail import TrailWriter
from retention.errors import ExitCode
from retention.runtime.faults import CRASH_POINTS
from tests.support import (
    claimed_leaves,
    create_logs,
    logs_rule,
    make_config,
    plan_and_run,
    remaining_ids,
)

AS_OF = "2026-11-23T12:00:00+00:00"
DUE = set(range(1, 26))
KEPT = set(range(26, 31))


def _database(url: str) -> None:
    create_logs(
        url,
        {key: datetime(2020, 1, key) for key in DUE} | {key: datetime(2026, 11, 1) for key in KEPT},
    )


RULE = logs_rule(extra="batch_size = 10")


def _setup(tmp_path: Path, url: str | None = None) -> tuple[Path, str, Path]:
    url = url or f"sqlite:///{tmp_path}/data.sqlite"
    _database(url)
    audit = tmp_path / "audit"
    make_config(url, RULE, audit_directory=audit)  # creates the keys
    text = (
        '[settings]\ntimezone = "UTC"\nmax_fraction = 1.0\n'
        + f'[stores.db]\nkind = "sql"\nurl = "{url}"\n'
        + f'[audit]\ndirectory = "{audit}"\n'
        + f'hmac_key_file = "{tmp_path}/audit-keys/hmac.key"\n'
        + f'signing_key_file = "{tmp_path}/audit-keys/signing.pem"\n'
        + RULE
    )
    config = tmp_path / "retention.toml"
    config.write_text(text)
    return config, url, audit


def _run(config: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.pop("RETENTION_CRASH_AT", None)
    if crash_at:
        environment["RETENTION_CRASH_AT"] = crash_at
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "retention",
            "--config",
            str(config),
            "run",
            "--yes",
            "--as-of",
            AS_OF,
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=config.parent,
        timeout=120,
        check=False,
    )


def _hmac_key(tmp_path: Path) -> bytes:
    return (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_killed_purge_loses_nothing_and_claims_nothing_false(
    tmp_path: Path, crash_at: str, database_url: str
) -> None:
    """On every database: a server sees its client die mid-transaction and rolls back."""
    config, url, audit = _setup(tmp_path, database_url)

    crashed = _run(config, crash_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    gone_after_crash = DUE | KEPT - remaining_ids_from(url)
    claimed_after_crash = claimed_leaves(audit)
    # Before reconciling, the trail may be missing a claim (the crash hit after the commit),
    # but it never claims a record that is still there.
    assert set(claimed_after_crash) <= _leaves(tmp_path, gone_after_crash)

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids_from(url) == KEPT
    claimed = claimed_leaves(audit)
    assert sorted(claimed) == sorted(_leaves(tmp_path, DUE)), "each deleted record, exactly once"
    assert not list((audit / "pending").iterdir())
    types = [stored.content["type"] for stored in read_entries(audit)]
    if crash_at in ("after_intent", "mid_batch", "after_commit", "before_result"):
        assert "batch.reconciled" in types
    assert types[-1] == "checkpoint"


def remaining_ids_from(url: str) -> set[int]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return remaining_ids(engine, "logs")
    finally:
        engine.dispose()


def _leaves(tmp_path: Path, keys: set[int]) -> set[bytes]:
    key = _hmac_key(tmp_path)
    return {record_leaf(key, "db", "logs", (record,)) for record in keys}


def test_an_unwritable_trail_deletes_nothing(tmp_path: Path) -> None:
    config, url, audit = _setup(tmp_path)
    audit.rename(tmp_path / "moved")
    audit.write_text("not a directory")
    result = _run(config)
    assert result.returncode == ExitCode.AUDIT_FAILURE, result.stdout + result.stderr
    assert "audit" in result.stderr
    assert remaining_ids_from(url) == DUE | KEPT


def test_a_trail_failing_mid_run_stops_the_run_after_the_recorded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The second batch's leaves cannot be written: nothing of it is deleted (on PostgreSQL its
    DELETE ran beside the intent, uncommitted, and rolled back), the first stays claimed."""
    url = database_url
    _database(url)
    audit = tmp_path / "audit"
    config = make_config(
        url, RULE + RULE.replace('name = "logs"', 'name = "logs-again"'), audit_directory=audit
    )
    real_write = os.write
    leaves_written: list[str] = []

    def disk_full_on_second_batch(descriptor: int, data: Any) -> int:
        path = os.readlink(f"/proc/self/fd/{descriptor}")
        if "/leaves/" in path:
            if path not in leaves_written:
                leaves_written.append(path)
            if len(leaves_written) == 2:
                raise OSError(28, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", disk_full_on_second_batch)
    _, report = plan_and_run(config, datetime(2026, 11, 23, 12, tzinfo=UTC))
    statuses = {outcome.rule: outcome.status for outcome in report.outcomes}
    assert statuses == {"logs": "audit_failed", "logs-again": "stopped"}
    assert report.exit_code == ExitCode.AUDIT_FAILURE
    assert remaining_ids_from(url) == DUE - set(range(1, 11)) | KEPT
    monkeypatch.undo()
    assert sorted(claimed_leaves(audit)) == sorted(_leaves(tmp_path, set(range(1, 11))))


def test_a_second_writer_gets_lock_held(tmp_path: Path) -> None:
    config, url, audit = _setup(tmp_path)
    with TrailWriter(audit, b"k" * 32, None, lambda: datetime.now(UTC)):
        result = _run(config)
    assert result.returncode == ExitCode.LOCK_HELD, result.stdout + result.stderr
    assert remaining_ids_from(url) == DUE | KEPT


@pytest.mark.parametrize("version", [1, 2, 3])
def test_the_fast_record_hasher_gives_exactly_the_leaves_of_its_format(version: int) -> None:
    from retention.audit.leaves import RecordHasher

    keys: list[tuple[object, ...]] = [(1,), (42,), (-5,), (10**20,), ("a/b",), ("é", 7), (True,)]
    # A partitioned table's (id, time) key: naive datetimes and dates take a fast path.
    keys += [
        (7, datetime(2024, 2, 10)),
        (-8, datetime(2024, 2, 10, 23, 59, 58, 123)),
        (9, date(2024, 2, 29)),
        (10, datetime(2024, 2, 10, tzinfo=UTC)),
        (True, datetime(2024, 2, 10)),
    ]
    for hmac_key in (b"k" * 16, b"x" * 64, b"long" * 40):
        expected = sorted(record_leaf(hmac_key, "app", "t", key, version) for key in keys)
        assert RecordHasher(hmac_key, version).leaves("app", "t", keys) == expected


def _verified(audit: Path) -> None:
    from retention.audit.entry_checks import load_verification_keys
    from retention.audit.verify import verify_trail

    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.valid, result.problem


def test_a_full_disk_while_writing_pending_keys_does_not_stop_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up while the raw keys of a batch are written: that batch and the run
    stop (70), nothing is deleted, and the next run purges everything, each record once."""
    from retention.config import load_config

    config, url, audit = _setup(tmp_path)
    real_write = os.write

    def full_disk_in_pending(descriptor: int, data: Any) -> int:
        if "/pending/" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(28, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", full_disk_in_pending)
    _, report = plan_and_run(load_config(config), datetime(2026, 11, 23, 12, tzinfo=UTC))
    monkeypatch.undo()
    assert report.exit_code == ExitCode.AUDIT_FAILURE
    assert remaining_ids_from(url) == DUE | KEPT

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids_from(url) == KEPT
    assert sorted(claimed_leaves(audit)) == sorted(_leaves(tmp_path, DUE))
    assert not list((audit / "pending").iterdir())
    _verified(audit)


@pytest.mark.parametrize("torn", ["empty", "truncated"])
def test_a_torn_pending_file_whose_intent_never_reached_the_trail_is_dropped(
    tmp_path: Path, torn: str
) -> None:
    """What an older version left after a full disk: an empty or half-written pending file
    for the next seq, whose intent was never appended. It was never acknowledged: nothing of
    it was deleted, and the next run drops it and purges everything, each record once."""
    config, url, audit = _setup(tmp_path)
    (audit / "pending").mkdir(parents=True)
    text = '{"rule": "logs", "store": "db", "dataset": "logs", "keys": [[1], [2], [3'
    (audit / "pending" / "00000000.json").write_text("" if torn == "empty" else text)
    # What this version can leave instead: a temporary file never renamed into place.
    (audit / "pending" / "00000000.json.tmp").write_text(text)

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids_from(url) == KEPT
    assert sorted(claimed_leaves(audit)) == sorted(_leaves(tmp_path, DUE))
    assert not list((audit / "pending").iterdir())
    assert "audit.pending_unreadable_dropped" in finished.stderr
    _verified(audit)


@pytest.mark.parametrize("torn", ["empty", "truncated"])
def test_a_torn_pending_file_of_an_intent_in_the_trail_claims_nothing_and_blocks_nothing(
    tmp_path: Path, torn: str
) -> None:
    """The unlikely case: an unnoticed short write, then the intent appended, then a crash.
    Without the keys nobody can tell which of its records went: the intent stays unsettled,
    its file stays, the run says so and purges the rest; no record is claimed twice or
    falsely."""
    config, url, audit = _setup(tmp_path)
    crashed = _run(config, "after_intent")  # the batch rolls back: nothing was deleted
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (pending,) = (audit / "pending").iterdir()
    pending.write_bytes(b"" if torn == "empty" else pending.read_bytes()[:40])

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids_from(url) == KEPT
    assert sorted(claimed_leaves(audit)) == sorted(_leaves(tmp_path, DUE))
    assert "audit.pending_unreadable" in finished.stderr
    assert "audit.pending_unreadable_dropped" not in finished.stderr
    assert pending.exists()
    settled = {
        stored.content.get("intent")
        for stored in read_entries(audit)
        if stored.content["type"] in ("batch.result", "batch.reconciled")
    }
    assert int(pending.stem) not in settled
    _verified(audit)


def test_an_edited_tail_state_does_not_make_the_next_run_sign_a_wrong_root(
    tmp_path: Path,
) -> None:
    import json

    config, _url, audit = _setup(tmp_path)
    first = _run(config)
    assert first.returncode == 0, first.stdout + first.stderr
    state = json.loads((audit / "tail.json").read_text())
    state["subtrees"][0] = "ab" * 32
    (audit / "tail.json").write_text(json.dumps(state))

    again = _run(config)
    assert again.returncode == 0, again.stdout + again.stderr
    verified = subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), "audit", "verify"],
        capture_output=True,
        text=True,
        cwd=config.parent,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _edited_store(content: dict[str, Any]) -> None:
    content["store"] = "elsewhere"


_EDITS = {
    # Other due rows, still there: looked for, found, so the rows the batch deleted went unclaimed.
    "keys": lambda content: content.update(key_values=[key + 10 for key in content["key_values"]]),
    # Not its intent's root: taken for an intent that never reached the trail, and dropped.
    "leaves_root": lambda content: content.update(leaves_root="0" * 64),
    "dataset": lambda content: content.update(dataset="no_such_table"),
    "key_columns": lambda content: content.update(key_columns=["logged_at"]),
    "store": _edited_store,
}


@pytest.mark.parametrize("edited", sorted(_EDITS))
def test_an_edited_pending_file_is_refused_and_claims_nothing(
    tmp_path: Path, edited: str, database_url: str
) -> None:
    """A batch committed, then a crash before its result; its pending file edited (or
    corrupted) before the next run: whatever field is changed, its HMAC in the intent's entry
    does not check, so the reconcile believes none of it (the code of 99eba59 looked for other
    rows and left the deleted ones unclaimed, dropped the file as an intent that never reached
    the trail, or failed on a table or store of no rule): audit.pending_rejected, its batch
    unsettled, its file kept, nothing claimed for it; the run purges the rest."""
    config, url, audit = _setup(tmp_path, database_url)
    crashed = _run(config, "after_commit")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (pending,) = (audit / "pending").iterdir()
    content = json.loads(pending.read_text())
    committed = set(content["key_values"])
    assert committed
    assert not committed & remaining_ids_from(url)
    _EDITS[edited](content)
    pending.write_text(json.dumps(content))

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "audit.pending_rejected" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert pending.exists()
    assert remaining_ids_from(url) == KEPT
    claimed = claimed_leaves(audit)
    assert sorted(claimed) == sorted(_leaves(tmp_path, DUE - committed)), "none of it claimed"
    settled = {
        stored.content.get("intent")
        for stored in read_entries(audit)
        if stored.content["type"] in ("batch.result", "batch.reconciled")
    }
    assert int(pending.stem) not in settled
    _verified(audit)


@pytest.mark.parametrize("edited", [False, True])
def test_an_older_versions_pending_file_is_checked_by_its_intents_leaves(
    tmp_path: Path, edited: bool
) -> None:
    """An intent an older version wrote carries no HMAC of its pending file: the reconcile
    hashes the file's keys under the entry's store and dataset, and settles the batch only if
    they make the entry's leaves_root (as written: its committed rows claimed; keys edited:
    audit.pending_rejected, nothing claimed for it)."""
    config, url, audit = _setup(tmp_path)
    crashed = _run(config, "after_commit")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # The intent as an older version wrote it: the last entry, without pending_mac.
    (segment,) = (audit / "trail").iterdir()
    lines = segment.read_bytes().splitlines()
    intent = json.loads(lines[-1])
    assert intent["type"] == "batch.intent"
    del intent["pending_mac"]
    segment.write_bytes(b"\n".join([*lines[:-1], canonical(intent)]) + b"\n")
    (pending,) = (audit / "pending").iterdir()
    content = json.loads(pending.read_text())
    committed = set(content["key_values"])
    if edited:
        _EDITS["keys"](content)
        pending.write_text(json.dumps(content))

    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert remaining_ids_from(url) == KEPT
    claimed = claimed_leaves(audit)
    if edited:
        assert "audit.pending_rejected" in finished.stderr
        assert sorted(claimed) == sorted(_leaves(tmp_path, DUE - committed))
    else:
        assert "audit.pending_rejected" not in finished.stderr
        assert sorted(claimed) == sorted(_leaves(tmp_path, DUE))
    _verified(audit)


def test_a_torn_last_line_dropped_by_the_next_run_is_logged(tmp_path: Path) -> None:
    """A crash or a full disk cut the trail's last line: the next run drops it (it was never
    acknowledged) and says so, instead of truncating the trail silently."""
    config, _url, audit = _setup(tmp_path)
    assert _run(config).returncode == 0
    (segment,) = sorted((audit / "trail").iterdir())
    with segment.open("ab") as handle:
        handle.write(b'{"v":1,"seq":')

    finished = _run(config)

    assert finished.returncode == 0, finished.stderr
    events = [json.loads(line) for line in finished.stderr.splitlines() if line.startswith("{")]
    (dropped,) = [event for event in events if event["event"] == "audit.torn_write_dropped"]
    assert dropped["bytes"] == len(b'{"v":1,"seq":')
    assert dropped["level"] == "warning"
