"""Safety rails: legal holds, brakes against mass deletion, future clocks, saved plans."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, event, insert

import retention.app.hold_records as hold_records
import retention.app.holds as holds_module
from retention.app import make_plan, run_plan
from retention.app.holds import lift_hold, place_hold
from retention.audit.entries import read_entries
from retention.audit.entry_checks import load_verification_keys
from retention.audit.verify import verify_trail
from retention.cli import main
from retention.config import Config
from retention.config.model import StateSettings
from retention.errors import (
    AuditFailure,
    ConfigError,
    ExitCode,
    LockHeld,
    StoreUnavailable,
    UsageError,
)
from retention.runtime.secrets import state_url
from retention.state import StateDatabase
from retention.state_holds import list_holds
from retention.stores import open_stores
from tests.support import (
    copy_shipped_config,
    create_tables,
    logs_rule,
    make_config,
    plan,
    plan_and_run,
    remaining_ids,
)

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 12, 5, tzinfo=UTC)
ROOT = Path(__file__).parent.parent

RULE = logs_rule(extra="batch_size = 5")


def _logs(url: str, due: int = 20, fresh: int = 5, future: int = 0) -> Any:
    metadata = MetaData()
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime, index=True),
        Column("customer", String(20)),
    )
    engine = create_tables(url, metadata)
    rows = [
        {"id": key, "logged_at": datetime(2020, 1, 1), "customer": f"c{key % 3}"}
        for key in range(1, due + 1)
    ]
    rows += [
        {"id": due + key, "logged_at": datetime(2026, 11, 1), "customer": "c0"}
        for key in range(1, fresh + 1)
    ]
    rows += [
        {"id": due + fresh + key, "logged_at": datetime(2027, 6, 1), "customer": "c0"}
        for key in range(1, future + 1)
    ]
    with engine.begin() as connection:
        connection.execute(insert(logs), rows)
    return engine


def _hold(config: Config, **target: Any) -> int:
    return place_hold(
        config,
        rule_name="logs",
        keys=target.get("keys", ()),
        where=target.get("where"),
        prefix=target.get("prefix"),
        reason="case 2026-0042",
        until=target.get("until"),
        now=NOW,
        by="legal@test",
    ).id


def test_a_hold_by_key_keeps_those_records_and_is_counted(database_url: str) -> None:
    engine = _logs(database_url)
    config = make_config(database_url, RULE)
    _hold(config, keys=("3", "7", "22"))  # 22 is not due anyway

    the_plan, report = plan_and_run(config, AS_OF)

    assert (the_plan.rules[0].due, the_plan.rules[0].held) == (18, 2)
    assert report.outcomes[0].deleted == 18
    assert report.outcomes[0].held == 2
    assert remaining_ids(engine, "logs") == {3, 7} | set(range(21, 26))


def test_a_hold_by_condition_keeps_matching_records(database_url: str) -> None:
    engine = _logs(database_url)
    config = make_config(database_url, RULE)
    _hold(config, where="customer = 'c1'")

    the_plan, _ = plan_and_run(config, AS_OF)

    held = {key for key in range(1, 21) if key % 3 == 1}
    assert the_plan.rules[0].held == len(held)
    assert remaining_ids(engine, "logs") == held | set(range(21, 26))


def test_released_holds_and_expired_holds(database_url: str) -> None:
    engine = _logs(database_url)
    config = make_config(database_url, RULE)
    released = _hold(config, keys=("1",))
    _hold(config, keys=("2",), until=NOW - timedelta(days=1))  # already over
    _hold(config, keys=("3",), until=AS_OF + timedelta(days=30))  # still in force

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        # Released after planning: its records stay for this run, and go on the next one.
        lift_hold(config, released, reason="case closed", now=NOW, by="legal@test")
        run_plan(config, the_plan, store_for, dry_run=False)
    assert remaining_ids(engine, "logs") & {1, 2, 3} == {1, 3}

    plan_and_run(config, AS_OF)
    assert remaining_ids(engine, "logs") & {1, 2, 3} == {3}
    with pytest.raises(UsageError, match="already released"):
        lift_hold(config, released, reason="again", now=NOW, by="legal@test")


def test_a_hold_placed_during_a_run_protects_at_once(sqlite_url: str) -> None:
    engine = _logs(sqlite_url)
    config = make_config(sqlite_url, RULE)
    placed: list[int] = []

    def hold_after_first_batch(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM logs") and not placed:
            placed.append(_hold(config, keys=("19", "20")))

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        event.listen(store_for("db").engine, "before_cursor_execute", hold_after_first_batch)  # type: ignore[attr-defined]
        report = run_plan(config, the_plan, store_for, dry_run=False)
    assert placed
    assert report.outcomes[0].deleted == 18
    assert remaining_ids(engine, "logs") == {19, 20} | set(range(21, 26))


def test_hold_changes_are_in_the_audit_trail_without_the_keys(
    sqlite_url: str, tmp_path: Path
) -> None:
    _logs(sqlite_url)
    audit = tmp_path / "audit"
    config = make_config(sqlite_url, RULE, audit_directory=audit)
    hold_id = _hold(config, keys=("13",))
    lift_hold(config, hold_id, reason="released by court order 7", now=NOW, by="legal@test")
    entries = [stored.content for stored in read_entries(audit)]
    added, released = entries
    assert added["type"] == "hold.added"
    assert (added["hold_id"], added["rule"], added["reason"]) == (hold_id, "logs", "case 2026-0042")
    assert added["target_count"] == 1
    assert len(added["target_digest"]) == 64
    assert released["type"] == "hold.released"
    assert released["reason"] == "released by court order 7"
    raw = b"".join(path.read_bytes() for path in (audit / "trail").iterdir())
    assert b'"13"' not in raw


def _trail_that_fails_to_append(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trail opens (keys, lock) but its next append fails, as on a full disk."""
    real_open_trail = holds_module.open_trail

    @contextmanager
    def failing_open_trail(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with real_open_trail(*args, **kwargs) as writer:

            def append(*_: Any, **__: Any) -> int:
                raise AuditFailure("cannot write the trail: No space left on device")

            monkeypatch.setattr(writer, "append", append)
            yield writer

    monkeypatch.setattr(holds_module, "open_trail", failing_open_trail)


def test_a_hold_the_trail_cannot_record_is_not_placed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _logs(sqlite_url)
    config = make_config(sqlite_url, RULE, audit_directory=tmp_path / "audit")
    _trail_that_fails_to_append(monkeypatch)
    with pytest.raises(AuditFailure):
        _hold(config, keys=("13",))
    state = StateDatabase(state_url(config.state))
    try:
        assert list_holds(state) == []
    finally:
        state.close()


def test_a_release_the_trail_cannot_record_keeps_the_hold_in_force(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _logs(sqlite_url)
    audit = tmp_path / "audit"
    config = make_config(sqlite_url, RULE, audit_directory=audit)
    hold_id = _hold(config, keys=("13",))
    _trail_that_fails_to_append(monkeypatch)
    with pytest.raises(AuditFailure):
        lift_hold(config, hold_id, reason="closed", now=NOW, by="legal@test")
    state = StateDatabase(state_url(config.state))
    try:
        (hold,) = list_holds(state)
    finally:
        state.close()
    assert hold.id == hold_id
    assert hold.released_at is None
    assert [stored.content["type"] for stored in read_entries(audit)] == ["hold.added"]
    plan_and_run(config, AS_OF)
    assert 13 in remaining_ids(engine, "logs")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({}, "exactly one of"),
        ({"keys": ("1",), "where": "id = 1"}, "exactly one of"),
        ({"keys": ("1/2",)}, "key of 1 column"),
        ({"prefix": "customers/"}, "object stores"),
        ({"where": "colour = 'red'"}, "no column 'colour'"),
        ({"where": "id LIKE 1"}, "expected `column OPERATOR value`"),
    ],
)
def test_bad_holds_are_refused(sqlite_url: str, target: dict[str, Any], message: str) -> None:
    _logs(sqlite_url)
    config = make_config(sqlite_url, RULE)
    with pytest.raises((UsageError, ValueError), match=message):
        _hold(config, **target)


def test_a_brake_stops_one_rule_and_the_others_proceed(database_url: str) -> None:
    engine = _logs(database_url)
    second = RULE.replace('name = "logs"', 'name = "logs-capped"') + "max_delete = 10\n"
    config = make_config(
        database_url,
        RULE.replace('clock = "logged_at"', 'clock = "logged_at"\nwhere = ["customer = \'c1\'"]')
        + second,
    )
    # Rules run in order: the first purges customer c1, the second would purge 13 > 10.
    _, report = plan_and_run(config, AS_OF)
    by_rule = {outcome.rule: outcome for outcome in report.outcomes}
    assert by_rule["logs"].status == "ok"
    assert by_rule["logs-capped"].status == "braked"
    assert "max_delete = 10" in (by_rule["logs-capped"].error or "")
    assert report.exit_code == ExitCode.PARTIAL_FAILURE
    assert len(remaining_ids(engine, "logs")) == 25 - 7


def test_the_default_fraction_brake_and_lifting_it_for_one_run(sqlite_url: str) -> None:
    engine = _logs(sqlite_url)
    config = make_config(sqlite_url, RULE, max_fraction=0.5)
    the_plan, report = plan_and_run(config, AS_OF)
    assert the_plan.rules[0].brake == "20 due of 25 in scope (80%) is more than max_fraction = 0.5"
    assert report.outcomes[0].status == "braked"
    assert len(remaining_ids(engine, "logs")) == 25

    with open_stores(config, read_only=False) as store_for:
        lifted = make_plan(config, config.rules, store_for, AS_OF)
        report = run_plan(
            config, lifted, store_for, dry_run=False, allow_over_limit=frozenset({"logs"})
        )
    assert report.outcomes[0].status == "ok"
    assert remaining_ids(engine, "logs") == set(range(21, 26))


def test_delete_everything_needs_saying_so() -> None:
    rule = RULE.replace('period = "1y"', 'period = "0d"')
    with pytest.raises(ConfigError) as refused:
        make_config("sqlite:///x", rule)
    assert [issue.path for issue in refused.value.issues] == ["rules[0]"]
    assert "match_all = true" in refused.value.issues[0].message
    assert make_config("sqlite:///x", rule + "match_all = true\n").rules[0].match_all
    assert make_config("sqlite:///x", rule.replace("action", 'where = ["id > 0"]\naction'))


def test_a_clock_in_the_future_is_never_due_and_is_reported(database_url: str) -> None:
    engine = _logs(database_url, future=3)
    config = make_config(
        database_url, RULE.replace('period = "1y"', 'period = "0d"') + "match_all = true\n"
    )
    the_plan, _ = plan_and_run(config, AS_OF)
    assert the_plan.rules[0].future == 3
    assert remaining_ids(engine, "logs") == {26, 27, 28}


def _trail_held_by_a_run(audit: Path) -> Any:
    """Hold the trail's writer lock as a run does (its lock file made by an earlier writer)."""

    @contextmanager
    def held() -> Iterator[None]:
        running = os.open(audit / "lock", os.O_RDWR)
        try:
            fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        finally:
            os.close(running)

    return held()


def _holds_of(config: Config) -> list[Any]:
    state = StateDatabase(state_url(config.state))
    try:
        return list_holds(state)
    finally:
        state.close()


def test_a_hold_while_a_run_writes_the_trail_is_in_force_and_recorded_by_the_next_writer(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A run holds the trail's writer lock for its whole length: a hold placed then goes in at
    once, in force and not yet recorded; its release then is refused (exit 75, in force); the
    trail's next writer records it first, once, with when it was placed."""
    _logs(sqlite_url)
    audit = tmp_path / "audit"
    config = make_config(sqlite_url, RULE, audit_directory=audit)
    first = _hold(config, keys=("13",))  # makes the trail and its lock
    with _trail_held_by_a_run(audit):
        placed = place_hold(
            config,
            rule_name="logs",
            keys=("14",),
            where=None,
            prefix=None,
            reason="case 2026-0043",
            until=None,
            now=NOW,
            by="legal@test",
        )
        assert not placed.recorded
        assert "another process is writing the audit trail" in (placed.placed_while or "")
        with pytest.raises(LockHeld) as caught:
            lift_hold(config, placed.id, reason="closed", now=NOW, by="legal@test")
        assert caught.value.exit_code == ExitCode.LOCK_HELD
        assert "stays in force" in str(caught.value)
        assert "systemctl stop retention" in str(caught.value)
    assert [(hold.id, hold.recorded, hold.released_at) for hold in _holds_of(config)] == [
        (first, True, None),
        (placed.id, False, None),
    ]
    assert [entry.content["hold_id"] for entry in read_entries(audit)] == [first]
    # Not recorded, in force all the same: planned as held.
    assert plan(config, AS_OF).rules[0].held == 2

    later = _hold(config, keys=("15",))
    entries = [stored.content for stored in read_entries(audit)]
    assert [(entry["type"], entry["hold_id"]) for entry in entries] == [
        ("hold.added", first),
        ("hold.added", placed.id),
        ("hold.added", later),
    ]
    recorded = entries[1]
    assert recorded["placed_at"] == NOW.isoformat()
    assert recorded["reason"] == "case 2026-0043"
    assert recorded["recorded_by"].count("@") == 1
    assert "placed_at" not in entries[2]
    assert all(hold.recorded for hold in _holds_of(config))
    assert verify_trail(audit, load_verification_keys(audit / "public-keys.json")).valid


def test_a_hold_recorded_but_not_marked_so_is_not_recorded_twice(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that appended a hold's entry and died before the state database heard of it:
    the next writer finds the entry at the seq noted and only marks the hold recorded."""
    _logs(sqlite_url)
    audit = tmp_path / "audit"
    config = make_config(sqlite_url, RULE, audit_directory=audit)
    _hold(config, keys=("13",))
    with _trail_held_by_a_run(audit):
        pending = _hold(config, keys=("14",))
    real_mark_recorded = hold_records.mark_recorded

    def dies_before_marking(*_: Any) -> None:
        raise StoreUnavailable("the state database cannot be written: disk I/O error")

    monkeypatch.setattr(hold_records, "mark_recorded", dies_before_marking)
    with pytest.raises(StoreUnavailable):
        lift_hold(config, pending, reason="closed", now=NOW, by="legal@test")
    monkeypatch.setattr(hold_records, "mark_recorded", real_mark_recorded)
    assert [hold.recorded for hold in _holds_of(config)] == [True, False]

    lift_hold(config, pending, reason="closed", now=NOW, by="legal@test")
    entries = [
        (stored.content["type"], stored.content["hold_id"]) for stored in read_entries(audit)
    ]
    assert entries == [("hold.added", 1), ("hold.added", pending), ("hold.released", pending)]
    assert all(hold.recorded for hold in _holds_of(config))
    assert verify_trail(audit, load_verification_keys(audit / "public-keys.json")).valid


def test_a_state_database_made_before_unrecorded_holds_upgrades(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A state database with holds, made before the table of unrecorded holds: read as it is
    (every hold recorded), and given the table by the first writer."""
    engine = _logs(sqlite_url)
    state_file = tmp_path / "old-state.sqlite"
    with sqlite3.connect(state_file) as old:
        old.execute(
            "CREATE TABLE retention_holds (id INTEGER PRIMARY KEY, rule VARCHAR(100) NOT NULL, "
            "kind VARCHAR(10) NOT NULL, value JSON NOT NULL, reason TEXT NOT NULL, "
            "created_at DATETIME NOT NULL, created_by VARCHAR(255) NOT NULL, until DATETIME, "
            "released_at DATETIME, released_by VARCHAR(255), release_reason TEXT)"
        )
        old.execute(
            "INSERT INTO retention_holds (rule, kind, value, reason, created_at, created_by) "
            "VALUES ('logs', 'key', '{\"keys\": [[\"3\"]]}', 'case 1', "
            "'2026-11-01 00:00:00', 'legal@old')"
        )
    old.close()
    url = f"sqlite:///{state_file}"
    read_only = StateDatabase(url, read_only=True)
    try:
        assert [(hold.id, hold.recorded) for hold in list_holds(read_only)] == [(1, True)]
    finally:
        read_only.close()
    config = replace(
        make_config(sqlite_url, RULE, audit_directory=tmp_path / "audit"),
        state=StateSettings(url=url),
    )
    _hold(config, keys=("4",))
    assert [(hold.id, hold.recorded) for hold in _holds_of(config)] == [(1, True), (2, True)]
    plan_and_run(config, AS_OF)
    assert {3, 4} <= remaining_ids(engine, "logs")
    assert 5 not in remaining_ids(engine, "logs")


# --- saved plans, through the command line ------------------------------------------------


def _cli(*arguments: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", *arguments], input=stdin)


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str) -> Path:
    copy_shipped_config(tmp_path, s3_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    # The test S3 server is moto in this process, not one scripts/demo-s3 started.
    created = _cli("demo", "--s3-endpoint-is-mine", "--as-of", "2026-11-23T12:00:00+00:00")
    assert created.exit_code == 0, created.output
    return tmp_path


def _due(rule: str, as_of: str = "2026-11-23T12:00:00+00:00") -> int:
    result = _cli("plan", "--rule", rule, "--as-of", as_of, "--output", "json")
    return int(json.loads(result.stdout)["rules"][0]["due"])


def test_a_saved_plan_runs_exactly_its_rules_at_its_instant(demo_dir: Path) -> None:
    saved = demo_dir / "plan.json"
    made = _cli(
        "plan", "--rule", "partners", "--as-of", "2026-01-01T00:00:00+00:00", "--save", str(saved)
    )
    assert made.exit_code == 0, made.output
    planned = json.loads(saved.read_text())["rules"][0]["due"]
    ran = _cli("run", "--yes", "--plan-file", str(saved))
    assert ran.exit_code == 0, ran.output
    assert f"{planned}" in ran.stdout
    assert _due("partners", "2026-01-01T00:00:00+00:00") == 0
    assert _due("partners") > 0  # what became due after the plan's instant is still there
    assert _due("prospects") > 0  # and other rules were not touched


def test_a_saved_plan_is_refused_when_the_data_moved(demo_dir: Path) -> None:
    saved = demo_dir / "plan.json"
    assert _cli("plan", "--rule", "partners", "--save", str(saved)).exit_code == 0
    assert (
        _cli("run", "--yes", "--rule", "partners", "--allow-over-limit", "partners").exit_code == 0
    )
    refused = _cli("run", "--yes", "--plan-file", str(saved))
    assert refused.exit_code == ExitCode.USAGE
    assert "the data moved since plan" in refused.stderr
    assert "partners: 0 due now" in refused.stderr


def test_a_saved_plan_tolerates_a_stated_drift(demo_dir: Path) -> None:
    saved = demo_dir / "plan.json"
    assert _cli("plan", "--rule", "partners", "--save", str(saved)).exit_code == 0
    with sqlite3.connect(demo_dir / "var" / "demo.sqlite") as connection:
        due_ids = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM partners WHERE collected_at < '2022-01-01' "
                "AND (last_contact_at IS NULL OR last_contact_at < '2022-01-01') LIMIT 1"
            )
        ]
        connection.execute(
            "UPDATE partners SET last_contact_at = '2026-11-01' WHERE id = ?", due_ids
        )
    assert _cli("run", "--yes", "--plan-file", str(saved)).exit_code == ExitCode.USAGE
    allowed = _cli("run", "--yes", "--plan-file", str(saved), "--tolerance", "10")
    assert allowed.exit_code == 0, allowed.output


def test_a_saved_plan_is_refused_after_a_config_change(demo_dir: Path) -> None:
    saved = demo_dir / "plan.json"
    assert _cli("plan", "--save", str(saved)).exit_code == 0
    config = demo_dir / "config" / "retention.toml"
    config.write_text(config.read_text().replace('period = "3y"', 'period = "2y"', 1))
    refused = _cli("run", "--yes", "--plan-file", str(saved))
    assert refused.exit_code == ExitCode.USAGE
    assert "the config changed since plan" in refused.stderr
    assert _due("partners") > 0


def test_hold_commands(demo_dir: Path) -> None:
    added = _cli(
        "hold", "add", "--rule", "partners", "--where", "company = 'nobody'", "--reason", "case 7"
    )
    assert added.exit_code == 0, added.output
    assert "hold 1 on rule partners" in added.stdout
    listed = _cli("hold", "list")
    assert "in force" in listed.stdout
    assert "case 7" in listed.stdout
    no_reason = _cli("hold", "add", "--rule", "partners", "--key", "1", "--reason", " ")
    assert no_reason.exit_code == ExitCode.USAGE
    for personal in ("asked by jane.doe@example.com", "the host 192.0.2.17"):
        refused = _cli("hold", "add", "--rule", "partners", "--key", "1", "--reason", personal)
        assert refused.exit_code == ExitCode.USAGE
        assert "case or ticket reference" in refused.stderr
    assert "hold 2" not in _cli("hold", "list").stdout
    released = _cli("hold", "release", "1", "--reason", "closed")
    assert released.exit_code == 0
    assert "no holds in force" in _cli("hold", "list").stdout
    assert "released" in _cli("hold", "list", "--all").stdout
    unknown = _cli("hold", "release", "99", "--reason", "x")
    assert unknown.exit_code == ExitCode.USAGE
    assert "no hold 99" in unknown.stderr


def test_hold_on_the_demo_is_respected_end_to_end(demo_dir: Path) -> None:
    with sqlite3.connect(demo_dir / "var" / "demo.sqlite") as connection:
        due = _due("job-applicants")
        first = connection.execute(
            "SELECT id FROM job_applicants WHERE hired = 0 ORDER BY applied_at LIMIT 1"
        ).fetchone()[0]
    assert (
        _cli(
            "hold", "add", "--rule", "job-applicants", "--key", str(first), "--reason", "x"
        ).exit_code
        == 0
    )
    assert _due("job-applicants") == due - 1
    assert _cli("run", "--yes", "--rule", "job-applicants").exit_code == 0
    with sqlite3.connect(demo_dir / "var" / "demo.sqlite") as connection:
        assert (
            connection.execute(
                "SELECT COUNT(*) FROM job_applicants WHERE id = ?", (first,)
            ).fetchone()[0]
            == 1
        )


def test_the_daemons_idle_heartbeat_records_a_hold_left_unrecorded(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A hold placed while a run held the trail, which that run never recorded (killed): the
    daemon's next idle heartbeat records it before its checkpoint."""
    from zoneinfo import ZoneInfo

    from retention.daemon import Daemon, heartbeat
    from retention.scheduler import new_scheduler

    _logs(sqlite_url)
    audit = tmp_path / "audit"
    config = make_config(sqlite_url, RULE, audit_directory=audit)
    _hold(config, keys=("13",))
    with _trail_held_by_a_run(audit):
        pending = _hold(config, keys=("14",))
    state = StateDatabase(state_url(config.state))
    try:
        heartbeat(
            Daemon(tmp_path / "retention.toml", config, state, new_scheduler(ZoneInfo("UTC")))
        )
    finally:
        state.close()
    entries = [stored.content for stored in read_entries(audit)]
    assert [(entry["type"], entry.get("hold_id")) for entry in entries] == [
        ("hold.added", 1),
        ("hold.added", pending),
        ("checkpoint", None),
    ]
    assert all(hold.recorded for hold in _holds_of(config))
    assert verify_trail(audit, load_verification_keys(audit / "public-keys.json")).valid
