"""A legal hold placed while a purge runs: `hold add` succeeds at once (the run holds the audit
trail's writer lock), the batches after it keep the held rows, the run records the hold in the
trail at its next batch boundary, and a run killed before it could record it leaves it for the
next writer, who records it once. Real processes: the run, then `hold` commands beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from retention.audit.entries import read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.verify import verify_trail
from retention.errors import ExitCode
from tests.support import config_text, create_logs, logs_rule, remaining_ids, wait_for_pause

ROWS = 400
# Far enough in key order that the batches after the hold would reach them.
HELD = (351, 377)


def _setup(tmp_path: Path, url: str, state_url: str | None = None) -> tuple[Path, Path]:
    create_logs(url, dict.fromkeys(range(1, ROWS + 1), datetime(2020, 1, 1)))
    audit = tmp_path / "audit"
    state = state_url or f"sqlite:///{tmp_path}/state.sqlite"
    config = tmp_path / "retention.toml"
    config.write_text(
        config_text(url, logs_rule(extra="batch_size = 10"), audit_directory=audit, state_url=state)
    )
    return config, audit


def _environment(**extra: str) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("RETENTION_")
    }
    return {**environment, **extra}


def _retention(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=config.parent,
        timeout=120,
    )


def _paused_run(config: Path, skip: int, **extra: str) -> tuple[subprocess.Popen[str], Path]:
    """Start `retention run`, paused at its batch boundary after ``skip`` of them (holding the
    trail's writer lock); return it and the pause file (remove it to let the run go on)."""
    pause = config.parent / "pause"
    pause.touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "retention", "--config", str(config), "run", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(
            RETENTION_PAUSE_AT="batch_boundary",
            RETENTION_PAUSE_SKIP=str(skip),
            RETENTION_PAUSE_FILE=str(pause),
            **extra,
        ),
        cwd=config.parent,
    )
    wait_for_pause(process, pause, 120)
    return process, pause


def _hold_add(config: Path) -> subprocess.CompletedProcess[str]:
    keys = [argument for key in HELD for argument in ("--key", str(key))]
    return _retention(config, "hold", "add", "--rule", "logs", *keys, "--reason", "case L-17")


def _entries(audit: Path) -> list[dict[str, Any]]:
    return [stored.content for stored in read_entries(audit)]


def _listed(config: Path) -> list[dict[str, Any]]:
    listed = _retention(config, "hold", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    holds: list[dict[str, Any]] = json.loads(listed.stdout)["holds"]
    return holds


def _verified(config: Path, audit: Path) -> None:
    assert verify_trail(audit, load_verification_keys(audit / "public-keys.json")).valid
    verified = _retention(config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _hold_during_a_run(tmp_path: Path, url: str, state_url: str | None = None) -> None:
    config, audit = _setup(tmp_path, url, state_url)
    run, pause = _paused_run(config, skip=3)
    try:
        placed = _hold_add(config)
        assert placed.returncode == 0, placed.stdout + placed.stderr
        assert placed.stdout.startswith("hold 1 on rule logs: 2 keys (case L-17)")
        assert "in force now" in placed.stdout
        assert "another process is writing the audit trail" in placed.stdout
        assert "a run of logs by" in placed.stdout, "the run holding the trail is named"
        (listed,) = _listed(config)
        assert (listed["state"], listed["recorded"]) == ("in force", False)
        text = _retention(config, "hold", "list")
        assert "[not yet in the audit trail]" in text.stdout
        released = _retention(config, "hold", "release", "1", "--reason", "closed")
        assert released.returncode == ExitCode.LOCK_HELD, released.stdout + released.stderr
        assert "stays in force" in released.stderr
        assert not any(entry.get("type", "").startswith("hold.") for entry in _entries(audit))
    finally:
        pause.unlink()
        output, errors = run.communicate(timeout=120)
    assert run.returncode == 0, output + errors

    engine = create_engine(url)
    try:
        assert remaining_ids(engine, "logs") == set(HELD), "the batches after the hold kept them"
    finally:
        engine.dispose()
    entries = _entries(audit)
    added = [entry for entry in entries if entry["type"] == "hold.added"]
    assert len(added) == 1
    (hold,) = added
    assert (hold["hold_id"], hold["reason"], hold["target_count"]) == (1, "case L-17", 2)
    assert hold["placed_at"] < hold["time"]
    position = entries.index(hold)
    types = [entry["type"] for entry in entries]
    assert types[:position].count("batch.result") == 3, "recorded at the next batch boundary"
    assert "hold.released" not in types
    (listed,) = _listed(config)
    assert (listed["state"], listed["recorded"]) == ("in force", True)
    _verified(config, audit)
    shown = _retention(config, "audit", "show", "--wide")
    assert shown.returncode == 0, shown.stderr
    assert "hold 1 placed on logs" in shown.stdout
    assert "while a run wrote the trail" in shown.stdout
    document = json.loads(_retention(config, "audit", "show", "--format", "json").stdout)
    (row,) = [row for row in document["runs"] if row["entry"] == "hold.added"]
    assert row["hold_placed"] < row["time"]
    report = config.parent / "report.json"
    written = _retention(config, "audit", "report", "--format", "json", "-o", str(report))
    assert written.returncode == 0, written.stdout + written.stderr
    (change,) = json.loads(report.read_text())["holds"]["changes"]
    assert (change["change"], change["hold_id"]) == ("placed", 1)
    assert change["placed"] < change["time"]


def test_a_hold_placed_during_a_run_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    _hold_during_a_run(tmp_path, sqlite_url)


def test_a_hold_placed_during_a_run_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """The store and the state database on PostgreSQL."""
    _hold_during_a_run(tmp_path, postgres_url, state_url=postgres_url)


@pytest.mark.parametrize("crash", [None, "after_hold_recorded"])
def test_a_run_killed_before_it_marked_the_hold_leaves_it_to_the_next_run_once(
    tmp_path: Path, sqlite_url: str, crash: str | None
) -> None:
    """SIGKILL while paused (the hold not yet in the trail), or the run killing itself right
    after appending the hold's entry (the state database not yet told): either way the hold
    stays in force, and the next run records it exactly once."""
    config, audit = _setup(tmp_path, sqlite_url)
    extra = {"RETENTION_CRASH_AT": crash} if crash else {}
    run, pause = _paused_run(config, skip=2, **extra)
    try:
        placed = _hold_add(config)
        assert placed.returncode == 0, placed.stdout + placed.stderr
    finally:
        if crash is None:
            run.send_signal(signal.SIGKILL)
        pause.unlink()
        run.communicate(timeout=120)
    assert run.returncode == -signal.SIGKILL
    added = [entry for entry in _entries(audit) if entry["type"] == "hold.added"]
    assert len(added) == (1 if crash else 0)
    (listed,) = _listed(config)
    assert (listed["state"], listed["recorded"]) == ("in force", False)

    again = _retention(config, "run", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    entries = _entries(audit)
    added = [entry for entry in entries if entry["type"] == "hold.added"]
    assert [entry["hold_id"] for entry in added] == [1], "recorded once"
    if not crash:
        runs = [index for index, entry in enumerate(entries) if entry["type"] == "run.started"]
        assert entries.index(added[0]) > runs[-1], "recorded by the next run"
    (listed,) = _listed(config)
    assert listed["recorded"] is True
    engine = create_engine(sqlite_url)
    try:
        assert remaining_ids(engine, "logs") == set(HELD)
    finally:
        engine.dispose()
    assert _retention(config, "run", "--yes").returncode == 0
    assert sum(entry["type"] == "hold.added" for entry in _entries(audit)) == 1
    _verified(config, audit)
