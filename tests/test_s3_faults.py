"""The S3 store under faults, over real HTTP: a fault-injecting proxy (tests/s3_proxy.py) sits
between the store and the moto server. Throttled and failing DeleteObjects requests are retried,
per-key errors are retried or counted (never named), big purges go in requests of at most 1,000
keys, and an endpoint that refuses connections is a clean exit 69."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retention.cli import main
from retention.errors import ExitCode
from tests.s3_proxy import (
    FaultProxy,
    make_bucket,
    object_keys,
    put_many_in_process,
    put_objects,
    s3_client,
)

# Objects are written now (moto stamps LastModified with the real clock): a month on, the rule's
# 7 days are over for all of them.
AS_OF = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
EXPORTS = [f"exports/{index:03}.csv" for index in range(30)]
ACCESS_LOG = re.compile(r"127\.0\.0\.1 - - \[")
OTHERS = ["keep/a.csv", "keep/b.csv", "exports-not/c.csv"]


@pytest.fixture(autouse=True)
def quick_key_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's backoff between per-key retries, shortened: these tests count retries, they
    do not need to wait for them."""
    monkeypatch.setattr("retention.stores.s3_delete.RETRY_BASE_SECONDS", 0.01)


@pytest.fixture
def proxy(s3_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server) as running:
        yield running


@pytest.fixture
def bucket(s3_server: str) -> str:
    name = make_bucket(s3_server, "faults")
    put_objects(s3_server, name, EXPORTS + OTHERS)
    return name


def write_config(
    directory: Path, endpoint: str, bucket: str, *, max_attempts: int = 8, rule: str = ""
) -> Path:
    """A config with one S3 store, archive (through ``endpoint``), and one rule on it: the
    objects under exports/ older than 7 days; no audit trail."""
    path = directory / "retention.toml"
    path.write_text(
        f"""
[settings]
timezone = "UTC"
max_fraction = 1.0

[stores.archive]
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
name = "exports"
store = "archive"
prefix = "exports/"
clock = "last_modified"
period = "7d"
action = "delete"
{rule}
"""
    )
    return path


def cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "--config", str(config), *arguments], catch_exceptions=False
    )


def run(config: Path, *arguments: str) -> Result:
    return cli(config, "run", "--yes", "--allow-future-as-of", "--as-of", AS_OF, *arguments)


def log_lines(result: Result) -> list[dict[str, Any]]:
    """The run's JSON log lines, less the access log of the moto server, which runs in this
    process and logs through the same handlers (an operator's run has no such lines)."""
    lines = [line[line.index("{") :] for line in result.stderr.splitlines() if "{" in line]
    return [
        entry for entry in map(json.loads, lines) if not ACCESS_LOG.match(str(entry.get("event")))
    ]


def log_events(result: Result, event: str) -> list[dict[str, Any]]:
    return [entry for entry in log_lines(result) if entry.get("event") == event]


def finished(result: Result) -> dict[str, dict[str, Any]]:
    return {entry["rule"]: entry for entry in log_events(result, "rule.finished")}


# --- the proxy itself, with a plain boto3 client -----------------------------------------------


def test_the_proxy_forwards_everything_and_logs_each_request(
    proxy: FaultProxy, s3_server: str, bucket: str
) -> None:
    client = s3_client(proxy.endpoint)
    client.put_object(Bucket=bucket, Key="exports/new & odd <name>.csv", Body=b"data")
    assert client.get_object(Bucket=bucket, Key="exports/new & odd <name>.csv")["Body"].read() == (
        b"data"
    )
    deleted = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "exports/000.csv"}, {"Key": "keep/a.csv"}]}
    )
    assert {item["Key"] for item in deleted["Deleted"]} == {"exports/000.csv", "keep/a.csv"}
    remaining = object_keys(s3_server, bucket)
    assert "exports/new & odd <name>.csv" in remaining
    assert not {"exports/000.csv", "keep/a.csv"} & remaining
    assert [exchange.kind for exchange in proxy.seen()] == [
        "put_object",
        "get_object",
        "delete_objects",
    ]
    assert [entry.key for entry in proxy.seen("delete_objects")[0].objects] == [
        "exports/000.csv",
        "keep/a.csv",
    ]
    assert not proxy.injected()


def test_the_proxy_injects_request_faults_and_key_errors(
    proxy: FaultProxy, s3_server: str, bucket: str
) -> None:
    client = s3_client(proxy.endpoint)  # two attempts per call
    proxy.fail_requests("delete_objects", times=1)
    proxy.key_errors(r"/00[0-4]\.csv$", "AccessDenied")
    proxy.key_errors(r"/01[0-4]\.csv$", "InternalError", times=1)
    objects = {"Objects": [{"Key": key} for key in EXPORTS[:20]]}

    first = client.delete_objects(Bucket=bucket, Delete=objects)
    assert first["ResponseMetadata"]["RetryAttempts"] == 1  # after one 503 SlowDown
    codes = {error["Key"]: error["Code"] for error in first["Errors"]}
    assert codes == {key: "AccessDenied" for key in EXPORTS[:5]} | {
        key: "InternalError" for key in EXPORTS[10:15]
    }
    # The objects reported failed are really still there; the others are gone.
    assert object_keys(s3_server, bucket, "exports/") == set(EXPORTS) - set(
        EXPORTS[5:10] + EXPORTS[15:20]
    )

    second = client.delete_objects(Bucket=bucket, Delete=objects)
    assert {error["Key"] for error in second["Errors"]} == set(EXPORTS[:5])
    assert object_keys(s3_server, bucket, "exports/") == set(EXPORTS[:5] + EXPORTS[20:])
    assert [(e.status, e.injected) for e in proxy.seen("delete_objects")] == [
        (503, True),
        (200, True),
        (200, True),
    ]
    # A request naming only failing keys never reaches the server (S3 refuses an empty Delete).
    only_denied = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": EXPORTS[0]}]})
    assert [error["Code"] for error in only_denied["Errors"]] == ["AccessDenied"]


# --- the store, through the proxy --------------------------------------------------------------


def test_throttled_delete_requests_are_retried_and_everything_goes(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    proxy.fail_requests("delete_objects", times=2, status=503, code="SlowDown")

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    deletes = proxy.seen("delete_objects")
    assert [exchange.status for exchange in deletes[:2]] == [503, 503]
    assert all(exchange.status == 200 for exchange in deletes[2:])
    assert {entry.key for entry in proxy.deleted_keys()} == set(EXPORTS)
    assert finished(result)["exports"]["deleted"] == len(EXPORTS)


def test_server_errors_on_delete_requests_are_retried(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    proxy.fail_requests("delete_objects", times=1, status=500, code="InternalError")
    proxy.fail_requests("delete_objects", times=1, status=503, code="ServiceUnavailable")

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    assert len(proxy.injected("delete_objects")) == 2


def test_dropped_connections_on_delete_requests_are_retried(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    proxy.drop_requests("delete_objects", times=2)

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    assert [exchange.status for exchange in proxy.seen("delete_objects")][:3] == [0, 0, 200]


def test_a_throttling_that_outlasts_the_retries_fails_the_rule_in_one_line(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket, max_attempts=2)
    proxy.fail_requests("delete_objects", times=1000)

    result = run(config)

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert object_keys(s3_server, bucket) == set(EXPORTS + OTHERS)
    # docs/config.md: max_attempts is the number of attempts per request (the first included).
    assert proxy.count("delete_objects") == 2
    outcome = finished(result)["exports"]
    assert (outcome["status"], outcome["deleted"]) == ("failed", 0)
    assert "SlowDown" in outcome["error"]
    assert "\n" not in outcome["error"]
    assert "Traceback" not in result.output
    assert not log_events(result, "rule.crashed")


def test_per_key_errors_that_never_clear_are_retried_a_bounded_number_of_times(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    proxy.key_errors(r"/00[3-4]\.csv$", "InternalError")

    result = run(config)

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert object_keys(s3_server, bucket) == set(EXPORTS[3:5] + OTHERS)
    outcome = finished(result)["exports"]
    assert (outcome["status"], outcome["deleted"], outcome["failed"]) == ("failed", 28, 2)
    assert re.match(r"2 could not be purged: InternalError", outcome["error"])
    attempts = [
        e.key for x in proxy.seen("delete_objects") for e in x.objects if e.key == EXPORTS[3]
    ]
    assert 2 <= len(attempts) <= 10


@pytest.mark.parametrize("code", ["SlowDown", "InternalError", "ServiceUnavailable"])
def test_per_key_transient_errors_are_retried(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path, code: str
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    flaky = set(EXPORTS[3:7])
    proxy.key_errors(r"/00[3-6]\.csv$", code, times=2)

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    attempts = [
        entry.key for exchange in proxy.seen("delete_objects") for entry in exchange.objects
    ]
    assert {key: attempts.count(key) for key in flaky} == dict.fromkeys(flaky, 3)
    assert all(attempts.count(key) == 1 for key in set(EXPORTS) - flaky)
    outcome = finished(result)["exports"]
    assert (outcome["status"], outcome["deleted"], outcome["failed"]) == ("ok", len(EXPORTS), 0)


def test_denied_keys_stay_are_counted_and_never_named(
    proxy: FaultProxy, s3_server: str, tmp_path: Path
) -> None:
    bucket = make_bucket(s3_server, "faults")
    denied = [f"exports/customer-alice.smith-{index}.csv" for index in range(3)]
    put_objects(s3_server, bucket, denied + EXPORTS + OTHERS)
    config = write_config(tmp_path, proxy.endpoint, bucket)
    proxy.key_errors(r"alice\.smith", "AccessDenied")

    result = run(config)

    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert object_keys(s3_server, bucket) == set(denied + OTHERS)
    outcome = finished(result)["exports"]
    assert (outcome["status"], outcome["deleted"], outcome["failed"]) == (
        "failed",
        len(EXPORTS),
        len(denied),
    )
    assert "AccessDenied" in outcome["error"]
    assert re.match(r"3 could not be purged", outcome["error"])
    # The summary table: exports failed, with 3 in the FAILED column, and the error below.
    row = next(line for line in result.stdout.splitlines() if line.startswith("exports "))
    assert row.split()[1:3] == ["failed", f"{len(EXPORTS) + len(denied)}"]
    assert row.split()[6] == "3"
    assert re.search(r"^  exports: .*AccessDenied", result.stdout, re.MULTILINE)
    for text in (result.stdout, json.dumps(log_lines(result))):
        assert "alice" not in text
        assert "customer-" not in text
    # Denied keys were retried at most a few times, not forever; the run went on.
    attempts = [e.key for x in proxy.seen("delete_objects") for e in x.objects if "alice" in e.key]
    assert 3 <= len(attempts) <= 3 * 10

    proxy.clear_faults()
    again = run(config)
    assert again.exit_code == 0, again.output
    assert object_keys(s3_server, bucket) == set(OTHERS)


def test_more_than_a_thousand_keys_go_in_several_requests_of_at_most_a_thousand(
    proxy: FaultProxy, s3_server: str, tmp_path: Path
) -> None:
    bucket = make_bucket(s3_server, "faults")
    # moto lists versions slowly (about a second a page): enough for three requests, no more.
    many = [f"exports/{index:05}.csv" for index in range(2100)]
    put_many_in_process(bucket, many + OTHERS)
    config = write_config(tmp_path, proxy.endpoint, bucket)

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    sizes = [len(exchange.objects) for exchange in proxy.seen("delete_objects")]
    assert len(sizes) >= 3
    assert max(sizes) <= 1000
    assert sum(sizes) == len(many)
    assert finished(result)["exports"]["deleted"] == len(many)


def test_plan_through_the_proxy_counts_what_is_due_and_deletes_nothing(
    proxy: FaultProxy, s3_server: str, bucket: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket)
    planned = cli(config, "plan", "--as-of", AS_OF, "--output", "json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)["rules"][0]
    assert (document["rule"], document["due"]) == ("exports", len(EXPORTS))
    assert not proxy.seen("delete_objects")  # plan is read-only
    assert object_keys(s3_server, bucket) == set(EXPORTS + OTHERS)


def _refused_endpoint() -> str:
    """An http:// endpoint on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("command", ["run", "plan"])
def test_an_endpoint_that_refuses_connections_exits_69_with_one_line(
    tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path, _refused_endpoint(), "faults-nowhere", max_attempts=2)
    started = datetime.now(UTC)

    arguments = ["--yes", "--allow-future-as-of"] if command == "run" else []
    result = cli(config, command, "--as-of", AS_OF, *arguments)

    assert result.exit_code == ExitCode.STORE_UNAVAILABLE, result.output
    assert datetime.now(UTC) - started < timedelta(seconds=30)
    assert "Traceback" not in result.output
    messages = [line for line in result.stdout.splitlines() if line.startswith("  exports: ")]
    assert len(messages) == 1, result.stdout
    assert "archive" in messages[0]  # the store's name
    assert not log_events(result, "rule.crashed")


def test_a_run_lists_once_its_batches_reuse_the_listing_of_its_plan(
    proxy: FaultProxy, bucket: str, s3_server: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, proxy.endpoint, bucket, rule="batch_size = 10")

    result = run(config)

    assert result.exit_code == 0, result.output
    assert object_keys(s3_server, bucket) == set(OTHERS)
    # One listing for the plan's count, none again for the three batches.
    assert proxy.count("list_objects_v2") == 1
    assert proxy.count("delete_objects") == 3


def test_a_dry_run_and_a_plan_keep_no_listing_and_a_second_rule_gets_its_own(
    proxy: FaultProxy, bucket: str, s3_server: str, tmp_path: Path
) -> None:
    second = (
        '[[rules]]\nname = "others"\nstore = "archive"\nprefix = "keep/"\nperiod = "7d"\n'
        'action = "delete"\n'
    )
    config = write_config(tmp_path, proxy.endpoint, bucket, rule=second)

    dry = run(config, "--dry-run")
    listed_by_dry_run = proxy.count("list_objects_v2")
    result = run(config)

    assert (dry.exit_code, result.exit_code) == (0, 0), result.output
    # A dry run's store is read-only: it lists in its plan and again in its batches.
    assert listed_by_dry_run == 4
    # Each rule's batches reuse its own listing from the plan: two lists for two rules.
    assert proxy.count("list_objects_v2") - listed_by_dry_run == 2
    assert object_keys(s3_server, bucket) == {"exports-not/c.csv"}
