"""Stop requests from signals, for the one-off purges (`run`, `erase`): SIGINT (Ctrl-C) and
SIGTERM ask the purge to stop after its current batch, as they ask the daemon. The batch in
flight commits or rolls back, its result is recorded, the run is signed and recorded as
stopped, and the command exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).

Before the purge begins (the stores opened, the leases taken, the plan counted, the prompt for
the plan id) there is no batch to finish: a signal then unwinds the command at once
(``StoppedBeforePurge``), so that the leases are given back and the connections closed, and it
exits with the same code, having deleted nothing. Without this, SIGTERM's default action killed
the process where it stood and left its leases to expire.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from retention.errors import ExitCode

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedBeforePurge(BaseException):
    """A stop signal that arrived before the purge began: nothing was deleted. A BaseException,
    as KeyboardInterrupt is: no ``except Exception`` on the way holds it back."""

    def __init__(self, received: signal.Signals) -> None:
        super().__init__(received.name)
        self.received = received

    @property
    def exit_code(self) -> ExitCode:
        """The code the command exits with: 128 + the signal."""
        return _exit_code(self.received)


@dataclass
class StopRequest:
    """Whether a stop signal arrived (call it: the executor's ``stop_requested``), and which;
    ``armed`` once the purge has begun (``arm``)."""

    received: signal.Signals | None = None
    armed: bool = False

    def arm(self) -> None:
        """The purge begins: from now on a stop signal asks it to stop after its current batch,
        instead of unwinding the command."""
        self.armed = True

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> ExitCode | None:
        """The code the command exits with after a stop: 128 + the signal, else None."""
        if self.received is None:
            return None
        return _exit_code(self.received)


def _exit_code(received: signal.Signals) -> ExitCode:
    return ExitCode.INTERRUPTED if received == signal.SIGINT else ExitCode.TERMINATED


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM raise StoppedBeforePurge until the yielded
    StopRequest is armed, and only set it afterwards (a second signal changes nothing: the
    command already unwinds, or the batch in flight still ends cleanly); the previous handlers
    come back after the block. Call it from the main thread."""
    request = StopRequest()

    def ask_to_stop(number: int, _frame: object) -> None:
        if request.received is None:
            request.received = signal.Signals(number)
            if not request.armed:
                raise StoppedBeforePurge(request.received)
            # os.write, not print: a handler may interrupt a print to stderr in progress.
            os.write(2, f"{request.received.name}: stopping after the current batch\n".encode())

    previous = {number: signal.signal(number, ask_to_stop) for number in STOP_SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
