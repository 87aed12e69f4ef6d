"""What the benchmarks share: progress lines, the load warning, and running `retention`
(its bytecode compiled first, as an install has it).

Imported by the scripts beside it (`python bench/x.py` puts this folder on sys.path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUSY_LOAD = 0.25  # per CPU: above this, warn that timings will be noisy
STARTED = time.monotonic()


def progress(message: str) -> None:
    """Print a progress line, stamped with the seconds since the bench started."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def warn_if_busy() -> None:
    """Print the load average, with a warning when something else keeps the CPUs busy: the
    figures (wall-clock times) are only comparable on an otherwise idle machine."""
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    progress(f"load average {load:.2f} on {cpus} CPUs")
    if load > BUSY_LOAD * cpus:
        progress("WARNING: the machine is busy; the timings below will be noisy")


def toml_string(value: object) -> str:
    """A TOML basic string holding ``str(value)`` (JSON's escaping is valid TOML)."""
    return json.dumps(str(value))


def retention_command() -> list[str]:
    """The `retention` CLI of the interpreter running the bench (the venv's), or -m retention."""
    script = Path(sys.executable).parent / "retention"
    return [str(script)] if script.exists() else [sys.executable, "-m", "retention"]


def compile_retention(python: str = sys.executable, checkout: Path | None = None) -> None:
    """Compile the bytecode of the retention package that ``python`` imports (with
    ``checkout``: that source tree, first on PYTHONPATH), beside its sources, as an install
    does: a timed run then starts as an installed one would. Without it, in an environment that
    sets PYTHONDONTWRITEBYTECODE (this workplace's does), an editable checkout compiles every
    module of the package from source again at each run (0.25 s of wall time, 0.14 s of CPU,
    of a `retention run` here at load 3)."""
    code = "import compileall, os, retention; compileall.compile_dir(os.path.dirname("
    code += "retention.__file__), quiet=1)"
    environment = dict(os.environ)
    if checkout is not None:
        environment["PYTHONPATH"] = str(checkout)
    subprocess.run([python, "-c", code], check=True, stdout=subprocess.DEVNULL, env=environment)


def json_line(line: str) -> dict[str, Any]:
    """Parse a JSON log line (journald prefix tolerated); anything else gives {}."""
    start = line.find("{")
    if start < 0:
        return {}
    try:
        parsed = json.loads(line[start:])
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def audit_keygen(config: Path) -> str | None:
    """Run `retention audit keygen` for ``config``; return None, or why it failed."""
    keygen = subprocess.run(
        [*retention_command(), "--config", str(config), "audit", "keygen"],
        capture_output=True,
        text=True,
        check=False,
    )
    if keygen.returncode == 0:
        return None
    return f"retention audit keygen exited {keygen.returncode}:\n{keygen.stderr}"
