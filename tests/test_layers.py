"""Drift tests: the architecture and the shipped files keep their promises."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = (
    "retention.config",
    "retention.rules",
    "retention.planner",
    "retention.executor",
    "retention.anonymise",
    "retention.render",
)


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
