"""The systemd notify protocol: one datagram of ``KEY=VALUE`` lines to $NOTIFY_SOCKET.

Nothing to install: a Unix datagram socket is all it takes. ``@name`` is a socket in the abstract
namespace. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> bool:
    """Given lines such as ``READY=1`` and ``STATUS=...``, send them as one datagram to
    $NOTIFY_SOCKET; return whether they were sent (False outside systemd or on failure: a
    service must not die because its manager stopped listening)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
            # A listener that stopped reading must not stall the daemon: drop the message.
            sender.setblocking(False)
            sender.connect(address)
            sender.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Return how often to send ``WATCHDOG=1`` (half of $WATCHDOG_USEC, in seconds), or None
    when systemd expects no watchdog pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class PurgeStatus:
    """Tells systemd how far the running purge got (``systemctl status``: "purging
    connection-logs: 1,200 of 2,596 records"): at each rule's start, then after its batches, at
    most once a second and always at its last."""

    def __init__(self, every_seconds: float = 1.0) -> None:
        self.every_seconds = every_seconds
        self._due: dict[str, int] = {}
        self._sent_at = 0.0

    def rule_started(self, rule: str, due: int) -> None:
        self._due[rule] = due
        self._send(rule, 0)

    def rule_advanced(self, rule: str, done: int) -> None:
        due = self._due.get(rule, 0)
        if done >= due or time.monotonic() - self._sent_at >= self.every_seconds:
            self._send(rule, done)

    def rule_finished(self, rule: str) -> None:
        self._due.pop(rule, None)

    def _send(self, rule: str, done: int) -> None:
        self._sent_at = time.monotonic()
        notify(f"STATUS=purging {rule}: {done:,} of {self._due.get(rule, 0):,} records")
