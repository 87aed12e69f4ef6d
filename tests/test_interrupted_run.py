"""Ctrl-C (SIGINT) and SIGTERM in the middle of `run` or `erase`: the purge stops after its
current batch, as the daemon's does. Every deleted record is in a committed, audited batch, the
run is signed (run.finished, checkpoint) and recorded as stopped, and the command exits 130 (143
for SIGTERM). Before the purge begins (leases taken, plan not yet counted), the same signals
unwind the command: leases given back, nothing deleted nor written to the trail, the same exit
codes. Real subprocesses, on every database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert

from retention.audit.entries import read_entries, read_leaves
from retention.audit.entry_checks import load_verification_keys
from retention.audit.leaves import record_leaf
from retention.audit.verify import verify_trail
from retention.errors import ExitCode
from retention.state import StateDatabase
from tests.support import (
    config_text,
    create_tables,
    logs_rule,
    remaining_ids,
    wait_for_pause,
)

ROWS = 3000
SUBJECT = "alice@example.org"


def _setup(tmp_path: Path, url: str) -> tuple[Path, Path, str]:
    metadata = MetaData()
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime, index=True),
        Column("email", String(40)),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(logs),
            [
                {"id": key, "logged_at": datetime(2020, 1, 1), "email": SUBJECT}
                for key in range(1, ROWS + 1)
            ],
        )
    engine.dispose()
    audit = tmp_path / "audit"
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    rule = logs_rule(extra='batch_size = 5\nerase_by = "email"')
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, rule, audit_directory=audit, state_url=state_url))
    return config, audit, state_url


def _start(
    config: Path, *command: str, environment_extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    environment = {
        name: value for name, value in os.environ.items() if name != "RETENTION_CRASH_AT"
    }
    environment.update(environment_extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "retention", "--config", str(config), *command, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=config.parent,
    )


def _entries(audit: Path) -> list[dict[str, Any]]:
    if not (audit / "trail").exists():
        return []
    return [stored.content for stored in read_entries(audit) if stored.content]


def _interrupt_mid_purge(
    process: subprocess.Popen[str], audit: Path, number: signal.Signals
) -> tuple[int, str]:
    deadline = time.monotonic() + 60
    while sum(entry.get("type") == "batch.result" for entry in _entries(audit)) < 3:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output, errors = process.communicate()
            raise AssertionError(f"the purge did not get going: {output}{errors}")
        time.sleep(0.01)
    process.send_signal(number)
    output, errors = process.communicate(timeout=60)
    return process.returncode, output + errors


def _deleted_ids(url: str) -> set[int]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        return set(range(1, ROWS + 1)) - remaining_ids(engine, "logs")
    finally:
        engine.dispose()


def _assert_every_deletion_audited_and_signed(tmp_path: Path, audit: Path, url: str) -> int:
    """Return how many records the stopped run deleted."""
    keys = load_verification_keys(audit / "public-keys.json")
    result = verify_trail(audit, keys)
    assert result.valid, result.problem
    entries = _entries(audit)
    assert [entry["type"] for entry in entries[-2:]] == ["run.finished", "checkpoint"]
    assert entries[-1]["size"] == len(entries) - 1, "the checkpoint covers every entry"
    claimed: list[bytes] = []
    for entry in entries:
        if entry["type"] == "batch.result" and entry["status"] == "committed":
            claimed += read_leaves(audit, entry["intent"])
    hmac_key = (tmp_path / "audit-keys" / "hmac.key").read_bytes().strip()
    deleted = _deleted_ids(url)
    assert 0 < len(deleted) < ROWS
    assert sorted(claimed) == sorted(
        record_leaf(hmac_key, "db", "logs", (key,)) for key in deleted
    ), "every deleted record is in exactly one committed batch, and nothing else is"
    assert not list((audit / "pending").iterdir())
    (outcome,) = entries[-2]["outcomes"]
    assert (outcome["status"], outcome["deleted"]) == ("stopped", len(deleted))
    return len(deleted)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_stops_after_the_batch_signed_and_recorded_as_stopped(
    tmp_path: Path, database_url: str, number: signal.Signals
) -> None:
    config, audit, state_url = _setup(tmp_path, database_url)
    code, output = _interrupt_mid_purge(_start(config, "run"), audit, number)
    assert code == 128 + number, output
    assert code == (ExitCode.INTERRUPTED if number == signal.SIGINT else ExitCode.TERMINATED)
    assert "Aborted!" not in output
    assert "stopped" in output
    deleted = _assert_every_deletion_audited_and_signed(tmp_path, audit, database_url)
    # The signed run.finished and the log line carry the code the process exits with.
    assert _entries(audit)[-2]["exit_code"] == code
    finished = [json.loads(line) for line in output.splitlines() if '"run.finished"' in line]
    assert [line["exit_code"] for line in finished] == [code]
    state = StateDatabase(state_url)
    try:
        (run,) = state.last_runs("logs")
    finally:
        state.close()
    assert (run.status, run.deleted) == ("stopped", deleted)


def test_ctrl_c_mid_erase_stops_after_the_batch_signed(tmp_path: Path, database_url: str) -> None:
    config, audit, _state_url = _setup(tmp_path, database_url)
    process = _start(config, "erase", "--subject", SUBJECT, "--request", "T-1")
    code, output = _interrupt_mid_purge(process, audit, signal.SIGINT)
    assert code == ExitCode.INTERRUPTED, output
    _assert_every_deletion_audited_and_signed(tmp_path, audit, database_url)


def _paused_before_plan(config: Path, tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    """Start the command and return once it waits at the pause point before its plan, its
    stores opened and its leases taken (runtime/faults.py)."""
    pause = tmp_path / "pause"
    pause.touch()
    process = _start(
        config,
        *command,
        environment_extra={"RETENTION_PAUSE_AT": "before_plan", "RETENTION_PAUSE_FILE": str(pause)},
    )
    wait_for_pause(process, pause, 60)
    return process


@pytest.mark.parametrize(
    ("command", "number", "nothing_done"),
    [
        (("run",), signal.SIGTERM, "nothing was deleted"),
        (("run",), signal.SIGINT, "nothing was deleted"),
        (("erase", "--subject", SUBJECT, "--request", "T-1"), signal.SIGTERM, "nothing was erased"),
    ],
)
def test_a_signal_before_the_purge_unwinds_the_command_and_gives_its_leases_back(
    tmp_path: Path,
    database_url: str,
    command: tuple[str, ...],
    number: signal.Signals,
    nothing_done: str,
) -> None:
    """SIGTERM's default action used to kill the process where it stood: its leases stayed
    until they expired (`status` said "holder gone"). Now the command unwinds."""
    config, audit, state_url = _setup(tmp_path, database_url)
    process = _paused_before_plan(config, tmp_path, *command)
    state = StateDatabase(state_url)
    try:
        assert state.recorded_leases(), "the command holds its leases at the pause"
        process.send_signal(number)
        output, errors = process.communicate(timeout=60)
        assert process.returncode == 128 + number, output + errors
        assert f"{number.name}: stopped before the purge began: {nothing_done}" in errors
        assert "Traceback" not in output + errors
        assert "Aborted!" not in output + errors
        assert state.recorded_leases() == {}, "the leases were given back"
        assert state.last_runs("logs") == []
    finally:
        state.close()
    assert _deleted_ids(database_url) == set()
    assert not [entry for entry in _entries(audit) if entry["type"].startswith("batch.")]
    # Nothing is left to recover: the next run purges everything due.
    finished = _start(config, "run")
    output, errors = finished.communicate(timeout=120)
    assert finished.returncode == 0, output + errors
    assert _deleted_ids(database_url) == set(range(1, ROWS + 1))
