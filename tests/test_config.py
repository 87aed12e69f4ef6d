"""Unit tests of retention.config: the shipped config, error reporting and conditions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from textwrap import dedent
from zoneinfo import ZoneInfo

import pytest

from retention.anonymise import Strategy
from retention.config import (
    Child,
    ColumnRef,
    Condition,
    Config,
    FilesStoreConfig,
    Join,
    Rule,
    S3StoreConfig,
    SqlStoreConfig,
    load_config,
    parse_condition,
    parse_config,
)
from retention.errors import ConfigError, ConfigIssue, ExitCode, UsageError
from retention.rules import Period

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "retention.toml"

HEADER = """
[settings]
timezone = "UTC"

[stores.app]
kind = "sql"
url = "sqlite:///app.sqlite"
"""

VALID_RULE = """
[[rules]]
name = "logs"
store = "app"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"
"""


def parse(text: str) -> Config:
    return parse_config(dedent(text).encode())


def issues_of(text: str | bytes, *, source: str = "<config>") -> list[ConfigIssue]:
    content = text if isinstance(text, bytes) else dedent(text).encode()
    with pytest.raises(ConfigError) as caught:
        parse_config(content, source=source)
    return list(caught.value.issues)


def messages_by_path(text: str) -> dict[str, str]:
    """Each path with its messages, joined by newlines when a path has several."""
    messages: dict[str, list[str]] = {}
    for issue in issues_of(text):
        messages.setdefault(issue.path, []).append(issue.message)
    return {path: "\n".join(found) for path, found in messages.items()}


# --- the shipped configuration ------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(SHIPPED_CONFIG)


def rule_named(config: Config, name: str) -> Rule:
    return next(rule for rule in config.rules if rule.name == name)


def test_shipped_config_has_a_rule_per_commitment_in_run_order(shipped: Config) -> None:
    assert [rule.name for rule in shipped.rules] == [
        "backups-s3",
        "backups-local",
        "customer-files",
        "customer-content",
        "customer-contracts",
        "connection-logs",
        "message-sends",
        "campaign-history",
        "visit-statistics",
        "responses-and-unsubscribes",
        "user-accounts",
        "clients",
        "partners",
        "prospects",
        "quote-requests",
        "job-applicants",
        "job-applicants-objected",
    ]
    assert [rule.path for rule in shipped.rules] == [f"rules[{i}]" for i in range(17)]
    assert [rule.name for rule in shipped.rules_named(())] == [r.name for r in shipped.rules]


def test_shipped_config_settings_and_stores(shipped: Config) -> None:
    assert shipped.settings.timezone == ZoneInfo("Europe/Paris")
    assert shipped.settings.batch_size == 1000
    # Every relative path is relative to config/, whatever the working directory: the
    # checkout's var/.
    checkout_var = SHIPPED_CONFIG.parent.parent / "var"
    assert shipped.settings.hash_key_file == checkout_var / "secrets" / "hash.key"
    assert shipped.stores["app"] == SqlStoreConfig(
        name="app",
        timezone=ZoneInfo("UTC"),
        url=f"sqlite:///{checkout_var / 'demo.sqlite'}",
        base_directory=SHIPPED_CONFIG.parent,
    )
    assert shipped.state.url == f"sqlite:///{checkout_var / 'state.sqlite'}"
    assert shipped.audit is not None
    assert shipped.audit.directory == checkout_var / "audit"
    assert shipped.audit.hmac_key_file == checkout_var / "secrets" / "audit-hmac.key"
    assert shipped.audit.signing_key_file == checkout_var / "secrets" / "audit-signing.pem"
    assert shipped.audit.public_keys_file == checkout_var / "audit-public-keys.json"
    backups, content = shipped.stores["backups"], shipped.stores["content"]
    assert isinstance(backups, S3StoreConfig)
    assert isinstance(content, S3StoreConfig)
    assert (backups.bucket, content.bucket) == ("acme-backups", "acme-customer-content")
    assert backups.endpoint_url == "http://127.0.0.1:4566"
    assert backups.credentials_file == checkout_var / "secrets" / "s3-credentials"
    folder = shipped.stores["backup_folder"]
    assert isinstance(folder, FilesStoreConfig)
    assert folder.root == checkout_var / "demo-backups"
    assert shipped.source == str(SHIPPED_CONFIG)
    assert len(shipped.digest) == 64


def test_shipped_object_rules_cover_policy_rows_1_and_2(shipped: Config) -> None:
    backups_s3 = rule_named(shipped, "backups-s3")
    backups_local = rule_named(shipped, "backups-local")
    customer_files = rule_named(shipped, "customer-files")

    assert (backups_s3.store, backups_s3.period.text) == ("backups", "7d")
    assert backups_s3.objects is not None
    assert backups_s3.objects.clock == "key_date"
    assert (backups_local.store, backups_local.period.text) == ("backup_folder", "7d")
    assert customer_files.objects is not None
    assert customer_files.objects.subjects is not None
    assert customer_files.objects.subjects.rule.name == "customer-content"
    assert customer_files.period == rule_named(shipped, "customer-content").period


@pytest.mark.parametrize(
    ("name", "table", "clock", "period"),
    [
        ("customer-content", "customer_content", "contract.ended_at", Period(0, 90, 0, "90d")),
        ("customer-contracts", "contracts", "ended_at", Period(0, 90, 0, "90d")),
        ("connection-logs", "connection_logs", "logged_at", Period(12, 0, 0, "1y")),
        ("message-sends", "message_sends", "sent_at", Period(0, 0, 0, "0d")),
        ("campaign-history", "campaigns", "sent_at", Period(120, 0, 0, "10y")),
        ("visit-statistics", "visit_stats", "account.contract_ended_at", Period(text="0d")),
        (
            "responses-and-unsubscribes",
            "campaign_responses",
            "account.contract_ended_at",
            Period(text="0d"),
        ),
        ("user-accounts", "accounts", "contract_ended_at", Period(text="0d")),
        ("clients", "clients", "relationship_ended_at", Period(60, 0, 0, "5y")),
        ("partners", "partners", "latest(collected_at, last_contact_at)", Period(36, 0, 0, "3y")),
        ("prospects", "prospects", "latest(collected_at, last_contact_at)", Period(36, 0, 0, "3y")),
        (
            "quote-requests",
            "quote_requests",
            "latest(closed_at, last_contact_at)",
            Period(12, 0, 0, "1y"),
        ),
        ("job-applicants", "job_applicants", "applied_at", Period(24, 0, 0, "2y")),
        ("job-applicants-objected", "job_applicants", "objected_at", Period(text="0d")),
    ],
)
def test_shipped_rule_table_clock_and_period(
    shipped: Config, name: str, table: str, clock: str, period: Period
) -> None:
    rule = rule_named(shipped, name)

    assert (rule.table, rule.clock_text, rule.period) == (table, clock, period)
    assert rule.store == "app"
    assert rule.key == ("id",)
    assert rule.policy
    assert rule.category


def test_shipped_rules_reach_the_contract_end_through_declared_joins(shipped: Config) -> None:
    assert rule_named(shipped, "customer-content").joins == (
        Join("contract", "contracts", ("contract_id",), ("id",)),
    )
    for name in ("visit-statistics", "responses-and-unsubscribes"):
        rule = rule_named(shipped, name)
        assert rule.joins == (Join("account", "accounts", ("account_id",), ("id",)),)
        assert rule.clock == (ColumnRef("contract_ended_at", "account"),)
        assert rule.join("account").table == "accounts"


def test_shipped_rules_delete_their_children(shipped: Config) -> None:
    assert rule_named(shipped, "campaign-history").children == (
        Child("message_sends", "campaign_id", "id"),
    )
    assert rule_named(shipped, "user-accounts").children == (
        Child("visit_stats", "account_id", "id"),
        Child("campaign_responses", "account_id", "id"),
    )
    assert rule_named(shipped, "prospects").children == (
        Child("marketing_actions", "prospect_id", "id"),
    )


def test_shipped_campaign_history_lets_the_client_choose_the_period(shipped: Config) -> None:
    rule = rule_named(shipped, "campaign-history")

    assert rule.period_column == ColumnRef("retention_period")
    assert rule.period_unit is None


def test_shipped_conditions(shipped: Config) -> None:
    assert rule_named(shipped, "message-sends").conditions == (
        Condition(ColumnRef("status"), "=", "sent", "status = 'sent'"),
    )
    assert rule_named(shipped, "quote-requests").conditions == (
        Condition(ColumnRef("led_to_contract"), "=", False, "led_to_contract = false"),
        Condition(ColumnRef("closed_at"), "is_not_null", None, "closed_at IS NOT NULL"),
    )
    hired_false = (Condition(ColumnRef("hired"), "=", False, "hired = false"),)
    assert rule_named(shipped, "job-applicants").conditions == hired_false
    assert rule_named(shipped, "job-applicants-objected").conditions == hired_false


def test_shipped_clients_are_anonymised_with_one_strategy_per_column(shipped: Config) -> None:
    clients = rule_named(shipped, "clients")

    assert clients.action == "anonymise"
    assert clients.marker_column == "anonymised_at"
    assert clients.anonymise == (
        ("name", Strategy("fixed", "Client anonymisé")),
        ("email", Strategy("mask_email")),
        ("phone", Strategy("hash")),
        ("ip_address", Strategy("truncate_ip")),
        ("birth_date", Strategy("year_only")),
        ("notes", Strategy("null")),
    )
    contracts = rule_named(shipped, "customer-contracts")
    assert (contracts.action, contracts.marker_column) == ("anonymise", "anonymised_at")
    assert contracts.anonymise == (
        ("customer_name", Strategy("fixed", "Client anonymisé")),
        ("customer_email", Strategy("mask_email")),
    )
    others = [rule for rule in shipped.rules if rule.name not in ("clients", "customer-contracts")]
    assert {rule.action for rule in others} == {"delete"}
    assert all(rule.anonymise == () and rule.marker_column is None for rule in others)


def test_config_digest_identifies_the_exact_bytes() -> None:
    first = parse(HEADER + VALID_RULE)
    same = parse(HEADER + VALID_RULE)
    changed = parse(HEADER + VALID_RULE + "\n# a comment\n")

    assert first.digest == same.digest
    assert first.digest != changed.digest


def test_a_minimal_config_has_utc_and_default_batch_size() -> None:
    config = parse_config(b"")

    assert config.settings.timezone == ZoneInfo("UTC")
    assert config.settings.batch_size == 1000
    assert config.rules == ()
    assert dict(config.stores) == {}


def test_rule_batch_size_defaults_to_the_settings_value() -> None:
    config = parse(HEADER.replace('timezone = "UTC"', "batch_size = 250") + VALID_RULE)

    assert config.rules[0].batch_size == 250


def test_load_config_reports_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert [issue.path for issue in caught.value.issues] == [str(missing)]
    assert "cannot read" in caught.value.issues[0].message


# --- every error at once ------------------------------------------------------------------------

MANY_ERRORS = """
colour = "blue"

[settings]
timezone = "UTC"
batch_size = 0

[stores.app]
kind = "sql"
url = "sqlite:///app.sqlite"
timezone = "Mars/Olympus_Mons"

[stores.both]
kind = "sql"
url = "sqlite:///b.sqlite"
url_env = "B_URL"

[stores.bucket]
kind = "ftp"
url = "s3://bucket"

[[rules]]
name = "bad-period"
store = "app"
table = "logs"
key = "id"
clock = "logged_at"
period = "7m"
action = "delete"
colour = "red"

[[rules]]
name = "unknown-store"
store = "nowhere"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"

[[rules]]
name = "undeclared-join"
store = "app"
table = "logs"
key = "id"
clock = "account.closed_at"
period = "1y"
action = "delete"

[[rules]]
name = "twice"
store = "app"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
action = "delete"

[[rules]]
name = "twice"
store = "app"
table = "other_logs"
key = "id"
clock = "logged_at"
period = "2y"
action = "delete"

[[rules]]
name = "conditions"
store = "app"
table = "logs"
key = "id"
clock = "logged_at"
period = "1y"
where = ["x = NULL", "x LIKE 'a%'", "contract.status = 'closed'", "ok = true"]
action = "delete"

[[rules]]
name = "anonymise-without-marker"
store = "app"
table = "clients"
key = "id"
clock = "ended_at"
period = "5y"
action = "anonymise"
anonymise = { email = "mask_email", phone = "scramble" }

[[rules]]
name = "delete-with-anonymise"
store = "app"
table = "clients"
key = "id"
clock = "ended_at"
period = "5y"
action = "delete"
anonymise = { email = "mask_email" }

[[rules]]
name = "Bad Name"
store = "app"
table = "logs; DROP TABLE logs"
key = []
clock = []
action = "purge"
batch_size = 50001
period_unit = "h"
"""

MANY_ERRORS_PATHS = {
    "colour",
    "settings.batch_size",
    "stores.app.timezone",
    "stores.both",
    "stores.bucket.kind",
    "rules[0].colour",
    "rules[0].period",
    "rules[1].store",
    "rules[2].clock",
    "rules[4].name",
    "rules[5].where[0]",
    "rules[5].where[1]",
    "rules[5].where[2]",
    "rules[6].marker_column",
    "rules[6].anonymise.phone",
    "rules[7].anonymise",
    "rules[8].name",
    "rules[8].table",
    "rules[8].key",
    "rules[8].clock",
    "rules[8].period",
    "rules[8].action",
    "rules[8].batch_size",
    "rules[8].period_unit",
}


def test_every_error_of_a_config_is_reported_at_once_with_its_key_path() -> None:
    issues = issues_of(MANY_ERRORS)

    assert {issue.path for issue in issues} == MANY_ERRORS_PATHS


def test_a_config_error_counts_its_issues_and_exits_with_bad_config() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(MANY_ERRORS)

    count = len(caught.value.issues)
    assert count > 20
    assert str(caught.value) == f"{count} configuration errors"
    assert caught.value.exit_code == ExitCode.BAD_CONFIG


def test_a_single_config_error_is_singular() -> None:
    with pytest.raises(ConfigError, match=r"^1 configuration error$"):
        parse('[settings]\ntimezone = "Nowhere/Land"\n')


@pytest.mark.parametrize(
    ("path", "fragments"),
    [
        ("colour", ["unknown key", "audit, checkins, daemon, rules, settings, state, stores"]),
        ("rules[0].colour", ["unknown key", "period"]),
        ("settings.batch_size", ["whole number from 1 to 50000", "not 0"]),
        ("stores.app.timezone", ["unknown time zone 'Mars/Olympus_Mons'"]),
        ("stores.both", ["exactly one of url, url_env", "url_credential"]),
        ("stores.bucket.kind", ["unknown store kind 'ftp'", "supported: 'sql'"]),
        ("rules[0].period", ["'7m' is not a period", "'mo' for months"]),
        ("rules[1].store", ["no store named 'nowhere'", "[stores.nowhere]"]),
        ("rules[2].clock", ["join 'account'", "not declared"]),
        ("rules[4].name", ["'twice' is already the name of rules[3]"]),
        ("rules[5].where[0]", ["IS NULL or IS NOT NULL"]),
        ("rules[5].where[1]", ["column OPERATOR value", "where_sql"]),
        ("rules[5].where[2]", ["join 'contract'", "not declared"]),
        ("rules[6].anonymise.phone", ["unknown anonymise strategy 'scramble'", "mask_email"]),
        ("rules[7].anonymise", ["only goes with action = 'anonymise'"]),
        ("rules[8].name", ["lower-case"]),
        ("rules[8].table", ["not a plain identifier"]),
        ("rules[8].key", ["non-empty list of column names"]),
        ("rules[8].period", ["missing", "'0d'"]),
        ("rules[8].action", ["'delete' or 'anonymise'", "'purge'"]),
        ("rules[8].batch_size", ["from 1 to 50000", "50001"]),
        ("rules[8].period_unit", ["'y', 'mo', 'w' or 'd'", "not 'h'"]),
    ],
)
def test_config_error_messages_say_what_is_wrong_and_what_is_expected(
    path: str, fragments: list[str]
) -> None:
    message = messages_by_path(MANY_ERRORS)[path]

    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("where_sql", "fragment"),
    [
        ("1=1 --", "comment (--)"),
        ("note = 'a' /* why */", "comment (/*)"),
        ("note = 'a' # why", "comment (#)"),
        ("note = 'a')) OR ((1=1", "closes a parenthesis it did not open"),
        ("(note = 'a'", "leaves a parenthesis open"),
        ("note = 'a'; DELETE FROM logs", "semicolon"),
        ("note = 'it''s", "quote (') open"),
        # PostgreSQL reads one string then OR; MariaDB ends the first string later, and the
        # parentheses after it are outside: the comment would hide the rest of the predicate.
        ("note = 'C:\\' OR note = ')) OR ((1=1 -- '", "backslash escapes"),
    ],
)
def test_a_where_sql_that_would_not_stay_one_term_of_the_predicate_is_refused(
    where_sql: str, fragment: str
) -> None:
    """The predicate ANDs ``(where_sql)``: a comment would swallow its closing parenthesis (the
    plan then failed on a config that validated), a stray one would let an OR escape it."""
    rule = VALID_RULE + f"where_sql = {json.dumps(where_sql)}\n"

    messages = messages_by_path(HEADER + rule)

    assert list(messages) == ["rules[0].where_sql"]
    assert fragment in messages["rules[0].where_sql"]


@pytest.mark.parametrize(
    "where_sql",
    [
        "length(note) > 3",
        "note = '-- not a comment' OR note = \"a;b\"",
        "id <> 5 OR status = 'o''brien'",
        "NOT EXISTS (SELECT 1 FROM invoices WHERE (invoices.client_id = logs.id))",
    ],
)
def test_a_where_sql_of_one_expression_is_accepted(where_sql: str) -> None:
    rule = VALID_RULE + f"where_sql = {json.dumps(where_sql)}\n"

    assert parse(HEADER + rule).rules[0].where_sql == where_sql


def test_a_config_with_errors_still_checks_the_valid_rules_it_holds() -> None:
    second = VALID_RULE.replace('"1y"', '"1 year"').replace('name = "logs"', 'name = "more"')
    issues = issues_of(HEADER + VALID_RULE + second)

    assert [issue.path for issue in issues] == ["rules[1].period"]


def test_a_duplicate_of_an_invalid_rule_s_name_is_reported_in_the_same_run() -> None:
    invalid_first = VALID_RULE.replace('"1y"', '"1 year"')

    paths = {issue.path for issue in issues_of(HEADER + invalid_first + VALID_RULE)}

    assert paths == {"rules[0].period", "rules[1].name"}


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ('table = "logs"\n', "", "rules[0].table"),
        (
            'action = "delete"',
            'action = "anonymise"\nanonymise = { email = "null" }',
            "rules[0].marker_column",
        ),
    ],
)
def test_a_missing_identifier_is_reported_as_missing(old: str, new: str, path: str) -> None:
    message = messages_by_path(HEADER + VALID_RULE.replace(old, new))[path]

    assert "missing" in message
    assert "None" not in message


def test_invalid_toml_is_reported_with_its_line() -> None:
    issues = issues_of(b"[settings\ntimezone = 'UTC'\n", source="bad.toml")

    assert [issue.path for issue in issues] == ["bad.toml"]
    assert issues[0].message.startswith("not valid TOML")
    assert "line 1" in issues[0].message


def test_non_utf8_bytes_are_reported_as_not_utf8() -> None:
    issues = issues_of(b'[settings]\ntimezone = "\xe9"\n', source="latin1.toml")

    assert [issue.path for issue in issues] == ["latin1.toml"]
    assert issues[0].message.startswith("not UTF-8 text")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules = 5", {"rules": "array of tables"}),
        ("settings = 5", {"settings": "must be a table"}),
        (
            '[settings]\nhash_key_file = "a"\nhash_key_credential = "b"',
            {"settings.hash_key_file": "not both"},
        ),
        ("[settings]\ntimezone = 5", {"settings.timezone": "time zone name"}),
        ("[settings]\nbatch_size = true", {"settings.batch_size": "not True"}),
        ("[settings]\nbatch_size = 50001", {"settings.batch_size": "not 50001"}),
        ('[settings]\nbatch_size = "big"', {"settings.batch_size": "not 'big'"}),
        ('[stores.x-y]\nkind = "sql"\nurl = "a"', {"stores.x-y": "not a plain identifier"}),
        ('[stores.app]\nkind = "sql"', {"stores.app": "exactly one of url"}),
        ('[stores.app]\nurl = "a"', {"stores.app.kind": "missing (supported: 'sql', 's3'"}),
        (
            '[stores.app]\nkind = "sql"\nurl = "sqlite:///a"\npassword = "x"',
            {"stores.app.password": "unknown key"},
        ),
        ("stores = { app = 5 }", {"stores.app": "must be a table"}),
    ],
)
def test_settings_and_store_errors(text: str, expected: dict[str, str]) -> None:
    messages = messages_by_path(text)

    assert set(messages) == set(expected)
    for path, fragment in expected.items():
        assert fragment in messages[path]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('period = "1y"', "period = 7", {"rules[0].period": "must be a string"}),
        ('clock = "logged_at"', 'clock = ["a", "b.c"]', {"rules[0].clock[1]": "join 'b'"}),
        ('clock = "logged_at"', "clock = 3", {"rules[0].clock": "must be a column"}),
        ('key = "id"', 'key = ["id", "a b"]', {"rules[0].key[1]": "'a b'"}),
        ('store = "app"', "", {"rules[0].store": "missing"}),
        ('name = "logs"', "", {"rules[0].name": "missing"}),
        ('name = "logs"', 'name = ""', {"rules[0].name": "non-empty string"}),
        (
            'period = "1y"',
            'period = "1y"\nperiod_unit = "mo"',
            {"rules[0].period_unit": "only makes sense with period_column"},
        ),
        (
            'period = "1y"',
            'period = "1y"\nperiod_column = "x.y"',
            {"rules[0].period_column": "join 'x'"},
        ),
        (
            'action = "delete"',
            'action = "anonymise"\nmarker_column = "email"\nanonymise = { email = "null" }',
            {"rules[0].marker_column": "cannot also be an anonymised column"},
        ),
        (
            'action = "delete"',
            'action = "anonymise"\nmarker_column = "done_at"',
            {"rules[0].anonymise": "map each column to a strategy"},
        ),
        (
            'action = "delete"',
            'action = "delete"\nmarker_column = "done_at"',
            {"rules[0].marker_column": "only goes with action = 'anonymise'"},
        ),
        (
            'action = "delete"',
            'action = "anonymise"\nmarker_column = "done_at"\nanonymise = { phone = "hash" }',
            {"rules[0].anonymise.phone": "needs a secret key"},
        ),
    ],
)
def test_rule_value_errors(old: str, new: str, expected: dict[str, str]) -> None:
    messages = messages_by_path(HEADER + VALID_RULE.replace(old, new))

    assert set(messages) == set(expected)
    for path, fragment in expected.items():
        assert fragment in messages[path]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('where = "x = "', {"rules[0].where[0]": "not a literal"}),
        ("where = 5", {"rules[0].where": "list of conditions"}),
        ("where = [5]", {"rules[0].where[0]": "must be a string"}),
        ("joins = 5", {"rules[0].joins": "table of named joins"}),
        ("children = 5", {"rules[0].children": "array of tables"}),
        ("anonymise = 5", {"rules[0].anonymise": "must be a table mapping each column"}),
        (
            '[[rules.children]]\ntable = "c"\nforeign_key = "p_id"\nextra = 1',
            {"rules[0].children[0].extra": "unknown key"},
        ),
        (
            '[[rules.children]]\ntable = "c"\nforeign_key = "p id"',
            {"rules[0].children[0].foreign_key": "not a plain identifier"},
        ),
        (
            '[rules.joins.acc]\ntable = "accounts"\non = {}',
            {"rules[0].joins.acc.on": "mapping local columns to the joined table's columns"},
        ),
        (
            '[rules.joins.acc]\ntable = "accounts"\non = { account_id = "id" }\nhow = "left"',
            {"rules[0].joins.acc.how": "unknown key"},
        ),
    ],
)
def test_rule_section_errors(extra: str, expected: dict[str, str]) -> None:
    messages = messages_by_path(HEADER + VALID_RULE + extra + "\n")

    assert set(messages) == set(expected)
    for path, fragment in expected.items():
        assert fragment in messages[path]


def test_a_child_of_a_composite_key_must_say_which_column_it_references() -> None:
    rule = VALID_RULE.replace('key = "id"', 'key = ["a", "b"]')
    child = '[[rules.children]]\ntable = "c"\nforeign_key = "a_id"\n'

    messages = messages_by_path(HEADER + rule + child)

    assert set(messages) == {"rules[0].children[0].references"}
    assert "composite parent keys" in messages["rules[0].children[0].references"]


def test_a_rule_that_is_not_a_table_is_reported() -> None:
    assert messages_by_path("rules = [1]") == {"rules[0]": "must be a table, not 1"}


def test_a_full_rule_is_read_into_value_objects() -> None:
    rule_text = VALID_RULE.replace('clock = "logged_at"', 'clock = ["logged_at", "acc.closed_at"]')
    rule_text = rule_text.replace('key = "id"', 'key = ["id", "seq"]')
    extra = """
    where = ["acc.status = 'closed'", "kind IN ('a', 'b')"]
    where_sql = "length(note) > 3"
    period_column = "acc.keep_for"
    period_unit = "mo"
    batch_size = 10

    [rules.joins.acc]
    table = "accounts"
    on = { account_id = "id", region = "region" }

    [[rules.children]]
    table = "log_lines"
    foreign_key = "log_id"
    references = "id"

    [[rules.children.children]]
    table = "line_tags"
    foreign_key = "line_id"
    references = "id"
    """
    rule = parse(HEADER + rule_text.rstrip() + dedent(extra)).rules[0]

    assert rule.key == ("id", "seq")
    assert rule.clock == (ColumnRef("logged_at"), ColumnRef("closed_at", "acc"))
    assert rule.clock_text == "latest(logged_at, acc.closed_at)"
    assert rule.joins == (Join("acc", "accounts", ("account_id", "region"), ("id", "region")),)
    assert rule.conditions == (
        Condition(ColumnRef("status", "acc"), "=", "closed", "acc.status = 'closed'"),
        Condition(ColumnRef("kind"), "in", ("a", "b"), "kind IN ('a', 'b')"),
    )
    assert rule.where_sql == "length(note) > 3"
    assert rule.period_column == ColumnRef("keep_for", "acc")
    assert rule.period_unit == "mo"
    assert rule.batch_size == 10
    assert rule.children == (
        Child("log_lines", "log_id", "id", (Child("line_tags", "line_id", "id"),)),
    )


# --- parse_condition ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "operator", "value"),
    [
        ("hired = false", ColumnRef("hired"), "=", False),
        ("hired = TRUE", ColumnRef("hired"), "=", True),
        ("status = 'sent'", ColumnRef("status"), "=", "sent"),
        ("objected_at IS NOT NULL", ColumnRef("objected_at"), "is_not_null", None),
        ("objected_at is  not\tnull", ColumnRef("objected_at"), "is_not_null", None),
        ("x IS NULL", ColumnRef("x"), "is_null", None),
        ("n >= 3", ColumnRef("n"), ">=", 3),
        ("n<=-2", ColumnRef("n"), "<=", -2),
        ("n > 2.5", ColumnRef("n"), ">", 2.5),
        ("n < 0", ColumnRef("n"), "<", 0),
        ("x <> 'a'", ColumnRef("x"), "!=", "a"),
        ("x != 'a'", ColumnRef("x"), "!=", "a"),
        (
            "kind IN ('response', 'unsubscribe')",
            ColumnRef("kind"),
            "in",
            ("response", "unsubscribe"),
        ),
        ("kind NOT IN ('a')", ColumnRef("kind"), "not_in", ("a",)),
        ("n in (1, 2.5, true)", ColumnRef("n"), "in", (1, 2.5, True)),
        ("note = 'it''s, ok'", ColumnRef("note"), "=", "it's, ok"),
        ("note IN ('it''s, ok', 'b')", ColumnRef("note"), "in", ("it's, ok", "b")),
        ("note = ''", ColumnRef("note"), "=", ""),
        ("account.status = 'closed'", ColumnRef("status", "account"), "=", "closed"),
    ],
)
def test_parse_condition_understands(
    text: str, column: ColumnRef, operator: str, value: object
) -> None:
    condition = parse_condition(text)

    assert condition == Condition(column, operator, value, text)  # type: ignore[arg-type]
    assert type(condition.value) is type(value)


def test_parse_condition_binds_an_injection_attempt_as_one_string() -> None:
    condition = parse_condition("status = 'a'' OR 1=1 --'")

    assert condition.operator == "="
    assert condition.value == "a' OR 1=1 --"


@pytest.mark.parametrize(
    "text",
    [
        "status = 'a' OR 1=1",
        "status = 'a'; DROP TABLE logs; --",
        "status = 'a' -- comment",
        "kind IN ('a'), ('b')",
        "kind IN ('a', 'b' OR 1=1)",
    ],
)
def test_parse_condition_refuses_anything_after_the_literal(text: str) -> None:
    with pytest.raises(ValueError, match="not a literal"):
        parse_condition(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x = NULL", "IS NULL or IS NOT NULL"),
        ("x IN ('a', null)", "IS NULL or IS NOT NULL"),
        ("x LIKE 'a%'", "column OPERATOR value"),
        ("x = y", "'y' is not a literal"),
        ("1 = 1", "column OPERATOR value"),
        ("= 'a'", "column OPERATOR value"),
        ("", "column OPERATOR value"),
        ("x IN 'a'", "parenthesised list"),
        ("kind IN ('a') OR 1=1", "parenthesised list"),
        ("x IN ()", "at least one value"),
        ("x IN ('a',)", "is not a literal"),
        ("x IN ('a)", "unterminated quote"),
        ("x = 'abc", "is not a literal"),
        ("x IS NULL OR 1=1", "unexpected 'OR 1=1' after IS NULL"),
        ("x = 1e5", "is not a literal"),
        ("x =", "is not a literal"),
        ("a.b.c = 1", "column OPERATOR value"),
    ],
)
def test_parse_condition_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_condition(text)


@pytest.mark.parametrize("value", [None, 5, ["x = 1"]])
def test_parse_condition_refuses_a_non_string(value: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_condition(value)


# --- rules_named --------------------------------------------------------------------------------


def test_rules_named_keeps_config_order(shipped: Config) -> None:
    chosen = shipped.rules_named(("clients", "connection-logs", "clients"))

    assert [rule.name for rule in chosen] == ["connection-logs", "clients"]


def test_rules_named_with_no_names_is_every_rule(shipped: Config) -> None:
    assert shipped.rules_named(()) == shipped.rules


def test_rules_named_refuses_unknown_names_naming_them_and_the_known_rules(
    shipped: Config,
) -> None:
    with pytest.raises(UsageError) as caught:
        shipped.rules_named(("clients", "typo", "another"))

    message = str(caught.value)
    assert message.startswith("--rule: no rule named 'another', 'typo'")
    assert "'clients'" not in message
    assert "customer-content" in message
    assert "job-applicants-objected" in message
    assert caught.value.exit_code == ExitCode.USAGE


def test_word_operators_need_a_word_boundary() -> None:
    with pytest.raises(ValueError, match="expected `column OPERATOR value`"):
        parse_condition("xin ('a')")
    with pytest.raises(ValueError, match="expected `column OPERATOR value`"):
        parse_condition("closed_atis null")


def test_unsupported_database_urls_are_config_errors() -> None:
    for url in ("mysql://root@localhost/db", "oracle://x", "postgresql://x/db"):
        with pytest.raises(ConfigError) as raised:
            parse_config(f'[settings]\n[stores.app]\nkind = "sql"\nurl = "{url}"\n'.encode())
        assert [issue.path for issue in raised.value.issues] == ["stores.app.url"]


def test_children_only_go_with_delete_and_nested_children_name_their_reference() -> None:
    text = """
[settings]
hash_key_file = "k"
[stores.app]
kind = "sql"
url = "sqlite:///a"
[[rules]]
name = "r"
store = "app"
table = "t"
key = "id"
clock = "at"
period = "1y"
action = "anonymise"
marker_column = "m"
anonymise = { email = "null" }
[[rules.children]]
table = "c"
foreign_key = "t_id"
[[rules.children.children]]
table = "g"
foreign_key = "c_id"
"""
    with pytest.raises(ConfigError) as raised:
        parse_config(text.encode())
    assert {issue.path for issue in raised.value.issues} == {
        "rules[0].children",
        "rules[0].children[0].children[0].references",
    }


def test_a_refused_condition_is_one_error_not_also_a_rule_that_matches_everything() -> None:
    rule = VALID_RULE.replace('"1y"', '"0d"') + "where = [\"status == 'sent'\"]\n"

    messages = messages_by_path(HEADER + rule)

    assert set(messages) == {"rules[0].where[0]"}
    assert "is not a literal" in messages["rules[0].where[0]"]


def test_errors_are_listed_rule_by_rule_in_the_order_of_the_file() -> None:
    first = VALID_RULE.replace('"1y"', '"1 year"')
    second = VALID_RULE.replace('name = "logs"', 'name = "more"').replace('"id"', '"a b"')
    third = VALID_RULE.replace('name = "logs"', 'name = "last"').replace("logs", "x", 1)

    paths = [issue.path for issue in issues_of(HEADER + first + second + third + "bad = 1\n")]

    assert paths == ["rules[0].period", "rules[1].key", "rules[2].bad"]
