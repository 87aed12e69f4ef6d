"""The demo data set: shape, determinism, refusal to overwrite, and the boundary records that put
every rule of config/retention.toml one day either side of its cutoff."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.relativedelta import relativedelta
from sqlalchemy import create_engine, inspect, text

from retention.demo import (
    DEMO_ERASURE_SUBJECT,
    DEMO_TABLES,
    DemoExistsError,
    create_demo_database,
    demo_metadata,
)
from retention.demo.fake import _boundaries, _date_boundaries

# Summer time in Paris (UTC+2), so a naive-UTC slip would show as a 2-hour error.
AS_OF = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    """The demo at AS_OF in a SQLite file whose parent directory does not exist yet."""
    path = tmp_path_factory.mktemp("demo") / "not" / "yet" / "demo.sqlite"
    url = f"sqlite:///{path}"
    return url, create_demo_database(url, as_of=AS_OF)


def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: _fetch(url, f"SELECT * FROM {name} ORDER BY id") for name in DEMO_TABLES}


def test_every_table_is_filled_and_counted(demo: tuple[str, dict[str, int]]) -> None:
    url, counts = demo
    assert tuple(counts) == DEMO_TABLES
    assert 10_000 <= sum(counts.values()) <= 20_000
    for name in DEMO_TABLES:
        assert counts[name] > 0, name
        assert _fetch(url, f"SELECT count(*) FROM {name}") == [(counts[name],)]


def test_schema_indexes_every_rule_clock(demo: tuple[str, dict[str, int]]) -> None:
    url, _ = demo
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= set(DEMO_TABLES)
        indexed = {
            (name, column)
            for name in DEMO_TABLES
            for index in inspector.get_indexes(name)
            for column in index["column_names"]
        }
    finally:
        engine.dispose()
    clocks = {
        ("contracts", "ended_at"),
        ("connection_logs", "logged_at"),
        ("message_sends", "sent_at"),
        ("campaigns", "sent_at"),
        ("accounts", "contract_ended_at"),
        ("clients", "relationship_ended_at"),
        ("partners", "collected_at"),
        ("partners", "last_contact_at"),
        ("prospects", "collected_at"),
        ("prospects", "last_contact_at"),
        ("quote_requests", "closed_at"),
        ("quote_requests", "last_contact_at"),
        ("job_applicants", "applied_at"),
        ("job_applicants", "objected_at"),
    }
    assert clocks <= indexed
    assert tuple(demo_metadata().tables) == DEMO_TABLES


def test_same_seed_gives_the_same_rows_and_another_seed_others(
    demo: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    url, _ = demo
    again, other = (
        f"sqlite:///{tmp_path / 'again.sqlite'}",
        f"sqlite:///{tmp_path / 'other.sqlite'}",
    )
    create_demo_database(again, as_of=AS_OF)
    create_demo_database(other, as_of=AS_OF, seed=7)
    assert _dump(again) == _dump(url)
    assert _dump(other)["clients"] != _dump(url)["clients"]


def test_a_filled_database_is_kept_unless_replace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    counts = create_demo_database(url, as_of=AS_OF)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE not_demo (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO not_demo (id) VALUES (1)"))
        conn.execute(text("DELETE FROM job_applicants WHERE id > 10"))
    engine.dispose()

    with pytest.raises(DemoExistsError, match="replace"):
        create_demo_database(url, as_of=AS_OF)

    assert create_demo_database(url, as_of=AS_OF, replace=True) == counts
    assert _fetch(url, "SELECT count(*) FROM job_applicants") == [(counts["job_applicants"],)]
    assert _fetch(url, "SELECT id FROM not_demo") == [(1,)]


def test_as_of_must_be_aware(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aware"):
        create_demo_database(f"sqlite:///{tmp_path / 'x.sqlite'}", as_of=datetime(2026, 4, 2))


def test_personal_data_is_fake(demo: tuple[str, dict[str, int]]) -> None:
    url, _ = demo
    addresses = _fetch(
        url,
        "SELECT ip_address FROM connection_logs UNION SELECT visitor_ip FROM visit_stats "
        "UNION SELECT ip_address FROM clients",
    )
    assert any(":" in address for (address,) in addresses)
    for (address,) in addresses:
        parsed = ipaddress.ip_address(address)
        assert any(parsed in network for network in DOCUMENTATION_NETWORKS), address
    emails = _fetch(
        url, "SELECT email FROM clients UNION SELECT recipient_email FROM message_sends"
    )
    assert all(email.endswith(("@example.fr", "@example.com")) for (email,) in emails)
    phones = _fetch(url, "SELECT phone FROM clients WHERE anonymised_at IS NULL")
    assert all(phone.startswith("+33 6 ") for (phone,) in phones)


def test_every_case_the_rules_distinguish_is_present(demo: tuple[str, dict[str, int]]) -> None:
    url, _ = demo
    present = {
        "active contract": "SELECT 1 FROM contracts WHERE ended_at IS NULL",
        "active account": "SELECT 1 FROM accounts WHERE contract_ended_at IS NULL",
        "default campaign period": "SELECT 1 FROM campaigns WHERE retention_period IS NULL",
        "campaign with a chosen period": "SELECT 1 FROM campaigns WHERE retention_period = '18mo'",
        "draft campaign": "SELECT 1 FROM campaigns WHERE sent_at IS NULL",
        "queued send": "SELECT 1 FROM message_sends WHERE status = 'queued' AND sent_at IS NULL",
        "failed send": "SELECT 1 FROM message_sends WHERE status = 'failed' AND sent_at IS NULL",
        "unsubscribe": "SELECT 1 FROM campaign_responses WHERE kind = 'unsubscribe'",
        "active client with invoices": "SELECT 1 FROM invoices JOIN clients ON clients.id = "
        "invoices.client_id WHERE relationship_ended_at IS NULL",
        "already anonymised client": "SELECT 1 FROM clients WHERE anonymised_at IS NOT NULL",
        "old partner contacted lately": "SELECT 1 FROM partners WHERE collected_at < '2021-01-01' "
        "AND last_contact_at > '2025-01-01'",
        "prospect never contacted": "SELECT 1 FROM prospects WHERE last_contact_at IS NULL",
        "open quote request": "SELECT 1 FROM quote_requests WHERE closed_at IS NULL",
        "quote that led to a contract": "SELECT 1 FROM quote_requests WHERE led_to_contract",
        "hired applicant who objected": "SELECT 1 FROM job_applicants WHERE hired "
        "AND objected_at IS NOT NULL",
    }
    missing = [case for case, sql in present.items() if not _fetch(url, sql + " LIMIT 1")]
    assert missing == []
    sent_without_time = (
        "SELECT count(*) FROM message_sends WHERE status = 'sent' AND sent_at IS NULL"
    )
    assert _fetch(url, sent_without_time) == [(0,)]
    assert _fetch(url, "SELECT DISTINCT status FROM message_sends ORDER BY 1") == [
        ("failed",),
        ("queued",),
        ("sent",),
    ]


@dataclass(frozen=True)
class Clock:
    """How one rule finds its clock: SQL returning (clock, period text or NULL) per record."""

    rule: str
    sql: str
    period: str
    boundary_records: int


def _period(written: str) -> relativedelta:
    match = re.fullmatch(r"(\d+)(y|mo|d)", written)
    assert match is not None, written
    unit = {"y": "years", "mo": "months", "d": "days"}[match[2]]
    return relativedelta(**{unit: int(match[1])})


CLOCKS = (
    Clock(
        "customer-content",
        "SELECT DISTINCT c.id, c.ended_at, NULL FROM customer_content x "
        "JOIN contracts c ON c.id = x.contract_id",
        "90d",
        1,
    ),
    Clock("customer-contracts", "SELECT id, ended_at, NULL FROM contracts", "90d", 1),
    Clock("connection-logs", "SELECT id, logged_at, NULL FROM connection_logs", "1y", 1),
    Clock(
        "message-sends",
        "SELECT id, sent_at, NULL FROM message_sends WHERE status = 'sent'",
        "0d",
        1,
    ),
    Clock("campaign-history", "SELECT id, sent_at, retention_period FROM campaigns", "10y", 3),
    Clock(
        "visit-statistics",
        "SELECT DISTINCT a.id, a.contract_ended_at, NULL FROM visit_stats v "
        "JOIN accounts a ON a.id = v.account_id",
        "0d",
        1,
    ),
    Clock(
        "responses-and-unsubscribes",
        "SELECT DISTINCT a.id, a.contract_ended_at, NULL FROM campaign_responses r "
        "JOIN accounts a ON a.id = r.account_id",
        "0d",
        1,
    ),
    Clock("user-accounts", "SELECT id, contract_ended_at, NULL FROM accounts", "0d", 1),
    Clock(
        "clients",
        "SELECT id, relationship_ended_at, NULL FROM clients WHERE anonymised_at IS NULL",
        "5y",
        1,
    ),
    # The later of two columns: SQL's max() would be NULL with a NULL last contact.
    Clock("partners", "SELECT id, collected_at, last_contact_at FROM partners", "3y", 2),
    Clock("prospects", "SELECT id, collected_at, last_contact_at FROM prospects", "3y", 2),
    Clock(
        "quote-requests",
        "SELECT id, closed_at, last_contact_at FROM quote_requests "
        "WHERE led_to_contract = false AND closed_at IS NOT NULL",
        "1y",
        2,
    ),
    Clock(
        "job-applicants",
        "SELECT id, applied_at, NULL FROM job_applicants WHERE hired = false",
        "2y",
        1,
    ),
    Clock(
        "job-applicants-objected",
        "SELECT id, objected_at, NULL FROM job_applicants WHERE hired = false",
        "0d",
        1,
    ),
)
LATER_OF = {"partners", "prospects", "quote-requests"}


def _expiries(url: str, clock: Clock) -> list[datetime | date]:
    """The Paris-calendar expiry of every record the rule looks at: wall time, or a date."""
    expiries: list[datetime | date] = []
    for _id, first, extra in _fetch(url, clock.sql):
        if clock.rule in LATER_OF:
            values = [datetime.fromisoformat(v) for v in (first, extra) if v is not None]
            first, extra = (max(values) if values else None), None
        if first is None:
            continue
        period = _period(extra or clock.period)
        if len(str(first)) == len("2026-04-02"):
            expiries.append(date.fromisoformat(str(first)) + period)
        else:
            moment = datetime.fromisoformat(str(first)).replace(tzinfo=UTC)
            expiries.append(moment.astimezone(PARIS).replace(tzinfo=None) + period)
    return expiries


@pytest.mark.parametrize("clock", CLOCKS, ids=[clock.rule for clock in CLOCKS])
def test_each_rule_has_records_due_not_due_and_on_both_boundaries(
    demo: tuple[str, dict[str, int]], clock: Clock
) -> None:
    url, _ = demo
    wall = AS_OF.astimezone(PARIS).replace(tzinfo=None)
    expiries = _expiries(url, clock)
    if isinstance(expiries[0], datetime):
        due = [e for e in expiries if isinstance(e, datetime) and e <= wall]
        before, after = wall - timedelta(days=1), wall + timedelta(days=1)
        # Timestamps are random to the second: nothing else can fall exactly on a boundary.
        assert expiries.count(before) == clock.boundary_records
        assert expiries.count(after) == clock.boundary_records
    else:
        # A date-valued clock expires once its expiry day is over.
        due = [e for e in expiries if e < wall.date()]
        before, after = wall.date() - timedelta(days=1), wall.date() + timedelta(days=1)
        assert expiries.count(before) >= clock.boundary_records
        assert expiries.count(after) >= clock.boundary_records
    assert len(due) >= 3
    assert len(expiries) - len(due) >= 1


@pytest.mark.parametrize(
    "as_of",
    [
        AS_OF,
        datetime(2028, 2, 28, 10, tzinfo=UTC),  # one year on from 29 February clamps
        datetime(2028, 3, 1, 8, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # a day earlier, 02:30 does not exist in Paris
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # a day earlier, 02:30 happens twice
    ],
)
@pytest.mark.parametrize("period", ["0d", "90d", "1y", "18mo", "5y", "10y"])
def test_boundaries_stay_on_their_side_of_the_cutoff(as_of: datetime, period: str) -> None:
    delta = _period(period)
    due, not_due = (
        (clock.replace(tzinfo=UTC).astimezone(PARIS) + delta).astimezone(UTC)
        for clock in _boundaries(as_of, delta)
    )
    assert as_of - timedelta(days=3) <= due <= as_of - timedelta(hours=23)
    assert as_of + timedelta(hours=23) <= not_due <= as_of + timedelta(days=3)
    due_date, not_due_date = (day + delta for day in _date_boundaries(as_of, delta))
    today = as_of.astimezone(PARIS).date()
    assert today - timedelta(days=3) <= due_date < today
    assert today < not_due_date <= today + timedelta(days=3)


# --- Object stores and backup folders: the demo's buckets and backup folder -------------------

SHIPPED_CONFIG = Path(__file__).parent.parent / "config" / "retention.toml"
SHIPPED_ENDPOINT = "http://127.0.0.1:4566"
SHIPPED_ROOT = '"../var/demo-backups"'  # relative to config/: <checkout>/var/demo-backups
BACKUPS_BUCKET = "acme-backups"
CONTENT_BUCKET = "acme-customer-content"
WEEK = timedelta(days=7)
DUMP_NAME = re.compile(r"db-(\d{4}-\d{2}-\d{2})-[a-z0-9-]+\.sql\.gz")


def _demo_config(directory: Path, endpoint: str, buckets: str = "") -> Path:
    """The shipped config, its S3 endpoint and backup folder moved (its buckets renamed with
    ``buckets`` appended, so that tests sharing one server do not share buckets)."""
    text = SHIPPED_CONFIG.read_text()
    assert SHIPPED_ENDPOINT in text
    assert SHIPPED_ROOT in text
    text = text.replace(SHIPPED_ENDPOINT, endpoint).replace(SHIPPED_ROOT, '"../bk"')
    for bucket in (BACKUPS_BUCKET, CONTENT_BUCKET):
        text = text.replace(f'bucket = "{bucket}"', f'bucket = "{bucket}{buckets}"')
    path = directory / "config" / "retention.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _files(root: Path) -> dict[str, datetime]:
    """Every file under root (relative posix path) with its mtime, aware in Paris."""
    return {
        path.relative_to(root).as_posix(): datetime.fromtimestamp(path.stat().st_mtime, PARIS)
        for path in root.rglob("*")
        if path.is_file()
    }


def test_the_demo_fills_the_backup_folder_either_side_of_the_cutoff(tmp_path: Path) -> None:
    from retention.config import load_config
    from retention.demo import DEMO_FOLDER_MARKER, create_demo_objects
    from retention.stores.files_glob import path_glob

    # Nothing listens on port 1: the buckets are skipped, in one line.
    config = load_config(_demo_config(tmp_path, "http://127.0.0.1:1"))
    root = tmp_path / "bk"
    (tmp_path / "var" / "secrets").mkdir(parents=True)
    credentials = tmp_path / "var" / "secrets" / "s3-credentials"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        lines = create_demo_objects(config, as_of=AS_OF)
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"backup folder {root}: ")
    assert "no S3 server answers at http://127.0.0.1:1" in lines[1]
    assert f"{BACKUPS_BUCKET}, {CONTENT_BUCKET} skipped" in lines[1]
    # The local server's dummy keys, for the stores that name the file.
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert "[default]" in credentials.read_text()

    files = _files(root)
    glob = path_glob("**/db-*.sql.gz")
    dumps = {path: moment for path, moment in files.items() if glob.matches(path)}
    assert set(files) - set(dumps) == {DEMO_FOLDER_MARKER, "README.txt"}
    assert files["README.txt"] < AS_OF - timedelta(days=300)  # old, but outside the glob
    wall = AS_OF.astimezone(PARIS).replace(tzinfo=None)
    for path, moment in dumps.items():
        match = DUMP_NAME.fullmatch(path.rsplit("/", 1)[-1])
        assert match is not None, path
        assert match[1] == f"{moment:%Y-%m-%d}", path  # the name says the mtime's day
        assert moment <= AS_OF, path
    # Several weeks of nightly dumps, of two databases, in one folder per database and week.
    nightly = [moment for path, moment in dumps.items() if not path.startswith("manual/")]
    assert max(nightly) - min(nightly) >= 3 * WEEK
    assert len(nightly) >= 2 * 21
    assert {path.split("/")[0] for path in dumps} == {"app", "crm", "manual"}
    for path in dumps:
        if not path.startswith("manual/"):
            assert re.fullmatch(r"(app|crm)/\d{4}-W\d{2}/[^/]+", path), path
    # Expiries (mtime + 7 days on the Paris calendar): a pair exactly a day either side of now.
    expiries = [moment.replace(tzinfo=None) + WEEK for moment in dumps.values()]
    assert expiries.count(wall - timedelta(days=1)) == 1
    assert expiries.count(wall + timedelta(days=1)) == 1
    due = [expiry for expiry in expiries if expiry <= wall]
    assert 0.5 * len(expiries) <= len(due) <= 0.9 * len(expiries)  # under the 0.9 brake

    # A demo folder is refilled (what was added since goes); a folder it did not make is not.
    (root / "app" / "stray.sql.gz").write_bytes(b"x")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert create_demo_objects(config, as_of=AS_OF)[0] == lines[0]
    refilled = _files(root)
    assert set(refilled) == set(files)
    assert {path: refilled[path] for path in dumps} == dumps
    (root / DEMO_FOLDER_MARKER).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        refused = create_demo_objects(config, as_of=AS_OF + timedelta(days=3))[0]
    assert refused == f"backup folder {root}: holds files the demo did not make; left alone"
    kept = _files(root)
    assert set(kept) == set(files) - {DEMO_FOLDER_MARKER}
    assert {path: kept[path] for path in dumps} == dumps


def _s3(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _versions(client: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return versions, markers


def test_demo_plan_run_plan_on_sqlite_files_and_s3(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` in a fresh directory, on the test S3 server: demo, plan (every rule has
    something due), run, plan (nothing due), audit verify."""
    import json
    import secrets

    from click.testing import CliRunner

    from retention.cli import main

    suffix = f"-{secrets.token_hex(4)}"
    backups, content = BACKUPS_BUCKET + suffix, CONTENT_BUCKET + suffix
    _demo_config(tmp_path, s3_server, suffix)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    as_of = AS_OF.isoformat()

    def cli(*arguments: str) -> Any:
        result = CliRunner().invoke(main, ["--log-format", "json", *arguments])
        assert result.exit_code == 0, result.output
        return result

    def plan() -> dict[str, dict[str, Any]]:
        document = json.loads(cli("plan", "--as-of", as_of, "--output", "json").stdout)
        return {rule["rule"]: rule for rule in document["rules"]}

    # The test server is not one a scripts/demo-s3 started: say it is ours to fill.
    filled = cli("demo", "--as-of", as_of, "--s3-endpoint-is-mine")
    assert f"bucket {backups} on {s3_server}: " in filled.stdout
    assert f"bucket {content} on {s3_server}: " in filled.stdout

    client = _s3(s3_server)
    today = AS_OF.astimezone(PARIS).date()
    assert client.get_bucket_versioning(Bucket=backups)["Status"] == "Enabled"
    versions, markers = _versions(client, backups)
    keys = {version["Key"] for version in versions}
    # Nightly dumps a day either side of the cutoff (dated keys expire once date + 7d is over).
    assert f"nightly/{today - timedelta(days=8)}/app.sql.gz" in keys
    assert f"nightly/{today - timedelta(days=6)}/app.sql.gz" in keys
    assert any(not version["IsLatest"] for version in versions)  # re-runs left older versions
    assert len(markers) == 2
    # Every customer_content row owns objects under content/<id>/: ended and active contracts.
    rows = _fetch(
        "sqlite:///var/demo.sqlite",
        "SELECT x.id, c.ended_at IS NULL FROM customer_content x "
        "JOIN contracts c ON c.id = x.contract_id",
    )
    active = {row_id for row_id, is_active in rows if is_active}
    assert active
    assert len(active) < len(rows)
    objects = {
        entry["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=content)
        for entry in page.get("Contents", [])
    }
    owners = {int(key.split("/")[1]) for key in objects if key.startswith("content/")}
    assert owners == {row_id for row_id, _ in rows}
    assert "demo/README.txt" in objects  # under no rule's prefix

    week_folders = {
        path.relative_to(tmp_path / "bk").as_posix()
        for path in (tmp_path / "bk").glob("*/*")
        if path.is_dir()
    }
    before = plan()
    assert list(before)[:4] == ["backups-s3", "backups-local", "customer-files", "customer-content"]
    assert len(before) == 17
    assert {name for name, rule in before.items() if not rule["due"] or rule["error"]} == set()
    assert before["backups-s3"]["objects"]["noncurrent_versions"] > 0
    assert before["backups-s3"]["objects"]["delete_markers"] == 1  # the expired one
    assert before["backups-local"]["objects"]["files"] == before["backups-local"]["due"]
    assert before["customer-files"]["subjects"] == "customer-content"

    # Child rows are counted beforehand, as the run deletes them: the row 7 rules empty the
    # user-accounts children first, the message-sends rule the campaigns' sent messages.
    children = {name: rule["children"] for name, rule in before.items() if rule["children"]}
    assert children == {
        "campaign-history": {"message_sends": children["campaign-history"]["message_sends"]},
        "user-accounts": {"visit_stats": 0, "campaign_responses": 0},
        "prospects": {"marketing_actions": children["prospects"]["marketing_actions"]},
    }
    assert children["campaign-history"]["message_sends"] > 0
    assert children["prospects"]["marketing_actions"] > 0
    demo_db = "sqlite:///var/demo.sqlite"
    actions_before = _fetch(demo_db, "SELECT count(*) FROM marketing_actions")[0][0]
    orphans = (
        "SELECT count(*) FROM message_sends s JOIN campaigns c ON c.id = s.campaign_id "
        "WHERE s.status <> 'sent' OR s.sent_at IS NULL"
    )
    unsent_before = _fetch(demo_db, orphans)[0][0]
    dry = cli("run", "--dry-run", "--as-of", as_of)
    assert _children_shown(dry.stdout, "Child rows would be deleted with them:") == children

    ran = cli("run", "--yes", "--as-of", as_of)
    assert "0 of 17 rules failed" in ran.stdout
    assert _children_shown(ran.stdout, "Child rows deleted with them:") == children
    assert (
        actions_before - _fetch(demo_db, "SELECT count(*) FROM marketing_actions")[0][0]
        == (children["prospects"]["marketing_actions"])
    )
    assert (
        unsent_before - _fetch(demo_db, orphans)[0][0]
        == (children["campaign-history"]["message_sends"])
    )

    after = plan()
    assert {name: rule["due"] for name, rule in after.items()} == {name: 0 for name in before}
    verified = CliRunner().invoke(main, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert "valid" in verified.stdout

    # What was not due is still there: recent dumps, the recent delete marker, the files of
    # active contracts' rows, objects under no rule; the expired ones and emptied folders went.
    versions, markers = _versions(client, backups)
    keys = {version["Key"] for version in versions}
    assert f"nightly/{today - timedelta(days=8)}/app.sql.gz" not in keys
    assert f"nightly/{today - timedelta(days=6)}/app.sql.gz" in keys
    assert len(markers) == 1
    remaining = {
        entry["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=content)
        for entry in page.get("Contents", [])
    }
    assert {int(key.split("/")[1]) for key in remaining if key.startswith("content/")} >= active
    assert "demo/README.txt" in remaining
    left = _files(tmp_path / "bk")
    assert "README.txt" in left
    wall = AS_OF.astimezone(PARIS).replace(tzinfo=None)
    assert all(
        moment.replace(tzinfo=None) + WEEK > wall
        for path, moment in left.items()
        if path.endswith(".sql.gz")
    )
    weeks = {path.rsplit("/", 1)[0] for path in left if path.count("/") == 2}
    folders = {
        path.relative_to(tmp_path / "bk").as_posix()
        for path in (tmp_path / "bk").glob("*/*")
        if path.is_dir()
    }
    assert folders == weeks  # no week folder left empty
    assert folders < week_folders  # and the weeks whose dumps all expired went

    # Row 13: the demo's person asks to be erased. Nothing of theirs was due by age.
    subject = DEMO_ERASURE_SUBJECT
    their_content = {
        row_id
        for (row_id,) in _fetch(
            demo_db,
            "SELECT x.id FROM customer_content x JOIN contracts c ON c.id = x.contract_id "
            f"WHERE c.customer_email = '{subject}'",
        )
    }
    assert their_content <= {int(key.split("/")[1]) for key in remaining if key.count("/") > 1}
    assert len(_fetch(demo_db, _naming(subject))) == 11
    ((client_id,),) = _fetch(demo_db, f"SELECT id FROM clients WHERE email = '{subject}'")
    child_rows = {
        table: _fetch(demo_db, f"SELECT count(*) FROM {table}")[0][0]
        for table in ("message_sends", "visit_stats", "campaign_responses", "marketing_actions")
    }
    erase_dry = cli("erase", "--subject", subject, "--request", "DSR-DEMO-1", "--dry-run")
    erased = cli("erase", "--subject", subject, "--request", "DSR-DEMO-1", "--yes")
    assert subject not in erased.output
    # What the erasure plan and its dry run counted is what the erasure deleted as children.
    planned = _children_shown(erase_dry.stdout, "Child rows that go with them:")
    assert _children_shown(erase_dry.stdout, "Child rows would be deleted with them:") == planned
    assert _children_shown(erased.stdout, "Child rows deleted with them:") == planned
    assert sum(sum(counts.values()) for counts in planned.values()) > 0
    assert (
        planned["prospects"]["marketing_actions"]
        == child_rows["marketing_actions"]
        - (_fetch(demo_db, "SELECT count(*) FROM marketing_actions")[0][0])
    )
    assert "0 of 14 rules failed" in erased.stdout
    assert "  job-applicants-objected: its table is erased through job-applicants" in erased.stdout
    assert "  backups-local: not erased on request; its records go at mtime + 7d" in erased.stdout
    assert _fetch(demo_db, _naming(subject)) == []
    # The client row stays for its invoices, anonymised.
    ((name, marked),) = _fetch(
        demo_db, f"SELECT name, anonymised_at IS NOT NULL FROM clients WHERE id = {client_id}"
    )
    assert (name, marked) == ("Client anonymisé", 1)
    content_left = {
        int(entry["Key"].split("/")[1])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=content)
        for entry in page.get("Contents", [])
        if entry["Key"].startswith("content/")
    }
    assert not content_left & their_content
    assert (
        content_left
        == {int(key.split("/")[1]) for key in remaining if key.startswith("content/")}
        - their_content
    )
    # Asked again, nothing is left: the objects' line says 0, not nothing.
    again = cli("erase", "--subject", subject, "--request", "DSR-DEMO-2", "--dry-run")
    assert "No record holds this subject." in again.stdout
    assert "\n  customer-files: 0 current versions\n" in again.stdout
    verified = CliRunner().invoke(main, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    shown = CliRunner().invoke(main, ["audit", "show"])
    assert "erasure request DSR-DEMO-1" in shown.stdout
    assert subject not in shown.stdout


def _children_shown(output: str, heading: str) -> dict[str, dict[str, int]]:
    """The section of a plan or run report under ``heading``: per rule, per child table."""
    shown: dict[str, dict[str, int]] = {}
    for line in output.split(heading, 1)[1].splitlines()[1:]:
        if not line.startswith("  "):
            break
        rule, counts = line.strip().split(None, 1)
        shown[rule] = {
            table: int(count.replace(",", ""))
            for count, table in re.findall(r"(\d[\d,]*) (\w[^,\s]*)", counts)
        }
    return shown


def _naming(subject: str) -> str:
    """A query for every row that names ``subject`` in the demo, in any of its tables."""
    columns = [
        ("contracts", "customer_email"),
        ("accounts", "email"),
        ("message_sends", "recipient_email"),
        ("campaign_responses", "recipient_email"),
        ("clients", "email"),
        ("partners", "email"),
        ("prospects", "email"),
        ("quote_requests", "email"),
        ("job_applicants", "email"),
        ("customer_content", "body"),
    ]
    return " UNION ALL ".join(
        f"SELECT '{table}', id FROM {table} WHERE {column} LIKE '%{subject}%'"
        for table, column in columns
    )


def test_the_demo_refuses_a_local_s3_server_its_checkout_did_not_start(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: another checkout's demo server answers on the port; this demo's run there would
    empty that demo's buckets. `retention demo` refuses it, and writes nothing at all."""
    import secrets

    from click.testing import CliRunner

    from retention.cli import main
    from retention.errors import ExitCode

    suffix = f"-{secrets.token_hex(4)}"
    _demo_config(tmp_path, s3_server, suffix)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    # A record of a server this checkout started, but on another port: not this one.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo-s3.pid").write_text("1\n")
    (tmp_path / "var" / "demo-s3.port").write_text("1\n")

    result = CliRunner().invoke(main, ["demo", "--as-of", AS_OF.isoformat()])

    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"error: the S3 server at {s3_server}: not started by this checkout's" in result.stderr
    assert "nothing was written" in result.stderr
    assert "--s3-endpoint-is-mine" in result.stderr
    assert result.stdout == ""
    assert sorted(path.name for path in (tmp_path / "var").iterdir()) == [
        "demo-s3.pid",
        "demo-s3.port",
    ]
    assert not (tmp_path / "bk").exists()
    buckets = {bucket["Name"] for bucket in _s3(s3_server).list_buckets()["Buckets"]}
    assert {BACKUPS_BUCKET + suffix, CONTENT_BUCKET + suffix} & buckets == set()


def test_the_demo_never_empties_a_bucket_it_did_not_make(s3_server: str, tmp_path: Path) -> None:
    import secrets

    from retention.config import load_config
    from retention.demo import create_demo_database, create_demo_objects

    suffix = f"-{secrets.token_hex(4)}"
    config = load_config(_demo_config(tmp_path, s3_server, suffix))
    client = _s3(s3_server)
    foreign = BACKUPS_BUCKET + suffix
    client.create_bucket(Bucket=foreign)
    client.put_object(Bucket=foreign, Key="real/data.bin", Body=b"someone's data")

    database_url = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    create_demo_database(database_url, as_of=AS_OF)
    lines = create_demo_objects(config, as_of=AS_OF, database_url=database_url)
    again = create_demo_objects(config, as_of=AS_OF, database_url=database_url)

    assert any(f"bucket {foreign}" in line and "left alone" in line for line in lines)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=foreign).get("Contents", [])]
    assert keys == ["real/data.bin"]
    # The bucket the demo made itself is refilled, run after run.
    content = CONTENT_BUCKET + suffix
    assert any(f"bucket {content} on" in line and "left alone" not in line for line in again)
