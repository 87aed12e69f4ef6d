"""Helpers shared by the integration tests: build a config around a test database, plan, run."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    text,
)

from retention.app import make_plan, run_plan
from retention.audit.keys import add_public_key, generate_hmac_key, generate_signer
from retention.config import Config, parse_config
from retention.planner import Plan
from retention.run_report import RunReport
from retention.stores import open_stores


def logs_rule(extra: str = "", name: str = "logs") -> str:
    """The rule most tests purge with (table logs, key id, clock logged_at, 1 year), named
    ``name``, plus ``extra`` TOML lines."""
    return f"""
[[rules]]
name = "{name}"
store = "db"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
{extra}
"""


def create_logs(url: str, clocks: Mapping[int, datetime | None]) -> None:
    """Given a database URL and {id: logged_at}, create the `logs` table of ``logs_rule`` (naive
    UTC timestamps, indexed) with those rows."""
    metadata = MetaData()
    logs = Table(
        "logs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("logged_at", DateTime, index=True),
    )
    engine = create_tables(url, metadata)
    rows = [
        {
            "id": key,
            "logged_at": at.astimezone(UTC).replace(tzinfo=None) if at and at.tzinfo else at,
        }
        for key, at in clocks.items()
    ]
    with engine.begin() as connection:
        connection.execute(insert(logs), rows)
    engine.dispose()


def make_config(url: str, rules: str, **options: Any) -> Config:
    """Given a database URL and `[[rules]]` TOML (store "db"), return a parsed Config; the
    options are ``config_text``'s. With ``audit_directory``, runs are audited there (keys made
    on first use); else not audited."""
    return parse_config(config_text(url, rules, **options).encode())


def config_text(
    url: str,
    rules: str,
    *,
    timezone: str = "UTC",
    store_timezone: str = "UTC",
    hash_key_file: Path | None = None,
    extra_stores: str = "",
    audit_directory: Path | None = None,
    state_url: str | None = None,
    max_fraction: float = 1.0,
) -> str:
    """The TOML that ``make_config`` parses, for tests that need it as a file."""
    key_line = f'hash_key_file = "{hash_key_file}"' if hash_key_file else ""
    # Each config gets its own state database: holds and the ledger never leak between tests.
    state = state_url or f"sqlite:///{tempfile.mkdtemp(prefix='retention-state-')}/state.sqlite"
    audit = "[audit]\nenabled = false\n"
    if audit_directory is not None:
        audit = audit_table(audit_directory)
    return f"""
[settings]
timezone = "{timezone}"
max_fraction = {max_fraction}
{key_line}

[stores.db]
kind = "sql"
url = "{url}"
timezone = "{store_timezone}"
{extra_stores}
{audit}
[state]
url = "{state}"
{rules}
"""


def audit_table(directory: Path) -> str:
    """Given a directory, return an [audit] table for it, creating its keys once."""
    keys = directory.parent / f"{directory.name}-keys"
    if not keys.exists():
        generate_hmac_key(keys / "hmac.key")
        signer = generate_signer(keys / "signing.pem")
        add_public_key(directory / "public-keys.json", signer, datetime(2000, 1, 1, tzinfo=UTC))
    return f"""[audit]
directory = "{directory}"
hmac_key_file = "{keys / "hmac.key"}"
signing_key_file = "{keys / "signing.pem"}"
"""


def plan(config: Config, as_of: datetime, *rule_names: str, read_only: bool = True) -> Plan:
    """Given a config and an instant, return the plan of the named rules (all when none)."""
    with open_stores(config, read_only=read_only) as store_for:
        return make_plan(config, config.rules_named(rule_names), store_for, as_of)


def plan_and_run(
    config: Config, as_of: datetime, *rule_names: str, dry_run: bool = False
) -> tuple[Plan, RunReport]:
    """Given a config and an instant, plan the named rules, run that plan, return both."""
    with open_stores(config, read_only=dry_run) as store_for:
        the_plan = make_plan(config, config.rules_named(rule_names), store_for, as_of)
        return the_plan, run_plan(config, the_plan, store_for, dry_run=dry_run)


def due_counts(the_plan: Plan) -> dict[str, int]:
    return {rule_plan.rule.name: rule_plan.due for rule_plan in the_plan.rules}


def engine_for(url: str) -> Engine:
    return create_engine(url)


def create_tables(url: str, metadata: MetaData) -> Engine:
    engine = create_engine(url)
    metadata.create_all(engine)
    return engine


def remaining_ids(engine: Engine, table: str) -> set[int]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text(f"SELECT id FROM {table}"))}


def claimed_leaves(audit: Path) -> list[bytes]:
    """The leaves a trail claims as purged, sorted: each committed batch's intent's, but those
    its result says were not purged (a row that stopped being due since it was read); and each
    reconciled batch's own (the records a crash left it to settle, found purged)."""
    from retention.audit.entries import read_entries, read_leaves

    claimed: list[bytes] = []
    for stored in read_entries(audit):
        entry = stored.content
        if entry["type"] == "batch.result" and entry["status"] == "committed":
            not_done = set(read_leaves(audit, entry["seq"])) if entry.get("not_done") else set()
            intent = read_leaves(audit, entry["intent"])
            claimed += [leaf for leaf in intent if leaf not in not_done]
        elif entry["type"] == "batch.reconciled":
            leaves = read_leaves(audit, entry["seq"])
            assert len(leaves) == entry["done"] + entry.get("children_deleted", 0)
            claimed += leaves
    return sorted(claimed)


SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "retention.toml"
SHIPPED_S3_ENDPOINT = "http://127.0.0.1:4566"


def copy_shipped_config(directory: Path, s3_endpoint: str) -> Path:
    """Given a directory and an S3 endpoint (the test server), write the shipped config to
    ``directory/config/retention.toml`` as a newcomer's checkout has it, its S3 stores on that
    endpoint with bucket names of their own (tests share one server); return its path. Its
    relative paths (database, keys, backup folder) then fall under ``directory``."""
    text = SHIPPED_CONFIG.read_text()
    assert SHIPPED_S3_ENDPOINT in text
    suffix = f"-{secrets.token_hex(4)}"
    text = text.replace(SHIPPED_S3_ENDPOINT, s3_endpoint)
    for bucket in ("acme-backups", "acme-customer-content"):
        assert f'bucket = "{bucket}"' in text
        text = text.replace(f'bucket = "{bucket}"', f'bucket = "{bucket}{suffix}"')
    path = directory / "config" / "retention.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def wait_for_pause(process: subprocess.Popen[str], pause: Path, seconds: float) -> None:
    """Given a retention process started with RETENTION_PAUSE_FILE=``pause``, return once it
    waits at its pause point (runtime/faults.py: it wrote ``pause``.reached); kill it and fail
    with what it printed if it ends, or has not got there within ``seconds``."""
    reached = pause.with_name(pause.name + ".reached")
    deadline = time.monotonic() + seconds
    while not reached.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output, errors = process.communicate()
            raise AssertionError(f"the process did not reach its pause: {output}{errors}")
        time.sleep(0.01)
