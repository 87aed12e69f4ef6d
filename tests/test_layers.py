"""Drift tests: the architecture and the shipped files keep their promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CORE_MODULES = (
    "retention.config",
    "retention.rules",
    "retention.selection",
    "retention.store_protocol",
    "retention.planner",
    "retention.rule_checks",
    "retention.documents",
    "retention.run_report",
    "retention.run_ports",
    "retention.rule_gates",
    "retention.recorded_batch",
    "retention.partition_drops",
    "retention.executor",
    "retention.anonymise",
    "retention.render",
    "retention.holds",
)
# The edges that may talk to databases and object stores (design.md: side effects at the edges).
SQL_EDGES = {
    "retention/stores/__init__.py",
    "retention/stores/sql.py",
    "retention/stores/sql_dialect.py",
    "retention/stores/sql_held.py",
    "retention/stores/sql_keys.py",
    "retention/stores/sql_predicate.py",
    "retention/stores/sql_purge.py",
    "retention/stores/sql_probed.py",
    "retention/stores/sql_spans.py",
    "retention/stores/sql_children.py",
    "retention/stores/sql_schema.py",
    "retention/stores/sql_survey.py",
    "retention/stores/partitions.py",
    "retention/stores/partition_records.py",
    "retention/stores/partition_postgres.py",
    "retention/stores/partition_mariadb.py",
    "retention/stores/partition_catalog.py",
    "retention/stores/partition_keys.py",
    "retention/stores/partition_keys_mariadb.py",
    "retention/stores/partition_key_spelling.py",
    "retention/stores/partition_ahead.py",
    "retention/stores/partition_session.py",
    "retention/stores/partition_survey.py",
    "retention/stores/sql_columns.py",
    "retention/stores/sql_references.py",
    "retention/runtime/database_urls.py",
    "retention/state.py",
    "retention/state_holds.py",
    "retention/state_leases.py",
    "retention/state_tables.py",
    "retention/demo/schema.py",
    "retention/demo/database.py",
    "retention/demo/objects.py",
}
S3_EDGES = {
    "retention/stores/s3.py",
    "retention/stores/s3_client.py",
    "retention/audit/anchor.py",
    "retention/demo/objects.py",
}


def test_the_core_imports_neither_sqlalchemy_nor_boto3() -> None:
    code = (
        "import sys\n"
        f"for name in {CORE_MODULES!r}: __import__(name)\n"
        "edge = {'sqlalchemy', 'boto3', 'botocore'}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & edge)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_sqlalchemy_and_boto3_are_imported_only_at_their_edges() -> None:
    root = Path(__file__).resolve().parent.parent
    importing: dict[str, set[str]] = {"sqlalchemy": set(), "boto3": set()}
    pattern = re.compile(r"^\s*(?:import|from)\s+(sqlalchemy|boto3|botocore)\b", re.MULTILINE)
    for path in (root / "retention").rglob("*.py"):
        for library in pattern.findall(path.read_text()):
            name = "boto3" if library == "botocore" else library
            importing[name].add(path.relative_to(root).as_posix())

    assert importing["sqlalchemy"] <= SQL_EDGES
    assert importing["boto3"] <= S3_EDGES
