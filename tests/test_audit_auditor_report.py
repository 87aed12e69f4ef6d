"""`audit report` (issue 13): the auditor's report, rendered by headless Chromium, states the
verification result first and totals that equal `audit export`'s; a tampered trail's report
says so and exits 70; only signed entries are counted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from retention.audit.trail import TrailWriter
from retention.cli import main
from retention.errors import ExitCode
from tests.test_audit_verify import Trail, build_trail, copy_trail, lines, write_lines

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("auditor-report"))


@pytest.fixture
def trail(built: Trail, tmp_path: Path) -> Trail:
    return copy_trail(built, tmp_path)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return CHROMIUM


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "audit", *arguments])


def report(trail: Trail, output: Path, *options: str) -> Result:
    return invoke(
        "report", "--dir", str(trail.directory), "--keys", str(trail.keys_file),
        "-o", str(output), *options,
    )  # fmt: skip


class Tables(HTMLParser):
    """The tables of a page by id (rows of cell texts), and the verification banner."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.banner: dict[str, str] = {}
        self.banner_text = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_banner = 0
        self.external: list[str] = []
        self.bars: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "rect" and found.get("data-total"):
            self.bars.append(int(str(found["data-total"])))
        for name in ("src", "href"):
            if found.get(name):
                self.external.append(str(found[name]))
        if found.get("id") == "verification":
            self.banner = {k: v or "" for k, v in found.items()}
            self._in_banner = 1
        elif self._in_banner and tag == "div":
            self._in_banner += 1
        if tag == "table":
            self._table = found.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._in_banner:
            self._in_banner -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_banner:
            self.banner_text += data


def rendered(chromium: str, page: Path, tmp_path: Path) -> Tables:
    """Given a report, load it in headless Chromium (no network) and parse the DOM it built;
    print it to PDF too, as an auditor filing it would."""
    arguments = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--proxy-server=127.0.0.1:9",
    ]  # fmt: skip
    dom = subprocess.run(
        [*arguments, "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    pdf = tmp_path / "report.pdf"
    subprocess.run(
        [*arguments, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert pdf.read_bytes().startswith(b"%PDF"), "print to PDF gave no document"
    parsed = Tables()
    parsed.feed(dom)
    assert parsed.tables, "Chromium built no table from the report"
    return parsed


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


def export_totals(trail: Trail) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """What `audit export` says was purged: overall and per rule, by kind of record."""
    result = invoke("export", "--dir", str(trail.directory))
    assert result.exit_code == 0, result.output
    overall: Counter[str] = Counter()
    per_rule: dict[str, Counter[str]] = {}
    for line in result.stdout.splitlines():
        row = json.loads(line)
        if row["entry"] != "run" or not row["signed"]:
            continue
        kind = "Records anonymised" if row["action"] == "anonymise" else "Records deleted"
        counts = per_rule.setdefault(row["rule"], Counter())
        for counter in (overall, counts):
            counter[kind] += row["done"]
            counter["Child rows"] += row["children_deleted"]
    return overall, per_rule


def test_the_html_report_in_chromium_states_verification_first_and_export_totals(
    trail: Trail, tmp_path: Path, chromium: str
) -> None:
    page = tmp_path / "report.html"
    result = report(trail, page)
    assert result.exit_code == 0, result.output
    dom = rendered(chromium, page, tmp_path)
    assert dom.banner["data-valid"] == "true"
    assert "The audit trail verifies" in dom.banner_text
    assert dom.external == [], "the report fetches nothing"
    assert "<script" not in page.read_text()
    assert sum(dom.bars) == 56, "the per-day chart draws every signed record"
    overall, per_rule = export_totals(trail)
    headers, values = dom.tables["totals-overall"]
    shown = dict(zip(headers, map(number, values), strict=True))
    assert shown["Records deleted"] == overall["Records deleted"] == 48
    assert shown["Records anonymised"] == overall["Records anonymised"] == 8
    assert shown["Child rows"] == overall["Child rows"]
    by_rule = dom.tables["totals-by-rule"]
    for row in by_rule[1:]:
        cells = dict(zip(by_rule[0], row, strict=True))
        expected = per_rule[cells["Rule"]]
        assert number(cells["Records deleted"]) == expected["Records deleted"], cells
        assert number(cells["Records anonymised"]) == expected["Records anonymised"], cells
    assert {row[0] for row in by_rule[1:]} == set(per_rule)
    policies = dom.tables["totals-by-policy"]
    assert sum(number(row[2]) for row in policies[1:]) == overall["Records deleted"]
    rules = {row[0]: row for row in dom.tables["rules-in-force"][1:]}
    assert rules["stale-customers"][4:6] == ["last_seen", "1y"]
    assert rules["dormant-contacts"][7] == "anonymise"


def test_a_tampered_trail_gives_a_report_that_says_so_and_exit_70(
    trail: Trail, tmp_path: Path, chromium: str
) -> None:
    original = lines(trail)
    seq = next(i for i, line in enumerate(original) if b'"done":5' in line)
    write_lines(
        trail,
        [*original[:seq], original[seq].replace(b'"done":5', b'"done":4'), *original[seq + 1 :]],
    )
    page = tmp_path / "report.html"
    result = report(trail, page)
    assert result.exit_code == ExitCode.AUDIT_FAILURE, result.output
    assert "invalid audit trail" in result.stderr
    dom = rendered(chromium, page, tmp_path)
    assert dom.banner["data-valid"] == "false"
    assert "THE AUDIT TRAIL IS INVALID" in dom.banner_text
    assert f"(seq {seq})" in dom.banner_text
    text = page.read_text()
    assert text.index('id="verification"') < text.index("<h2>"), "first on the page"


def test_the_json_report_counts_only_signed_entries_and_lists_the_rest(
    trail: Trail, tmp_path: Path
) -> None:
    with TrailWriter(trail.directory, trail.hmac_key, None, lambda: datetime.now(UTC)) as writer:
        writer.append(
            "hold.added",
            {
                "hold_id": 4, "rule": "old-orders", "kind": "key", "target_count": 1,
                "target_digest": "cd" * 32, "reason": "case LIT-9", "until": None,
                "tool": "retention test", "host": "h", "user": "u",
            },
        )  # fmt: skip
    output = tmp_path / "report.json"
    result = report(trail, output, "--format", "json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(output.read_text())
    assert document["schema_version"] == 1
    assert document["verification"]["valid"] is True
    assert document["verification"]["not_yet_signed"] == 1
    assert [entry["type"] for entry in document["not_yet_signed"]] == ["hold.added"]
    assert document["holds"]["placed"] == 1
    assert document["holds"]["changes"][0]["reason"] == "case LIT-9"
    assert document["totals"]["overall"]["deleted"] == 48
    assert sum(day["deleted"] for day in document["totals"]["by_day"]) == 48
    names = {item["definition"]["name"] for item in document["rules_in_force"]}
    assert names == {"stale-customers", "old-orders", "dormant-contacts"}
    keys = document["keys"]["keys"]
    assert [key["checkpoints"] for key in keys] == [2]
    empty = tmp_path / "empty.json"
    assert report(trail, empty, "--format", "json", "--from", "2999-01-01").exit_code == 0
    assert json.loads(empty.read_text())["totals"]["overall"]["deleted"] == 0
    bad = report(trail, empty, "--from", "yesterday")
    assert bad.exit_code == ExitCode.USAGE, bad.output


# What a row of `audit export` counts as, by its method, in the report's words.
EXPORTED_AS = {
    "sql-delete": "Records deleted",
    "sql-drop-partition": "Records deleted",
    "sql-anonymise": "Records anonymised",
    "s3-delete": "Object versions",
    "files-delete": "Files",
}


def export_counters(rows: list[dict[str, Any]]) -> Counter[str]:
    """The report's counters, added up from `audit export` rows."""
    counts: Counter[str] = Counter()
    for row in rows:
        counts[EXPORTED_AS[row["method"]]] += row["done"] - row["markers"]
        counts["Delete markers"] += row["markers"]
        counts["Child rows"] += row["children_deleted"]
        counts["Bytes"] += row["bytes"]
    return counts


def test_the_demo_report_counts_children_versions_markers_files_and_bytes_as_export_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: str, chromium: str
) -> None:
    from tests.support import copy_shipped_config

    copy_shipped_config(tmp_path, s3_server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    as_of = "2026-11-23T12:00:00+00:00"
    demo = ["--log-format", "json", "demo", "--s3-endpoint-is-mine", "--as-of", as_of]
    run = CliRunner().invoke(main, demo)
    assert run.exit_code == 0, run.output
    purge = ["--log-format", "json", "run", "--yes", "--as-of", as_of]
    assert CliRunner().invoke(main, purge).exit_code == 0
    page = tmp_path / "report.html"
    written = invoke("report", "-o", str(page))
    assert written.exit_code == 0, written.output
    exported = invoke("export")
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    rows = [row for row in rows if row["entry"] == "run" and row["signed"]]
    dom = rendered(chromium, page, tmp_path)
    headers, values = dom.tables["totals-overall"]
    shown = dict(zip(headers, map(number, values), strict=True))
    expected = export_counters(rows)
    for name in ("Child rows", "Object versions", "Delete markers", "Files", "Bytes"):
        assert expected[name] > 0, name
    assert {name: shown[name] for name in expected} == dict(expected)
    by_rule = dom.tables["totals-by-rule"]
    for cells in (dict(zip(by_rule[0], row, strict=True)) for row in by_rule[1:]):
        of_rule = export_counters([row for row in rows if row["rule"] == cells["Rule"]])
        assert {name: number(cells[name]) for name in of_rule} == dict(of_rule), cells["Rule"]
    by_policy = dom.tables["totals-by-policy"]
    for cells in (dict(zip(by_policy[0], row, strict=True)) for row in by_policy[1:]):
        of_policy = export_counters(
            [row for row in rows if row["policy"] == cells["Policy clause"]]
        )
        assert {name: number(cells[name]) for name in of_policy} == dict(of_policy)
    by_day = dom.tables["totals-by-day"]
    for name in expected:
        column = by_day[0].index(name)
        assert sum(number(row[column]) for row in by_day[1:]) == expected[name], name
    assert sum(dom.bars) == sum(value for name, value in expected.items() if name != "Bytes")
    # The command's own summary counts records, never bytes, as the run did.
    purged = sum(value for name, value in expected.items() if name not in ("Bytes", "Child rows"))
    assert (
        f"{purged:,} records purged and {expected['Child rows']:,} child rows with them"
    ) in written.stdout


def test_the_report_checks_the_anchors_given_and_a_truncated_tail_fails_it(
    trail: Trail, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors"
    anchored = invoke(
        "anchor", "--to", str(anchors), "--dir", str(trail.directory),
        "--keys", str(trail.keys_file),
    )  # fmt: skip
    assert anchored.exit_code == 0, anchored.output
    output = tmp_path / "report.json"
    result = report(trail, output, "--format", "json", "--anchor", str(anchors))
    assert result.exit_code == 0, result.output
    verification = json.loads(output.read_text())["verification"]
    assert [anchor["seq"] for anchor in verification["anchors"]] == [len(lines(trail)) - 1]
    # The tail, last checkpoint included, cut off: consistent alone, not against the anchor.
    write_lines(trail, lines(trail)[:-1])
    alone = report(trail, output, "--format", "json")
    assert alone.exit_code == 0, alone.output
    truncated = report(trail, output, "--format", "json", "--anchor", str(anchors))
    assert truncated.exit_code == ExitCode.AUDIT_FAILURE, truncated.output
    verification = json.loads(output.read_text())["verification"]
    assert verification["valid"] is False
    assert "truncated" in verification["problem"]
