"""A dry run says what the run it stands for does: the same records, child rows, objects,
files and batches, and on a partitioned table the same partitions dropped whole, with their
rows and batches, and the same reasons why others go by row batches; and it writes nothing (no
DETACH, no lock, no trail, no state)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, event, inspect, text

from retention import recorded_batch
from retention.app.holds import place_hold
from retention.cli import main
from retention.config import parse_config
from retention.planner import SUBJECTS_NOTE
from retention.state import StateDatabase
from retention.stores import partitions
from tests.s3_proxy import make_bucket, put_objects, s3_client
from tests.support import (
    config_text,
    copy_shipped_config,
    create_logs,
    logs_rule,
    make_config,
    plan_and_run,
)
from tests.test_partitions import (
    AS_OF,
    DUE,
    REPLIED_RULE,
    RULE,
    _partitions,
    _remaining,
    _whole,
    _with_pg_partman,
    create_events,
)

DEMO_AS_OF = "2026-11-23T12:00:00+00:00"
# Every count of a rule's outcome that a dry run must give as its run does.
COMPARED = (
    "status",
    "due",
    "held",
    "deleted",
    "anonymised",
    "children_deleted",
    "children",
    "failed",
    "skipped",
    "batches",
    "row_batches",
    "partitions_dropped",
    "partition_notes",
)
# What a statement that writes, locks or changes the schema starts with.
WRITES = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|MERGE|ALTER|DROP|CREATE|TRUNCATE|LOCK|GRANT|REPLACE)\b|"
    r"\bFOR (UPDATE|SHARE|NO KEY UPDATE|KEY SHARE)\b|\bDETACH\b|pg_advisory",
    re.IGNORECASE,
)


def _invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, ["--log-format", "json", *arguments])


def _rules(*arguments: str) -> dict[str, dict[str, Any]]:
    """Run the command (``--output json``), return each rule's compared counts."""
    result = _invoke(*arguments, "--output", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    return {rule["rule"]: {key: rule[key] for key in COMPARED} for rule in document["rules"]}


@pytest.fixture
def statements() -> Iterator[list[tuple[str, str]]]:
    """Every statement any engine sends while the test runs, with its dialect's name."""
    sent: list[tuple[str, str]] = []

    def before(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append((connection.dialect.name, statement))

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def _state(config: Path) -> list[str]:
    """The state database's whole content, as SQL."""
    url = parse_config(config.read_bytes()).state.url
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _dry_then_run(
    config: Path, statements: list[tuple[str, str]], audit: Path | None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A dry run, checked to write nothing anywhere, then the run: both rules' counts."""
    arguments = ("--config", str(config), "run", "--as-of", AS_OF.isoformat())
    StateDatabase(parse_config(config.read_bytes()).state.url).close()  # as a deployment's
    state, trail = _state(config), _files(audit) if audit else {}
    statements.clear()
    dry = _rules(*arguments, "--dry-run")
    written = [sent for sent in statements if WRITES.search(sent[1])]
    assert not written, "a dry run wrote, locked or changed the schema"
    assert _state(config) == state, "a dry run changed the state database"
    if audit is not None:
        assert _files(audit) == trail, "a dry run wrote to the trail"
    statements.clear()
    ran = _rules(*arguments, "--yes")
    assert any(WRITES.search(sent) for dialect, sent in statements if dialect != "sqlite")
    return dry, ran


def _config(tmp_path: Path, url: str, rule: str = RULE, *, audited: bool = True) -> Path:
    path = tmp_path / "retention.toml"
    audit = tmp_path / "audit" if audited else None
    path.write_text(config_text(url, rule, audit_directory=audit))
    return path


@pytest.fixture(params=["postgres", "mariadb"])
def events_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    create_events(url)
    return url


def test_a_dry_run_drops_no_partition_and_says_which_the_run_drops(
    events_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[tuple[str, str]],
) -> None:
    # Keys are recorded 4 at a time: a partition of 10 rows is 3 batches of the trail.
    monkeypatch.setattr(partitions, "CHUNK", 4)
    config = _config(tmp_path, events_url)
    before = _partitions(events_url)
    shown = _invoke("--config", str(config), "run", "--as-of", AS_OF.isoformat(), "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert _partitions(events_url) == before, "a dry run detaches nothing"
    assert _remaining(events_url) == set(range(1, 56))
    whole = _whole(events_url)
    assert "3 partitions would be dropped whole" in shown.stdout
    assert "events_2024_02  10 rows  (3 batches)" in shown.stdout
    dry, ran = _dry_then_run(config, statements, tmp_path / "audit")
    assert dry == ran
    expected = [
        {"partition": name, "rows": rows, "batches": -(-rows // 4)} for name, rows in whole.items()
    ]
    assert ran["events"]["partitions_dropped"] == expected
    rest = len(DUE) - sum(whole.values())  # April's due rows (and PostgreSQL's default's)
    assert ran["events"]["row_batches"] == -(-rest // 4)
    assert ran["events"]["deleted"] == len(DUE)
    assert not _partitions(events_url) & set(whole), "the run did drop them"


def test_plan_and_dry_run_name_the_same_partitions_with_the_same_rows(
    events_url: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, events_url)
    arguments = ("--config", str(config))
    planned = _invoke(*arguments, "plan", "--as-of", AS_OF.isoformat(), "--output", "json")
    assert planned.exit_code == 0, planned.output
    rule = json.loads(planned.stdout)["rules"][0]
    shown = _invoke(*arguments, "plan", "--as-of", AS_OF.isoformat())
    assert "events: 3 partitions dropped whole" in shown.stdout
    dry = _rules(*arguments, "run", "--as-of", AS_OF.isoformat(), "--dry-run")["events"]
    assert [(p["partition"], p["rows"]) for p in rule["partitions_due"]] == [
        (p["partition"], p["rows"]) for p in dry["partitions_dropped"]
    ]
    assert rule["partition_notes"] == dry["partition_notes"] == []
    assert rule["due"] == dry["deleted"] == len(DUE)


def test_without_a_trail_a_partition_is_one_batch_in_the_dry_run_as_in_the_run(
    events_url: str, tmp_path: Path, statements: list[tuple[str, str]]
) -> None:
    dry, ran = _dry_then_run(_config(tmp_path, events_url, audited=False), statements, None)
    assert dry == ran
    assert [p["batches"] for p in ran["events"]["partitions_dropped"]] == [1, 1, 1]


@pytest.mark.parametrize(
    ("extra", "notes", "dropped", "due"),
    [
        ("drop_partitions = false\n", ["row batches: drop_partitions = false"], 0, len(DUE)),
        (
            'where = ["id != 15"]\n',
            [
                "events_2024_02: 1 of 10 rows are not due (a condition, a period override or a "
                "NULL clock keeps them): row batches"
            ],
            2,
            len(DUE) - 1,
        ),
    ],
)
def test_a_partition_that_goes_by_rows_says_why_in_the_dry_run_as_in_the_run(
    events_url: str,
    tmp_path: Path,
    statements: list[tuple[str, str]],
    extra: str,
    notes: list[str],
    dropped: int,
    due: int,
) -> None:
    config = _config(tmp_path, events_url, RULE + extra)
    dry, ran = _dry_then_run(config, statements, tmp_path / "audit")
    assert dry == ran
    assert len(ran["events"]["partitions_dropped"]) == dropped
    assert ran["events"]["partition_notes"] == notes
    assert ran["events"]["deleted"] == due


def test_a_held_row_keeps_its_partition_in_the_dry_run_as_in_the_run(
    events_url: str, tmp_path: Path, statements: list[tuple[str, str]]
) -> None:
    config = _config(tmp_path, events_url)
    place_hold(
        parse_config(config.read_bytes()),
        rule_name="events",
        keys=(),
        where="id = 15",
        prefix=None,
        reason="litigation",
        until=None,
        now=AS_OF,
        by="test",
    )
    dry, ran = _dry_then_run(config, statements, tmp_path / "audit")
    assert dry == ran
    assert [p["partition"] for p in ran["events"]["partitions_dropped"]] == [
        "events_2024_01",
        "events_2024_03",
    ]
    assert ran["events"]["partition_notes"] == [
        "events_2024_02: 1 of 10 rows are not due, 1 of them held: row batches"
    ]


def test_a_referenced_table_goes_by_rows_in_the_dry_run_as_in_the_run(
    postgres_url: str, tmp_path: Path, statements: list[tuple[str, str]]
) -> None:
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
    config = _config(tmp_path, postgres_url, REPLIED_RULE)
    dry, ran = _dry_then_run(config, statements, tmp_path / "audit")
    assert dry == ran
    assert ran["events"]["partition_notes"] == ["row batches: a foreign key references the table"]


def test_a_pg_partman_parent_in_the_dry_run_as_in_the_run(
    postgres_url: str, tmp_path: Path, statements: list[tuple[str, str]]
) -> None:
    _with_pg_partman(postgres_url)
    dry, ran = _dry_then_run(_config(tmp_path, postgres_url), statements, tmp_path / "audit")
    assert dry == ran
    assert [p["partition"] for p in ran["events"]["partitions_dropped"]] == [
        "events_p2024_01",
        "events_p2024_02",
        "events_p2024_03",
    ]


def test_the_demos_dry_run_says_what_its_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str
) -> None:
    """Every shape of rule the demo has: plain rows, child rows, anonymised rows, S3 objects,
    noncurrent versions and delete markers, files; and two rules on one table, the second
    finding the rows the first deleted gone (skipped, in its dry run too)."""
    # A run makes a batch smaller after one whose transaction took long (a dry run has none):
    # on a busy host that would be another count of batches, not a disagreement.
    monkeypatch.setattr(recorded_batch, "TRANSACTION_TARGET_SECONDS", 3600.0)
    copy_shipped_config(tmp_path, s3_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    created = _invoke("demo", "--s3-endpoint-is-mine", "--as-of", DEMO_AS_OF)
    assert created.exit_code == 0, created.output
    dry = _rules("run", "--dry-run", "--as-of", DEMO_AS_OF)
    ran = _rules("run", "--yes", "--as-of", DEMO_AS_OF)
    assert dry == ran
    assert all(rule["status"] == "ok" for rule in ran.values())
    assert ran["job-applicants-objected"]["skipped"] > 0
    # Each shape is there to compare: rows in several batches, rows with child rows,
    # anonymised rows, objects (with versions and markers), files.
    assert ran["connection-logs"]["batches"] > 1
    assert ran["prospects"]["children_deleted"] > 0
    assert ran["customer-contracts"]["anonymised"] > 0
    assert ran["customer-files"]["deleted"] > 0
    assert ran["backups-local"]["deleted"] > 0


def test_rows_an_earlier_rule_deletes_are_skipped_in_the_dry_run_as_in_the_run(
    database_url: str, tmp_path: Path
) -> None:
    # Ids 1-5 are two years old (due under both rules), 6-8 half a year (the second only).
    now = datetime(2025, 6, 1, tzinfo=UTC)
    create_logs(
        database_url,
        {i: datetime(2023, 5, 1) for i in range(1, 6)}
        | {i: datetime(2024, 12, 1) for i in range(6, 9)},
    )
    rules = logs_rule("batch_size = 2") + logs_rule(
        'period = "90d"\nbatch_size = 2', name="recent"
    ).replace('period = "1y"\n', "")
    # With the trail: without it, MariaDB's batches are spans of keys (stores/sql_spans.py),
    # steered as they go, which a dry run does not take.
    config = make_config(database_url, rules, audit_directory=tmp_path / "audit")
    _, dry = plan_and_run(config, now, dry_run=True)
    _, ran = plan_and_run(config, now)
    counted = [
        [(o.rule, o.due, o.deleted, o.skipped, o.batches) for o in report.outcomes]
        for report in (dry, ran)
    ]
    assert counted[0] == counted[1] == [("logs", 5, 5, 0, 3), ("recent", 8, 3, 5, 2)]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_on_a_fresh_install_plan_and_dry_run_create_no_state_and_no_trail(
    database_url: str, tmp_path: Path, statements: list[tuple[str, str]]
) -> None:
    """No state database yet (no SQLite file, no tables), a trail with only its keys: plan and
    run --dry-run read, and leave both as they found them; the run then makes them."""
    data = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_logs(data, {1: datetime(2020, 1, 1, tzinfo=UTC), 2: datetime(2026, 1, 1, tzinfo=UTC)})
    config = tmp_path / "retention.toml"
    audit = tmp_path / "audit"
    config.write_text(config_text(data, logs_rule(), audit_directory=audit, state_url=database_url))
    state_file = tmp_path / "test.sqlite"  # the sqlite_url fixture's, when it is the state's
    trail = _files(audit)
    statements.clear()
    for command in (("plan",), ("run", "--dry-run"), ("run", "--dry-run", "--output", "json")):
        result = _invoke("--config", str(config), *command)
        assert result.exit_code == 0, result.output
        assert "1 record" in result.stdout or '"deleted": 1' in result.stdout
    assert not [sent for sent in statements if WRITES.search(sent[1])]
    assert not state_file.exists(), "a plan or a dry run created the SQLite state database"
    assert database_url.startswith("sqlite") or not _tables(database_url)
    assert _files(audit) == trail, "a plan or a dry run wrote to the trail"
    ran = _invoke("--config", str(config), "run", "--yes")
    assert ran.exit_code == 0, ran.output
    assert {"retention_runs", "retention_holds"} <= _tables(database_url)


def test_a_subjects_rule_plans_no_whole_partition_and_says_why_as_its_run_does(
    events_url: str, tmp_path: Path, s3_server: str
) -> None:
    """A cross-store rule names ``events`` as its subjects: the run deletes only the rows whose
    objects went, by row batches, and drops no partition whole. The plan and the dry run say
    the same, with the same reason, and list no partition."""
    bucket = make_bucket(s3_server, "subjects")
    objects = f"""
[stores.files]
kind = "s3"
bucket = "{bucket}"
endpoint_url = "{s3_server}"
region = "us-east-1"
addressing_style = "path"
timezone = "UTC"
"""
    follows = """
[[rules]]
name = "event-files"
store = "files"
subjects = "events"
subject_prefix = "events/{id}/{logged_at}/"
"""
    config = tmp_path / "retention.toml"
    config.write_text(config_text(events_url, RULE + follows, extra_stores=objects))
    before = _partitions(events_url)
    as_of = ("--as-of", AS_OF.isoformat())
    planned = _invoke("--config", str(config), "plan", *as_of, "--output", "json")
    assert planned.exit_code == 0, planned.output
    rule = next(rule for rule in json.loads(planned.stdout)["rules"] if rule["rule"] == "events")
    assert rule["due"] == len(DUE)
    assert rule["partitions_due"] == []
    assert rule["partition_notes"] == [SUBJECTS_NOTE]
    shown = _invoke("--config", str(config), "plan", *as_of)
    assert "events: 0 partitions dropped whole" in shown.stdout
    assert SUBJECTS_NOTE in shown.stdout
    dry = _rules("--config", str(config), "run", *as_of, "--dry-run")["events"]
    ran = _rules("--config", str(config), "run", *as_of, "--yes")["events"]
    assert dry == ran
    assert ran["partitions_dropped"] == []
    assert ran["partition_notes"] == rule["partition_notes"]
    assert ran["deleted"] == len(DUE)
    assert _partitions(events_url) == before, "no partition was dropped"
    assert _remaining(events_url) == set(range(1, 56)) - DUE


# Contracts ended two years ago (1-3, due), half a year ago (4, kept) and not yet (5, NULL).
ENDED = {1: datetime(2023, 5, 1), 2: datetime(2023, 5, 1), 3: datetime(2023, 5, 1)} | {
    4: datetime(2024, 12, 1),
    5: None,
}
CONTRACTS_RULE = """
[[rules]]
name = "contracts"
store = "db"
table = "contracts"
key = "id"
clock = "ended_at"
period = "1y"
action = "delete"
"""
CONTRACT_RULES = (
    CONTRACTS_RULE
    + """
[[rules]]
name = "content"
store = "db"
table = "content"
key = "id"
clock = "contract.ended_at"
period = "1y"
action = "delete"
batch_size = 2
[rules.joins.contract]
table = "contracts"
on = { contract_id = "id" }
[[rules.children]]
table = "replies"
foreign_key = "content_id"

[[rules]]
name = "notes"
store = "db"
table = "notes"
key = "id"
clock = ["written_at", "contract.ended_at"]
period = "1y"
action = "delete"
[rules.joins.contract]
table = "contracts"
on = { contract_id = "id" }

[[rules]]
name = "orphans"
store = "db"
table = "content"
key = "id"
clock = "created_at"
period = "1y"
where = ["contract.ended_at IS NULL"]
action = "delete"
[rules.joins.contract]
table = "contracts"
on = { contract_id = "id" }
"""
)


def test_rows_whose_joined_row_an_earlier_rule_deletes_are_walked_as_the_run_finds_them(
    database_url: str, tmp_path: Path
) -> None:
    """An earlier rule deletes the contracts a later rule's join reads its clock (or a
    condition) from: the run finds those rows without a clock (kept, skipped), a clock list
    falling back on its other columns, a condition through the join changed. The dry run
    walks what the run finds, not what the plan saw."""
    now = datetime(2025, 6, 1, tzinfo=UTC)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        for statement in (
            "CREATE TABLE contracts (id integer PRIMARY KEY, ended_at timestamp NULL)",
            "CREATE TABLE content (id integer PRIMARY KEY, contract_id integer, "
            "created_at timestamp NULL)",
            "CREATE TABLE notes (id integer PRIMARY KEY, contract_id integer, "
            "written_at timestamp NULL)",
            "CREATE TABLE replies (id integer PRIMARY KEY, content_id integer)",
        ):
            connection.execute(text(statement))
        connection.execute(
            text("INSERT INTO contracts VALUES (:id, :ended_at)"),
            [{"id": key, "ended_at": ended} for key, ended in ENDED.items()],
        )
        # Two pieces of content per contract, created long ago.
        connection.execute(
            text("INSERT INTO content VALUES (:id, :contract_id, :created_at)"),
            [
                {"id": key, "contract_id": (key - 1) % 5 + 1, "created_at": datetime(2020, 1, 1)}
                for key in range(1, 11)
            ],
        )
        # On contract 1: a note written long ago (due either way), one never dated (due by the
        # contract's end only); on contract 4, one written long ago (its contract is kept).
        connection.execute(
            text("INSERT INTO notes VALUES (:id, :contract_id, :written_at)"),
            [
                {"id": 1, "contract_id": 1, "written_at": datetime(2021, 1, 1)},
                {"id": 2, "contract_id": 1, "written_at": None},
                {"id": 3, "contract_id": 4, "written_at": datetime(2021, 1, 1)},
            ],
        )
        # A reply to each piece of content of contracts 1 and 4.
        connection.execute(
            text("INSERT INTO replies VALUES (:id, :content_id)"),
            [{"id": key, "content_id": key} for key in (1, 4, 6, 9)],
        )
    engine.dispose()
    config = make_config(database_url, CONTRACT_RULES, audit_directory=tmp_path / "audit")
    planned, dry = plan_and_run(config, now, dry_run=True)
    _, ran = plan_and_run(config, now)
    counted = [
        [
            (o.rule, o.due, o.deleted, o.skipped, o.batches, o.children_deleted)
            for o in report.outcomes
        ]
        for report in (dry, ran)
    ]
    # The plan counts the child rows the run deletes: none, their parents kept.
    assert [rule.children for rule in planned.rules][1] == (("replies", 0),)
    assert counted[1] == [
        ("contracts", 3, 3, 0, 1, 0),
        # Their contracts gone, content 1-3 and 6-8 have no clock: kept, and their replies.
        ("content", 6, 0, 6, 0, 0),
        # Note 1 is still due by its own date; note 2 has no clock left.
        ("notes", 2, 1, 1, 1, 0),
        # Content of contracts gone or never ended: 5 and 10 as planned, 1-3 and 6-8 now too.
        ("orphans", 2, 8, 0, 1, 0),
    ]
    assert counted[0] == counted[1]


def test_objects_whose_subjects_lose_their_clock_to_an_earlier_rule_stay_in_the_dry_run_too(
    sqlite_url: str, tmp_path: Path, s3_server: str
) -> None:
    """A cross-store rule lists the objects of its subjects' due rows when it runs: rows whose
    clock came through contracts an earlier rule deleted are no longer due, and their objects
    stay. The dry run lists the subjects the run finds, not those the plan saw."""
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE contracts (id integer PRIMARY KEY, ended_at timestamp)")
        )
        connection.execute(
            text("CREATE TABLE content (id integer PRIMARY KEY, contract_id integer)")
        )
        connection.execute(
            text("INSERT INTO contracts VALUES (:id, :ended_at)"),
            [{"id": key, "ended_at": ended} for key, ended in ENDED.items()],
        )
        connection.execute(
            text("INSERT INTO content VALUES (:id, :contract_id)"),
            [{"id": key, "contract_id": (key - 1) % 5 + 1} for key in range(1, 11)],
        )
    engine.dispose()
    bucket = make_bucket(s3_server, "subjects")
    put_objects(s3_server, bucket, [f"content/{key}/file.txt" for key in range(1, 11)])
    objects = f"""
[stores.files]
kind = "s3"
bucket = "{bucket}"
endpoint_url = "{s3_server}"
region = "us-east-1"
addressing_style = "path"
"""
    rules = CONTRACT_RULES.split("[[rules]]")
    files = """
[[rules]]
name = "content-files"
store = "files"
subjects = "content"
subject_prefix = "content/{id}/"
"""
    # The contracts first, then the content's objects and the content (its replies aside).
    content = rules[2].split("[[rules.children]]")[0]
    config = make_config(
        sqlite_url,
        "[[rules]]" + rules[1] + files + "[[rules]]" + content,
        extra_stores=objects,
        audit_directory=tmp_path / "audit",
    )
    now = datetime(2025, 6, 1, tzinfo=UTC)
    _, dry = plan_and_run(config, now, dry_run=True)
    _, ran = plan_and_run(config, now)
    counted = [
        [(o.rule, o.due, o.deleted, o.skipped) for o in report.outcomes] for report in (dry, ran)
    ]
    assert counted[1] == [
        ("contracts", 3, 3, 0),
        ("content-files", 6, 0, 6),
        ("content", 6, 0, 6),
    ]
    assert counted[0] == counted[1]
    listed = s3_client(s3_server).list_objects_v2(Bucket=bucket)["Contents"]
    assert len(listed) == 10
