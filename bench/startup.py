"""Start-up: how long `retention --help` and `retention config validate` of the demo config take,
against a baseline measured in the same run (`python -c pass`, `python -c "import click"`).

The goal (issue 17): both in at most 0.3 s. The demo config is config/retention.toml, copied into
a temporary folder with its S3 endpoint pointed at a moto server this bench starts (in a thread),
and filled by `retention demo`; nothing of the checkout is touched but its (ignored) __pycache__.

Each command runs --runs times, the commands taking turns so that a burst of load hits them all
alike, after one warm-up run each that also writes the .pyc files, as an installed package has
them: PYTHONDONTWRITEBYTECODE is dropped from the commands' environment (with it, every run
compiled retention's own modules from source again: 30-40 ms of CPU here, a fifth of --offline).
Reported per command: the median and the fastest wall-clock time, the median CPU time (user +
system, of the child alone), and the median wall time as a multiple of `python -c pass`.

Usage: .venv/bin/python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_common import progress, retention_command, warn_if_busy

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "retention.toml"
GOAL_SECONDS = 0.3


def timed(command: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``command`` once (its output discarded); return its wall-clock and CPU seconds."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert child.stderr is not None
    errors = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors}")
    return wall, usage.ru_utime + usage.ru_stime


def demo_config(folder: Path, endpoint: str) -> Path:
    """The shipped demo config, copied into ``folder``/config with its S3 endpoint replaced, and
    its data created by `retention demo` (SQLite database, backup folder, buckets, keys)."""
    (folder / "config").mkdir()
    config = folder / "config" / "retention.toml"
    text = re.sub(
        r'endpoint_url = "http://127\.0\.0\.1:\d+"',
        f'endpoint_url = "{endpoint}"',
        DEMO_CONFIG.read_text(),
    )
    config.write_text(text)
    database = folder / "var" / "demo.sqlite"
    command = [*retention_command(), "--config", str(config), "demo", "--database", str(database)]
    # The buckets are on the moto server this bench started: say so, or `demo` refuses them.
    command.append("--s3-endpoint-is-mine")
    subprocess.run(command, check=True, capture_output=True, cwd=folder)
    return config


def measure(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> None:
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # warm the page cache and the .pyc files
        timed(command, env)
    for _ in range(runs):
        for name, command in commands.items():
            wall, cpu = timed(command, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    baseline = statistics.median(walls["python -c pass"])
    print()
    print("| command | median wall | fastest wall | median CPU | wall / `python -c pass` |")
    print("|---|---:|---:|---:|---:|")
    for name in commands:
        median = statistics.median(walls[name])
        print(
            f"| `{name}` | {median * 1000:.0f} ms | {min(walls[name]) * 1000:.0f} ms | "
            f"{statistics.median(cpus[name]) * 1000:.0f} ms | {median / baseline:.1f}x |"
        )
    print()
    for name in (
        "retention --help",
        "retention config validate (demo)",
        "retention config validate --offline (demo)",
    ):
        median = statistics.median(walls[name])
        verdict = "met" if median <= GOAL_SECONDS else "NOT met"
        print(f"goal {GOAL_SECONDS} s for {name}: median {median:.3f} s, {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (20)")
    options = parser.parse_args()

    from moto.server import ThreadedMotoServer  # type: ignore[import-untyped]

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    warn_if_busy()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "COLUMNS": "100",
    }
    # pip writes the .pyc files when it installs: time the commands with them (see above).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with tempfile.TemporaryDirectory(prefix="retention-startup-") as folder:
            progress("creating the demo data (retention demo)")
            config = demo_config(Path(folder), f"http://{host}:{port}")
            retention = retention_command()
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                'python -c "import click"': [sys.executable, "-c", "import click"],
                "retention --help": [*retention, "--help"],
                "retention config validate (demo)": [
                    *retention,
                    "--config",
                    str(config),
                    "config",
                    "validate",
                ],
                "retention config validate --offline (demo)": [
                    *retention,
                    "--config",
                    str(config),
                    "config",
                    "validate",
                    "--offline",
                ],
            }
            progress(f"timing {len(commands)} commands, {options.runs} runs each, in turns")
            measure(commands, options.runs, env)
    finally:
        server.stop()
    warn_if_busy()


if __name__ == "__main__":
    main()
