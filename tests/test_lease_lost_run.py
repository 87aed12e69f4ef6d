"""A purge frozen (SIGSTOP, a VM paused, a swap storm) past its lease's expiry, whose rule another
host or run then took over, must not go on deleting when it thaws: before its next batch it finds
the lease no longer its own and stops. `retention run` used to ignore a lost lease altogether,
and the daemon's renewal thread raced the purge's next batch. Real processes: two `run`s on one
state database (each with its own audit trail, as two hosts have), on SQLite and PostgreSQL
targets with a PostgreSQL state database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from retention.audit.entries import read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.verify import verify_trail
from retention.errors import ExitCode
from retention.state import StateDatabase
from tests.support import (
    claimed_leaves,
    config_text,
    create_logs,
    logs_rule,
    remaining_ids,
    wait_for_pause,
)
from tests.test_daemon import Daemons, count_rows, make_logs, write_config
from tests.test_daemon import rule as daemon_rule

ROWS = 300
TTL_SECONDS = 2


def _config(tmp_path: Path, name: str, url: str, state_url: str) -> tuple[Path, Path]:
    audit = tmp_path / f"audit-{name}"
    config = tmp_path / f"{name}.toml"
    text = config_text(
        url, logs_rule(extra="batch_size = 10"), audit_directory=audit, state_url=state_url
    )
    config.write_text(text + f'\n[daemon]\nlease_ttl = "{TTL_SECONDS}s"\n')
    return config, audit


def _paused(config: Path, point: str, pause: Path, skip: int = 0) -> subprocess.Popen[str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("RETENTION_")
    }
    environment.update(
        RETENTION_PAUSE_AT=point, RETENTION_PAUSE_FILE=str(pause), RETENTION_PAUSE_SKIP=str(skip)
    )
    pause.touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "retention", "--config", str(config), "run", "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=config.parent,
    )
    wait_for_pause(process, pause, 60)
    return process


def _entries(audit: Path) -> list[dict[str, Any]]:
    return [stored.content for stored in read_entries(audit) if stored.content]


def _verified(audit: Path) -> None:
    result = verify_trail(audit, load_verification_keys(audit / "public-keys.json"))
    assert result.valid, result.problem


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_a_run_frozen_past_its_lease_stops_when_another_took_the_rule(
    tmp_path: Path, sqlite_url: str, postgres_url: str, target: str
) -> None:
    url = sqlite_url if target == "sqlite" else postgres_url
    state_url = postgres_url  # its own tables (retention_*) beside the target's
    create_logs(url, dict.fromkeys(range(1, ROWS + 1), datetime(2020, 1, 1)))
    first_config, first_audit = _config(tmp_path, "first", url, state_url)
    second_config, second_audit = _config(tmp_path, "second", url, state_url)
    engine = create_engine(url)
    state = StateDatabase(state_url)
    try:
        # The first run stops at its fourth batch's boundary (three committed), frozen there.
        first_pause = tmp_path / "first-pause"
        first = _paused(first_config, "batch_boundary", first_pause, skip=3)
        deleted_before = ROWS - len(remaining_ids(engine, "logs"))
        assert deleted_before == 30
        first.send_signal(signal.SIGSTOP)
        (holder, until) = state.recorded_leases()["rule:logs"]
        while datetime.now(UTC) <= until:
            time.sleep(0.05)
        # Expired: the second run takes the rule over, and waits before its plan.
        second_pause = tmp_path / "second-pause"
        second = _paused(second_config, "before_plan", second_pause)
        assert state.recorded_leases()["rule:logs"][0] != holder
        # Thawed, the first run must not delete another batch under the second's lease.
        first.send_signal(signal.SIGCONT)
        first_pause.unlink()
        output, errors = first.communicate(timeout=60)
        assert ROWS - len(remaining_ids(engine, "logs")) == deleted_before, output + errors
        assert first.returncode == ExitCode.LOCK_HELD, output + errors
        assert "lease" in errors, errors
        assert "Traceback" not in output + errors
        (outcome,) = _entries(first_audit)[-2]["outcomes"]
        assert (outcome["status"], outcome["deleted"]) == ("stopped", deleted_before)
        _verified(first_audit)
        # The second run purges the rest, and gives its lease back.
        second_pause.unlink()
        output, errors = second.communicate(timeout=60)
        assert second.returncode == 0, output + errors
        assert remaining_ids(engine, "logs") == set()
        assert "rule:logs" not in state.recorded_leases()
        _verified(second_audit)
        both = claimed_leaves(first_audit) + claimed_leaves(second_audit)
        assert len(both) == len(set(both)) == ROWS
        runs = [(run.status, run.deleted) for run in state.last_runs("logs", 5)]
        assert sorted(runs) == sorted([("stopped", deleted_before), ("ok", ROWS - deleted_before)])
    finally:
        state.close()
        engine.dispose()


def test_a_run_whose_state_database_locks_up_past_its_lease_stops_and_says_why(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The SQLite state database is write-locked by another process past the lease's expiry:
    the lease cannot be renewed, so the run stops before its next batch, exit 69 (the state
    database, not another holder: it used to say "taken over" and exit 75)."""
    create_logs(sqlite_url, dict.fromkeys(range(1, ROWS + 1), datetime(2020, 1, 1)))
    state_path = tmp_path / "state.sqlite"
    config, audit = _config(tmp_path, "only", sqlite_url, f"sqlite:///{state_path}?timeout=0.1")
    engine = create_engine(sqlite_url)
    pause = tmp_path / "pause"
    process = _paused(config, "batch_boundary", pause, skip=3)
    other = sqlite3.connect(state_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        time.sleep(TTL_SECONDS * 1.2)
        pause.unlink()
        output, errors = process.communicate(timeout=60)
    finally:
        other.execute("ROLLBACK")
        other.close()
    try:
        assert ROWS - len(remaining_ids(engine, "logs")) == 30, output + errors
    finally:
        engine.dispose()
    assert process.returncode == ExitCode.STORE_UNAVAILABLE, output + errors
    assert "lease was not renewable: the state database did not answer" in errors, errors
    assert "taken over" not in errors
    assert "Traceback" not in output + errors
    (outcome,) = _entries(audit)[-2]["outcomes"]
    assert (outcome["status"], outcome["deleted"]) == ("stopped", 30)
    _verified(audit)


def test_a_run_whose_lease_row_another_session_keeps_locked_stops_and_says_why(
    tmp_path: Path, sqlite_url: str, postgres_url: str
) -> None:
    """On a shared PostgreSQL state database, another session (an admin's open transaction)
    holds the run's lease row locked for 30 s: the run's renewal waited as long (no lock timeout
    on the state database), and the run with it, deaf to a stop. Now the renewal gives up after
    STATE_LOCK_TIMEOUT_SECONDS and the run stops before its next batch, exit 69."""
    create_logs(sqlite_url, dict.fromkeys(range(1, ROWS + 1), datetime(2020, 1, 1)))
    config, audit = _config(tmp_path, "only", sqlite_url, postgres_url)
    engine = create_engine(sqlite_url)
    pause = tmp_path / "pause"
    process = _paused(config, "batch_boundary", pause, skip=3)
    admin = create_engine(postgres_url)
    try:
        with admin.connect() as holding:
            holding.begin()
            holding.execute(text("SELECT * FROM retention_leases FOR UPDATE")).all()
            time.sleep(TTL_SECONDS * 0.6)
            pause.unlink()
            started = time.monotonic()
            try:
                output, errors = process.communicate(timeout=30)
            finally:
                waited = time.monotonic() - started
                holding.rollback()
                process.kill()
        assert waited < 20, waited
        assert ROWS - len(remaining_ids(engine, "logs")) == 30, output + errors
    finally:
        engine.dispose()
        admin.dispose()
    assert process.returncode == ExitCode.STORE_UNAVAILABLE, output + errors
    assert "the state database did not answer" in errors, errors
    assert "Traceback" not in output + errors
    _verified(audit)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


def test_a_daemon_frozen_past_its_lease_stops_when_another_host_took_the_rule(
    tmp_path: Path, sqlite_url: str, postgres_url: str, daemons: Daemons
) -> None:
    """The same with two daemons, two hosts sharing a PostgreSQL state database: the frozen one
    used to delete its next batch when thawed, before its renewal thread found the lease taken."""
    make_logs(sqlite_url, "logs", old=ROWS)
    configs = [
        write_config(
            tmp_path,
            sqlite_url,
            daemon_rule("logs"),
            state_url=postgres_url,
            daemon=f'lease_ttl = "{TTL_SECONDS}s"',
            audit=f"audit-{host}",
            name=f"{host}.toml",
        )
        for host in ("first", "second")
    ]
    state = StateDatabase(postgres_url)
    try:
        first_pause, second_pause = tmp_path / "first-pause", tmp_path / "second-pause"
        first_pause.touch()
        first = daemons.start(
            configs[0],
            name="first",
            RETENTION_PAUSE_AT="batch_boundary",
            RETENTION_PAUSE_FILE=str(first_pause),
            RETENTION_PAUSE_SKIP="3",
        )
        _wait_for(first_pause, first.process, first.output)
        deleted_before = ROWS - count_rows(sqlite_url, "logs")
        assert deleted_before == 30
        first.signal(signal.SIGSTOP)
        holder, until = state.recorded_leases()["rule:logs"]
        while datetime.now(UTC) <= until:
            time.sleep(0.05)
        second_pause.touch()
        second = daemons.start(
            configs[1],
            name="second",
            RETENTION_PAUSE_AT="before_plan",
            RETENTION_PAUSE_FILE=str(second_pause),
        )
        _wait_for(second_pause, second.process, second.output)
        assert state.recorded_leases()["rule:logs"][0] != holder
        first.signal(signal.SIGCONT)
        first_pause.unlink()
        first.wait_for_event("rule.lease_lost", rule="logs")
        finished = first.wait_for_event("rule.finished", rule="logs")
        assert (finished["status"], finished["deleted"]) == ("stopped", deleted_before)
        assert ROWS - count_rows(sqlite_url, "logs") == deleted_before
        second_pause.unlink()
        done = second.wait_for_event("rule.finished", rule="logs")
        assert (done["status"], done["deleted"]) == ("ok", ROWS - deleted_before)
        assert count_rows(sqlite_url, "logs") == 0
        for daemon in (first, second):
            assert daemon.stop() == 0, daemon.output()
    finally:
        state.close()
    for host in ("first", "second"):
        _verified(tmp_path / f"audit-{host}")


def _wait_for(pause: Path, process: subprocess.Popen[bytes], output: Callable[[], str]) -> None:
    reached = pause.with_name(pause.name + ".reached")
    deadline = time.monotonic() + 60
    while not reached.exists():
        assert process.poll() is None, output()
        assert time.monotonic() < deadline, output()
        time.sleep(0.01)
