"""`retention status` knows a live daemon: the daemon's heartbeat in the state database (host,
pid, since, last beat), renewed every third of lease_ttl, removed on a clean stop, stale after
three missed beats. Real daemon subprocesses on a SQLite and a PostgreSQL state database."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from retention.cli import main
from retention.state import STALE_BEATS, StateDatabase
from retention.state_tables import holds, leases, runs
from tests.test_daemon import (
    START_TIMEOUT,
    DaemonProcess,
    Daemons,
    make_logs,
    rule,
    write_config,
)

# Beats every second, stale after three.
FAST_BEATS = 'lease_ttl = "3s"'


def status_json(config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["--config", str(config), "status", "--output", "json"])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def status_text(config: Path) -> str:
    result = CliRunner().invoke(main, ["--config", str(config), "status"])
    assert result.exit_code == 0, result.output
    return result.stdout


def braked_rule() -> str:
    """A rule the daemon runs at start, that never succeeds (a brake): always overdue."""
    return rule("braked", table="braked").replace("max_fraction = 1.0", "max_fraction = 0.1")


def start_with_an_overdue_rule(
    tmp_path: Path, data_url: str, state_url: str, daemons: Daemons, beats: str = FAST_BEATS
) -> tuple[Path, DaemonProcess]:
    make_logs(data_url, "braked", old=20)
    config = write_config(tmp_path, data_url, braked_rule(), state_url=state_url, daemon=beats)
    daemon = daemons.start(config)
    assert daemon.notifications.wait_for("READY=1", START_TIMEOUT), daemon.output()
    finished = daemon.wait_for_event("run.finished", rule="braked")
    assert finished["exit_code"] == 3  # braked: the rule stays overdue
    return config, daemon


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.sqlite"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_status_shows_the_live_daemon_and_when_it_runs_an_overdue_rule(
    tmp_path: Path, sqlite_url: str, state_url: str, daemons: Daemons
) -> None:
    config, daemon = start_with_an_overdue_rule(tmp_path, sqlite_url, state_url, daemons)

    document = status_json(config)
    (alive,) = document["daemons"]
    assert (alive["host"], alive["pid"], alive["alive"]) == (
        socket.gethostname(),
        daemon.process.pid,
        True,
    )
    since, first_beat = (datetime.fromisoformat(alive[key]) for key in ("since", "last_beat"))
    assert since <= first_beat <= datetime.now(UTC)
    assert datetime.now(UTC) - since < timedelta(seconds=START_TIMEOUT + 20)
    (braked,) = document["rules"]
    assert braked["overdue"]
    # The daemon's own next run: January 1st, midnight in Europe/Paris.
    assert datetime.fromisoformat(braked["daemon_next_run"]) == datetime(
        datetime.now(UTC).year + 1, 1, 1, tzinfo=ZoneInfo("Europe/Paris")
    )

    text = status_text(config)
    assert f"daemon alive on {socket.gethostname()} (pid {daemon.process.pid})" in text
    assert "runs when the daemon starts" not in text
    assert f"overdue: the daemon runs it at {datetime.now(UTC).year + 1}-01-01 00:00" in text

    # It keeps beating (every second here), with the same start.
    deadline = time.monotonic() + 10
    while (later := status_json(config)["daemons"][0])["last_beat"] == alive["last_beat"]:
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.2)
    assert later["since"] == alive["since"]
    assert datetime.fromisoformat(later["last_beat"]) > first_beat

    # A clean stop removes the heartbeat: the overdue rule waits for the next start again.
    assert daemon.stop() == 0, daemon.output()
    assert status_json(config)["daemons"] == []
    text = status_text(config)
    assert text.startswith("no daemon alive\n")
    assert "overdue: runs when the daemon starts" in text


def test_a_killed_daemon_of_this_host_is_not_alive_at_once(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    """Its heartbeat is fresh, but its process is gone from this host (the pid no longer
    exists): not alive, as a lease's holder gone from this host is not running, without
    waiting for the heartbeat to go stale (another host's daemon: test_heartbeats_round_trip)."""
    # Beats every 20 s, stale after a minute.
    config, daemon = start_with_an_overdue_rule(
        tmp_path, sqlite_url, f"sqlite:///{tmp_path}/state.sqlite", daemons, 'lease_ttl = "60s"'
    )
    daemon.signal(signal.SIGKILL)
    daemon.process.wait(10)
    document = status_json(config)
    (gone,) = document["daemons"]
    assert (gone["pid"], gone["beat_seconds"]) == (daemon.process.pid, 20)
    # Well within its STALE_BEATS beats: only its process being gone makes it not alive.
    assert datetime.now(UTC) - datetime.fromisoformat(gone["last_beat"]) < timedelta(
        seconds=STALE_BEATS * gone["beat_seconds"]
    )
    assert gone["alive"] is False
    assert document["rules"][0]["daemon_next_run"] is None
    text = status_text(config)
    assert text.startswith("no daemon alive (last heartbeat ")
    assert f"from {socket.gethostname()}, pid {daemon.process.pid})" in text
    assert "overdue: runs when the daemon starts" in text


def test_a_state_database_from_before_heartbeats_gets_the_table(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    # The tables the state database had before heartbeats, with a hold in them.
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    engine = create_engine(state_url)
    runs.metadata.create_all(engine, tables=[runs, leases, holds])
    with engine.begin() as connection:
        connection.execute(
            holds.insert().values(
                rule="braked",
                kind="key",
                value={"keys": [["1"]]},
                reason="T-1",
                created_at=datetime(2026, 1, 1),
                created_by="admin@host",
            )
        )
    assert "retention_daemons" not in inspect(engine).get_table_names()
    engine.dispose()

    config, daemon = start_with_an_overdue_rule(tmp_path, sqlite_url, state_url, daemons)
    (alive,) = status_json(config)["daemons"]
    assert alive["pid"] == daemon.process.pid
    state = StateDatabase(state_url)
    try:
        with state.transaction() as connection:
            assert connection.execute(holds.select()).one().reason == "T-1"
    finally:
        state.close()
    assert daemon.stop() == 0, daemon.output()


@pytest.mark.parametrize("database", ["sqlite_url", "postgres_url", "mariadb_url"])
def test_heartbeats_round_trip_and_go_stale_after_three_intervals(
    request: pytest.FixtureRequest, database: str
) -> None:
    state = StateDatabase(request.getfixturevalue(database))
    start = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    try:
        state.beat_daemon(
            "db1/3f2a:4242:abc",
            host="db1",
            pid=4242,
            started_at=start,
            now=start,
            every=timedelta(seconds=40),
            next_runs={"logs": datetime(2026, 11, 25, 1, 30, tzinfo=UTC)},
        )
        (first,) = state.daemon_beats(start)
        assert first.next_runs == {"logs": datetime(2026, 11, 25, 1, 30, tzinfo=UTC)}
        later = start + timedelta(minutes=5)
        state.beat_daemon(
            "db1/3f2a:4242:abc",
            host="db1",
            pid=4242,
            started_at=later,  # kept from the first beat
            now=later,
            every=timedelta(seconds=40),
            next_runs={},
        )
        (beat,) = state.daemon_beats(later)
        assert (beat.host, beat.pid, beat.started_at, beat.beat_at) == ("db1", 4242, start, later)
        assert (beat.beat_seconds, beat.next_runs, beat.alive) == (40, {}, True)
        assert state.daemon_beats(later + timedelta(seconds=120))[0].alive
        assert not state.daemon_beats(later + timedelta(seconds=121))[0].alive
        state.forget_daemon("db1/3f2a:4242:abc")
        assert state.daemon_beats(later) == []
    finally:
        state.close()


def test_status_on_a_fresh_install_writes_nothing(tmp_path: Path, state_url: str) -> None:
    """A read-only command: before any run, status shows every rule as never run, and leaves
    no state database file (SQLite) and no table (PostgreSQL) behind."""
    data_url = f"sqlite:///{tmp_path}/data.sqlite"
    config = write_config(tmp_path, data_url, rule("logs"), state_url=state_url)

    document = status_json(config)

    assert [entry["last_run"] for entry in document["rules"]] == [None]
    assert document["daemons"] == []
    assert "never" in status_text(config)
    assert not (tmp_path / "state.sqlite").exists()
    assert inspect(create_engine(state_url)).get_table_names() == []
