"""Who holds a lease: a name for this process as a holder (its machine, process id, a random tag
and its start time), and, given a holder's name, whether its process still exists here.

The name is ``host/boot:pid:tag:start``, e.g. ``db1/3f2a9c1e:4242:a1b2c3:s8812345``: the start
is the process's start time in clock ticks since boot (``/proc/PID/stat``, field 22), so that a
pid the kernel gave to another process since is told from the holder. Names written before the
start was recorded (``host/boot:pid:tag``) are still read; their pid can only be found to exist.
"""

from __future__ import annotations

import os
import secrets
import socket
from enum import StrEnum
from pathlib import Path


class HolderProcess(StrEnum):
    """What this machine can tell about a lease holder's process."""

    # The holder's process is here: its pid exists and started when the holder's did.
    ALIVE = "alive"
    # Its pid exists here, but the holder recorded no start time (or /proc hides it): it may be
    # the holder, or another process that was given its pid.
    PID_EXISTS = "pid_exists"
    # A process of this machine, since its last boot, whose pid no longer exists.
    GONE = "gone"
    # Its pid exists here but started at another time: another process has the pid now.
    REUSED = "reused"
    # Another machine's (or one that cannot be told from this one): not checked from here.
    ELSEWHERE = "elsewhere"


def lease_holder_name() -> str:
    """Return a name for this process as a lease holder: its machine (host name and boot), its
    process id, a random tag and, when /proc tells it, its start time, e.g.
    ``db1/3f2a9c1e:4242:a1b2c3:s8812345``."""
    start = process_start(os.getpid())
    return f"{_machine()}:{os.getpid()}:{secrets.token_hex(3)}" + (f":s{start}" if start else "")


def holder_pid(holder: str) -> int | None:
    """Given a lease holder's name, return its process id (None when it names none).

    Example: ``holder_pid("db1/3f2a9c1e:4242:a1b2c3:s8812345")`` is 4242."""
    pid = holder.split(":")[1] if holder.count(":") >= 1 else ""
    return int(pid) if pid.isdigit() else None


def holder_process(holder: str) -> HolderProcess:
    """Given a lease holder's name, return what this machine can tell about its process: only a
    holder of this machine, since its last boot, is looked for (by pid, then start time)."""
    machine, *rest = holder.split(":")
    pid = holder_pid(holder)
    if machine != _machine() or machine.endswith(f"/{UNKNOWN_MACHINE}") or not pid:
        return HolderProcess.ELSEWHERE  # (pid 0 would ask about this process group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return HolderProcess.GONE
    except PermissionError:
        pass  # another user's process: it exists
    except (OverflowError, OSError):
        return HolderProcess.ELSEWHERE  # no pid this system can have: not one of ours
    recorded = next((field[1:] for field in rest[2:] if field.startswith("s")), None)
    now = process_start(pid)
    if recorded is None or now is None:
        return HolderProcess.PID_EXISTS
    return HolderProcess.ALIVE if now == recorded else HolderProcess.REUSED


def gone_from_this_machine(holder: str) -> bool:
    """Given a lease holder, return whether it is a process of this machine, since its last
    boot, that no longer exists (its pid gone, or given to a process started later)."""
    return holder_process(holder) in (HolderProcess.GONE, HolderProcess.REUSED)


def process_start(pid: int) -> str | None:
    """Given a process id, return when the process started, in clock ticks since boot (None
    when /proc does not tell: no such process, another system, or hidden)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = stat.rpartition(")")[2].split()
    start = fields[19] if len(fields) > 19 else ""
    return start if start.isdigit() else None


# The boot id tells this machine, this boot; where it is hidden (systemd's ProcSubset=pid, which
# deploy/systemd's unit sets), the machine id tells the machine: a holder's process that does not
# exist here is gone whichever boot it ran in, and one that exists may be a reused pid (the lease
# then expires, unless the start times differ). Hosts sharing a host name would otherwise both
# read "unknown" and each take the other's leases at once. Without either, no holder is known to
# be of this machine.
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
MACHINE_ID_FILE = "/etc/machine-id"
UNKNOWN_MACHINE = "unknown"


def _machine() -> str:
    for file, mark in ((BOOT_ID_FILE, ""), (MACHINE_ID_FILE, "m")):
        try:
            identity = Path(file).read_text().strip()[:8]
        except OSError:
            continue
        if identity:
            return f"{socket.gethostname()}/{mark}{identity}"
    return f"{socket.gethostname()}/{UNKNOWN_MACHINE}"
