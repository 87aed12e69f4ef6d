"""Bad input never stops everything and never leaks (issue 12): periods that overflow the
calendar, held keys that are no value of their column, bad command-line values."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, text

from retention.app.erasure import erasure_request
from retention.app.trail_text import refuse_personal_data
from retention.cli import main
from retention.errors import ConfigError, ExitCode, UsageError
from retention.state import StateDatabase
from retention.state_holds import add_hold
from tests.support import (
    config_text,
    create_logs,
    create_tables,
    engine_for,
    logs_rule,
    make_config,
    plan,
    plan_and_run,
    remaining_ids,
)

AS_OF = datetime(2026, 11, 23, 12, tzinfo=UTC)
AS_OF_TEXT = "2026-11-23T12:00:00+00:00"


def invoke(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "--log-format", "json", *arguments])


def _logs_config(tmp_path: Path, url: str, rules: str = logs_rule()) -> Path:
    """A config file for a `logs` table in ``url``: ids 1-3 due (2020), 4 not (2026-11)."""
    clocks = {key: datetime(2020, 1, key) for key in (1, 2, 3)}
    create_logs(url, {**clocks, 4: datetime(2026, 11, 1)})
    path = tmp_path / "retention.toml"
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    path.write_text(config_text(url, rules, state_url=state))
    return path


def _warnings(result: Result, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


# --- periods that overflow the calendar ----------------------------------------------------


@pytest.mark.parametrize("period", ["2100y", "9999y", "P1001Y", "1000y1d", "9" * 30 + "d"])
def test_a_period_past_the_calendar_is_a_config_error(sqlite_url: str, period: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(sqlite_url, logs_rule().replace('period = "1y"', f'period = "{period}"'))
    assert [issue.path for issue in raised.value.issues] == ["rules[0].period"]
    # Whole: the text between the value and the example is not cut as if it were a value.
    assert raised.value.issues[0].message == (
        f"'{period}' is longer than 1000 years, the longest period accepted (e.g. '1000y')"
    )


def test_a_long_period_is_cut_in_its_message_and_the_rest_is_kept(sqlite_url: str) -> None:
    period = "9" * 100 + "d"
    with pytest.raises(ConfigError) as raised:
        make_config(sqlite_url, logs_rule().replace('period = "1y"', f'period = "{period}"'))
    assert raised.value.issues[0].message == (
        f"'{period[:56]}... is longer than 1000 years, the longest period accepted (e.g. '1000y')"
    )


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("daemon", "heartbeat", "99999999999d"),
        ("daemon", "overdue_grace", "367d"),
        ("daemon", "lease_ttl", "9" * 5000 + "s"),
    ],
)
def test_a_daemon_duration_past_a_year_is_a_config_error(
    sqlite_url: str, table: str, key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(sqlite_url, f'[{table}]\n{key} = "{value}"\n')
    assert [issue.path for issue in raised.value.issues] == [f"{table}.{key}"]
    assert "must be at most 366d" in raised.value.issues[0].message


def test_a_jitter_past_a_year_is_a_config_error(sqlite_url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_config(sqlite_url, logs_rule('jitter = "1000000000d"'))
    assert [issue.path for issue in raised.value.issues] == ["rules[0].jitter"]


def test_the_longest_period_is_accepted_and_plans(sqlite_url: str, tmp_path: Path) -> None:
    rules = logs_rule().replace('period = "1y"', 'period = "1000y"')
    config = _logs_config(tmp_path, sqlite_url, rules)
    result = invoke(config, "plan", "--as-of", "1970-01-01T00:00:00+00:00", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rules"][0]["cutoff"].startswith("0970-01-01")


def _campaigns(url: str) -> object:
    metadata = MetaData()
    campaigns = Table(
        "campaigns",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("sent_at", DateTime),
        Column("retention_period", String(20)),
        Column("retention_years", Integer),
    )
    engine = create_tables(url, metadata)
    rows = [
        (1, datetime(2016, 1, 1), None, None),  # 10y: due
        (2, datetime(2025, 6, 1), "1y", 1),  # due
        (3, datetime(2010, 1, 1), "9999y", 9999),  # not a period: kept
        (4, datetime(2010, 1, 1), "P9999Y", 9999),  # not a period: kept
        (5, datetime(2010, 1, 2), "9999y", 9999),  # not a period: kept
        (6, datetime(2025, 6, 1), "18mo", 2),  # not due
    ]
    with engine.begin() as connection:
        connection.execute(
            insert(campaigns),
            [
                dict(
                    zip(("id", "sent_at", "retention_period", "retention_years"), row, strict=True)
                )
                for row in rows
            ],
        )
    return engine


CAMPAIGN_RULES = """
[[rules]]
name = "by-text"
store = "db"
table = "campaigns"
key = "id"
clock = "sent_at"
period = "10y"
period_column = "retention_period"
action = "delete"

[[rules]]
name = "by-years"
store = "db"
table = "campaigns"
key = "id"
clock = "sent_at"
period = "10y"
period_column = "retention_years"
period_unit = "y"
action = "delete"
"""


def test_a_row_whose_period_overflows_is_kept_counted_and_the_rest_goes(
    database_url: str,
) -> None:
    engine = _campaigns(database_url)
    config = make_config(database_url, CAMPAIGN_RULES)

    # By text, or by an integer column and a unit: 9999 years is not a period either way.
    planned = {rule_plan.rule.name: rule_plan for rule_plan in plan(config, AS_OF).rules}
    assert {name: rule_plan.error for name, rule_plan in planned.items()} == {
        "by-text": None,
        "by-years": None,
    }
    assert {
        name: (rule_plan.due, rule_plan.invalid_period) for name, rule_plan in planned.items()
    } == {
        "by-text": (2, 3),
        "by-years": (2, 3),
    }
    by_text = planned["by-text"].selection
    by_years = planned["by-years"].selection
    assert by_text is not None
    assert by_text.invalid_period_values == ("9999y", "P9999Y")
    assert by_years is not None
    assert by_years.invalid_period_values == ("9999",)

    _, report = plan_and_run(config, AS_OF, "by-text")
    assert report.outcomes[0].deleted == 2
    assert remaining_ids(engine, "campaigns") == {3, 4, 5, 6}


def test_a_row_whose_period_overflows_is_reported_by_plan_and_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    _campaigns(sqlite_url)
    create_logs(sqlite_url, {1: datetime(2020, 1, 1)})
    path = tmp_path / "retention.toml"
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    path.write_text(config_text(sqlite_url, CAMPAIGN_RULES + logs_rule(), state_url=state))

    planned = invoke(path, "plan", "--as-of", AS_OF_TEXT, "--output", "json")
    assert planned.exit_code == 0, planned.output
    rules = {rule["rule"]: rule for rule in json.loads(planned.stdout)["rules"]}
    assert rules["by-text"]["invalid_period"] == 3
    assert rules["by-text"]["invalid_period_values"] == ["9999y", "P9999Y"]
    assert (rules["by-text"]["due"], rules["logs"]["due"]) == (2, 1)

    text = invoke(path, "plan", "--as-of", AS_OF_TEXT)
    assert text.exit_code == 0, text.output
    assert "by-text: 3 rows with retention_period = '9999y', 'P9999Y'" in text.stdout

    run = invoke(path, "run", "--yes", "--as-of", AS_OF_TEXT, "--rule", "by-text")
    assert run.exit_code == 0, run.output
    warned = _warnings(run, "rule.invalid_period")
    assert [(line["rule"], line["rows"], line["level"]) for line in warned] == [
        ("by-text", 3, "warning")
    ]


# --- held keys that are no value of their column -------------------------------------------


@pytest.mark.parametrize("key", ["abc", "1.5", "99999999999999999999"])
def test_a_held_key_that_is_no_value_of_its_column_is_refused(
    database_url: str, tmp_path: Path, key: str
) -> None:
    config = _logs_config(tmp_path, database_url)
    result = invoke(config, "hold", "add", "--rule", "logs", "--key", key, "--reason", "case 7")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"--key {key!r} is not a value of logs.id" in result.stderr
    assert "Traceback" not in result.output
    assert "no holds" in invoke(config, "hold", "list", "--all").stdout
    placed = invoke(config, "hold", "add", "--rule", "logs", "--key", "2", "--reason", "case 7")
    assert placed.exit_code == 0, placed.output


def test_a_held_key_already_stored_that_fits_no_row_stops_nothing(
    database_url: str, tmp_path: Path
) -> None:
    config_path = _logs_config(tmp_path, database_url)
    state = StateDatabase(f"sqlite:///{tmp_path / 'state.sqlite'}")
    try:
        bad = add_hold(
            state,
            rule="logs",
            kind="key",
            value={"keys": [["abc"], ["2"]]},
            reason="placed by an older version",
            now=AS_OF - timedelta(days=1),
            by="legal@test",
            until=None,
        )
    finally:
        state.close()
    planned = invoke(config_path, "plan", "--as-of", AS_OF_TEXT, "--output", "json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)["rules"][0]
    assert (document["due"], document["held"], document["unfit_holds"]) == (2, 1, [bad.id])
    text = invoke(config_path, "plan", "--as-of", AS_OF_TEXT)
    assert f"logs: hold {bad.id} names a key that is no value of id" in text.stdout

    run = invoke(config_path, "run", "--yes", "--as-of", AS_OF_TEXT)
    assert run.exit_code == 0, run.output
    warned = _warnings(run, "rule.unfit_hold")
    assert [(line["rule"], line["holds"]) for line in warned] == [("logs", [bad.id])]
    assert remaining_ids(engine_for(database_url), "logs") == {2, 4}


# --- bad command-line values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "as_of",
    [
        "0001-01-01",
        "0001-01-01T00:00:00+05:00",
        "1969-12-31T23:59:59+00:00",
        "9999-12-31T23:59:59-05:00",
        "9999-06-01",
    ],
)
def test_an_as_of_off_the_calendar_is_a_usage_error(
    sqlite_url: str, tmp_path: Path, as_of: str
) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    for command in (["plan"], ["run", "--dry-run"]):
        result = invoke(config, *command, "--as-of", as_of)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert f"--as-of {as_of!r}" in result.stderr
        assert "is out of range" in result.stderr
        assert "Traceback" not in result.output


def test_an_as_of_just_before_the_epoch_in_the_policy_zone_says_so_in_utc(
    sqlite_url: str, tmp_path: Path
) -> None:
    """'1970-01-01' read on the Paris calendar is 1969-12-31 23:00 UTC: the message said
    'give an instant from 1970-01-01' to someone who had given 1970-01-01."""
    config = _logs_config(tmp_path, sqlite_url)
    config.write_text(
        config.read_text().replace('timezone = "UTC"', 'timezone = "Europe/Paris"', 1)
    )

    result = invoke(config, "plan", "--as-of", "1970-01-01")

    assert result.exit_code == ExitCode.USAGE, result.output
    assert (
        "--as-of '1970-01-01' (1969-12-31 23:00:00 UTC) is out of range: give an instant "
        "from 1970-01-01 00:00 UTC to before 9999-01-01 00:00 UTC"
    ) in result.stderr


def test_a_config_path_that_is_a_directory_is_a_bad_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path), "plan"])
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    assert f"error: {tmp_path}: cannot read" in result.stderr


def test_a_plan_saved_where_it_cannot_be_written_is_a_usage_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    missing = tmp_path / "no such folder" / "plan.json"
    result = invoke(config, "plan", "--as-of", AS_OF_TEXT, "--save", str(missing))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"error: --save: cannot write {missing}: No such file or directory" in result.stderr
    assert "Traceback" not in result.output


def test_hold_until_must_be_an_instant_in_the_future(sqlite_url: str, tmp_path: Path) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    hold = ("hold", "add", "--rule", "logs", "--key", "1", "--reason", "case 7", "--until")
    garbage = invoke(config, *hold, "garbage")
    assert garbage.exit_code == ExitCode.USAGE
    assert "--until 'garbage' is not an ISO 8601 date or time" in garbage.stderr
    assert "--as-of" not in garbage.stderr
    past = invoke(config, *hold, "2020-01-01")
    assert past.exit_code == ExitCode.USAGE
    assert "--until '2020-01-01' is not in the future" in past.stderr
    assert "no holds" in invoke(config, "hold", "list", "--all").stdout
    future = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    assert invoke(config, *hold, future).exit_code == 0


@pytest.mark.parametrize("hold_id", ["0", str(2**63), str(10**30)])
def test_hold_release_of_an_id_no_hold_can_have_is_no_hold(
    sqlite_url: str, tmp_path: Path, hold_id: str
) -> None:
    """An id past SQLite's 64 bits was a traceback (OverflowError binding it)."""
    config = _logs_config(tmp_path, sqlite_url)
    result = invoke(config, "hold", "release", hold_id, "--reason", "case 7")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"error: no hold {hold_id}\n" in result.stderr


def test_log_level_is_one_of_the_levels(sqlite_url: str, tmp_path: Path) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    bogus = invoke(config, "--log-level", "bogus", "plan", "--as-of", AS_OF_TEXT)
    assert bogus.exit_code == ExitCode.USAGE
    assert "'bogus' is not one of" in bogus.stderr
    quiet = invoke(config, "--log-level", "WARNING", "plan", "--as-of", AS_OF_TEXT)
    assert quiet.exit_code == 0, quiet.output
    assert "[debug|info|warning|error|critical]" in CliRunner().invoke(main, ["--help"]).stdout


# --- bytes that are not UTF-8 on the command line or standard input -------------------------

# What Python makes of the Latin-1 bytes b"caf\xe9" in argv (or a lenient stdin): no database,
# hash or audit entry takes it, and binding it was a UnicodeEncodeError (a traceback, exit 1).
NOT_UTF8 = "caf\udce9"

PEOPLE_RULE = """
[[rules]]
name = "people"
store = "db"
table = "people"
key = "email"
clock = "left_at"
period = "1y"
action = "delete"
erase_by = "email"
"""


def _people_config(tmp_path: Path, url: str) -> Path:
    """An audited config for a `people` table keyed by e-mail, after a run that purged one."""
    metadata = MetaData()
    people = Table(
        "people",
        metadata,
        Column("email", String(100), primary_key=True),
        Column("left_at", DateTime),
    )
    engine = create_tables(url, metadata)
    with engine.begin() as connection:
        connection.execute(
            insert(people),
            [
                {"email": "gone@example.org", "left_at": datetime(2020, 1, 1)},
                {"email": "here@example.org", "left_at": datetime(2026, 11, 1)},
            ],
        )
    engine.dispose()
    path = tmp_path / "retention.toml"
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    path.write_text(
        config_text(url, PEOPLE_RULE, state_url=state, audit_directory=tmp_path / "audit")
    )
    assert invoke(path, "run", "--yes").exit_code == ExitCode.OK
    return path


@pytest.mark.parametrize(
    ("target", "option"),
    [
        (("--key", NOT_UTF8), "--key"),
        (("--where", f"email = '{NOT_UTF8}'"), "--where"),
    ],
    ids=["key", "where"],
)
def test_a_hold_on_bytes_that_are_not_utf8_is_refused(
    sqlite_url: str, tmp_path: Path, target: tuple[str, str], option: str
) -> None:
    """Such a --where was stored, and every plan and run of its rule then died binding it."""
    config = _people_config(tmp_path, sqlite_url)
    result = invoke(config, "hold", "add", "--rule", "people", *target, "--reason", "case 7")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"error: {option} holds bytes that are not UTF-8: no record has them" in result.stderr
    assert "no holds" in invoke(config, "hold", "list", "--all").stdout
    assert invoke(config, "plan").exit_code == ExitCode.OK


@pytest.mark.parametrize(
    ("arguments", "given"),
    [
        (("erase", "--subject", NOT_UTF8, "--request", "DSR-1", "--dry-run"), None),
        (("erase", "--subject", "-", "--request", "DSR-1", "--dry-run"), b"caf\xe9\n"),
        (("audit", "erasures", "--subject", NOT_UTF8), None),
        (("audit", "erasures", "--subject", "-"), b"caf\xe9\n"),
    ],
    ids=["erase", "erase from stdin", "audit erasures", "audit erasures from stdin"],
)
def test_a_subject_that_is_not_utf8_is_refused(
    sqlite_url: str, tmp_path: Path, arguments: tuple[str, ...], given: bytes | None
) -> None:
    """From argv it failed hashing or binding it; from a strict standard input (a UTF-8
    locale, as CliRunner's) reading it. Both were a traceback."""
    config = _people_config(tmp_path, sqlite_url)
    result = CliRunner().invoke(main, ["--config", str(config), *arguments], input=given)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "error: --subject holds bytes that are not UTF-8" in result.stderr


@pytest.mark.parametrize("option", ["--store", "--table", "--key"])
def test_audit_prove_of_bytes_that_are_not_utf8_is_refused(
    sqlite_url: str, tmp_path: Path, option: str
) -> None:
    config = _people_config(tmp_path, sqlite_url)
    named = {"--store": "db", "--table": "people", "--key": "gone@example.org", option: NOT_UTF8}
    result = invoke(config, "audit", "prove", *(part for pair in named.items() for part in pair))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"error: {option} holds bytes that are not UTF-8: no record has them" in result.stderr


# --- hold reasons and erasure references: no IPv6 address either --------------------------

IPV6_WRITTEN = [
    "2001:db8::1",
    "seen at 2001:DB8::A.",
    "2001:0db8:0000:0000:0000:ff00:0042:8329",
    "from [2001:db8::1]:443",
    "fe80::1%eth0",
    "::ffff:192.0.2.1",
    "::1",
    "ip:2001:db8::1",
    "blocked 2001:db8::/32",
]
NOT_IPV6 = [
    "case L-17 at 12:30:45",
    "filed 2026-11-23T12:30:45Z",
    "ticket::42",
    "bug in std::deque",
    "case G1::5",
    "timecode 10:00:00:00",
    "ratio 1:2 of 3.2.1",
    "a :: b",
]


@pytest.mark.parametrize("text", IPV6_WRITTEN)
def test_an_ipv6_address_is_refused_in_what_the_trail_keeps(text: str) -> None:
    with pytest.raises(UsageError, match="--reason holds an e-mail or IP address"):
        refuse_personal_data("--reason", text, "'case L-17'")
    with pytest.raises(UsageError, match="--request holds an e-mail or IP address"):
        erasure_request("4242", f"DSR-1 {text}")


@pytest.mark.parametrize("text", NOT_IPV6)
def test_times_and_scopes_are_no_ipv6_address(text: str) -> None:
    refuse_personal_data("--reason", text, "'case L-17'")
    assert erasure_request("4242", text).reference == text


def test_hold_add_refuses_an_ipv6_reason(sqlite_url: str, tmp_path: Path) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    reason = "asked from 2001:db8::7"
    result = invoke(config, "hold", "add", "--rule", "logs", "--key", "1", "--reason", reason)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "case or ticket reference" in result.stderr
    assert "no holds" in invoke(config, "hold", "list", "--all").stdout


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+00:00", "2026-11-23T12:00:00"])
def test_a_saved_plan_off_the_calendar_is_refused(
    sqlite_url: str, tmp_path: Path, as_of: str
) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    saved = tmp_path / "plan.json"
    assert invoke(config, "plan", "--as-of", AS_OF_TEXT, "--save", str(saved)).exit_code == 0
    document = json.loads(saved.read_text())
    saved.write_text(json.dumps({**document, "as_of": as_of}))
    result = invoke(config, "run", "--yes", "--plan-file", str(saved))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"as_of {as_of!r} is not an instant with an offset from 1970-01-01" in result.stderr
    assert remaining_ids(engine_for(sqlite_url), "logs") == {1, 2, 3, 4}


# --- PostgreSQL clocks off Python's calendar ------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp", "date"])
def test_a_postgresql_clock_off_the_calendar_fails_no_rule(
    postgres_url: str, column_type: str
) -> None:
    # -infinity and dates BC sort before every cutoff (due, the oldest); infinity and years past
    # 9999 after it. Python has none of them: the survey read the oldest and failed the rule.
    engine = engine_for(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            text(f"CREATE TABLE logs (id integer PRIMARY KEY, logged_at {column_type})")
        )
        connection.execute(
            text(
                "INSERT INTO logs VALUES (1, '-infinity'), (2, '4713-01-01 BC'), "
                "(3, '2020-01-01'), (4, 'infinity'), (5, '294276-12-31'), (6, NULL)"
            )
        )
    config = make_config(postgres_url, logs_rule())
    the_plan, report = plan_and_run(config, AS_OF)
    (rule_plan,) = the_plan.rules
    assert rule_plan.error is None
    assert (rule_plan.due, rule_plan.future) == (3, 2)
    assert rule_plan.oldest is not None
    assert rule_plan.oldest.year == 1
    assert report.exit_code == ExitCode.OK
    assert remaining_ids(engine, "logs") == {4, 5, 6}
    engine.dispose()


# --- files that never end: a device or a pipe named as a config, key or plan ---------------


def _bounded_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of at most 2 GiB of memory: one that reads /dev/zero whole
    fails with a MemoryError (exit 1) instead of taking the host's memory."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    return subprocess.run(
        [sys.executable, "-m", "retention", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
        check=False,
    )


def test_a_config_that_never_ends_is_a_bad_config() -> None:
    result = _bounded_cli("--config", "/dev/zero", "config", "validate", "--offline")
    assert result.returncode == ExitCode.BAD_CONFIG, result.stderr
    assert "error: /dev/zero: longer than 16 MiB: not a config file" in result.stderr


def test_a_key_file_that_never_ends_is_a_bad_config(sqlite_url: str, tmp_path: Path) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    text = config.read_text().replace("[settings]\n", '[settings]\nhash_key_file = "/dev/zero"\n')
    config.write_text(text)
    result = _bounded_cli("--config", str(config), "plan", "--as-of", AS_OF_TEXT)
    assert result.returncode == ExitCode.BAD_CONFIG, result.stderr
    assert (
        "error: settings.hash_key_file: '/dev/zero' holds more than 64 KiB: not a key"
        in result.stderr
    )


def test_a_plan_file_that_never_ends_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    result = _bounded_cli("--config", str(config), "run", "--yes", "--plan-file", "/dev/zero")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "error: /dev/zero is not a saved plan (longer than 64 MiB)" in result.stderr


def _audited_trail(tmp_path: Path, url: str) -> tuple[Path, Path]:
    """A config whose run wrote a trail; return the config and the audit directory."""
    create_logs(url, {key: datetime(2020, 1, key) for key in (1, 2, 3)})
    audit = tmp_path / "audit"
    config = tmp_path / "retention.toml"
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    config.write_text(config_text(url, logs_rule(), state_url=state, audit_directory=audit))
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--yes"])
    assert result.exit_code == ExitCode.OK, result.output
    return config, audit


def test_auditor_files_that_never_end_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    """What an auditor is handed (a public key file, anchors, a proof bundle) is read with a
    limit: /dev/zero is a mistake to be told, not a MemoryError."""
    _config, audit = _audited_trail(tmp_path, sqlite_url)
    keys = str(audit / "public-keys.json")
    verify = ("audit", "verify", "--dir", str(audit))
    result = _bounded_cli(*verify, "--keys", "/dev/zero")
    assert result.returncode == ExitCode.BAD_CONFIG, result.stderr
    assert "error: '/dev/zero' is not a public key file: longer than 16 MiB" in result.stderr
    result = _bounded_cli(*verify, "--keys", keys, "--anchor", "/dev/zero")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "'/dev/zero' holds more than 1 MiB: not an anchor" in result.stderr
    result = _bounded_cli("audit", "check-proof", "--keys", keys, "/dev/zero")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "'/dev/zero' holds more than 64 MiB: not a proof bundle" in result.stderr


def test_a_signing_key_that_never_ends_is_a_bad_config(sqlite_url: str, tmp_path: Path) -> None:
    config, _audit = _audited_trail(tmp_path, sqlite_url)
    text = config.read_text()
    signing = next(line for line in text.splitlines() if line.startswith("signing_key_file"))
    config.write_text(text.replace(signing, 'signing_key_file = "/dev/zero"'))
    result = _bounded_cli("--config", str(config), "run", "--yes")
    assert result.returncode == ExitCode.BAD_CONFIG, result.stderr
    assert "the signing key: '/dev/zero' holds more than 64 KiB: not a key" in result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [("/dev/zero", "holds more than 64 KiB: not a URL"), (None, "is not UTF-8")],
)
def test_a_url_credential_that_is_no_url_is_a_bad_config(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str | None,
    message: str,
) -> None:
    config = _logs_config(tmp_path, sqlite_url)
    text = config.read_text().replace(f'url = "{sqlite_url}"', 'url_credential = "app-db-url"')
    config.write_text(text)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    if target is None:
        (credentials / "app-db-url").write_bytes(b"\xff\xfesqlite:///x")
    else:
        (credentials / "app-db-url").symlink_to(target)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    result = _bounded_cli("--config", str(config), "plan")
    assert result.returncode == ExitCode.BAD_CONFIG, result.stderr
    assert "stores.db.url_credential: " in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("reason", "refused"),
    [
        ("L-17\n   9  released  logs  1 key  by root@vm: forged", "holds control characters"),
        ("L-17 \x1b[2J\x1b[31mcleared", "holds control characters"),
        ("L-17 \u202edlo", "holds control characters"),
        ("L-" + "7" * 201, "longer than 200 characters"),
    ],
    ids=["newline", "terminal escape", "bidi override", "too long"],
)
def test_hold_add_refuses_a_reason_that_would_rewrite_its_listing(
    sqlite_url: str, tmp_path: Path, reason: str, refused: str
) -> None:
    """A reason is printed as written by `hold list`, `audit show` and the report: a newline
    forged a line of the listing, an escape sequence rewrote the terminal."""
    config = _logs_config(tmp_path, sqlite_url)
    result = invoke(config, "hold", "add", "--rule", "logs", "--key", "1", "--reason", reason)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"--reason {refused}" in result.stderr
    assert "no holds" in invoke(config, "hold", "list", "--all").stdout
    added = invoke(config, "hold", "add", "--rule", "logs", "--key", "1", "--reason", "L-17")
    assert added.exit_code == ExitCode.OK, added.output
    released = invoke(config, "hold", "release", "1", "--reason", reason)
    assert released.exit_code == ExitCode.USAGE, released.output
    assert f"--reason {refused}" in released.stderr


@pytest.mark.parametrize("nested", ["a = " + "[" * 100_000, "a = " + "{ b = " * 100_000])
def test_a_config_nested_past_the_parser_s_depth_is_a_config_error(
    tmp_path: Path, nested: str
) -> None:
    """tomllib's RecursionError was no TOMLDecodeError: a traceback, exit 1."""
    path = tmp_path / "retention.toml"
    path.write_text(nested)

    result = invoke(path, "config", "validate", "--offline")

    assert result.exit_code == ExitCode.BAD_CONFIG, result.output
    assert "not valid TOML: nested too deep" in result.stderr
