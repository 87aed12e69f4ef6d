"""The demo's rows, table by table: about seven years of records per rule, due and not due, a
boundary pair either side of ``as_of``, and DEMO_ERASURE_SUBJECT in every table that names
people."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from dateutil.relativedelta import relativedelta

from retention.anonymise import keyed_hash, mask_email, truncate_ip, year_only
from retention.demo.fake import (
    _ANONYMISED_NAME,
    _CAMPAIGN_DEFAULT,
    _CHANNELS,
    _CLIENT_CHOSEN_PERIODS,
    _CLIENT_NOTES,
    _CLIENTS,
    _COMPANY_SUFFIXES,
    _CONNECTION_LOGS,
    _CUSTOMER_CONTENT,
    _FILENAMES,
    _IMMEDIATE,
    _JOB_APPLICANTS,
    _LAST_NAMES,
    _PARTNERS_AND_PROSPECTS,
    _QUOTE_REQUESTS,
    _SUBJECTS,
    DEMO_ERASURE_SUBJECT,
    Row,
    _boundaries,
    _date_boundaries,
    _Fake,
    _Rows,
)
from retention.rules import parse_period


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
