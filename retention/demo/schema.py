"""The demo's schema: the tables the rules of config/retention.toml are written against."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

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
