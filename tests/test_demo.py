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
    DEMO_TABLES,
    DemoExistsError,
    _boundaries,
    _date_boundaries,
    create_demo_database,
    demo_metadata,
)

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
