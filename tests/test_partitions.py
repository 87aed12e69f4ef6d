"""Whole expired partitions of partitioned PostgreSQL and MariaDB tables go whole (issue 15):
dropped, not deleted row by row; audited like rows; only when every row in them is due."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from structlog.testing import capture_logs

from retention.app import make_plan
from retention.app.holds import place_hold
from retention.audit.entries import read_entries, read_leaves
from retention.audit.keys import load_public_keys
from retention.audit.leaves import record_leaf
from retention.audit.prove import prove_record
from retention.audit.verify import verify_trail
from retention.errors import ConfigError
from retention.executor import execute
from retention.render import render_plan
from retention.stores import open_stores, partitions
from retention.stores.partition_catalog import read_partitioning
from tests.support import config_text, make_config, plan, plan_and_run

AS_OF = datetime(2025, 4, 15, tzinfo=UTC)  # a 1-year rule: due up to 2024-04-15 00:00
MONTHS = ["2024_01", "2024_02", "2024_03", "2024_04", "2024_05"]
# id -> logged_at: ten rows in each of January to March (expired whole), April split at the
# cutoff, May not due, and five rows from 2023 (PostgreSQL: the default partition; MariaDB:
# the first partition, which takes everything below its bound).
ROWS = (
    {i: datetime(2024, 1, 5) for i in range(1, 11)}
    | {i: datetime(2024, 2, 10) for i in range(11, 21)}
    | {i: datetime(2024, 3, 15) for i in range(21, 31)}
    | {i: datetime(2024, 4, 5) for i in range(31, 36)}
    | {i: datetime(2024, 4, 20) for i in range(36, 41)}
    | {i: datetime(2024, 5, 10) for i in range(41, 51)}
    | {i: datetime(2023, 6, 1) for i in range(51, 56)}
)
DUE = set(range(1, 36)) | set(range(51, 56))
KEPT = set(ROWS) - DUE

RULE = """
[[rules]]
name = "events"
store = "db"
table = "events"
key = ["id", "logged_at"]
clock = "logged_at"
period = "1y"
action = "delete"
batch_size = 4
"""
# A table whose rows replies reference (NO ACTION) can only be purged of the rows no reply
# references: the rule says so, or every config check refuses it (tests/test_foreign_keys.py).
REPLIED_RULE = RULE + (
    'where_sql = "NOT EXISTS (SELECT 1 FROM replies '
    'WHERE replies.event_id = events.id AND replies.event_at = events.logged_at)"\n'
)


def _bounds(month: str) -> tuple[str, str]:
    year, number = (int(part) for part in month.split("_"))
    following = f"{year + number // 12}-{number % 12 + 1:02d}-01"
    return f"{year}-{number:02d}-01", following


def create_events(url: str, *, with_default: bool = True) -> None:
    """A table ``events`` partitioned by month on ``logged_at`` (naive timestamps), holding
    ROWS: PostgreSQL declarative partitions (and a default one), MariaDB RANGE COLUMNS (and a
    MAXVALUE one)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE TABLE events (id integer NOT NULL, logged_at timestamp NOT NULL, "
                    "note text, PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (logged_at)"
                )
            )
            for month in MONTHS:
                lower, upper = _bounds(month)
                connection.execute(
                    text(
                        f"CREATE TABLE events_{month} PARTITION OF events "
                        f"FOR VALUES FROM ('{lower}') TO ('{upper}')"
                    )
                )
            if with_default:
                connection.execute(text("CREATE TABLE events_default PARTITION OF events DEFAULT"))
        else:
            parts = ", ".join(
                f"PARTITION events_{month} VALUES LESS THAN ('{_bounds(month)[1]}')"
                for month in MONTHS
            )
            connection.execute(
                text(
                    "CREATE TABLE events (id integer NOT NULL, logged_at datetime NOT NULL, "
                    "note text, PRIMARY KEY (id, logged_at)) "
                    f"PARTITION BY RANGE COLUMNS (logged_at) ({parts}, "
                    "PARTITION events_max VALUES LESS THAN (MAXVALUE))"
                )
            )
        connection.execute(
            text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": at} for key, at in ROWS.items()],
        )
    engine.dispose()


@pytest.fixture(params=["postgres", "mariadb"])
def partitioned_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    create_events(url)
    return url


def _partitions(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            partitioning = read_partitioning(connection, "events")
    finally:
        engine.dispose()
    assert partitioning is not None
    return {partition.name for partition in partitioning.partitions}


def _remaining(url: str) -> set[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT id FROM events"))}
    finally:
        engine.dispose()


def _whole(url: str) -> dict[str, int]:
    first = 15 if "mysql" in url or "mariadb" in url else 10  # MariaDB: 2023's rows too
    return {"events_2024_01": first, "events_2024_02": 10, "events_2024_03": 10}


def test_plan_shows_the_partitions_due_whole_with_their_rows(partitioned_url: str) -> None:
    config = make_config(partitioned_url, RULE)
    rule_plan = plan(config, AS_OF).rules[0]
    assert rule_plan.error is None
    assert rule_plan.due == len(DUE)
    assert rule_plan.partitioned
    assert {p.name: p.rows for p in rule_plan.partitions} == _whole(partitioned_url)
    assert rule_plan.partition_notes == ()
    shown = render_plan(plan(config, AS_OF), "UTC")
    assert "3 partitions dropped whole" in shown
    assert "events_2024_03  10 rows" in shown


def test_a_run_drops_whole_partitions_and_batches_the_rest(
    partitioned_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys are recorded 4 at a time: a partition of 10 rows takes 3 intents, all before its drop.
    monkeypatch.setattr(partitions, "CHUNK", 4)
    audit = tmp_path / "audit"
    config = make_config(partitioned_url, RULE, audit_directory=audit)
    _, report = plan_and_run(config, AS_OF)
    outcome = report.outcomes[0]
    assert outcome.status == "ok", outcome.error
    assert outcome.deleted == len(DUE)
    assert _remaining(partitioned_url) == KEPT
    left = _partitions(partitioned_url)
    assert not left & set(_whole(partitioned_url)), "the wholly expired partitions are gone"
    assert "events_2024_04" in left, "a partly expired partition stays, its due rows deleted"
    intents = [
        stored.content for stored in read_entries(audit) if stored.content["type"] == "batch.intent"
    ]
    dropped = [entry for entry in intents if entry["method"] == "sql-drop-partition"]
    selected: dict[str, list[int]] = {}
    for entry in dropped:
        selected.setdefault(entry["partition"], []).append(entry["selected"])
    assert {name: sorted(sizes) for name, sizes in selected.items()} == {
        name: sorted([4] * (rows // 4) + [rows % 4])
        for name, rows in _whole(partitioned_url).items()
    }
    _verified(audit)
    # Every record of a dropped partition is in the trail, and can be proven gone.
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    leaves = {leaf for entry in dropped for leaf in read_leaves(audit, entry["seq"])}
    assert record_leaf(key, "db", "events", (12, datetime(2024, 2, 10))) in leaves
    search = prove_record(audit, key, "db", "events", ("12", "2024-02-10 00:00:00"))
    assert search.proven
    assert search.proofs[0].rule == "events"


def test_a_held_row_keeps_its_partition_out_of_the_drop(
    partitioned_url: str, tmp_path: Path
) -> None:
    config = make_config(partitioned_url, RULE)
    place_hold(
        config,
        rule_name="events",
        keys=(),
        where="id = 15",
        prefix=None,
        reason="litigation",
        until=None,
        now=AS_OF,
        by="test",
    )
    rule_plan = plan(config, AS_OF).rules[0]
    assert "events_2024_02" not in {partition.name for partition in rule_plan.partitions}
    assert rule_plan.partition_notes == (
        "events_2024_02: 1 of 10 rows are not due, 1 of them held: row batches",
    )
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert _remaining(partitioned_url) == KEPT | {15}
    assert "events_2024_02" in _partitions(partitioned_url)
    assert "events_2024_03" not in _partitions(partitioned_url)


def test_the_rule_key_turns_it_off(partitioned_url: str) -> None:
    config = make_config(partitioned_url, RULE + "drop_partitions = false\n")
    rule_plan = plan(config, AS_OF).rules[0]
    assert rule_plan.partitions == ()
    assert rule_plan.partition_notes == ("row batches: drop_partitions = false",)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].deleted == len(DUE)
    assert _remaining(partitioned_url) == KEPT
    assert set(_whole(partitioned_url)) <= _partitions(partitioned_url), "nothing dropped"


def test_drop_partitions_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError) as raised:
        make_config("sqlite:///x", RULE + 'drop_partitions = "no"\n')
    assert [issue.path for issue in raised.value.issues] == ["rules[0].drop_partitions"]


def test_a_referenced_table_falls_back_to_row_batches(postgres_url: str) -> None:
    create_events(postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE replies (id integer PRIMARY KEY, event_id integer, "
                "event_at timestamp, FOREIGN KEY (event_id, event_at) "
                "REFERENCES events (id, logged_at))"
            )
        )
    engine.dispose()
    config = make_config(postgres_url, REPLIED_RULE)
    rule_plan = plan(config, AS_OF).rules[0]
    assert rule_plan.partitions == ()
    assert rule_plan.partition_notes == ("row batches: a foreign key references the table",)
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].deleted == len(DUE)
    assert set(_whole(postgres_url)) <= _partitions(postgres_url)


def test_a_postgresql_server_before_13_falls_back_to_row_batches(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop's check reads pg_current_snapshot(), which PostgreSQL 12 lacks: there, the rule
    goes by row batches, and plan says why, instead of failing at its first partition."""
    create_events(postgres_url)
    monkeypatch.setattr(PGDialect, "_get_server_version_info", lambda self, connection: (12, 17))
    config = make_config(postgres_url, RULE)
    rule_plan = plan(config, AS_OF).rules[0]
    assert rule_plan.partitions == ()
    assert rule_plan.partition_notes == (
        "row batches: PostgreSQL before 13 (no pg_current_snapshot())",
    )
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert report.outcomes[0].deleted == len(DUE)
    assert _remaining(postgres_url) == KEPT
    monkeypatch.undo()  # the helpers below read the partitions as PostgreSQL 15
    assert set(_whole(postgres_url)) <= _partitions(postgres_url), "nothing dropped"


def test_the_default_partition_is_never_dropped(postgres_url: str) -> None:
    create_events(postgres_url)
    config = make_config(postgres_url, RULE)
    rule_plan = plan(config, AS_OF).rules[0]
    assert "events_default" not in {partition.name for partition in rule_plan.partitions}
    plan_and_run(config, AS_OF)
    assert "events_default" in _partitions(postgres_url)
    assert not _remaining(postgres_url) & set(range(51, 56)), "its due rows went by batches"


def test_a_rule_partitioned_by_another_column_falls_back(postgres_url: str) -> None:
    create_events(postgres_url)
    config = make_config(postgres_url, RULE.replace('clock = "logged_at"', 'clock = "seen_at"'))
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE events ADD COLUMN seen_at timestamp"))
        connection.execute(text("UPDATE events SET seen_at = logged_at"))
    engine.dispose()
    rule_plan = plan(config, AS_OF).rules[0]
    assert rule_plan.partition_notes == ("row batches: partitioned by logged_at, not by the clock",)


def test_a_user_who_may_not_drop_partitions_gets_row_batches(
    postgres_url: str, postgres_readonly_url: Callable[[], str]
) -> None:
    create_events(postgres_url)
    readonly_url = postgres_readonly_url()
    rule_plan = plan(make_config(readonly_url, RULE), AS_OF).rules[0]
    assert rule_plan.error is None
    assert rule_plan.due == len(DUE)
    assert rule_plan.partitions == ()
    assert rule_plan.partition_notes == (
        "row batches: this database user may not drop its partitions (docs/operations.md)",
    )


# --- crash points around the detach and the drop ------------------------------------------------

CRASH_POINTS = ("after_intent", "after_detach", "after_drop", "after_commit", "before_result")


# `retention` as a version before partition identities: its partition intents name the
# partition only (the trail's entry and the pending file alike).
AS_BEFORE_IDENTITIES = (
    "from retention.audit import recorder\n"
    "recorder.SETTLED_BY = tuple(n for n in recorder.SETTLED_BY if n != 'partition_identity')\n"
    "from retention.cli import main\n"
    "main()\n"
)


def _run(
    config: Path, crash_at: str | None = None, *, before_identities: bool = False
) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.pop("RETENTION_CRASH_AT", None)
    if crash_at:
        environment["RETENTION_CRASH_AT"] = crash_at
    program = ["-c", AS_BEFORE_IDENTITIES] if before_identities else ["-m", "retention"]
    return subprocess.run(
        [
            sys.executable,
            *program,
            "--config",
            str(config),
            "run",
            "--yes",
            "--as-of",
            AS_OF.isoformat(),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=config.parent,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_crash_around_the_drop_loses_nothing_and_claims_nothing_false(
    partitioned_url: str, tmp_path: Path, crash_at: str
) -> None:
    audit = tmp_path / "audit"
    path = tmp_path / "retention.toml"
    path.write_text(config_text(partitioned_url, RULE, audit_directory=audit))
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()

    def leaves(ids: set[int]) -> set[bytes]:
        return {record_leaf(key, "db", "events", (i, ROWS[i])) for i in ids}

    crashed = _run(path, crash_at)
    mariadb = "mysql" in partitioned_url or "mariadb" in partitioned_url
    if crash_at == "after_detach" and mariadb:
        assert crashed.returncode == 0, "MariaDB drops a partition in one statement"
    else:
        assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    gone = set(ROWS) - _remaining(partitioned_url)
    assert set(_claimed(audit)) <= leaves(gone), "the trail never claims a row still there"

    finished = _run(path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _remaining(partitioned_url) == KEPT
    assert sorted(_claimed(audit)) == sorted(leaves(DUE)), "each deleted row, exactly once"
    assert not list((audit / "pending").iterdir())
    _verified(audit)


@pytest.mark.parametrize("since", ["re-created", "rebuilt"])
def test_a_partition_changed_under_its_name_after_a_crash_is_reconciled_by_its_identity(
    partitioned_url: str, tmp_path: Path, since: str
) -> None:
    """The first partition's drop is committed, then the process dies before its result; a
    partition of the same name is created before the next run (PostgreSQL: the same range;
    MariaDB: a new range, as names are reused by a rotation). The reconcile must still claim
    the dropped rows. Or the drop never happened (a crash before it) and the table or partition
    was rebuilt meanwhile (PostgreSQL: VACUUM FULL; MariaDB: ALTER TABLE ... FORCE, which gives
    InnoDB's partitions new table ids): the reconcile must claim nothing, and the next run drops
    it. Each deleted row is claimed exactly once."""
    audit = tmp_path / "audit"
    path = tmp_path / "retention.toml"
    path.write_text(config_text(partitioned_url, RULE, audit_directory=audit))
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    mariadb = "mysql" in partitioned_url or "mariadb" in partitioned_url

    crashed = _run(path, "after_commit" if since == "re-created" else "after_intent")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    if since == "rebuilt":
        assert "events_2024_01" in _partitions(partitioned_url)
        statement = "ALTER TABLE events FORCE" if mariadb else "VACUUM FULL events_2024_01"
    elif mariadb:
        assert "events_2024_01" not in _partitions(partitioned_url)
        statement = (
            "ALTER TABLE events REORGANIZE PARTITION events_max INTO ("
            "PARTITION events_2024_01 VALUES LESS THAN ('2031-01-01'), "
            "PARTITION events_max VALUES LESS THAN (MAXVALUE))"
        )
    else:
        assert "events_2024_01" not in _partitions(partitioned_url)
        statement = (
            "CREATE TABLE events_2024_01 PARTITION OF events "
            "FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')"
        )
    engine = create_engine(partitioned_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(statement))
    engine.dispose()

    finished = _run(path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _remaining(partitioned_url) == KEPT
    expected = {record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE}
    assert sorted(_claimed(audit)) == sorted(expected), "each deleted row, exactly once"
    assert not list((audit / "pending").iterdir())
    _verified(audit)


@pytest.mark.parametrize("crash_at", ["after_intent", "after_detach", "after_commit"])
def test_a_partition_intent_without_its_identity_is_reconciled_by_its_name_as_before(
    partitioned_url: str, tmp_path: Path, crash_at: str
) -> None:
    """An older version's partition intent names the partition only (in its chained entry,
    which settles it): the reconcile then asks whether a partition of that name is there
    (PostgreSQL: a table of that name, detached), as that version did. Still there: nothing
    claimed, the next run drops it; gone: all of its rows claimed."""
    audit = tmp_path / "audit"
    path = tmp_path / "retention.toml"
    path.write_text(config_text(partitioned_url, RULE, audit_directory=audit))
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    crashed = _run(path, crash_at, before_identities=True)
    mariadb = "mysql" in partitioned_url or "mariadb" in partitioned_url
    if crash_at == "after_detach" and mariadb:
        assert crashed.returncode == 0, "MariaDB drops a partition in one statement"
    else:
        assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    intents = [
        stored.content
        for stored in read_entries(audit)
        if stored.content["type"] == "batch.intent" and "partition" in stored.content
    ]
    assert intents
    assert not any("partition_identity" in intent for intent in intents)
    gone = set(ROWS) - _remaining(partitioned_url)
    leaves = {record_leaf(key, "db", "events", (i, ROWS[i])) for i in gone}
    assert set(_claimed(audit)) <= leaves, "the trail never claims a row still there"

    finished = _run(path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _remaining(partitioned_url) == KEPT
    expected = {record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE}
    assert sorted(_claimed(audit)) == sorted(expected), "each deleted row, exactly once"
    assert not list((audit / "pending").iterdir())
    _verified(audit)


def test_a_pending_file_naming_another_partition_claims_the_dropped_rows_all_the_same(
    partitioned_url: str, tmp_path: Path
) -> None:
    """January's drop is committed, then the process dies before its result. Its pending files
    are not chained: edited to name May (still there) and May's identity, the reconcile asked
    about May, found it, and claimed nothing of January: rows dropped, unaccounted. It asks
    about the partition its intent entry (chained) names and identifies."""
    import json

    from retention.stores.partition_catalog import oid_identity, upper_identity

    audit = tmp_path / "audit"
    path = tmp_path / "retention.toml"
    path.write_text(config_text(partitioned_url, RULE, audit_directory=audit))
    key = (audit.parent / "audit-keys" / "hmac.key").read_bytes().strip()
    crashed = _run(path, "after_commit")
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert "events_2024_01" not in _partitions(partitioned_url)
    engine = create_engine(partitioned_url)
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            may = oid_identity(connection, "events_2024_05")
        else:
            partitioning = read_partitioning(connection, "events")
            assert partitioning is not None
            (partition,) = (p for p in partitioning.partitions if p.name == "events_2024_05")
            may = upper_identity(partition)
    engine.dispose()
    edited = 0
    for file in _acknowledged_pending(audit):
        content = json.loads(file.read_text())
        if content["partition"] != "events_2024_01":
            # February's, recorded while January was dropped: February is still there.
            assert content["partition"] == "events_2024_02"
            continue
        content["partition"], content["partition_identity"] = "events_2024_05", may
        file.write_text(json.dumps(content))
        edited += 1
    assert edited

    finished = _run(path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _remaining(partitioned_url) == KEPT
    expected = {record_leaf(key, "db", "events", (i, ROWS[i])) for i in DUE}
    assert sorted(_claimed(audit)) == sorted(expected), "each deleted row, exactly once"
    assert not list((audit / "pending").iterdir())
    _verified(audit)


def _acknowledged_pending(audit: Path) -> list[Path]:
    """The pending files (of keys) whose intent is in the trail. The drop that crashes runs in
    a thread while the next partition is recorded, so the SIGKILL can land while that one's
    files are created and not yet written: its pending file is then empty or cut short, with
    no intent (written in place, docs/audit.md "Crash reconciliation"), and the next run drops
    it. The pending files of intents in the trail are whole (json.loads would say otherwise)."""
    intents = {
        stored.content["seq"]
        for stored in read_entries(audit)
        if stored.content["type"] == "batch.intent"
    }
    acknowledged = []
    for file in sorted((audit / "pending").glob("*[0-9].json")):
        if int(file.stem) in intents:
            acknowledged.append(file)
            continue
        # Unacknowledged (whole or not): only the one being written when the process died.
        assert int(file.stem) > max(intents), file.name
    return acknowledged


def _claimed(audit: Path) -> list[bytes]:
    claimed: list[bytes] = []
    for stored in read_entries(audit):
        entry = stored.content
        if entry["type"] == "batch.result" and entry["status"] == "committed":
            claimed += read_leaves(audit, entry["intent"])
        elif entry["type"] == "batch.reconciled":
            claimed += read_leaves(audit, entry["seq"])
    return claimed


def _verified(audit: Path) -> None:
    result = verify_trail(audit, load_public_keys(audit / "public-keys.json"))
    assert result.valid, result.problem


# --- pg_partman -----------------------------------------------------------------------------------


def _with_pg_partman(url: str) -> None:
    """``events`` as pg_partman (Debian's postgresql-15-partman) manages it: monthly native
    partitions from January 2024 and its default partition; ROWS in it."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            available = connection.execute(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'")
            ).scalar()
            if not available:
                if os.environ.get("CI"):
                    pytest.fail("pg_partman is not installed (.ci/run installs it)")
                pytest.skip("pg_partman is not installed: apt-get install postgresql-15-partman")
            connection.execute(text("CREATE SCHEMA partman"))
            connection.execute(text("CREATE EXTENSION pg_partman SCHEMA partman"))
            connection.execute(
                text(
                    "CREATE TABLE events (id integer NOT NULL, logged_at timestamp NOT NULL, "
                    "note text, PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (logged_at)"
                )
            )
            connection.execute(
                text(
                    "SELECT partman.create_parent(p_parent_table => 'public.events', "
                    "p_control => 'logged_at', p_type => 'native', p_interval => 'monthly', "
                    "p_start_partition => '2024-01-01', p_premake => 2)"
                )
            )
            connection.execute(
                text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
                [{"id": key, "at": at} for key, at in ROWS.items()],
            )
    finally:
        engine.dispose()


def test_a_pg_partman_parent_loses_its_expired_partitions_and_partman_carries_on(
    postgres_url: str, tmp_path: Path
) -> None:
    _with_pg_partman(postgres_url)
    audit = tmp_path / "audit"
    config = make_config(postgres_url, RULE, audit_directory=audit)
    rule_plan = plan(config, AS_OF).rules[0]
    whole = {"events_p2024_01": 10, "events_p2024_02": 10, "events_p2024_03": 10}
    assert {p.name: p.rows for p in rule_plan.partitions} == whole
    _, report = plan_and_run(config, AS_OF)
    assert report.outcomes[0].status == "ok", report.outcomes[0].error
    assert _remaining(postgres_url) == KEPT
    assert not _partitions(postgres_url) & set(whole)
    assert {"events_p2024_04", "events_default"} <= _partitions(postgres_url)
    _verified(audit)
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            # pg_partman's own maintenance still runs on the parent (no retention of its own
            # is configured: retention decides what expires), and still knows its partitions.
            connection.execute(text("SELECT partman.run_maintenance('public.events')"))
            shown = connection.execute(
                text("SELECT partition_tablename FROM partman.show_partitions('public.events')")
            ).scalars()
            assert "events_p2024_01" not in set(shown)
    finally:
        engine.dispose()


def test_mariadb_partitions_by_to_days_are_read_and_dropped(mariadb_url: str) -> None:
    engine = create_engine(mariadb_url)
    parts = ", ".join(
        f"PARTITION events_{month} VALUES LESS THAN (TO_DAYS('{_bounds(month)[1]}'))"
        for month in MONTHS
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (id integer NOT NULL, logged_at datetime NOT NULL, "
                "PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (TO_DAYS(logged_at)) "
                f"({parts}, PARTITION events_max VALUES LESS THAN MAXVALUE)"
            )
        )
        connection.execute(
            text("INSERT INTO events (id, logged_at) VALUES (:id, :at)"),
            [{"id": key, "at": at} for key, at in ROWS.items()],
        )
    engine.dispose()
    config = make_config(mariadb_url, RULE)
    rule_plan = plan(config, AS_OF).rules[0]
    assert {p.name: (p.rows, p.upper) for p in rule_plan.partitions} == {
        "events_2024_01": (15, "2024-02-01T00:00:00+00:00"),
        "events_2024_02": (10, "2024-03-01T00:00:00+00:00"),
        "events_2024_03": (10, "2024-04-01T00:00:00+00:00"),
    }
    plan_and_run(config, AS_OF)
    assert _remaining(mariadb_url) == KEPT
    assert "events_2024_03" not in _partitions(mariadb_url)


def test_postgres_timestamptz_partitions_compare_as_instants(postgres_url: str) -> None:
    """Bounds of a timestamptz partition key are instants: a partition ending at midnight in
    Paris (23:00 UTC the day before) is wholly expired by a cutoff at midnight UTC."""
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (id integer NOT NULL, logged_at timestamptz NOT NULL, "
                "PRIMARY KEY (id, logged_at)) PARTITION BY RANGE (logged_at)"
            )
        )
        connection.execute(
            text(
                "CREATE TABLE events_march PARTITION OF events FOR VALUES "
                "FROM ('2024-03-01 00:00+01') TO ('2024-04-15 00:00+02')"
            )
        )
        connection.execute(
            text(
                "CREATE TABLE events_april PARTITION OF events FOR VALUES "
                "FROM ('2024-04-15 00:00+02') TO ('2024-04-15 00:00:00.000002+00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO events VALUES (1, '2024-03-10 00:00+00'), "
                "(2, '2024-04-14 23:00+00'), (3, '2024-04-15 00:00:00.000001+00')"
            )
        )
    engine.dispose()
    rule_plan = plan(make_config(postgres_url, RULE), AS_OF).rules[0]
    assert rule_plan.due == 2
    # events_april ends 1 µs after the cutoff: the row at the cutoff + 1 µs is not due.
    assert {p.name: p.rows for p in rule_plan.partitions} == {"events_march": 1}


def test_a_stop_request_is_honoured_between_two_partitions(postgres_url: str) -> None:
    create_events(postgres_url)
    config = make_config(postgres_url, RULE)
    events: list[str] = []

    class Log:
        def info(self, event: str, **fields: object) -> None:
            events.append(event)

        warning = error = info

    with open_stores(config, read_only=False) as store_for:
        the_plan = make_plan(config, config.rules, store_for, AS_OF)
        report = execute(
            the_plan,
            store_for,
            now=lambda: AS_OF,
            dry_run=False,
            hash_key=None,
            logger=Log(),
            stop_requested=lambda: "partition.dropped" in events,
        )
    outcome = report.outcomes[0]
    assert outcome.status == "stopped"
    assert events.count("partition.dropped") == 1
    assert outcome.deleted == 10, "one partition, and no row batch after the stop"
    assert _remaining(postgres_url) == set(ROWS) - set(range(1, 11))


def test_a_drop_logs_the_table_lock_apart_from_the_partitions(postgres_url: str) -> None:
    """The parent's lock (DETACH to COMMIT), which readers of the table wait for, is logged
    apart from the partition's (its writers wait while it is counted again)."""
    create_events(postgres_url)
    whole = set(_whole(postgres_url))
    config = make_config(postgres_url, RULE)
    with capture_logs() as logs:
        plan_and_run(config, AS_OF)
    locks = [line for line in logs if line["event"] == "partition.locks"]
    assert whole
    assert {line["partition"] for line in locks} == whole, "one line per drop"
    for line in locks:
        assert 0 <= line["table_lock_seconds"] <= line["partition_lock_seconds"]
