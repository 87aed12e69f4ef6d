"""The state database: leases (one holder at a time, across hosts; a dead holder loses its lease)
and the run ledger that `run` and the daemon write."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import MetaData, update

from retention.app import make_plan, run_plan
from retention.audit.trail import TrailWriter
from retention.errors import ExitCode, LockHeld, StoreUnavailable
from retention.state import StateDatabase, lease_holder_name
from retention.state_leases import leased, rule_lease
from retention.state_tables import leases
from retention.stores import open_stores
from tests.support import (
    config_text,
    create_logs,
    create_tables,
    logs_rule,
    make_config,
    remaining_ids,
)

T0 = datetime(2026, 5, 10, 12, tzinfo=UTC)
TTL = timedelta(minutes=2)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest) -> Iterator[StateDatabase]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    database = StateDatabase(url)
    yield database
    database.close()


def test_a_lease_has_one_holder_until_it_expires(state: StateDatabase) -> None:
    assert state.acquire_lease("rule:a", "host-1", T0, TTL)
    assert not state.acquire_lease("rule:a", "host-2", T0 + TTL / 2, TTL)
    # Nor twice by the same holder: a second run in one process is refused too.
    assert not state.acquire_lease("rule:a", "host-1", T0 + TTL / 2, TTL)
    assert state.acquire_lease("rule:b", "host-2", T0, TTL)
    assert state.lease_holders(T0 + TTL / 2) == {
        "rule:a": ("host-1", T0 + TTL),
        "rule:b": ("host-2", T0 + TTL),
    }
    # host-1 died: once its lease expires, host-2 takes over and host-1 cannot renew it.
    assert state.acquire_lease("rule:a", "host-2", T0 + TTL, TTL)
    assert not state.renew_lease("rule:a", "host-1", T0 + TTL, TTL)
    assert state.renew_lease("rule:a", "host-2", T0 + TTL * 1.5, TTL)
    assert not state.acquire_lease("rule:a", "host-3", T0 + TTL * 2, TTL)


def test_a_lease_of_a_dead_process_of_this_machine_is_taken_at_once(
    state: StateDatabase,
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    machine, alive_pid = lease_holder_name().split(":")[:2]
    dead = f"{machine}:{finished.stdout.strip()}:aaaaaa"
    assert state.acquire_lease("rule:dead", dead, T0, TTL)
    assert state.acquire_lease("rule:dead", "restarted", T0 + timedelta(seconds=1), TTL)
    # A live process of this machine, or any process elsewhere, keeps its lease until it expires.
    for holder in (f"{machine}:{alive_pid}:bbbbbb", f"elsewhere/0:{finished.stdout.strip()}:c"):
        assert state.acquire_lease(f"rule:{holder}", holder, T0, TTL)
        assert not state.acquire_lease(f"rule:{holder}", "other", T0 + timedelta(seconds=1), TTL)


def test_releasing_frees_a_lease_but_only_for_its_holder(state: StateDatabase) -> None:
    assert state.acquire_lease("rule:a", "host-1", T0, TTL)
    state.release_lease("rule:a", "host-2")
    assert not state.acquire_lease("rule:a", "host-2", T0, TTL)
    state.release_lease("rule:a", "host-1")
    assert state.acquire_lease("rule:a", "host-2", T0, TTL)


def test_hosts_racing_for_a_lease_get_one_winner(postgres_url: str) -> None:
    databases = [StateDatabase(postgres_url) for _ in range(6)]
    try:
        for attempt in range(5):
            barrier = threading.Barrier(len(databases))
            won: list[str] = []

            def race(
                database: StateDatabase,
                holder: str,
                name: str,
                barrier: threading.Barrier = barrier,
                won: list[str] = won,
            ) -> None:
                barrier.wait()
                if database.acquire_lease(name, holder, T0, TTL):
                    won.append(holder)

            threads = [
                threading.Thread(target=race, args=(database, f"host-{index}", f"rule:{attempt}"))
                for index, database in enumerate(databases)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(won) == 1, won
    finally:
        for database in databases:
            database.close()


def test_daemons_starting_together_on_a_new_database_create_the_tables_once(
    postgres_url: str,
) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []
    opened: list[StateDatabase] = []

    def open_state() -> None:
        barrier.wait()
        try:
            opened.append(StateDatabase(postgres_url))
        except Exception as error:  # the race shows as a unique violation on pg_type
            errors.append(error)

    threads = [threading.Thread(target=open_state) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in opened:
        database.close()
    assert errors == []


def test_leased_holds_all_or_none_and_gives_them_back(state: StateDatabase) -> None:
    assert state.acquire_lease("rule:b", "other", datetime.now(UTC), TTL)
    with (
        pytest.raises(LockHeld, match="rule:b is held by other"),
        leased(state, ["rule:a", "rule:b"], "me", TTL),
    ):
        pass
    # rule:a was not kept.
    assert "rule:a" not in state.lease_holders(datetime.now(UTC))
    with leased(state, ["rule:a"], "me", TTL) as lost:
        assert state.lease_holders(datetime.now(UTC))["rule:a"][0] == "me"
        assert not lost.is_set()
    assert "rule:a" not in state.lease_holders(datetime.now(UTC))


def test_a_lease_taken_over_is_reported_lost_while_the_work_runs(state: StateDatabase) -> None:
    ttl = timedelta(seconds=0.3)
    with leased(state, ["rule:a"], "me", ttl) as lost:
        time.sleep(0.25)  # renewed meanwhile
        assert not lost.is_set()
        with state.transaction() as connection:
            connection.execute(update(leases).values(holder="thief"))
        assert lost.wait(2)
    assert state.lease_holders(datetime.now(UTC) - timedelta(minutes=1))["rule:a"][0] == "thief"


def test_a_holder_frozen_past_its_lease_finds_it_lost_at_once_when_taken(
    state: StateDatabase,
) -> None:
    """A process frozen (SIGSTOP) past its lease's expiry asks, before its next batch, whether
    the lease is lost: it used to answer from the renewal thread's last finding (not lost), so
    that the batch ran under a lease another holder had taken meanwhile."""
    moment = [T0]
    with leased(state, ["rule:a"], "me", TTL, clock=lambda: moment[0]) as lost:
        moment[0] = T0 + TTL / 3
        assert not lost.is_set()  # recently renewed (or taken): nothing asked of the database
        # Frozen past the expiry, nobody took it: renewed now, the work goes on.
        moment[0] = T0 + TTL * 2
        assert not lost.is_set()
        assert state.lease_holders(moment[0])["rule:a"] == ("me", T0 + TTL * 3)
        # Frozen again, and taken over meanwhile: lost before the next batch.
        moment[0] = T0 + TTL * 4
        assert state.acquire_lease("rule:a", "thief", moment[0], TTL)
        assert lost.is_set()
    assert state.lease_holders(moment[0])["rule:a"][0] == "thief"


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(
    state: StateDatabase,
) -> None:
    state.record_run_start("r1", "a", T0, "host-1")
    assert state.mark_interrupted("a") == 1
    assert state.last_runs("a")[0].status == "interrupted"


# --- the ledger, as `run` writes it -----------------------------------------------------------

RULE = logs_rule(extra="batch_size = 10\nmax_fraction = 1.0")


def _logs(url: str) -> None:
    create_logs(url, {key: datetime(2020, 1, 1) for key in range(25)})


def _logs_and_state(tmp_path: Path, rules: str) -> tuple[str, Path, Path]:
    """25 expired logs in an SQLite database, a state database with its tables, and a config
    of ``rules`` over them whose state database gives up waiting for a lock after 0.1 s: the
    database's URL, the state database's path, the config's."""
    url = f"sqlite:///{tmp_path}/app.sqlite"
    _logs(url)
    state_path = tmp_path / "state.sqlite"
    StateDatabase(f"sqlite:///{state_path}").close()  # its tables made
    config_file = tmp_path / "retention.toml"
    state_url = f"sqlite:///{state_path}?timeout=0.1"
    audit = tmp_path / "audit"
    config_file.write_text(config_text(url, rules, audit_directory=audit, state_url=state_url))
    return url, state_path, config_file


def test_run_plan_records_each_rule_in_the_ledger(tmp_path: Path, sqlite_url: str) -> None:
    _logs(sqlite_url)
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    config = make_config(sqlite_url, RULE, audit_directory=tmp_path / "audit", state_url=state_url)
    state = StateDatabase(state_url)
    try:
        with open_stores(config, read_only=False) as store_for:
            plan = make_plan(config, config.rules, store_for, T0)
            run_plan(config, plan, store_for, dry_run=True, state=state)
            assert state.last_runs("logs") == []  # a dry run is not a run
            run_plan(config, plan, store_for, dry_run=False, state=state, run_id="run-1")
        (record,) = state.last_runs("logs")
        assert (record.run_id, record.status, record.due, record.deleted) == ("run-1", "ok", 25, 25)
        assert record.finished_at is not None
        assert state.last_success("logs") == record.finished_at

        # A run that cannot start (the trail is held) is recorded as failed, with why.
        with open_stores(config, read_only=False) as store_for:
            plan = make_plan(config, config.rules, store_for, T0)
            assert config.audit is not None
            with (
                TrailWriter(config.audit.directory, b"k" * 32, None, lambda: T0),
                pytest.raises(LockHeld),
            ):
                run_plan(config, plan, store_for, dry_run=False, state=state)
        latest = state.last_runs("logs")[0]
        assert latest.status == "failed"
        assert latest.error is not None
        assert "another process is writing the audit trail" in latest.error
    finally:
        state.close()


def test_the_run_command_waits_for_no_one_it_stops_at_a_held_lease(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from retention.cli import main

    _logs(sqlite_url)
    state_url = f"sqlite:///{tmp_path}/state.sqlite"
    make_config(sqlite_url, RULE, audit_directory=tmp_path / "audit")  # creates the keys
    config_file = tmp_path / "retention.toml"
    config_file.write_text(
        f'[settings]\ntimezone = "UTC"\n[stores.db]\nkind = "sql"\nurl = "{sqlite_url}"\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[audit]\ndirectory = "{tmp_path}/audit"\n'
        f'hmac_key_file = "{tmp_path}/audit-keys/hmac.key"\n'
        f'signing_key_file = "{tmp_path}/audit-keys/signing.pem"\n' + RULE
    )
    state = StateDatabase(state_url)
    assert state.acquire_lease(rule_lease("logs"), "daemon-on-host-2", datetime.now(UTC), TTL)
    arguments = ["--config", str(config_file), "run", "--yes"]
    held = CliRunner().invoke(main, arguments)
    assert held.exit_code == 75, held.output
    assert "rule:logs is held by daemon-on-host-2" in held.output
    engine = create_tables(sqlite_url, MetaData())
    assert len(remaining_ids(engine, "logs")) == 25

    state.release_lease(rule_lease("logs"), "daemon-on-host-2")
    done = CliRunner().invoke(main, arguments)
    assert done.exit_code == 0, done.output
    assert remaining_ids(engine, "logs") == set()
    assert state.last_runs("logs")[0].status == "ok"
    engine.dispose()
    state.close()


@contextmanager
def _written_by_another(path: Path) -> Iterator[None]:
    """Another process writing the SQLite state database: reads go on, writes wait for it (a
    full disk or a dropped connection fail the same writes the same way)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_run_whose_ledger_cannot_be_written_exits_69_before_purging(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from retention.cli import main

    url, state_path, config_file = _logs_and_state(tmp_path, RULE)
    with _written_by_another(state_path):
        result = CliRunner().invoke(main, ["--config", str(config_file), "run", "--yes"])
    assert result.exit_code == 69, result.output
    assert (
        "error: the state database cannot be written (taking the lease rule:logs)" in result.output
    )
    assert "Traceback" not in result.output
    engine = create_tables(url, MetaData())
    assert len(remaining_ids(engine, "logs")) == 25
    engine.dispose()


class _LockTheLedgerAtTheFirstBatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = ExitStack()
        self.locked = False

    def rule_started(self, rule: str, due: int) -> None:
        pass

    def rule_advanced(self, rule: str, done: int) -> None:
        if not self.locked:
            self.lock.enter_context(_written_by_another(self.path))
            self.locked = True

    def rule_finished(self, rule: str) -> None:
        pass


def test_a_run_whose_ledger_cannot_record_its_end_says_it_ran(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.sqlite"
    _logs(url)
    state_path = tmp_path / "state.sqlite"
    config = make_config(url, RULE, audit_directory=tmp_path / "audit")
    state = StateDatabase(f"sqlite:///{state_path}?timeout=0.1")
    progress = _LockTheLedgerAtTheFirstBatch(state_path)
    try:
        with open_stores(config, read_only=False) as store_for:
            plan = make_plan(config, config.rules, store_for, T0)
            with progress.lock, pytest.raises(StoreUnavailable) as raised:
                run_plan(config, plan, store_for, dry_run=False, state=state, progress=progress)
        assert str(raised.value).startswith(
            "the run finished (exit 0; its batches are in the audit trail), but the state "
            "database cannot be written (the run ledger): database is locked"
        )
        engine = create_tables(url, MetaData())
        assert remaining_ids(engine, "logs") == set()
        engine.dispose()
        (record,) = state.last_runs("logs")
        assert record.status == "running"  # until the next run marks it interrupted
    finally:
        state.close()


BRAKED_RULE = logs_rule(extra="max_delete = 1", name="logs-braked")


def test_a_run_whose_ledger_cannot_record_its_end_keeps_its_own_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the run itself (here a brake, 3; a full disk under the trail, 70) says more
    than the ledger's (69, "store unreachable, retry later"), and the report of what the run
    purged is still printed: only the trail and the output hold it then."""
    from click.testing import CliRunner

    from retention.cli import main

    _url, state_path, config_file = _logs_and_state(tmp_path, RULE + BRAKED_RULE)
    progress = _LockTheLedgerAtTheFirstBatch(state_path)

    @contextmanager
    def locking_progress(_stream: object = None) -> Iterator[_LockTheLedgerAtTheFirstBatch]:
        yield progress

    monkeypatch.setattr("retention.runtime.progress.terminal_progress", locking_progress)
    with progress.lock:
        result = CliRunner().invoke(main, ["--config", str(config_file), "run", "--yes"])
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert "error: the run finished (exit 3; its batches are in the audit trail)" in result.stderr
    assert "logs-braked: " in result.stdout  # the report, with the braked rule's reason
    assert "purged 25 records" in result.stdout
    assert "Traceback" not in result.output


def test_without_the_boot_id_a_lease_of_a_namesake_host_is_not_taken_at_once(
    state: StateDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under the unit's ProcSubset=pid the boot id cannot be read: two hosts of one host name
    (cloned VMs) each took the other's lease at once when its pid did not exist here, and ran
    the rule together. The machine id tells them apart; without it, leases expire."""
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = finished.stdout.strip()
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    real_path = Path

    def hidden(path: str | Path) -> Path:
        if str(path) == "/proc/sys/kernel/random/boot_id":
            return tmp_path / "hidden"  # as ProcSubset=pid: no such file
        if str(path) == "/etc/machine-id":
            return machine_id
        return real_path(path)

    monkeypatch.setattr("retention.runtime.holders.Path", hidden)
    host = socket.gethostname()
    # The holder names the other host would write, with or without its machine id.
    for other in (f"{host}/unknown:{dead_pid}:aaaaaa", f"{host}/mfedcba98:{dead_pid}:bbbbbb"):
        assert state.acquire_lease(f"rule:{other}", other, T0, TTL)
        assert not state.acquire_lease(f"rule:{other}", "here", T0 + timedelta(seconds=1), TTL)
    # A dead process of this machine is still known for one, and its lease taken at once.
    mine = f"{lease_holder_name().split(':')[0]}:{dead_pid}:cccccc"
    assert mine.startswith(f"{host}/m01234567:")
    assert state.acquire_lease("rule:mine", mine, T0, TTL)
    assert state.acquire_lease("rule:mine", "restarted", T0 + timedelta(seconds=1), TTL)
    # Without a machine id either, none is: every lease waits for its expiry.
    machine_id.unlink()
    unknown = f"{lease_holder_name().split(':')[0]}:{dead_pid}:dddddd"
    assert unknown.startswith(f"{host}/unknown:")
    assert state.acquire_lease("rule:unknown", unknown, T0, TTL)
    assert not state.acquire_lease("rule:unknown", "here", T0 + timedelta(seconds=1), TTL)


def _read_only_commands(config_file: Path) -> dict[str, Result]:
    """`status` (text and JSON), `hold list` and `plan` on a config, as an operator runs them."""
    from click.testing import CliRunner

    from retention.cli import main

    commands = {
        "status": ["status"],
        "status json": ["status", "--output", "json"],
        "hold list": ["hold", "list"],
        "plan": ["plan"],
    }
    return {
        name: CliRunner().invoke(main, ["--config", str(config_file), *arguments])
        for name, arguments in commands.items()
    }


def test_status_on_a_state_database_that_cannot_be_reached_exits_69_saying_so(
    tmp_path: Path,
) -> None:
    """A shared PostgreSQL state database that is down (connection refused): `status` says the
    state database cannot be read, exit 69, as `hold list` and `plan` do; no traceback."""
    url = f"sqlite:///{tmp_path}/app.sqlite"
    _logs(url)
    config_file = tmp_path / "retention.toml"
    refused = "postgresql+psycopg://retention@127.0.0.1:1/state?connect_timeout=3"
    config_file.write_text(config_text(url, RULE, state_url=refused))

    results = _read_only_commands(config_file)
    for name, result in results.items():
        assert result.exit_code == 69, f"{name}: {result.output}{result.exception!r}"
        assert "Traceback" not in result.output, name
    for name in ("status", "status json"):
        assert results[name].output.startswith("error: the state database cannot be read ("), name
        assert "Connection refused" in results[name].output, name
    assert results["hold list"].output.startswith("error: cannot read legal holds: ")


def test_commands_by_a_user_who_may_not_enter_the_state_folder_exit_69_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's state folder is 0700 (StateDirectoryMode=): an admin's own account, or a
    monitoring agent, may not look inside. `status`, `hold list` and `plan` say so, naming the
    file, and exit 69 (`plan` plans nothing: the holds cannot be read); so does `run` (the
    service's own, given a folder left to root), deleting nothing; no traceback."""
    url, state_path, config_file = _logs_and_state(tmp_path, RULE)
    real_stat = Path.stat

    def denied(path: Path, *arguments: object, **options: object) -> object:
        # What the system says of a file in a folder this user may not enter (root may).
        if path == state_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *arguments, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", denied)
    results = _read_only_commands(config_file)
    from click.testing import CliRunner

    from retention.cli import main

    # The service itself, given a state folder it may not enter (left to root): 69, as the
    # daemon's `daemon.cannot_start`, and nothing deleted.
    results["run"] = CliRunner().invoke(main, ["--config", str(config_file), "run", "--yes"])
    monkeypatch.undo()
    for name, result in results.items():
        assert result.exit_code == 69, f"{name}: {result.output}{result.exception!r}"
        assert "Traceback" not in result.output, name
        assert f"Permission denied: {state_path}" in result.output, name
    for name in ("status", "status json"):
        assert results[name].output.startswith("error: the state database cannot be read ("), name
    for name in ("hold list", "plan"):
        assert results[name].output.startswith("error: cannot read legal holds: "), name
    assert results["run"].output.startswith(
        "error: the state database cannot be read (opening its file): "
    )
    engine = create_tables(url, MetaData())
    assert len(remaining_ids(engine, "logs")) == 25
    engine.dispose()
