"""`retention status` says a run is in progress only when it can tell: a `retention run` killed
with SIGKILL leaves its ledger row 'running' and its lease in force, and status shows its holder
gone (its pid no longer exists here), not running; an expired lease is shown expired, with when
and who held it; another host's lease in force is not checked from here; a pid that another
process has now is told from the holder by its start time. Status opens the state database
read-only: it changes nothing. Real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
from click.testing import CliRunner

from retention.cli import main
from retention.documents import schema
from retention.runtime.holders import HolderProcess, holder_process, lease_holder_name
from retention.state import StateDatabase
from tests.test_interrupted_run import _entries, _setup, _start


def status(config: Path) -> tuple[dict[str, Any], str]:
    """The status document and table of the config's only rule (and check the document's
    schema)."""
    documents = []
    for options in (["--output", "json"], ["--wide"]):
        result = CliRunner().invoke(main, ["--config", str(config), "status", *options])
        assert result.exit_code == 0, result.output
        documents.append(result.stdout)
    document = json.loads(documents[0])
    jsonschema.Draft202012Validator(schema("status")).validate(document)
    (rule,) = document["rules"]
    (row,) = [line for line in documents[1].splitlines() if line.startswith("logs ")]
    return rule, row


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_killed_run_shows_its_holder_gone_then_the_next_run_marks_it_interrupted(
    tmp_path: Path, sqlite_url: str
) -> None:
    config, audit, state_url = _setup(tmp_path, sqlite_url)
    process = _start(config, "run")
    deadline = time.monotonic() + 60
    while sum(entry.get("type") == "batch.result" for entry in _entries(audit)) < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    state_file = tmp_path / "state.sqlite"
    before = digest(state_file)
    rule, row = status(config)
    assert digest(state_file) == before, "status wrote to the state database"
    assert rule["last_run"]["outcome"] == "running"  # as the ledger has it
    assert rule["running_on"] is None
    lease = rule["lease"]
    assert lease["state"] == "holder_gone"
    assert lease["holder"].split(":")[1] == str(process.pid)
    assert lease["detail"] == f"pid {process.pid} no longer exists on this host"
    assert datetime.fromisoformat(lease["expires_at"]) > datetime.now(UTC)
    assert " running " not in f"{row} "
    assert "running on" not in row
    assert " unknown " in row
    assert f"holder gone: {lease['holder']} (pid {process.pid} no longer exists" in row
    assert "the next run takes over and marks the run interrupted" in row

    # It does: at once, without waiting for the lease to expire.
    finished = subprocess.run(
        [sys.executable, "-m", "retention", "--config", str(config), "run", "--yes"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    state = StateDatabase(state_url, read_only=True)
    try:
        assert [run.status for run in state.last_runs("logs", 2)] == ["ok", "interrupted"]
    finally:
        state.close()
    rule, row = status(config)
    assert (rule["last_run"]["outcome"], rule["lease"], rule["running_on"]) == ("ok", None, None)
    assert " ok " in row


def _write_lease(state_url: str, holder: str, taken: datetime, ttl: timedelta) -> None:
    state = StateDatabase(state_url)
    try:
        assert state.acquire_lease("rule:logs", holder, taken, ttl)
        state.record_run_start("r1", "logs", taken, "db9")
    finally:
        state.close()


def test_an_expired_lease_is_shown_expired_with_when_and_who(
    tmp_path: Path, sqlite_url: str
) -> None:
    config, _audit, state_url = _setup(tmp_path, sqlite_url)
    holder = "db9/0badc0de:4242:a1b2c3:s123"
    taken = datetime.now(UTC) - timedelta(minutes=10)
    _write_lease(state_url, holder, taken, timedelta(minutes=2))
    rule, row = status(config)
    assert rule["running_on"] is None
    assert rule["lease"] == {
        "holder": holder,
        "expires_at": (taken + timedelta(minutes=2)).isoformat(),
        "state": "expired",
        "detail": "another host: its process is not checked from here",
    }
    expired = (taken + timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S")  # the config's UTC
    assert f"lease expired {expired}, held by {holder}; the next run takes over" in row
    assert " unknown " in row
    assert "running on" not in row


def test_another_hosts_lease_in_force_is_not_checked_and_said_so(
    tmp_path: Path, sqlite_url: str
) -> None:
    config, _audit, state_url = _setup(tmp_path, sqlite_url)
    holder = "db9/0badc0de:4242:a1b2c3:s123"
    taken = datetime.now(UTC)
    _write_lease(state_url, holder, taken, timedelta(minutes=2))
    rule, row = status(config)
    assert (rule["running_on"], rule["lease"]["state"]) == (holder, "held")
    assert rule["last_run"]["outcome"] == "running"
    until = (taken + timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S")
    assert f"running on {holder}? (another host: its process is not checked from here; " in row
    assert f"lease until {until})" in row


def test_a_holder_of_this_host_alive_is_running_and_a_reused_pid_is_not(
    tmp_path: Path, sqlite_url: str
) -> None:
    config, _audit, state_url = _setup(tmp_path, sqlite_url)
    # A live process of this host names itself as a holder, as `retention run` does.
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from retention.runtime.holders import lease_holder_name; "
            "print(lease_holder_name(), flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        holder = process.stdout.readline().strip()
        machine, pid, _tag, start = holder.split(":")
        assert (pid, start[0]) == (str(process.pid), "s")
        assert holder_process(holder) is HolderProcess.ALIVE
        _write_lease(state_url, holder, datetime.now(UTC), timedelta(minutes=2))
        rule, row = status(config)
        assert (rule["running_on"], rule["lease"]["state"]) == (holder, "running")
        assert rule["lease"]["detail"] is None
        assert f"running on {holder}" in row
        assert " running " in row

        # The same pid with another start time: another process was given the holder's pid.
        reused = f"{machine}:{pid}:d4e5f6:s{int(start[1:]) - 1}"
        assert holder_process(reused) is HolderProcess.REUSED
        # Without a start time (a holder named by an older version), the pid exists: no more.
        assert holder_process(f"{machine}:{pid}:d4e5f6") is HolderProcess.PID_EXISTS
        state = StateDatabase(state_url)
        try:
            state.release_lease("rule:logs", holder)
            assert state.acquire_lease("rule:logs", reused, datetime.now(UTC), timedelta(hours=1))
            rule, row = status(config)
            assert (rule["running_on"], rule["lease"]["state"]) == (None, "holder_gone")
            assert rule["lease"]["detail"] == (
                f"pid {pid} is another process now, started after the holder"
            )
            assert f"holder gone: {reused} (pid {pid} is another process now" in row
            # Taken over at once, as a holder whose pid no longer exists is.
            assert state.acquire_lease("rule:logs", "restarted", datetime.now(UTC), timedelta(1))
        finally:
            state.close()
    finally:
        process.kill()
        process.wait(10)


def test_this_process_names_itself_with_its_start_time() -> None:
    machine, pid, tag, start = lease_holder_name().split(":")
    assert (pid, len(tag), start[0]) == (str(os.getpid()), 6, "s")
    assert start[1:].isdigit()
    assert holder_process(f"{machine}:{pid}:{tag}:{start}") is HolderProcess.ALIVE


def test_a_forged_holder_name_is_not_checked_and_does_not_crash() -> None:
    """A holder is a string in a shared database: pid 0 (this process group) or one past any
    pid this system can have is not looked for, nor is a name without a pid."""
    machine = lease_holder_name().split(":")[0]
    for forged in (f"{machine}:0:a", f"{machine}:{'9' * 30}:a", f"{machine}::", "x", ":"):
        assert holder_process(forged) is HolderProcess.ELSEWHERE, forged
