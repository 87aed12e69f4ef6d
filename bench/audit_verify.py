"""Benchmark: `audit verify` on a trail covering 1,000,000 purged records.

Synthesises a trail the way audited runs write it (TrailWriter: ``run.started``, then per batch
``batch.intent`` with its leaves file (the leaf of each record's locator under a real audit
key, in the trail format written now, sorted) and ``batch.result``, then ``run.finished`` and a
checkpoint signed with a real Ed25519 key), ``--batches`` batches of ``--batch-size`` records
spread over ``--runs`` runs. It then times the in-process ``verify_trail`` in a fresh child
process, which also reports its own peak RSS; a smaller trail (a tenth) is verified the same
way first, so that the two peaks show whether memory grows with the number of records. Target:
the full trail in <= 10 s.

Usage: .venv/bin/python bench/audit_verify.py [--batches 1000] [--batch-size 1000] [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from retention.audit.entry_checks import load_verification_keys
from retention.audit.keys import Signer, add_public_key
from retention.audit.leaves import leaves_root
from retention.audit.trail import TrailWriter
from retention.audit.verify import verify_trail

TARGET_SECONDS = 10.0
STORE, DATASET = "app", "connection_logs"


def synthesise(directory: Path, batches: int, batch_size: int, runs: int) -> Path:
    """Given an empty directory, write a trail of ``batches`` committed batches of
    ``batch_size`` records over ``runs`` runs; return the public key file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = Signer(Ed25519PrivateKey.generate())
    keys_file = directory / "public-keys.json"
    add_public_key(keys_file, signer, datetime(2000, 1, 1, tzinfo=UTC))
    audit = directory / "audit"
    base = {"rule": "connection-logs", "store": STORE, "dataset": DATASET, "action": "delete"}
    record = 0
    with TrailWriter(audit, os.urandom(32), signer, lambda: datetime.now(UTC)) as writer:
        for run in range(runs):
            run_id = f"run-{run:04d}"
            writer.append("run.started", {"run_id": run_id, "plan_id": "p", "rules": ["r"]})
            for _batch in range(batches // runs):
                keys = [(record + offset,) for offset in range(batch_size)]
                record += batch_size
                leaves = writer.record_leaves(STORE, DATASET, keys)
                seq = writer.next_seq
                writer.write_leaves(seq, leaves)
                fields = {**base, "run_id": run_id}
                writer.append(
                    "batch.intent",
                    {**fields, "selected": batch_size, "leaves_root": leaves_root(leaves)},
                )
                writer.append(
                    "batch.result",
                    {
                        **fields,
                        "intent": seq,
                        "status": "committed",
                        "done": batch_size,
                        "held": 0,
                        "failed": 0,
                        "children_deleted": 0,
                    },
                )
            writer.append("run.finished", {"run_id": run_id, "exit_code": 0, "outcomes": []})
            writer.checkpoint()
    return keys_file


def measure(directory: Path, keys_file: Path) -> dict[str, float]:
    """Given a synthesised trail, verify it in this process; return seconds, records, peak RSS."""
    keys = load_verification_keys(keys_file)
    started = time.perf_counter()
    result = verify_trail(directory / "audit", keys)
    seconds = time.perf_counter() - started
    if result.problem is not None:
        raise SystemExit(f"the synthesised trail does not verify: {result.problem}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "records": result.records_purged, "peak_mib": peak_kib / 1024}


def measure_in_child(directory: Path, keys_file: Path) -> dict[str, float]:
    """Given a synthesised trail, verify it in a fresh process (a clean peak RSS)."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", str(directory), str(keys_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures: dict[str, float] = json.loads(output)
    return figures


def main() -> int:
    """Run the benchmark (or, with --measure, one measurement); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "KEYS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        print(json.dumps(measure(Path(arguments.measure[0]), Path(arguments.measure[1]))))
        return 0
    figures = []
    for batches in (max(1, arguments.batches // 10), arguments.batches):
        with tempfile.TemporaryDirectory(prefix="retention-bench-audit-") as temporary:
            directory = Path(temporary)
            started = time.perf_counter()
            keys_file = synthesise(directory, batches, arguments.batch_size, arguments.runs)
            built = time.perf_counter() - started
            figure = measure_in_child(directory, keys_file)
            figures.append(figure)
            print(
                f"{int(figure['records']):>10,} records in {batches:,} batches "
                f"(written in {built:.1f} s): verify {figure['seconds']:.2f} s, "
                f"{figure['records'] / figure['seconds']:,.0f} records/s, "
                f"peak RSS {figure['peak_mib']:.0f} MiB"
            )
    full = figures[-1]
    met = full["seconds"] <= TARGET_SECONDS
    print(
        f"target: verify {int(full['records']):,} records in <= {TARGET_SECONDS:.0f} s: "
        f"{'met' if met else 'NOT met'} ({full['seconds']:.2f} s); peak RSS "
        f"{figures[0]['peak_mib']:.0f} -> {full['peak_mib']:.0f} MiB for 10x the records"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
