"""`retention daemon` as systemd runs it: real subprocesses with a test $NOTIFY_SOCKET. READY
after the checks, a due rule runs, metrics over HTTP, SIGHUP reloads, SIGTERM stops after the
current batch with a valid trail, an invalid config exits 78 before READY, a missed run is
caught up, and two daemons sharing a PostgreSQL state database purge each record once. Every
daemon started is killed at teardown, whatever happened."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    make_url,
    text,
)

from retention.audit.entries import read_entries
from retention.cli import main
from retention.config import load_config
from retention.errors import ExitCode
from retention.runtime.systemd import notify, watchdog_interval
from retention.state import StateDatabase
from tests.support import audit_table, create_tables
from tests.test_metrics import free_port, sample

ROOT = Path(__file__).parent.parent
START_TIMEOUT = 30.0
# Fires on January 1st only: in these tests rules run because they are due at start.
YEARLY = "0 0 1 1 *"
DAEMON = (sys.executable, "-m", "retention", "--log-format", "json")
SCRUBBED = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "STATE_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "RETENTION_CONFIG",
    "RETENTION_CRASH_AT",
)


# --- the notify protocol ----------------------------------------------------------------------


class Notifications:
    """A Unix datagram socket in the abstract namespace, standing in for systemd: a thread
    keeps reading it, as systemd does."""

    def __init__(self) -> None:
        self.address = f"@retention-test-{secrets.token_hex(8)}"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + self.address[1:])
        self.messages: list[str] = []
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                self.messages.append(self.socket.recv(4096).decode())
            except OSError:
                return

    def wait_for(self, line: str, timeout: float) -> str | None:
        """Return the first message received (or arriving within ``timeout``) that has
        ``line`` among its lines, or None."""
        deadline = time.monotonic() + timeout
        while True:
            for message in list(self.messages):
                if line in message.split("\n"):
                    return message
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def close(self) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


def wait_until_idle(notifications: Notifications, rule_name: str, timeout: float) -> bool:
    """Return whether, within ``timeout``, the daemon told systemd a status other than purging
    after it said it was purging ``rule_name``: that run is over, for the daemon too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = [
            line for message in list(notifications.messages) for line in message.split("\n")
        ]
        statuses = [line for line in statuses if line.startswith("STATUS=")]
        started = [
            i for i, line in enumerate(statuses) if line.startswith(f"STATUS=purging {rule_name}")
        ]
        if started and any(
            not line.startswith("STATUS=purging") for line in statuses[started[-1] + 1 :]
        ):
            return True
        time.sleep(0.02)
    return False


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    abstract = Notifications()
    monkeypatch.setenv("NOTIFY_SOCKET", abstract.address)
    assert notify("READY=1", "STATUS=up")
    assert abstract.wait_for("READY=1", 1) == "READY=1\nSTATUS=up"
    # A short path: tmp_path can pass the 108 bytes a socket address holds.
    path = Path(tempfile.mkdtemp()) / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        try:
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
            assert notify("WATCHDOG=1")
            assert receiver.recv(100) == b"WATCHDOG=1"
        finally:
            shutil.rmtree(path.parent)
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not notify("READY=1")
    abstract.close()


def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


# --- daemons as subprocesses ------------------------------------------------------------------


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    notifications: Notifications
    stdout: Path
    stderr: Path
    config: Path

    def events(self) -> list[dict[str, Any]]:
        """Every complete JSON log line written so far."""
        lines = self.stdout.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def wait_for_event(self, event: str, timeout: float = 20.0, **fields: object) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.events():
                if line["event"] == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} {fields} in time; {self.output()}")

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def stop(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def output(self) -> str:
        return f"stdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"


@dataclass
class Daemons:
    directory: Path
    started: list[DaemonProcess] = field(default_factory=list)

    def start(self, config: Path, name: str = "daemon", **environment: str) -> DaemonProcess:
        notifications = Notifications()
        variables = {key: value for key, value in os.environ.items() if key not in SCRUBBED}
        variables.update(environment, NOTIFY_SOCKET=notifications.address)
        stdout, stderr = self.directory / f"{name}.out", self.directory / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [*DAEMON, "--config", str(config), "daemon"],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env=variables,
            )
        daemon = DaemonProcess(process, notifications, stdout, stderr, config)
        self.started.append(daemon)
        return daemon

    def kill_all(self) -> None:
        for daemon in self.started:
            if daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait()
            daemon.notifications.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


def make_logs(url: str, table: str, old: int, new: int = 0) -> None:
    """``old`` rows from 2020 (due under a one-year rule), ``new`` rows from now (kept)."""
    metadata = MetaData()
    logs = Table(
        table,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime),
    )
    engine = create_tables(url, metadata)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [{"id": key, "logged_at": datetime(2020, 1, 1)} for key in range(1, old + 1)]
    rows += [{"id": old + key, "logged_at": now} for key in range(1, new + 1)]
    with engine.begin() as connection:
        connection.execute(insert(logs), rows)
    engine.dispose()


def count_rows(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def rule(name: str, table: str = "logs", batch_size: int = 10, schedule: str = YEARLY) -> str:
    return f"""
[[rules]]
name = "{name}"
store = "db"
table = "{table}"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
batch_size = {batch_size}
max_fraction = 1.0
schedule = "{schedule}"
"""


def write_config(
    directory: Path,
    data_url: str,
    rules: str,
    *,
    state_url: str,
    daemon: str = "",
    audit: str = "audit",
    name: str = "retention.toml",
) -> Path:
    path = directory / name
    path.write_text(
        '[settings]\ntimezone = "Europe/Paris"\n'
        f'[stores.db]\nkind = "sql"\nurl = "{data_url}"\n'
        f'[state]\nurl = "{state_url}"\n'
        + audit_table(directory / audit)
        + f'[daemon]\ntimezone = "Europe/Paris"\n{daemon}\n'
        + rules
    )
    return path


def trail_entries(audit: Path) -> list[dict[str, Any]]:
    return [stored.content for stored in read_entries(audit)] if audit.exists() else []


def verify_trail(audit: Path) -> None:
    """The trail verifies (links, leaves, signatures) and every batch intent has its result."""
    result = CliRunner().invoke(
        main, ["audit", "verify", "--dir", str(audit), "--keys", str(audit / "public-keys.json")]
    )
    assert result.exit_code == 0, result.output
    entries = trail_entries(audit)
    intents = {entry["seq"] for entry in entries if entry["type"] == "batch.intent"}
    results = {entry["intent"] for entry in entries if entry["type"] == "batch.result"}
    assert intents == results
    assert not list((audit / "pending").iterdir())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_the_daemon_starts_runs_a_due_rule_serves_metrics_reloads_and_stops(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "logs", old=50, new=5)
    port = free_port()
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    settings = f'metrics_port = {port}\nheartbeat = "1s"'
    config = write_config(tmp_path, sqlite_url, rule("logs"), state_url=state_url, daemon=settings)
    daemon = daemons.start(config, WATCHDOG_USEC="300000")

    ready = daemon.notifications.wait_for("READY=1", START_TIMEOUT)
    assert ready is not None, daemon.output()
    assert "STATUS=1 rule scheduled (Europe/Paris)" in ready.split("\n")
    finished = daemon.wait_for_event("run.finished", rule="logs")
    assert (finished["deleted"], finished["exit_code"], finished["audited"]) == (50, 0, True)
    assert count_rows(sqlite_url, "logs") == 5
    assert daemon.notifications.wait_for("WATCHDOG=1", 5) is not None
    # systemctl status shows how far the purge got, then the scheduled line again.
    statuses = [
        line
        for message in daemon.notifications.messages
        for line in message.split("\n")
        if line.startswith("STATUS=")
    ]
    purging = statuses.index("STATUS=purging logs: 0 of 50 records")
    assert statuses[purging:].index("STATUS=purging logs: 50 of 50 records") > 0

    daemon.wait_for_event("audit.heartbeat")  # an idle trail still gets signed checkpoints
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert sample(metrics, 'retention_records_deleted_total{rule="logs"}') == 50
    assert sample(metrics, 'retention_runs_total{outcome="ok",rule="logs"}') == 1
    last_success = sample(metrics, 'retention_last_success_timestamp_seconds{rule="logs"}')
    assert last_success is not None
    assert abs(last_success - time.time()) < 60
    assert sample(metrics, 'retention_overdue_records{rule="logs"}') == 0
    # The schedule, the trail's freshness, the build and the config in force, read at the scrape.
    previous = sample(metrics, 'retention_previous_run_timestamp_seconds{rule="logs"}')
    following = sample(metrics, 'retention_next_run_timestamp_seconds{rule="logs"}')
    assert previous is not None
    assert following is not None
    assert previous < time.time() < following
    checkpoint = sample(metrics, "retention_audit_last_checkpoint_timestamp_seconds")
    assert checkpoint is not None
    assert abs(checkpoint - time.time()) < 60
    assert "\nretention_audit_last_anchor_timestamp_seconds " not in metrics  # never anchored
    assert sample(metrics, "retention_config_last_reload_successful") == 1
    started = sample(metrics, "retention_config_last_reload_success_timestamp_seconds")
    assert started is not None
    assert abs(started - time.time()) < 60
    assert "retention_build_info{version=" in metrics
    assert "_created" not in metrics

    # SIGHUP with a broken config: the daemon says why and keeps the one it has.
    valid = config.read_text()
    config.write_text(valid.replace(YEARLY, "61 * * * *"))
    daemon.signal(signal.SIGHUP)
    rejected = daemon.wait_for_event("config.reload_rejected")
    assert any("rules[0].schedule" in problem for problem in rejected["problems"])
    metrics = scrape(port)
    assert sample(metrics, "retention_config_last_reload_successful") == 0
    assert sample(metrics, "retention_config_last_reload_success_timestamp_seconds") == started
    config.write_text(valid + rule("logs-again"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_event("config.reloaded", rules=2)
    metrics = scrape(port)
    assert sample(metrics, "retention_config_last_reload_successful") == 1
    reloaded = sample(metrics, "retention_config_last_reload_success_timestamp_seconds")
    assert reloaded is not None
    assert reloaded > started
    assert sample(metrics, 'retention_next_run_timestamp_seconds{rule="logs-again"}') == following
    # A new rule has never run: it runs at once (nothing is left for it here).
    again = daemon.wait_for_event("run.finished", rule="logs-again")
    assert again["deleted"] == 0

    assert daemon.stop() == 0, daemon.output()
    assert daemon.notifications.wait_for("STOPPING=1", 1) is not None
    events = daemon.events()
    assert [line["rule"] for line in events if line["event"] == "run.finished"] == [
        "logs",
        "logs-again",
    ]
    assert all("run_id" in line for line in events if line["event"].startswith("run."))
    assert daemon.stderr.read_text() == ""
    verify_trail(tmp_path / "audit")


def test_sigterm_mid_purge_stops_after_the_batch_with_a_complete_trail(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "logs", old=3000)
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    config = write_config(tmp_path, sqlite_url, rule("logs", batch_size=5), state_url=state_url)
    audit = tmp_path / "audit"
    daemon = daemons.start(config)
    assert daemon.notifications.wait_for("READY=1", START_TIMEOUT), daemon.output()
    deadline = time.monotonic() + 20
    while sum(entry["type"] == "batch.result" for entry in trail_entries(audit)) < 3:
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.01)

    stopping = time.monotonic()
    assert daemon.stop() == 0, daemon.output()
    assert time.monotonic() - stopping < 10
    assert daemon.notifications.wait_for("STOPPING=1", 1) is not None

    verify_trail(audit)
    entries = trail_entries(audit)
    done = sum(entry["done"] for entry in entries if entry["type"] == "batch.result")
    assert 0 < done < 3000
    assert count_rows(sqlite_url, "logs") == 3000 - done
    assert [entry["type"] for entry in entries[-2:]] == ["run.finished", "checkpoint"]
    state = StateDatabase(state_url)
    (run,) = state.last_runs("logs")
    state.close()
    assert (run.status, run.deleted) == ("stopped", done)


def test_an_invalid_config_exits_78_before_ready(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "logs", old=1)
    rules = rule("logs", schedule="0 0 * * 8") + rule("other", table="missing_table")
    config = write_config(tmp_path, sqlite_url, rules, state_url=f"sqlite:///{tmp_path}/s.db")
    daemon = daemons.start(config)
    assert daemon.process.wait(START_TIMEOUT) == ExitCode.BAD_CONFIG
    assert not any("READY=1" in message for message in daemon.notifications.messages)
    problems = {line["path"] for line in daemon.events() if line["event"] == "config.invalid"}
    assert problems == {"rules[0].schedule"}
    # Once the file parses, the rules are checked against the schema, still before READY.
    config.write_text(config.read_text().replace("0 0 * * 8", YEARLY))
    daemon = daemons.start(config, name="again")
    assert daemon.process.wait(START_TIMEOUT) == ExitCode.BAD_CONFIG
    problems = {line["path"] for line in daemon.events() if line["event"] == "config.invalid"}
    assert problems == {"rules[1].table"}
    assert count_rows(sqlite_url, "logs") == 1


def test_a_taken_metrics_port_exits_69_before_ready(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "logs", old=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path,
            sqlite_url,
            rule("logs"),
            state_url=f"sqlite:///{tmp_path}/s.db",
            daemon=f"metrics_port = {port}",
        )
        daemon = daemons.start(config)
        assert daemon.process.wait(START_TIMEOUT) == ExitCode.STORE_UNAVAILABLE
    assert daemon.notifications.wait_for("READY=1", 0) is None
    daemon.wait_for_event("metrics.cannot_listen", port=port)
    assert count_rows(sqlite_url, "logs") == 1


def test_a_rule_that_missed_its_run_during_an_outage_is_caught_up_at_start(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    make_logs(sqlite_url, "missed", old=20)
    make_logs(sqlite_url, "recent", old=20)
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    state = StateDatabase(state_url)
    now = datetime.now(UTC)
    for name, last_success in (("missed", now - timedelta(days=800)), ("recent", now)):
        row = state.record_run_start("before-the-outage", name, last_success, "host")
        state.record_run_end(row, last_success, status="ok")
    rules = rule("missed", table="missed") + rule("recent", table="recent")
    config = write_config(tmp_path, sqlite_url, rules, state_url=state_url)
    daemon = daemons.start(config)
    assert daemon.notifications.wait_for("READY=1", START_TIMEOUT), daemon.output()
    daemon.wait_for_event("run.finished", rule="missed")
    assert daemon.stop() == 0, daemon.output()

    caught_up = [line["rule"] for line in daemon.events() if line["event"] == "rule.catching_up"]
    assert caught_up == ["missed"]
    assert (count_rows(sqlite_url, "missed"), count_rows(sqlite_url, "recent")) == (0, 20)
    assert [run.status for run in state.last_runs("missed", 5)] == ["ok", "ok"]
    assert len(state.last_runs("recent", 5)) == 1
    state.close()


def test_a_reload_during_a_run_does_not_schedule_that_rule_to_catch_up(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    """SIGHUP while a rule that never succeeded runs: the rule is still "late" in the ledger,
    and scheduling it to catch up made APScheduler skip the job, as it was running, with its raw
    "maximum number of running instances reached" warning in the log."""
    make_logs(sqlite_url, "logs", old=20)
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    config = write_config(tmp_path, sqlite_url, rule("logs", batch_size=5), state_url=state_url)
    pause = tmp_path / "pause"
    pause.touch()
    daemon = daemons.start(
        config,
        RETENTION_PAUSE_AT="batch_boundary",
        RETENTION_PAUSE_FILE=str(pause),
        RETENTION_PAUSE_SKIP="1",
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not pause.with_name("pause.reached").exists():
        assert time.monotonic() < deadline, daemon.output()
        assert daemon.process.poll() is None, daemon.output()
        time.sleep(0.01)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_event("config.reloaded")
    time.sleep(0.5)  # the job a catch-up would have fired at once
    pause.unlink()
    daemon.wait_for_event("run.finished", rule="logs")
    assert daemon.stop() == 0, daemon.output()

    assert "maximum number of running instances" not in daemon.output()
    assert [line["event"] for line in daemon.events() if line["event"] == "rule.catching_up"] == [
        "rule.catching_up"  # at start only
    ]
    assert count_rows(sqlite_url, "logs") == 0


def test_a_reload_while_the_state_database_is_down_keeps_the_daemon_and_the_new_config(
    tmp_path: Path, sqlite_url: str, postgres_url: str, postgres_admin: Engine, daemons: Daemons
) -> None:
    """SIGHUP while the shared PostgreSQL state database refuses connections: the daemon cannot
    read when each rule last succeeded, so it schedules the rule now (its run asks the ledger
    again, under the lease it cannot take while the database is down) and keeps running; it
    used to die of the ledger's OperationalError (exit 1)."""
    make_logs(sqlite_url, "logs", old=20)
    config = write_config(tmp_path, sqlite_url, rule("logs"), state_url=postgres_url)
    daemon = daemons.start(config)
    assert daemon.notifications.wait_for("READY=1", START_TIMEOUT), daemon.output()
    daemon.wait_for_event("run.finished", rule="logs")
    # run.finished is logged before the lease is given back and the ledger written; until the
    # daemon says it is idle again, a reload leaves the running rule to its run (no catch-up).
    assert wait_until_idle(daemon.notifications, "logs", 20), daemon.output()
    database = make_url(postgres_url).database
    with postgres_admin.connect() as admin:
        admin.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        admin.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": database},
        )
    try:
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_event("config.reloaded")
        unread = daemon.wait_for_event("rule.catching_up", level="warning", rule="logs")
        assert unread["reason"].startswith("the state database cannot be read (the run ledger): ")
        daemon.wait_for_event("rule.failed", rule="logs", exit_code=69)
        assert daemon.process.poll() is None, daemon.output()
    finally:
        with postgres_admin.connect() as admin:
            admin.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
    assert daemon.stop() == 0, daemon.output()
    assert not [line for line in daemon.events() if line["event"] == "rule.crashed"]
    assert count_rows(sqlite_url, "logs") == 0


def test_a_run_whose_state_database_locks_up_says_it_lost_its_lease_and_counts_its_deletions(
    tmp_path: Path, sqlite_url: str, daemons: Daemons
) -> None:
    """Mid-purge, another process holds the SQLite state database's write lock: the lease
    cannot be renewed, so the run stops after its batch (lost), and its end cannot be written to
    the ledger either (rule.failed, 69). The daemon still says why it stopped (rule.lease_lost)
    and counts what it deleted in its metrics; both went with the ledger's error before."""
    make_logs(sqlite_url, "logs", old=100_000)
    port = free_port()
    state_path = tmp_path / "state.sqlite"
    config = write_config(
        tmp_path,
        sqlite_url,
        rule("logs"),
        state_url=f"sqlite:///{state_path}?timeout=0.1",
        daemon=f'lease_ttl = "3s"\nmetrics_port = {port}',
    )
    daemon = daemons.start(config)
    assert daemon.notifications.wait_for("READY=1", START_TIMEOUT), daemon.output()
    deadline = time.monotonic() + 20
    while not any(
        entry.get("type") == "batch.result" for entry in trail_entries(tmp_path / "audit")
    ):
        assert time.monotonic() < deadline, daemon.output()
        assert daemon.process.poll() is None, daemon.output()
        time.sleep(0.01)
    other = sqlite3.connect(state_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        daemon.wait_for_event("rule.lease_lost", rule="logs")
        failed = daemon.wait_for_event("rule.failed", rule="logs")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert failed["exit_code"] == 69
    assert "the state database cannot be written (the run ledger)" in failed["error"]
    finished = daemon.wait_for_event("rule.finished", rule="logs")
    assert finished["status"] == "stopped"
    deleted = 100_000 - count_rows(sqlite_url, "logs")
    assert 0 < finished["deleted"] == deleted < 100_000
    metrics = scrape(port)
    assert sample(metrics, 'retention_records_deleted_total{rule="logs"}') == deleted
    assert sample(metrics, 'retention_runs_total{outcome="stopped",rule="logs"}') == 1
    assert daemon.stop() == 0, daemon.output()


def test_two_daemons_sharing_a_postgres_state_purge_each_record_once(
    tmp_path: Path, postgres_url: str, daemons: Daemons
) -> None:
    tables = [f"logs_{index}" for index in range(4)]
    for table in tables:
        make_logs(postgres_url, table, old=150, new=2)
    rules = "".join(rule(table, table=table) for table in tables)
    settings = 'lease_ttl = "2s"'
    configs = [
        write_config(
            tmp_path,
            postgres_url,
            rules,
            state_url=postgres_url,
            daemon=settings,
            audit=f"audit-{host}",
            name=f"{host}.toml",
        )
        for host in ("a", "b")
    ]
    hosts = [daemons.start(config, name=config.stem) for config in configs]
    for host in hosts:
        assert host.notifications.wait_for("READY=1", START_TIMEOUT), host.output()

    state = StateDatabase(postgres_url)
    deadline = time.monotonic() + 40
    while not all(state.last_success(table) for table in tables):
        assert time.monotonic() < deadline, hosts[0].output() + hosts[1].output()
        time.sleep(0.1)
    # Let a postponed attempt find the work done.
    time.sleep(2.5)
    for host in hosts:
        assert host.stop() == 0, host.output()

    for table in tables:
        assert count_rows(postgres_url, table) == 2
        runs = state.last_runs(table, 10)
        assert [(run.status, run.deleted) for run in runs] == [("ok", 150)], runs
    state.close()
    purged_by: dict[str, set[str]] = {table: set() for table in tables}
    done: dict[str, int] = dict.fromkeys(tables, 0)
    for host in ("a", "b"):
        audit = tmp_path / f"audit-{host}"
        if not audit.exists():
            continue
        verify_trail(audit)
        for entry in trail_entries(audit):
            if entry["type"] == "batch.result" and entry["done"]:
                purged_by[entry["rule"]].add(host)
                done[entry["rule"]] += entry["done"]
    assert done == dict.fromkeys(tables, 150)  # each record once, across both trails
    assert all(len(hosts_of_rule) == 1 for hosts_of_rule in purged_by.values()), purged_by


# --- the systemd unit -------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "retention.service"


@pytest.fixture
def analysable_unit(tmp_path: Path) -> Path:
    """The shipped unit, its ExecStart pointed at this checkout's `retention` (verify checks
    that the program exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip(
            "systemd-analyze is not installed here (Debian/Ubuntu: apt-get install systemd); "
            "the unit is not checked"
        )
    program = Path(sys.executable).parent / "retention"
    unit = tmp_path / "retention.service"
    unit.write_text(UNIT.read_text().replace("/opt/retention/venv/bin/retention", str(program)))
    return unit


def test_the_unit_passes_systemd_analyze_verify(analysable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(analysable_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retention.service" not in result.stderr, result.stderr


def test_the_unit_is_rated_ok_by_systemd_analyze_security(analysable_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(analysable_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    verdict = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert verdict, result.stdout + result.stderr
    exposure = float(verdict[0].split(":")[1].split()[0])
    assert exposure <= 2.0, verdict[0]
    unit = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "StateDirectory=retention",
        "LoadCredential=",
    ):
        assert setting in unit


def test_the_example_production_config_is_valid() -> None:
    config = load_config(ROOT / "deploy" / "systemd" / "retention.toml.example")
    assert config.daemon.metrics_address == "127.0.0.1"
    assert config.audit is not None
    assert config.audit.signing_key_credential == "audit-signing-key"
    credentials = {
        line.split("=", 1)[1].split(":")[0]
        for line in UNIT.read_text().splitlines()
        if line.startswith("LoadCredential=")
    }
    assert {"hash-key", "audit-hmac-key", "audit-signing-key", "app-db-url"} <= credentials


def test_a_cross_store_rule_has_no_job_of_its_own_it_runs_with_its_subjects(
    tmp_path: Path,
) -> None:
    from retention.config import parse_config
    from retention.daemon import Daemon, _schedule
    from retention.scheduler import new_scheduler

    config = parse_config(
        b"""
[settings]
timezone = "UTC"
[stores.app]
kind = "sql"
url = "sqlite://"
[stores.content]
kind = "s3"
bucket = "acme-content"
[[rules]]
name = "customer-content"
store = "app"
table = "customers"
key = "customer_id"
clock = "ended_at"
period = "90d"
action = "delete"
schedule = "@weekly"
[[rules]]
name = "customer-files"
store = "content"
subjects = "customer-content"
subject_prefix = "customers/{customer_id}/"
"""
    )
    state = StateDatabase(f"sqlite:///{tmp_path}/state.sqlite")
    scheduler = new_scheduler(config.daemon.timezone)
    daemon = Daemon(tmp_path / "retention.toml", config, state, scheduler)
    try:
        _schedule(daemon)
        jobs = {job.id for job in scheduler.get_jobs() if job.id.startswith("rule:")}
    finally:
        state.close()

    assert jobs == {"rule:customer-content"}
    assert [rule.name for rule in config.rules_named(("customer-content",))] == [
        "customer-files",
        "customer-content",
    ]
