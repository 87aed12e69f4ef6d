"""The demo data set: the schema the rules of config/retention.toml are written against, and
about seven years of fake but realistic records in it, on any SQLAlchemy URL (Core only); and
the objects and files of its object rules: dated dumps in backup folders and buckets, and the
customers' files under the prefixes that a cross-store rule reaches (``create_demo_objects``).

Every rule gets records due and not due at ``as_of``, including a boundary pair whose expiry is
one day before and one day after ``as_of`` on the Europe/Paris calendar. The data is a pure
function of ``(as_of, seed, scale)``: nothing reads the wall clock or a global random state.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import socket
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    inspect,
    make_url,
    select,
    text,
)

from retention.anonymise import keyed_hash, mask_email, truncate_ip, year_only
from retention.config import Config, FilesStoreConfig, Rule, S3StoreConfig, SqlStoreConfig
from retention.errors import ExitCode, RetentionError
from retention.rules import parse_period
from retention.runtime.secrets import store_url
from retention.wording import counted

DEMO_TABLES: tuple[str, ...] = (
    "contracts",
    "customer_content",
    "accounts",
    "connection_logs",
    "campaigns",
    "message_sends",
    "visit_stats",
    "campaign_responses",
    "clients",
    "invoices",
    "partners",
    "prospects",
    "marketing_actions",
    "quote_requests",
    "job_applicants",
)

PARIS = ZoneInfo("Europe/Paris")
_CHUNK_ROWS = 1000
_HISTORY = relativedelta(years=7)

# The periods of config/retention.toml, by rule name.
_CUSTOMER_CONTENT = parse_period("90d").as_relativedelta()
_CONNECTION_LOGS = parse_period("1y").as_relativedelta()
_IMMEDIATE = parse_period("0d").as_relativedelta()
_CAMPAIGN_DEFAULT = parse_period("10y").as_relativedelta()
_CLIENTS = parse_period("5y").as_relativedelta()
_PARTNERS_AND_PROSPECTS = parse_period("3y").as_relativedelta()
_QUOTE_REQUESTS = parse_period("1y").as_relativedelta()
_JOB_APPLICANTS = parse_period("2y").as_relativedelta()
# What clients asked for instead of the default 10 years (campaigns.retention_period).
_CLIENT_CHOSEN_PERIODS = ("1y", "18mo", "3y", "5y")

_FIRST_NAMES = (
    "Camille", "Léa", "Manon", "Chloé", "Emma", "Inès", "Jade", "Louise", "Zoé", "Hélène",
    "Élodie", "Céline", "Nathalie", "Isabelle", "Sophie", "Julie", "Margaux", "Anaïs", "Lucas",
    "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Théo", "Raphaël", "Nathan", "Mathis",
    "Thomas", "Nicolas", "Julien", "Antoine", "Maxime", "Baptiste", "François", "Jérôme",
    "Sébastien", "Stéphane", "Benoît", "Jean-Pierre", "Marie-Claire", "Gaëlle",
)  # fmt: skip
_LAST_NAMES = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux",
    "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert", "Bonnet",
    "Legrand", "Garnier", "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Perrin",
    "Morin", "Mathieu", "Clément", "Gauthier", "Fontaine", "Chevalier", "Robin", "Le Gall",
    "N'Diaye", "Da Silva",
)  # fmt: skip
_COMPANY_SUFFIXES = (
    "Conseil", "Informatique", "Logistique", "Distribution", "& Fils", "et Associés", "Services",
    "Imprimerie", "Traiteur",
)  # fmt: skip
_FILENAMES = (
    "contrat-hebergement.pdf", "export-clients.csv", "sauvegarde-base.sql.gz", "logo.png",
    "site-vitrine.tar.gz", "factures.zip", "rapport-annuel.pdf", "catalogue.xlsx",
)  # fmt: skip
_SUBJECTS = (
    "Nos nouveautés du mois", "Offre spéciale : -20 % ce week-end", "Votre lettre d'information",
    "Invitation : portes ouvertes", "Dernier rappel avant la fin des soldes",
    "Découvrez notre nouvelle collection", "Merci pour votre fidélité", "Enquête de satisfaction",
)  # fmt: skip
_CLIENT_NOTES = (
    "Préfère être contacté par e-mail.", "Demande une facture papier.",
    "Client de l'agence de Lyon.", "Rappeler après 18 h.", "Paiement à 30 jours fin de mois.",
)  # fmt: skip
_CHANNELS = ("email", "sms", "courrier", "telephone")
_ANONYMISED_NAME = "Client anonymisé"
# One person in every table that names people, with nothing due by age: the one the docs erase.
DEMO_ERASURE_SUBJECT = "camille.dupont.demo@example.com"

Row = dict[str, Any]
_Clock = TypeVar("_Clock", date, datetime)


class DemoExistsError(RetentionError):
    """The demo tables already hold rows and the caller did not ask to replace them."""

    exit_code = ExitCode.USAGE


def demo_metadata() -> MetaData:
    """Given nothing, return the demo schema: the tables of DEMO_TABLES, parents first.

    Naive DateTime columns hold UTC; every column a rule uses as its clock is indexed, and so are
    the foreign keys that purges join or delete children through.
    """
    metadata = MetaData()

    def table(name: str, *columns: Column[Any]) -> None:
        Table(name, metadata, Column("id", Integer, primary_key=True, autoincrement=True), *columns)

    def refers(column: str, target: str) -> Column[int]:
        return Column(column, Integer, ForeignKey(f"{target}.id"), nullable=False, index=True)

    table(
        "contracts",
        Column("customer_name", String(200)),
        Column("customer_email", String(200)),
        Column("started_at", DateTime),
        Column("ended_at", Date, nullable=True, index=True),
        Column("anonymised_at", DateTime, nullable=True),
    )
    table(
        "customer_content",
        refers("contract_id", "contracts"),
        Column("filename", String(255)),
        Column("body", Text),
        Column("created_at", DateTime),
    )
    table(
        "accounts",
        Column("name", String(200)),
        Column("email", String(200)),
        Column("created_at", DateTime),
        Column("contract_ended_at", DateTime, nullable=True, index=True),
    )
    table(
        "connection_logs",
        Column("account_id", Integer),
        Column("ip_address", String(45)),
        Column("logged_at", DateTime, nullable=False, index=True),
    )
    table(
        "campaigns",
        Column("account_id", Integer),
        Column("subject", String(200)),
        Column("sent_at", DateTime, nullable=True, index=True),
        Column("retention_period", String(20), nullable=True),
    )
    table(
        "message_sends",
        refers("campaign_id", "campaigns"),
        Column("recipient_email", String(200)),
        Column("status", String(10)),
        Column("queued_at", DateTime),
        Column("sent_at", DateTime, nullable=True, index=True),
    )
    table(
        "visit_stats",
        refers("account_id", "accounts"),
        Column("campaign_id", Integer),
        Column("visitor_ip", String(45)),
        Column("visited_at", DateTime),
    )
    table(
        "campaign_responses",
        refers("account_id", "accounts"),
        Column("campaign_id", Integer),
        Column("recipient_email", String(200)),
        Column("kind", String(12)),
        Column("created_at", DateTime),
    )
    table(
        "clients",
        Column("name", String(200)),
        Column("email", String(200)),
        # 64, not 40: the clients rule anonymises phone with a keyed hash of 64 hex digits.
        Column("phone", String(64)),
        Column("ip_address", String(45)),
        Column("birth_date", Date),
        Column("notes", Text, nullable=True),
        Column("relationship_ended_at", Date, nullable=True, index=True),
        Column("anonymised_at", DateTime, nullable=True),
    )
    table(
        "invoices",
        refers("client_id", "clients"),
        Column("number", String(40)),
        Column("amount_cents", Integer),
        Column("issued_at", Date),
    )

    def contact_history() -> tuple[Column[Any], ...]:
        return (
            Column("email", String(200)),
            Column("collected_at", DateTime, index=True),
            Column("last_contact_at", DateTime, nullable=True, index=True),
        )

    table(
        "partners",
        Column("company", String(200)),
        Column("contact_name", String(200)),
        *contact_history(),
    )
    table("prospects", Column("name", String(200)), *contact_history())
    table(
        "marketing_actions",
        refers("prospect_id", "prospects"),
        Column("channel", String(20)),
        Column("sent_at", DateTime),
    )
    table(
        "quote_requests",
        Column("name", String(200)),
        Column("email", String(200)),
        Column("requested_at", DateTime),
        Column("closed_at", DateTime, nullable=True, index=True),
        Column("last_contact_at", DateTime, nullable=True, index=True),
        Column("led_to_contract", Boolean, nullable=False),
    )
    table(
        "job_applicants",
        Column("name", String(200)),
        Column("email", String(200)),
        Column("applied_at", DateTime, index=True),
        Column("hired", Boolean, nullable=False),
        Column("objected_at", DateTime, nullable=True, index=True),
    )
    return metadata


def create_demo_database(
    url: str, *, as_of: datetime, seed: int = 2026, scale: int = 1, replace: bool = False
) -> dict[str, int]:
    """Given a database URL and the demo's "now", create the demo tables there, fill them, and
    return the number of rows inserted per table, in DEMO_TABLES order.

    The rows depend only on ``as_of`` (an aware datetime), ``seed`` and ``scale`` (a multiplier
    of the ~16,000 rows of scale 1). Raise DemoExistsError when demo tables already hold rows,
    unless ``replace`` is true: then the demo tables (and only they) are dropped and recreated.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, not {scale}")
    rows = _generate(_Fake(random.Random(seed), as_of), scale)
    _create_sqlite_directory(url)
    metadata = demo_metadata()
    engine = create_engine(url)
    try:
        if not replace and _holds_rows(engine, metadata):
            shown = make_url(url).render_as_string(hide_password=True)
            raise DemoExistsError(
                f"the demo tables in {shown} already hold rows; pass replace=True "
                "to drop and recreate them"
            )
        metadata.drop_all(engine)
        metadata.create_all(engine)
        for name in DEMO_TABLES:
            _insert(engine, metadata.tables[name], rows[name])
    finally:
        engine.dispose()
    return {name: len(rows[name]) for name in DEMO_TABLES}


def _create_sqlite_directory(url: str) -> None:
    parsed = make_url(url)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _holds_rows(engine: Engine, metadata: MetaData) -> bool:
    present = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return any(
            conn.execute(select(text("1")).select_from(table).limit(1)).first() is not None
            for name, table in metadata.tables.items()
            if name in present
        )


def _insert(engine: Engine, table: Table, rows: list[Row]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), _CHUNK_ROWS):
            conn.execute(table.insert(), rows[start : start + _CHUNK_ROWS])
        if rows and engine.dialect.name == "postgresql":
            # Ids are given explicitly so children can refer to them; PostgreSQL's sequence does
            # not see them, and the next ordinary insert would collide with id 1.
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                {"table": table.name, "last": len(rows)},
            )


# --- Fake people and values ----------------------------------------------------------------------


@dataclass
class _Fake:
    """Random but reproducible values around ``as_of``; datetimes are naive UTC, whole seconds."""

    rng: random.Random
    as_of: datetime
    now: datetime = field(init=False)
    history_start: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.now = _naive_utc(self.as_of).replace(microsecond=0)
        self.history_start = self.now - _HISTORY

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def count(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def between(self, start: datetime, end: datetime) -> datetime:
        seconds = max(0, int((end - start).total_seconds()))
        return start + timedelta(seconds=self.rng.randint(0, seconds))

    def days_ago(self, most: int, least: int = 0) -> datetime:
        return self.between(self.now - timedelta(days=most), self.now - timedelta(days=least))

    def since(self, start: datetime, end: datetime | None = None) -> datetime:
        """A moment after ``start`` and before ``end`` (default: now), never in the future."""
        return self.between(start, min(end or self.now, self.now))

    def person(self) -> tuple[str, str]:
        first, last = self.rng.choice(_FIRST_NAMES), self.rng.choice(_LAST_NAMES)
        number = str(self.rng.randint(1, 99)) if self.chance(0.2) else ""
        domain = self.rng.choice(("example.fr", "example.fr", "example.com"))
        return f"{first} {last}", f"{_ascii(first)}.{_ascii(last)}{number}@{domain}"

    def ip(self) -> str:
        if self.chance(0.15):
            groups = (self.rng.randint(0, 0xFFFF) for _ in range(3))
            return "2001:db8:{:x}:{:x}::{:x}".format(*groups)
        network = self.rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return f"{network}.{self.rng.randint(1, 254)}"

    def phone(self) -> str:
        pairs = " ".join(f"{self.rng.randint(0, 99):02d}" for _ in range(4))
        return f"+33 6 {pairs}"


def _ascii(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return plain.lower().replace(" ", "").replace("'", "")


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


# --- Boundary records ----------------------------------------------------------------------------


def _walk(
    first: _Clock, expiry_of: Callable[[_Clock], _Clock], target: _Clock, *, due: bool
) -> _Clock:
    """From ``first``, step away from the cutoff until the expiry is on the record's side of it.

    ``first + period`` hits ``target`` exactly unless month-end clamping (a 29 February, a 31st)
    or a DST gap makes the target unreachable; then the record lands as close as it can.
    """
    unit = timedelta(hours=1) if isinstance(first, datetime) else timedelta(days=1)
    step = -unit if due else unit
    clock = first
    while (expiry_of(clock) > target) if due else (expiry_of(clock) < target):
        clock += step
    return clock


def _boundaries(as_of: datetime, period: relativedelta) -> Iterator[datetime]:
    """Yield two naive UTC clocks whose Paris-calendar expiry is as_of minus a day (due), then
    as_of plus a day (not due)."""
    wall = as_of.astimezone(PARIS)
    for due in (True, False):
        target = (wall + timedelta(days=-1 if due else 1)).astimezone(UTC)
        first = (target.astimezone(PARIS) - period).astimezone(UTC)
        clock = _walk(
            first, lambda c: (c.astimezone(PARIS) + period).astimezone(UTC), target, due=due
        )
        yield _naive_utc(clock)


def _date_boundaries(as_of: datetime, period: relativedelta) -> Iterator[date]:
    """Yield two dates whose expiry is the Paris date of as_of minus a day (due), then plus a day
    (not due)."""
    today = as_of.astimezone(PARIS).date()
    for due in (True, False):
        target = today + timedelta(days=-1 if due else 1)
        yield _walk(target - period, lambda d: d + period, target, due=due)


# --- Table generators ----------------------------------------------------------------------------


class _Rows(dict[str, list[Row]]):
    """Rows per demo table; ids are assigned here so children can refer to their parents."""

    def __init__(self) -> None:
        super().__init__({name: [] for name in DEMO_TABLES})

    def add(self, table: str, **values: Any) -> int:
        rows = self[table]
        rows.append({"id": len(rows) + 1, **values})
        return len(rows)


def _generate(fake: _Fake, scale: int) -> _Rows:
    rows = _Rows()
    _hosting(rows, fake, scale)
    _emailing(rows, fake, scale)
    _clients(rows, fake, scale)
    _contacts(rows, fake, scale)
    _quote_requests(rows, fake, scale)
    _job_applicants(rows, fake, scale)
    # Last, so that every other row is the same with or without this person.
    _erasure_subject(rows, fake)
    return rows


def _erasure_subject(rows: _Rows, fake: _Fake) -> None:
    """Add DEMO_ERASURE_SUBJECT to every table that names people: a current customer, account
    holder, recipient, client, partner, prospect, quote requester and applicant. Nothing of
    theirs is due by age; only `retention erase` takes it (policies.md row 13)."""
    name, email = "Camille Dupont", DEMO_ERASURE_SUBJECT
    recent = fake.days_ago(60, 5)
    contract = rows.add(
        "contracts",
        customer_name=name,
        customer_email=email,
        started_at=fake.days_ago(900, 400),
        ended_at=None,
    )
    for filename in _FILENAMES[:2]:
        rows.add(
            "customer_content",
            contract_id=contract,
            filename=filename,
            body=f"Fichier {filename} déposé par {name} ({email}).",
            created_at=recent,
        )
    account = rows.add(
        "accounts",
        name=name,
        email=email,
        created_at=fake.days_ago(900, 400),
        contract_ended_at=None,
    )
    for _ in range(3):
        rows.add("connection_logs", account_id=account, ip_address=fake.ip(), logged_at=recent)
    campaign = _campaign(rows, fake, account, recent, None, None)
    _send(rows, campaign, email, "queued", recent, None)
    rows.add(
        "campaign_responses",
        account_id=account,
        campaign_id=campaign,
        recipient_email=email,
        kind="response",
        created_at=recent,
    )
    _client_rows(rows, fake, name, email)
    rows.add(
        "partners",
        company="Dupont Conseil",
        contact_name=name,
        email=email,
        collected_at=recent,
        last_contact_at=None,
    )
    prospect = rows.add(
        "prospects", name=name, email=email, collected_at=recent, last_contact_at=None
    )
    rows.add("marketing_actions", prospect_id=prospect, channel="email", sent_at=recent)
    rows.add(
        "quote_requests",
        name=name,
        email=email,
        requested_at=recent,
        closed_at=None,
        last_contact_at=recent,
        led_to_contract=False,
    )
    rows.add(
        "job_applicants",
        name=name,
        email=email,
        applied_at=recent,
        hired=False,
        objected_at=None,
    )


def _hosting(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(80 * scale):
        started = fake.between(fake.history_start, fake.now - timedelta(days=60))
        ended = fake.since(started + timedelta(days=30)).date() if fake.chance(0.55) else None
        _contract(rows, fake, started, ended)
    # customer-content (90 days after contracts.ended_at, a date)
    for ended in _date_boundaries(fake.as_of, _CUSTOMER_CONTENT):
        _contract(rows, fake, fake.days_ago(1500, 400), ended)


def _contract(rows: _Rows, fake: _Fake, started: datetime, ended: date | None) -> None:
    name, email = fake.person()
    contract = rows.add(
        "contracts", customer_name=name, customer_email=email, started_at=started, ended_at=ended
    )
    until = None if ended is None else datetime.combine(ended, time())
    for _ in range(fake.count(1, 9)):
        filename = fake.rng.choice(_FILENAMES)
        rows.add(
            "customer_content",
            contract_id=contract,
            filename=filename,
            body=f"Fichier {filename} déposé par {name} ({email}).",
            created_at=fake.since(started, until),
        )


def _emailing(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(250 * scale):
        created = fake.between(fake.history_start, fake.now - timedelta(days=90))
        ended = fake.since(created + timedelta(days=60)) if fake.chance(0.4) else None
        chosen = fake.rng.choice(_CLIENT_CHOSEN_PERIODS) if fake.chance(0.25) else None
        _account(rows, fake, created, ended, chosen)

    # user-accounts, visit-statistics, responses-and-unsubscribes (0 days after the account's
    # contract_ended_at): the +1 day account has given notice, its contract ends tomorrow.
    for ended in _boundaries(fake.as_of, _IMMEDIATE):
        created = fake.days_ago(2000, 400)
        account = _account(rows, fake, created, ended, None)
        _campaign(rows, fake, account, fake.since(created, ended), None, ended)

    active = _account(rows, fake, fake.days_ago(1500, 800), None, None)
    # connection-logs (1 year after logged_at)
    for logged in _boundaries(fake.as_of, _CONNECTION_LOGS):
        rows.add("connection_logs", account_id=active, ip_address=fake.ip(), logged_at=logged)
    # message-sends (0 days after sent_at, status 'sent'): +1 day is a send stamped tomorrow.
    campaign = _campaign(rows, fake, active, fake.now - timedelta(days=2), None, None)
    for sent in _boundaries(fake.as_of, _IMMEDIATE):
        email = fake.person()[1]
        queued = sent - timedelta(minutes=5)
        _send(rows, campaign, email, "sent", queued, sent)

    # campaign-history (sent_at plus retention_period, or 10 years when it is NULL): the accounts
    # are older than the 7-year history so that a 10-year-old campaign is plausible.
    for chosen in (None, "18mo", "1y"):
        effective = _CAMPAIGN_DEFAULT if chosen is None else parse_period(chosen).as_relativedelta()
        created = fake.now - effective - relativedelta(years=1)
        account = _account(rows, fake, created, None, chosen)
        for sent in _boundaries(fake.as_of, effective):
            _campaign(rows, fake, account, sent, chosen, None)


def _account(
    rows: _Rows, fake: _Fake, created: datetime, ended: datetime | None, chosen: str | None
) -> int:
    """Add an account with its logs and campaigns; ``chosen`` is its campaign retention choice."""
    name, email = fake.person()
    account = rows.add(
        "accounts", name=name, email=email, created_at=created, contract_ended_at=ended
    )
    for _ in range(fake.count(5, 25)):
        logged = fake.since(created, ended)
        rows.add("connection_logs", account_id=account, ip_address=fake.ip(), logged_at=logged)
    for _ in range(fake.count(0, 5)):
        draft = fake.chance(0.1)
        sent = None if draft else fake.since(created, ended)
        _campaign(rows, fake, account, sent, chosen, ended)
    return account


def _campaign(
    rows: _Rows,
    fake: _Fake,
    account: int,
    sent: datetime | None,
    chosen: str | None,
    ended: datetime | None,
) -> int:
    """Add a campaign with its sends; a sent one also gets visits and responses (at least one of
    each) until ``ended``."""
    campaign = rows.add(
        "campaigns",
        account_id=account,
        subject=fake.rng.choice(_SUBJECTS),
        sent_at=sent,
        retention_period=chosen,
    )
    recipients = [fake.person()[1] for _ in range(fake.count(4, 9))]
    for email in recipients:
        if sent is None:
            _send(rows, campaign, email, "queued", fake.days_ago(20), None)
            continue
        queued = sent - timedelta(minutes=fake.count(1, 60))
        if fake.chance(0.08):
            _send(rows, campaign, email, "failed", queued, None)
        else:
            _send(
                rows,
                campaign,
                email,
                "sent",
                queued,
                fake.since(sent, sent + timedelta(minutes=15)),
            )
    if sent is None:
        return campaign
    for _ in range(fake.count(1, 9)):
        visited = fake.since(sent, min(sent + timedelta(days=30), ended or fake.now))
        rows.add(
            "visit_stats",
            account_id=account,
            campaign_id=campaign,
            visitor_ip=fake.ip(),
            visited_at=visited,
        )
    for email in fake.rng.sample(recipients, fake.count(1, 3)):
        rows.add(
            "campaign_responses",
            account_id=account,
            campaign_id=campaign,
            recipient_email=email,
            kind="unsubscribe" if fake.chance(0.3) else "response",
            created_at=fake.since(sent, min(sent + timedelta(days=60), ended or fake.now)),
        )
    return campaign


def _send(
    rows: _Rows, campaign: int, email: str, status: str, queued: datetime, sent: datetime | None
) -> None:
    rows.add(
        "message_sends",
        campaign_id=campaign,
        recipient_email=email,
        status=status,
        queued_at=queued,
        sent_at=sent,
    )


def _clients(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(300 * scale):
        ended = fake.since(fake.history_start + timedelta(days=365)).date()
        _client(rows, fake, ended if fake.chance(0.5) else None)
    # clients (anonymised 5 years after relationship_ended_at, a date)
    for ended in _date_boundaries(fake.as_of, _CLIENTS):
        _client(rows, fake, ended)


def _client(rows: _Rows, fake: _Fake, ended: date | None) -> None:
    name, email = fake.person()
    _client_rows(rows, fake, name, email, ended)


def _client_rows(
    rows: _Rows, fake: _Fake, name: str, email: str, ended: date | None = None
) -> None:
    """Add a client (maybe anonymised already, when its relationship ended long ago) and its
    invoices."""
    values: Row = {
        "name": name,
        "email": email,
        "phone": fake.phone(),
        "ip_address": fake.ip(),
        "birth_date": date(fake.count(1950, 2003), fake.count(1, 12), fake.count(1, 28)),
        "notes": fake.rng.choice(_CLIENT_NOTES) if fake.chance(0.3) else None,
        "relationship_ended_at": ended,
        "anonymised_at": None,
    }
    last_invoice = fake.now if ended is None else datetime.combine(ended, time())
    first_invoice = fake.between(fake.history_start, last_invoice - timedelta(days=30))
    anonymised = None if ended is None else datetime.combine(ended + _CLIENTS, time(3))
    if anonymised is not None and anonymised < fake.now and fake.chance(0.3):
        # Some were anonymised by an earlier run: a rerun must leave them alone.
        values.update(
            name=_ANONYMISED_NAME,
            email=mask_email(email),
            phone=keyed_hash(b"an earlier run's key", values["phone"]),
            ip_address=truncate_ip(values["ip_address"]),
            birth_date=year_only(values["birth_date"]),
            notes=None,
            anonymised_at=anonymised,
        )
    client = rows.add("clients", **values)
    for _ in range(fake.count(0, 8)):
        issued = fake.since(first_invoice, last_invoice).date()
        rows.add(
            "invoices",
            client_id=client,
            number=f"F{issued.year}-{len(rows['invoices']) + 1:06d}",
            amount_cents=fake.count(50, 5000) * 100 + fake.rng.choice((0, 0, 50, 90)),
            issued_at=issued,
        )


def _contacts(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(120 * scale):
        _partner(rows, fake, *_collection(fake))
    for _ in range(400 * scale):
        _prospect(rows, fake, *_collection(fake))
    # partners and prospects (3 years after the later of collected_at and last_contact_at): the
    # later one is once the last contact (collected long before), once the collection itself.
    for clock in _boundaries(fake.as_of, _PARTNERS_AND_PROSPECTS):
        for add in (_partner, _prospect):
            add(rows, fake, clock - timedelta(days=fake.count(200, 900)), clock)
            add(rows, fake, clock, None)


def _collection(fake: _Fake) -> tuple[datetime, datetime | None]:
    collected = fake.since(fake.history_start)
    return collected, fake.since(collected) if fake.chance(0.6) else None


def _partner(rows: _Rows, fake: _Fake, collected: datetime, contacted: datetime | None) -> None:
    name, email = fake.person()
    company = f"{fake.rng.choice(_LAST_NAMES)} {fake.rng.choice(_COMPANY_SUFFIXES)}"
    rows.add(
        "partners",
        company=company,
        contact_name=name,
        email=email,
        collected_at=collected,
        last_contact_at=contacted,
    )


def _prospect(rows: _Rows, fake: _Fake, collected: datetime, contacted: datetime | None) -> None:
    name, email = fake.person()
    prospect = rows.add(
        "prospects", name=name, email=email, collected_at=collected, last_contact_at=contacted
    )
    for _ in range(fake.count(0, 5)):
        sent = fake.since(collected, contacted)
        rows.add(
            "marketing_actions",
            prospect_id=prospect,
            channel=fake.rng.choice(_CHANNELS),
            sent_at=sent,
        )


def _quote_requests(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(250 * scale):
        requested = fake.since(fake.history_start)
        closed = requested + timedelta(days=fake.count(2, 120), hours=fake.count(0, 23))
        if closed > fake.now or fake.chance(0.2):
            _quote(rows, fake, requested, None, fake.since(requested), led_to_contract=False)
            continue
        contacted = (
            fake.since(requested, closed + timedelta(days=400)) if fake.chance(0.6) else None
        )
        _quote(rows, fake, requested, closed, contacted, led_to_contract=fake.chance(0.3))
    # quote-requests (1 year after the later of closed_at and last_contact_at, no contract): the
    # later one is once a follow-up contact after closing, once the closing itself.
    for clock in _boundaries(fake.as_of, _QUOTE_REQUESTS):
        requested = clock - timedelta(days=fake.count(100, 200))
        _quote(rows, fake, requested, clock - timedelta(days=40), clock, led_to_contract=False)
        _quote(rows, fake, requested, clock, clock - timedelta(days=20), led_to_contract=False)


def _quote(
    rows: _Rows,
    fake: _Fake,
    requested: datetime,
    closed: datetime | None,
    contacted: datetime | None,
    *,
    led_to_contract: bool,
) -> None:
    name, email = fake.person()
    rows.add(
        "quote_requests",
        name=name,
        email=email,
        requested_at=requested,
        closed_at=closed,
        last_contact_at=contacted,
        led_to_contract=led_to_contract,
    )


def _job_applicants(rows: _Rows, fake: _Fake, scale: int) -> None:
    for _ in range(200 * scale):
        applied = fake.since(fake.history_start)
        hired = fake.chance(0.15)
        objects = fake.chance(0.2 if hired else 0.1)
        objected = fake.since(applied, applied + timedelta(days=700)) if objects else None
        _applicant(rows, fake, applied, hired, objected)
    # job-applicants (2 years after applied_at, not hired, no objection)
    for applied in _boundaries(fake.as_of, _JOB_APPLICANTS):
        _applicant(rows, fake, applied, False, None)
    # job-applicants-objected (0 days after objected_at, not hired): recent applications, so the
    # 2-year rule does not reach them; +1 day is an objection effective tomorrow.
    for objected in _boundaries(fake.as_of, _IMMEDIATE):
        _applicant(rows, fake, fake.days_ago(200, 30), False, objected)


def _applicant(
    rows: _Rows, fake: _Fake, applied: datetime, hired: bool, objected: datetime | None
) -> None:
    name, email = fake.person()
    rows.add(
        "job_applicants",
        name=name,
        email=email,
        applied_at=applied,
        hired=hired,
        objected_at=objected,
    )


# --- Object stores and backup folders ------------------------------------------------------------

# A backup folder holding this file was made by the demo, which may empty and refill it.
DEMO_FOLDER_MARKER = ".retention-demo"
# A bucket with this tag was made by the demo, which may empty and refill it.
DEMO_BUCKET_TAG = "retention-demo"
# The databases whose nightly dumps the demo's backups hold, and when they are taken (Paris).
_DUMPED_DATABASES = ("app", "crm")
_NIGHTLY = time(3, 0)
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PUT_THREADS = 8
_DELETE_CHUNK = 1000
_OUTSIDE_EVERY_RULE = "demo/README.txt"


def create_demo_objects(
    config: Config, *, as_of: datetime, seed: int = 2026, database_url: str | None = None
) -> list[str]:
    """Given the config and the demo's "now", fill the backup folders and buckets its object rules
    name, and return one line per store (one per unreachable S3 endpoint) saying what was done.

    Backup folders get nightly dumps over three periods and a week, named with their date and
    with that moment as their mtime, plus a pair taken a day either side of the cutoff; a folder
    is only filled when it is missing, empty, or made by an earlier demo (it holds
    DEMO_FOLDER_MARKER). Buckets are only filled on a local S3 server (``endpoint_url`` on
    127.0.0.1 or localhost) that answers, and only a new or empty bucket or one the demo made
    (tagged DEMO_BUCKET_TAG): each is emptied, then gets nightly dumps keyed by date
    (versioned, with re-runs and delete markers) or, for a cross-store rule, files under the
    prefix of every record of its subjects' table, read from ``database_url`` (default: the
    subjects' store). Dummy keys are written to a store's ``credentials_file`` when it does not
    exist (mode 0600).

    Example: with the shipped config, as of 2026-04-02, the folder gets
    ``app/2026-W13/db-2026-03-25-app.sql.gz`` (mtime 2026-03-25 03:00 Paris) and the bucket
    ``acme-backups`` gets ``nightly/2026-03-25/app.sql.gz``.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    rules_of: dict[str, list[Rule]] = {}
    for rule in config.rules:
        if rule.objects is not None:
            rules_of.setdefault(rule.store, []).append(rule)
    lines: list[str] = []
    buckets: list[tuple[S3StoreConfig, list[Rule]]] = []
    for name, rules in rules_of.items():
        store = config.stores[name]
        if isinstance(store, FilesStoreConfig):
            lines.append(_fill_backup_folder(store, rules, as_of))
        elif isinstance(store, S3StoreConfig):
            buckets.append((store, rules))
    lines += _fill_buckets(config, buckets, as_of, random.Random(seed), database_url)
    return lines


@dataclass(frozen=True)
class _Dump:
    """One dump: of which database (``manual-HHMM`` for one taken by hand), taken when (aware)."""

    database: str
    taken: datetime

    @property
    def manual(self) -> bool:
        return self.database.startswith("manual")

    def name(self, pattern: str) -> str:
        """The pattern written for the dump's moment, then the database: ``nightly/2026-03-25/``
        gives ``nightly/2026-03-25/app.sql.gz``, ``db-%Y-%m-%d`` ``db-2026-03-25-app.sql.gz``."""
        dated = self.taken.strftime(pattern)
        return f"{dated}{'' if dated.endswith('/') else '-'}{self.database}.sql.gz"

    def body(self) -> bytes:
        text = f"-- fake dump ({self.database}), taken {self.taken.isoformat()}\n"
        return gzip.compress(text.encode(), mtime=0)


def _dumps(rule: Rule, as_of: datetime, span: relativedelta) -> list[_Dump]:
    """Nightly dumps of every demo database over ``span`` until ``as_of``, then a pair taken one
    day before and one day after the moment whose dumps are exactly due as of then."""
    today = as_of.astimezone(PARIS).date()
    day = today - span
    dumps = []
    while day <= today:
        taken = datetime.combine(day, _NIGHTLY, tzinfo=PARIS)
        if taken <= as_of:
            dumps += [_Dump(database, taken) for database in _DUMPED_DATABASES]
        day += timedelta(days=1)
    for clock in _boundaries(as_of, rule.period.as_relativedelta()):
        taken = clock.replace(tzinfo=UTC).astimezone(PARIS)
        dumps.append(_Dump(f"manual-{taken:%H%M}", taken))
    return dumps


def _span(rule: Rule, extra_days: int) -> relativedelta:
    """How far back the demo's dumps go: three periods and ``extra_days``."""
    period = rule.period.as_relativedelta()
    return period + period + period + relativedelta(days=extra_days)


def _fill_backup_folder(store: FilesStoreConfig, rules: list[Rule], as_of: datetime) -> str:
    root = store.root
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return f"backup folder {root}: not a directory; the demo leaves it alone"
    if root.exists() and any(root.iterdir()) and not (root / DEMO_FOLDER_MARKER).is_file():
        return f"backup folder {root}: holds files the demo did not make; left alone"
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (root / DEMO_FOLDER_MARKER).write_text(
        "Made by `retention demo`, which empties and refills this folder each time.\n"
    )
    # Old, but no rule's glob matches it: it stays.
    readme = root / "README.txt"
    readme.write_text("Nightly database dumps, one folder per database and ISO week.\n")
    old = (as_of - timedelta(days=400)).timestamp()
    os.utime(readme, (old, old))
    files: dict[str, _Dump] = {}
    for rule in rules:
        assert rule.objects is not None
        pattern = rule.objects.date_pattern or "db-%Y-%m-%d"
        for dump in _dumps(rule, as_of, _span(rule, 7)):
            folder = "manual" if dump.manual else f"{dump.database}/{dump.taken:%G-W%V}"
            files[f"{folder}/{dump.name(pattern)}"] = dump
    for relative, dump in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dump.body())
        stamp = dump.taken.timestamp()
        os.utime(path, (stamp, stamp))
    taken = sorted(dump.taken for dump in files.values())
    periods = ", ".join(sorted({rule.period.text for rule in rules}))
    return (
        f"backup folder {root}: {len(files)} dated dumps from {taken[0]:%Y-%m-%d} to "
        f"{taken[-1]:%Y-%m-%d}, two of them a day either side of the {periods} cutoff"
    )


def _fill_buckets(
    config: Config,
    buckets: Sequence[tuple[S3StoreConfig, list[Rule]]],
    as_of: datetime,
    rng: random.Random,
    database_url: str | None,
) -> list[str]:
    if not buckets:
        return []
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    lines: list[str] = []
    unreachable: dict[str, str | None] = {}
    skipped: dict[str, list[str]] = {}
    for store, rules in buckets:
        endpoint = store.endpoint_url
        if endpoint is None or urlsplit(endpoint).hostname not in _LOCAL_HOSTS:
            lines.append(
                f"bucket {store.bucket}: not on a local S3 server (endpoint_url on 127.0.0.1); "
                "the demo leaves it alone"
            )
            continue
        _write_demo_credentials(store)
        if endpoint not in unreachable:
            unreachable[endpoint] = _unreachable(endpoint)
        if unreachable[endpoint] is not None:
            skipped.setdefault(endpoint, []).append(store.bucket)
            continue
        try:
            lines.append(_fill_bucket(config, store, rules, as_of, rng, database_url))
        except (BotoCoreError, ClientError) as error:
            lines.append(f"bucket {store.bucket} on {endpoint}: not filled: {error}")
    lines += [
        f"no S3 server answers at {endpoint} ({unreachable[endpoint]}): demo buckets "
        f"{', '.join(names)} skipped (`make demo` starts one)"
        for endpoint, names in skipped.items()
    ]
    return lines


def _unreachable(endpoint: str) -> str | None:
    """Why nothing listens at an http(s) endpoint, or None when something does."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return None
    except OSError as error:
        return (error.strerror or str(error)).lower()


def _write_demo_credentials(store: S3StoreConfig) -> None:
    """Dummy keys for a local server, in the store's shared-credentials file, unless it exists."""
    path = store.credentials_file
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(
            "# Dummy keys for the demo's local S3 server (written by `retention demo`).\n"
            f"[{store.profile or 'default'}]\n"
            "aws_access_key_id = demo\n"
            "aws_secret_access_key = demo-secret-key\n"
        )


def _s3_client(store: S3StoreConfig) -> Any:
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    from retention.stores.s3 import s3_session

    # The store's own credentials, read the way `run` reads them.
    return s3_session(store).client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region or "us-east-1",
        config=BotoConfig(
            s3={"addressing_style": store.addressing_style},
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=_PUT_THREADS,
        ),
    )


def _fill_bucket(
    config: Config,
    store: S3StoreConfig,
    rules: list[Rule],
    as_of: datetime,
    rng: random.Random,
    database_url: str | None,
) -> str:
    client = _s3_client(store)
    # Backups keep every version (what a bucket with versioning looks like in production).
    versioned = any(rule.objects and rule.objects.clock == "key_date" for rule in rules)
    if not _empty_bucket(client, store):
        return (
            f"bucket {store.bucket} on {store.endpoint_url}: holds objects the demo did not make "
            f"(no {DEMO_BUCKET_TAG} tag); left alone"
        )
    if versioned:
        client.put_bucket_versioning(
            Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    objects = {store.prefix + _OUTSIDE_EVERY_RULE: b"Under no rule's prefix: no rule touches it.\n"}
    rewritten: list[str] = []
    removed: list[str] = []
    what: list[str] = []
    for rule in rules:
        assert rule.objects is not None
        subjects = rule.objects.subjects
        if subjects is not None:
            url = database_url or _subject_store_url(config, subjects.rule)
            files = _subject_files(subjects.rule, url, rng)
            for record, name in files:
                owned = subjects.prefix_for(record)
                if owned is not None:
                    objects[store.prefix + owned + name] = f"{name} ({record})\n".encode()
            what.append(
                f"{counted(len(files), 'file')} under {subjects.prefix} "
                f"for the {subjects.rule.table} rows"
            )
        elif rule.objects.clock == "key_date" and rule.objects.date_pattern is not None:
            prefix = store.prefix + rule.objects.prefix
            dumps = _dumps(rule, as_of, _span(rule, 0))
            today = as_of.astimezone(PARIS).date()
            oldest = min(dump.taken for dump in dumps).date()
            for dump in dumps:
                name = dump.name(rule.objects.date_pattern)
                key = store.prefix + (
                    name if name.startswith(rule.objects.prefix) else rule.objects.prefix + name
                )
                objects[key] = dump.body()
                day = dump.taken.date()
                # Every fourth night's app dump was taken twice (a re-run): an older version
                # stays behind. Two crm dumps were deleted by hand, which left a delete marker
                # on top of them: the oldest one (expired) and the day before yesterday's.
                if dump.database == "app" and (today - day).days % 4 == 0:
                    rewritten.append(key)
                if dump.database == "crm" and day in (oldest, today - timedelta(days=2)):
                    removed.append(key)
            what.append(f"nightly dumps from {dumps[0].taken:%Y-%m-%d} under {prefix}")
    _put_all(client, store.bucket, objects)
    for key in rewritten:
        client.put_object(Bucket=store.bucket, Key=key, Body=objects[key] + b"-- re-run\n")
    for key in removed:
        client.delete_object(Bucket=store.bucket, Key=key)
    versions = (
        f"; {counted(len(rewritten), 'older version')} and "
        f"{counted(len(removed), 'delete marker')} (versioned)"
        if versioned
        else ""
    )
    return (
        f"bucket {store.bucket} on {store.endpoint_url}: {counted(len(objects), 'object')}, "
        + "; ".join(what)
        + versions
    )


def _subject_store_url(config: Config, rule: Rule) -> str:
    store = config.stores[rule.store]
    assert isinstance(store, SqlStoreConfig), "a cross-store rule's subjects are SQL rows"
    return store_url(store)


def _subject_files(
    rule: Rule, url: str, rng: random.Random
) -> list[tuple[tuple[object, ...], str]]:
    """Every record of the subjects' table, with the name of a file it owns (its ``filename``
    column when it has one); one record in three also owns a preview."""
    engine = create_engine(url)
    try:
        table = Table(rule.table, MetaData(), autoload_with=engine)
        name_column = table.c.get("filename")
        columns = [table.c[column] for column in rule.key]
        chosen = [*columns, name_column] if name_column is not None else columns
        with engine.connect() as conn:
            rows = conn.execute(select(*chosen).order_by(*columns)).all()
    finally:
        engine.dispose()
    files: list[tuple[tuple[object, ...], str]] = []
    for row in rows:
        key = tuple(row[: len(columns)])
        name = str(row[-1]) if name_column is not None and row[-1] else "file.bin"
        files.append((key, name))
        if rng.random() < 1 / 3:
            files.append((key, "preview.png"))
    return files


def _put_all(client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        for _ in pool.map(
            lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
            objects.items(),
        ):
            pass


def _empty_bucket(client: Any, store: S3StoreConfig) -> bool:
    """Create the bucket (tagged as the demo's), or delete every version and delete marker of a
    bucket the demo made (its tag) or that is empty; return False, touching nothing, for a
    bucket that holds objects the demo did not make (a local server can hold real data)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=store.bucket)
    except ClientError:
        region = store.region or "us-east-1"
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        client.create_bucket(
            Bucket=store.bucket, **({"CreateBucketConfiguration": location} if location else {})
        )
        _tag_as_demo(client, store.bucket)
        return True
    doomed = [
        {"Key": entry["Key"], "VersionId": entry["VersionId"]}
        for page in client.get_paginator("list_object_versions").paginate(Bucket=store.bucket)
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
    ]
    if doomed and not _tagged_as_demo(client, store.bucket):
        return False
    _tag_as_demo(client, store.bucket)
    for start in range(0, len(doomed), _DELETE_CHUNK):
        client.delete_objects(
            Bucket=store.bucket,
            Delete={"Objects": doomed[start : start + _DELETE_CHUNK], "Quiet": True},
        )
    return True


def _tag_as_demo(client: Any, bucket: str) -> None:
    client.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": DEMO_BUCKET_TAG, "Value": "true"}]}
    )


def _tagged_as_demo(client: Any, bucket: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        tags = client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except ClientError:
        return False  # no tags at all (NoSuchTagSet), or not allowed to look: not the demo's
    return any(tag.get("Key") == DEMO_BUCKET_TAG for tag in tags)
