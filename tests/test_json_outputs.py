"""The --output json documents of every reporting command, taken from real runs on the demo,
against the JSON Schemas the package ships (docs/json.md)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from referencing import Registry, Resource

from retention.cli import main
from retention.demo import DEMO_ERASURE_SUBJECT
from retention.documents import schema
from tests.support import copy_shipped_config

AS_OF = "2026-11-23T12:00:00+00:00"
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str) -> Path:
    copy_shipped_config(tmp_path, s3_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    # The test S3 server is moto in this process, not one scripts/demo-s3 started.
    created = _invoke("demo", "--s3-endpoint-is-mine", "--as-of", AS_OF)
    assert created.exit_code == 0, created.output
    return tmp_path


def _invoke(*arguments: str) -> Any:
    return CliRunner().invoke(main, ["--log-format", "json", *arguments])


def _document(name: str, *arguments: str, exit_code: int = 0) -> dict[str, Any]:
    """Run the command, parse its stdout and check it against the schema ``name``."""
    result = _invoke(*arguments)
    assert result.exit_code == exit_code, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    _validate(document, name)
    return document


def _validate(document: object, name: str) -> None:
    names = (
        "plan",
        "run",
        "status",
        "holds",
        "audit-show",
        "audit-prove",
        "audit-erasures",
        "audit-report",
    )
    shipped = [schema(other) for other in names]
    registry: Registry[Any] = Registry().with_resources(
        (shipped_schema["$id"], Resource.from_contents(shipped_schema))
        for shipped_schema in shipped
    )
    validator = jsonschema.Draft202012Validator(
        schema(name),
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    validator.validate(document)


def _instants(value: object, key: str = "") -> list[tuple[str, str]]:
    """Every (key, value) of a string that looks like a date or time, anywhere in a document."""
    if isinstance(value, dict):
        return [found for name, item in value.items() for found in _instants(item, name)]
    if isinstance(value, list):
        return [found for item in value for found in _instants(item, key)]
    if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\d", value):
        return [(key, value)]
    return []


def test_every_json_output_of_a_demo_session_matches_its_schema(demo: Path) -> None:
    plan = _document("plan", "plan", "--as-of", AS_OF, "--output", "json")
    rules = {rule["rule"]: rule for rule in plan["rules"]}
    # Every key on every rule, null where it does not apply.
    assert len({frozenset(rule) for rule in plan["rules"]}) == 1
    assert rules["connection-logs"]["objects"] is None
    assert rules["connection-logs"]["subjects"] is None
    assert isinstance(next(r for r in rules.values() if r["objects"] is not None)["objects"], dict)
    # One format for every instant, DATE clocks included.
    instants = _instants(plan)
    assert instants
    assert all(INSTANT.match(value) for _key, value in instants), instants

    placed = _invoke("hold", "add", "--rule", "connection-logs", "--key", "1", "--reason", "T-9")
    assert placed.exit_code == 0, placed.output
    holds = _document("holds", "hold", "list", "--output", "json")
    assert [hold["kind"] for hold in holds["holds"]] == ["key"]
    assert holds["holds"][0]["key_count"] == 1

    dry = _document("run", "run", "--dry-run", "--as-of", AS_OF, "--output", "json")
    assert dry["dry_run"] is True
    assert dry["plan"]["plan_id"] == dry["plan_id"]
    ran = _document("run", "run", "--yes", "--as-of", AS_OF, "--output", "json")
    assert ran["exit_code"] == 0
    assert ran["totals"]["deleted"] + ran["totals"]["anonymised"] > 0
    assert len(ran["rules"]) == len(plan["rules"])

    status = _document("status", "status", "--output", "json")
    assert all(rule["last_run"] is not None for rule in status["rules"])
    assert all(INSTANT.match(value) for _key, value in _instants(status))

    shown = _document("audit-show", "audit", "show", "--format", "json")
    assert _run_id(shown)  # one audited run: a dry run writes no trail
    assert sum(row["done"] for row in shown["runs"]) == (
        ran["totals"]["deleted"] + ran["totals"]["anonymised"]
    )
    assert all(INSTANT.match(value) for _key, value in _instants(shown))

    erased = _document(
        "run",
        "erase",
        "--subject",
        DEMO_ERASURE_SUBJECT,
        "--request",
        "DSR-1",
        "--yes",
        "--output",
        "json",
    )
    assert erased["exit_code"] == 0
    assert DEMO_ERASURE_SUBJECT not in json.dumps(erased)

    erasures = _document(
        "audit-erasures", "audit", "erasures", "--subject", DEMO_ERASURE_SUBJECT, "--output", "json"
    )
    assert [erasure["reference"] for erasure in erasures["erasures"]] == ["DSR-1"]
    assert DEMO_ERASURE_SUBJECT not in json.dumps(erasures)

    written = _invoke("audit", "report", "--format", "json", "-o", str(demo / "report.json"))
    assert written.exit_code == 0, written.output
    report: dict[str, Any] = json.loads((demo / "report.json").read_text())
    _validate(report, "audit-report")
    overall = report["totals"]["overall"]
    shown_after = _invoke("audit", "show", "--format", "json")
    rows = [row for row in json.loads(shown_after.stdout)["runs"] if row["entry"] == "run"]
    assert overall["child_rows"] == sum(row["children_deleted"] for row in rows) > 0
    assert overall["delete_markers"] == sum(row["markers"] for row in rows)
    assert overall["bytes"] == sum(row["bytes"] for row in rows) > 0
    assert overall["files"] > 0
    assert overall["object_versions"] > 0
    # The report's erasure requests and holds are those of the session.
    assert [erasure["reference"] for erasure in report["erasures"]] == ["DSR-1"]
    assert report["erasures"][0]["exit_code"] == 0
    assert report["erasures"][0]["rules"]
    assert (report["holds"]["placed"], report["holds"]["changes"][0]["reason"]) == (1, "T-9")
    assert report["exceptions"]["runs"] == []

    with sqlite3.connect(demo / "var" / "demo.sqlite") as connection:
        kept = {row[0] for row in connection.execute("SELECT id FROM connection_logs")}
    purged = min(set(range(1, max(kept) + 1)) - kept)
    proof = _document(
        "audit-prove",
        "audit",
        "prove",
        "--store",
        "app",
        "--table",
        "connection_logs",
        "--key",
        str(purged),
        "--output",
        "json",
    )
    assert proof["purged"] is True
    assert proof["proven"] is True
    assert proof["proofs"][0]["run_id"] == _run_id(shown)
    absent = _document(
        "audit-prove",
        "audit",
        "prove",
        "--store",
        "app",
        "--table",
        "connection_logs",
        "--key",
        str(max(kept)),
        "--output",
        "json",
        exit_code=3,
    )
    assert (absent["purged"], absent["proofs"]) == (False, [])

    # A key rotation, then a run signed by the new key: the report lists both keys' windows
    # and the rotation.
    assert _invoke("audit", "keygen", "--rotate").exit_code == 0
    assert _invoke("run", "--yes", "--as-of", AS_OF).exit_code == 0
    rotated = _invoke("audit", "report", "--format", "json", "-o", str(demo / "rotated.json"))
    assert rotated.exit_code == 0, rotated.output
    keys = json.loads((demo / "rotated.json").read_text())["keys"]
    _validate(json.loads((demo / "rotated.json").read_text()), "audit-report")
    old_key, new_key = keys["keys"]
    assert old_key["not_after"] is not None
    assert new_key["not_after"] is None
    assert (old_key["checkpoints"], new_key["checkpoints"]) == (2, 1)
    assert [(r["from"], r["to"]) for r in keys["rotations"]] == [
        (old_key["key_id"], new_key["key_id"])
    ]


def test_json_output_needs_yes_or_dry_run(demo: Path) -> None:
    refused = _invoke("run", "--as-of", AS_OF, "--output", "json")
    assert refused.exit_code == 2
    assert "--output json" in refused.output


def _lines(*arguments: str, columns: int | None) -> list[str]:
    environment = {"COLUMNS": str(columns)} if columns else {}
    result = CliRunner().invoke(main, ["--log-format", "json", *arguments], env=environment)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.mark.parametrize("columns", [80, 120])
def test_plan_run_and_audit_show_fit_the_terminal_and_lose_nothing(
    demo: Path, columns: int
) -> None:
    """The demo's plan lines reached 213 columns, audit show's 210."""
    wide_plan = _lines("plan", "--as-of", AS_OF, "--wide", columns=columns)
    assert max(len(line) for line in wide_plan) > 120, wide_plan
    plan = _lines("plan", "--as-of", AS_OF, columns=columns)
    assert max(len(line) for line in plan) <= columns, max(plan, key=len)
    # Each rule's cells are still there, under its row (a long one broken across lines).
    document = _plan_document()
    squeezed = "".join(line.strip() for line in plan).replace(" ", "")
    for rule in document["rules"]:
        cells = (rule["rule"], f"{rule['store']}.{rule['table']}", rule["clock"], rule["period"])
        for cell in (*cells, f"{rule['due']:,}"):
            assert cell.replace(" ", "") in squeezed, (cell, rule["rule"])

    ran = _lines("run", "--yes", "--as-of", AS_OF, columns=columns)
    assert max(len(line) for line in ran) <= columns, max(ran, key=len)
    shown = _lines("audit", "show", columns=columns)
    assert max(len(line) for line in shown) <= columns, max(shown, key=len)
    wide_shown = _lines("audit", "show", "--wide", columns=columns)
    assert max(len(line) for line in wide_shown) > columns
    status = _lines("status", columns=columns)
    assert max(len(line) for line in status) <= columns, max(status, key=len)


def _run_id(shown: dict[str, Any]) -> str:
    (run_id,) = {row["run_id"] for row in shown["runs"] if row["entry"] == "run"}
    return str(run_id)


def _plan_document() -> dict[str, Any]:
    result = _invoke("plan", "--as-of", AS_OF, "--output", "json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document
