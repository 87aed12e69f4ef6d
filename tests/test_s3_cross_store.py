"""Cross-store rules: a customer's S3 objects go with the customer's row, objects first.

A SQL rule, customer-content, purges customers 90 days after their contract ended (the clock
goes through a join); the S3 rule customer-files names it as its subjects and purges everything
under ``customers/{customer_id}/`` of exactly those customers. Over real HTTP to moto, through
the CLI as an operator runs it.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Column, Date, ForeignKey, Integer, MetaData, String, Table, insert, text

from retention.cli import main
from retention.errors import ExitCode
from tests.s3_proxy import (
    FaultProxy,
    make_bucket,
    object_keys,
    object_versions,
    put_objects,
    s3_client,
)
from tests.support import create_tables

AS_OF = "2026-11-23T12:00:00+00:00"  # 90 days earlier: 2026-08-25
# customer_id -> the end of its contract (None: still a customer).
CUSTOMERS: dict[int, date | None] = {
    1: date(2026, 1, 10),  # expired; customer 10 shares its first digit
    2: date(2026, 7, 1),  # expired
    5: date(2025, 5, 5),  # expired
    3: date(2026, 11, 1),  # ended recently: not yet
    4: None,  # active
    10: None,  # active, and customers/1 is a prefix of customers/10
}
EXPIRED = {1, 2, 5}
KEPT = set(CUSTOMERS) - EXPIRED
FILES = ("profile.json", "docs/a.pdf", "docs/b.pdf")
ACCESS_LOG = re.compile(r"127\.0\.0\.1 - - \[")
UNOWNED = ["customers/index.json", "shared/readme.txt", "customers/1-archive/x.bin"]


def customer_objects(customer: int) -> set[str]:
    return {f"customers/{customer}/{name}" for name in FILES}


def objects_of(customers: set[int]) -> set[str]:
    return set().union(*(customer_objects(customer) for customer in customers))


def create_customers(url: str) -> Any:
    metadata = MetaData()
    contracts = Table(
        "contracts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("ended_at", Date),
    )
    customers = Table(
        "customers",
        metadata,
        Column("customer_id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50)),
        Column("contract_id", Integer, ForeignKey("contracts.id")),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(contracts),
            [{"id": 100 + key, "ended_at": ended} for key, ended in CUSTOMERS.items()],
        )
        connection.execute(
            insert(customers),
            [
                {"customer_id": key, "name": f"customer {key}", "contract_id": 100 + key}
                for key in CUSTOMERS
            ],
        )
    return engine


def remaining_customers(engine: Any) -> set[int]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text("SELECT customer_id FROM customers"))}


def write_config(
    directory: Path, database_url: str, endpoint: str, bucket: str, max_attempts: int = 8
) -> Path:
    path = directory / "retention.toml"
    path.write_text(
        f"""
[settings]
timezone = "UTC"
max_fraction = 1.0

[stores.db]
kind = "sql"
url = "{database_url}"
timezone = "UTC"

[stores.files]
kind = "s3"
bucket = "{bucket}"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"
max_attempts = {max_attempts}
timezone = "UTC"

[audit]
enabled = false

[state]
url = "sqlite:///{directory / "state.sqlite"}"

[[rules]]
name = "customer-content"
store = "db"
table = "customers"
key = "customer_id"
clock = "contract.ended_at"
period = "90d"
action = "delete"

[rules.joins.contract]
table = "contracts"
on = {{ contract_id = "id" }}

[[rules]]
name = "customer-files"
store = "files"
subjects = "customer-content"
subject_prefix = "customers/{{customer_id}}/"
"""
    )
    return path


@pytest.fixture
def setup(s3_server: str, sqlite_url: str, tmp_path: Path) -> Setup:
    return Setup.make(s3_server, s3_server, sqlite_url, tmp_path)


class Setup:
    """A customers database, a bucket holding each customer's objects, a config naming both."""

    def __init__(self, server: str, bucket: str, engine: Any, config: Path) -> None:
        self.server = server
        self.bucket = bucket
        self.engine = engine
        self.config = config

    @classmethod
    def make(
        cls,
        server: str,
        endpoint: str,
        database_url: str,
        directory: Path,
        *,
        versioned: bool = False,
        object_lock: bool = False,
        max_attempts: int = 8,
    ) -> Setup:
        engine = create_customers(database_url)
        bucket = make_bucket(server, "cross", versioned=versioned, object_lock=object_lock)
        put_objects(server, bucket, sorted(objects_of(set(CUSTOMERS))) + UNOWNED)
        config = write_config(directory, database_url, endpoint, bucket, max_attempts)
        return cls(server, bucket, engine, config)

    def objects(self) -> set[str]:
        return object_keys(self.server, self.bucket)

    def rows(self) -> set[int]:
        return remaining_customers(self.engine)


def cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config), *arguments], catch_exceptions=False
    )


def run(config: Path, *arguments: str) -> Result:
    return cli(config, "run", "--yes", "--as-of", AS_OF, *arguments)


def plan_json(config: Path, *arguments: str) -> dict[str, Any]:
    result = cli(config, "plan", "--as-of", AS_OF, "--output", "json", *arguments)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def log_lines(result: Result) -> list[dict[str, Any]]:
    """The run's JSON log lines, less the access log of the moto server, which runs in this
    process and logs through the same handlers (an operator's run has no such lines)."""
    lines = [line[line.index("{") :] for line in result.stderr.splitlines() if "{" in line]
    return [
        entry for entry in map(json.loads, lines) if not ACCESS_LOG.match(str(entry.get("event")))
    ]


def finished(result: Result) -> list[dict[str, Any]]:
    return [entry for entry in log_lines(result) if entry.get("event") == "rule.finished"]


def statuses(result: Result) -> dict[str, str]:
    return {entry["rule"]: entry["status"] for entry in finished(result)}


def test_plan_puts_the_objects_first_and_counts_only_expired_customers(setup: Setup) -> None:
    document = plan_json(setup.config)
    files, content = document["rules"]
    assert (files["rule"], content["rule"]) == ("customer-files", "customer-content")
    assert files["subjects"] == "customer-content"
    assert files["due"] == len(objects_of(EXPIRED))
    assert files["objects"]["subjects"] == len(EXPIRED)
    assert files["period"] == "90d"
    assert (content["due"], content["held"]) == (len(EXPIRED), 0)

    text_plan = cli(setup.config, "plan", "--as-of", AS_OF)
    assert text_plan.exit_code == 0, text_plan.output
    lines = text_plan.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("customer-files"))
    second = next(i for i, line in enumerate(lines) if line.startswith("customer-content"))
    assert first < second
    assert "subjects of customer-content" in lines[first]
    detail = next(line for line in lines if line.startswith("  customer-files  "))
    assert f"{len(EXPIRED)} subjects" in detail
    # Read-only.
    assert setup.objects() == objects_of(set(CUSTOMERS)) | set(UNOWNED)
    assert setup.rows() == set(CUSTOMERS)


@pytest.mark.parametrize("rule_option", [(), ("--rule", "customer-content")])
def test_run_deletes_expired_customers_objects_then_their_rows(
    setup: Setup, rule_option: tuple[str, ...]
) -> None:
    result = run(setup.config, *rule_option)

    assert result.exit_code == 0, result.output
    assert [entry["rule"] for entry in finished(result)] == ["customer-files", "customer-content"]
    by_rule = {entry["rule"]: entry for entry in finished(result)}
    assert by_rule["customer-files"]["deleted"] == len(objects_of(EXPIRED))
    assert by_rule["customer-content"]["deleted"] == len(EXPIRED)
    # customers/1/ went; customers/10/ (active) and customers/1-archive/ (nobody's) did not.
    assert setup.objects() == objects_of(KEPT) | set(UNOWNED)
    assert setup.rows() == KEPT
    assert plan_json(setup.config)["rules"][0]["due"] == 0


def test_the_same_against_every_database(s3_server: str, database_url: str, tmp_path: Path) -> None:
    setup = Setup.make(s3_server, s3_server, database_url, tmp_path)
    assert plan_json(setup.config)["rules"][0]["due"] == len(objects_of(EXPIRED))

    result = run(setup.config)

    assert result.exit_code == 0, result.output
    assert setup.objects() == objects_of(KEPT) | set(UNOWNED)
    assert setup.rows() == KEPT


@pytest.mark.parametrize(
    ("replaced", "by"),
    [
        ('"customers/{customer_id}/"', '"customers/{customer_id:.1}/"'),
        ('"customers/{customer_id}/"', '"customers/{customer_id!s}/"'),
        ('"customers/{customer_id}/"', '"customers/{customer_id[0]}/"'),
        ('key = "customer_id"', 'key = ["customer_id", "contract_id"]'),
    ],
    ids=["format-spec", "conversion", "index", "some-key-columns"],
)
def test_a_subject_prefix_that_two_customers_could_share_is_refused_before_anything_goes(
    setup: Setup, replaced: str, by: str
) -> None:
    """``{customer_id:.1}`` gives customers 1 and 10 one prefix, and so does a prefix without
    every key column: the due customer's run would delete the active one's objects, and count
    and record them twice."""
    text = setup.config.read_text()
    assert replaced in text
    setup.config.write_text(text.replace(replaced, by))

    for result in (
        cli(setup.config, "config", "validate"),
        cli(setup.config, "plan", "--as-of", AS_OF),
        run(setup.config),
    ):
        assert result.exit_code == ExitCode.BAD_CONFIG, result.output
        assert "rules[1].subject_prefix" in result.output
    assert setup.objects() == objects_of(set(CUSTOMERS)) | set(UNOWNED)
    assert setup.rows() == set(CUSTOMERS)


def test_a_hold_on_a_customer_row_keeps_its_objects_too(setup: Setup) -> None:
    held = cli(
        setup.config, "hold", "add", "--rule", "customer-content", "--key", "2", "--reason", "c-7"
    )
    assert held.exit_code == 0, held.output
    files, content = plan_json(setup.config)["rules"]
    assert files["due"] == len(objects_of(EXPIRED - {2}))
    assert (content["due"], content["held"]) == (len(EXPIRED) - 1, 1)

    result = run(setup.config)

    assert result.exit_code == 0, result.output
    assert setup.objects() == objects_of(KEPT | {2}) | set(UNOWNED)
    assert setup.rows() == KEPT | {2}


def test_a_prefix_hold_on_the_objects_keeps_them_and_their_customer(setup: Setup) -> None:
    held = cli(
        setup.config,
        "hold",
        "add",
        "--rule",
        "customer-files",
        "--prefix",
        "customers/5/",
        "--reason",
        "case 2026-0042",
    )
    assert held.exit_code == 0, held.output
    files, _content = plan_json(setup.config)["rules"]
    assert (files["due"], files["held"]) == (len(objects_of(EXPIRED - {5})), len(FILES))

    result = run(setup.config)

    # Held objects are not failures; but a customer whose objects stay keeps its row, or they
    # would be left with nobody to find them by once the hold is released.
    assert result.exit_code == 0, result.output
    assert statuses(result) == {"customer-files": "ok", "customer-content": "ok"}
    assert setup.objects() == objects_of(KEPT | {5}) | set(UNOWNED)
    assert setup.rows() == KEPT | {5}
    content = next(entry for entry in finished(result) if entry["rule"] == "customer-content")
    assert (content["deleted"], content["skipped"]) == (len(EXPIRED) - 1, 1)

    # Released, the hold lets both go on the next run: nothing was orphaned.
    hold_id = re.search(r"hold (\d+) on rule", held.stdout)
    assert hold_id is not None
    released = cli(setup.config, "hold", "release", hold_id.group(1), "--reason", "closed")
    assert released.exit_code == 0, released.output
    assert run(setup.config).exit_code == 0
    assert setup.objects() == objects_of(KEPT) | set(UNOWNED)
    assert setup.rows() == KEPT


def test_a_denied_object_keeps_its_customer_and_a_later_run_finishes(
    s3_server: str, sqlite_url: str, tmp_path: Path
) -> None:
    with FaultProxy(s3_server) as proxy:
        setup = Setup.make(s3_server, proxy.endpoint, sqlite_url, tmp_path)
        proxy.key_errors(r"^customers/2/docs/a\.pdf$", "AccessDenied")

        result = run(setup.config)

        assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
        by_rule = {entry["rule"]: entry for entry in finished(result)}
        assert by_rule["customer-files"]["status"] == "failed"
        assert by_rule["customer-files"]["failed"] == 1
        assert "AccessDenied" in by_rule["customer-files"]["error"]
        assert "customers/2" not in result.stdout
        assert "customers/2" not in json.dumps(log_lines(result))
        # The denied object stays, and so does its customer's row; the other expired customers
        # go, objects and rows (the lead's design, d71ef6f: kept_subjects).
        assert setup.objects() == objects_of(KEPT) | set(UNOWNED) | {"customers/2/docs/a.pdf"}
        assert setup.rows() == KEPT | {2}
        assert by_rule["customer-content"]["status"] == "ok"
        assert by_rule["customer-content"]["deleted"] == len(EXPIRED) - 1

        proxy.clear_faults()
        again = run(setup.config)

        assert again.exit_code == 0, again.output
        assert setup.objects() == objects_of(KEPT) | set(UNOWNED)
        assert setup.rows() == KEPT


def _backdate_contract_before(
    rule_name: str, customer: int, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make ``customer`` due (its contract ended long ago) right before ``rule_name`` runs,
    as an application would between the two rules of a run."""
    import retention.executor as executor_module

    original = executor_module._execute_rule

    def backdating(rule_plan: Any, *arguments: Any, **options: Any) -> Any:
        if rule_plan.rule.name == rule_name:
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE contracts SET ended_at = :ended WHERE id = :id"),
                    {"ended": date(2026, 1, 1), "id": 100 + customer},
                )
        return original(rule_plan, *arguments, **options)

    monkeypatch.setattr(executor_module, "_execute_rule", backdating)


def test_a_customer_due_only_after_its_objects_were_listed_keeps_its_row_until_next_run(
    s3_server: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Customer 3's contract is backdated after customer-files listed the due customers and
    before customer-content deletes rows: its objects were never listed, so deleting its row
    would leave them with nobody to find them by. The row stays; the next run deletes both,
    objects first."""
    setup = Setup.make(s3_server, s3_server, database_url, tmp_path)
    _backdate_contract_before("customer-content", 3, setup.engine, monkeypatch)

    result = run(setup.config)

    assert result.exit_code == 0, result.output
    by_rule = {entry["rule"]: entry for entry in finished(result)}
    assert by_rule["customer-content"]["deleted"] == len(EXPIRED)
    assert setup.rows() == KEPT
    assert setup.objects() == objects_of(KEPT) | set(UNOWNED)

    monkeypatch.undo()
    again = run(setup.config)

    assert again.exit_code == 0, again.output
    assert setup.rows() == KEPT - {3}
    assert setup.objects() == objects_of(KEPT - {3}) | set(UNOWNED)


def test_an_objects_rule_that_broke_off_keeps_every_row(
    s3_server: str, sqlite_url: str, tmp_path: Path
) -> None:
    with FaultProxy(s3_server) as proxy:
        setup = Setup.make(s3_server, proxy.endpoint, sqlite_url, tmp_path, max_attempts=1)
        proxy.fail_requests("delete_objects", times=1000, status=503, code="SlowDown")

        result = run(setup.config)

        assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
        assert statuses(result) == {"customer-files": "failed", "customer-content": "failed"}
        content = next(entry for entry in finished(result) if entry["rule"] == "customer-content")
        assert content["deleted"] == 0
        assert "not run" in content["error"]
        assert setup.objects() == objects_of(set(CUSTOMERS)) | set(UNOWNED)
        assert setup.rows() == set(CUSTOMERS)


def test_every_version_and_delete_marker_of_an_expired_customer_goes(
    s3_server: str, sqlite_url: str, tmp_path: Path
) -> None:
    setup = Setup.make(s3_server, s3_server, sqlite_url, tmp_path, versioned=True)
    client = s3_client(s3_server)
    for customer in (1, 4, 10):
        put_objects(s3_server, setup.bucket, sorted(customer_objects(customer)), b"second")
        client.delete_object(Bucket=setup.bucket, Key=f"customers/{customer}/docs/b.pdf")
    before = object_versions(s3_server, setup.bucket)
    assert sum(marker for _, _, marker in before) == 3

    result = run(setup.config)

    assert result.exit_code == 0, result.output
    for customer in EXPIRED:
        assert object_versions(s3_server, setup.bucket, f"customers/{customer}/") == []
    assert object_versions(s3_server, setup.bucket) == [
        version
        for version in before
        if not any(version[0].startswith(f"customers/{c}/") for c in EXPIRED)
    ]
    assert setup.rows() == KEPT


def test_object_lock_keeps_a_version_and_its_customer(
    s3_server: str, sqlite_url: str, tmp_path: Path
) -> None:
    setup = Setup.make(s3_server, s3_server, sqlite_url, tmp_path, object_lock=True)
    client = s3_client(s3_server)
    locked = "customers/1/docs/a.pdf"
    client.put_object_legal_hold(Bucket=setup.bucket, Key=locked, LegalHold={"Status": "ON"})
    files, _content = plan_json(setup.config)["rules"]
    assert (files["due"], files["held"]) == (len(objects_of(EXPIRED)) - 1, 1)

    result = run(setup.config)

    # A locked version is held, not a failure; its customer keeps its row (and its last object).
    assert result.exit_code == 0, result.output
    assert statuses(result) == {"customer-files": "ok", "customer-content": "ok"}
    assert setup.objects() == objects_of(KEPT) | set(UNOWNED) | {locked}
    assert setup.rows() == KEPT | {1}


def test_the_daemon_runs_the_pair_as_one_job_under_both_leases(setup: Setup) -> None:
    from datetime import UTC, datetime

    from retention.config import load_config
    from retention.daemon import Daemon, run_rule
    from retention.scheduler import new_scheduler
    from retention.state import StateDatabase

    config = load_config(setup.config)
    assert config.state.url is not None
    state = StateDatabase(config.state.url)
    daemon = Daemon(
        setup.config,
        config,
        state,
        new_scheduler(config.daemon.timezone),
        clock=lambda: datetime.fromisoformat(AS_OF).astimezone(UTC),
    )
    try:
        run_rule(daemon, "customer-content")  # the job of the subjects' rule
        succeeded = {
            name: state.last_success(name) for name in ("customer-files", "customer-content")
        }
    finally:
        state.close()

    assert setup.objects() == objects_of(KEPT) | set(UNOWNED)
    assert setup.rows() == KEPT
    # One run, recorded in the ledger for both rules.
    assert all(moment is not None for moment in succeeded.values()), succeeded


def test_an_erasure_takes_the_persons_objects_then_their_row(setup: Setup) -> None:
    # Customer 10 is active (never due by age), and customers/1/ is a prefix of its own.
    config = setup.config
    config.write_text(
        config.read_text().replace('action = "delete"\n', 'action = "delete"\nerase_by = "name"\n')
    )

    dry = cli(config, "erase", "--subject", "customer 10", "--request", "DSR-5", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "customer 10" not in dry.stdout
    assert setup.objects() == objects_of(set(CUSTOMERS)) | set(UNOWNED)

    result = cli(config, "erase", "--subject", "customer 10", "--request", "DSR-5", "--yes")

    assert result.exit_code == 0, result.output
    assert "customer 10" not in result.output  # neither the plan, the report nor a log line
    assert statuses(result) == {"customer-files": "ok", "customer-content": "ok"}
    assert setup.objects() == objects_of(set(CUSTOMERS) - {10}) | set(UNOWNED)
    assert setup.rows() == set(CUSTOMERS) - {10}
