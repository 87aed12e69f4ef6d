"""The systemd notify protocol: one datagram of ``KEY=VALUE`` lines to $NOTIFY_SOCKET.

Nothing to install: a Unix datagram socket is all it takes. ``@name`` is a socket in the abstract
namespace. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


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
