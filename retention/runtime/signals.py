"""Stop requests from signals, for the one-off purges (`run`, `erase`): SIGINT (Ctrl-C) and
SIGTERM ask the purge to stop after its current batch, as they ask the daemon. The batch in
flight commits or rolls back, its result is recorded, the run is signed and recorded as
stopped, and the command exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from retention.errors import ExitCode

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """Whether a stop signal arrived (call it: the executor's ``stop_requested``), and which."""

    received: signal.Signals | None = None

    def __call__(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> ExitCode | None:
        """The code the command exits with after a stop: 128 + the signal, else None."""
        if self.received is None:
            return None
        return ExitCode.INTERRUPTED if self.received == signal.SIGINT else ExitCode.TERMINATED


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM only set the yielded StopRequest (a second one
    changes nothing: the batch in flight still ends cleanly); the previous handlers come back
    after it. Call it from the main thread."""
    request = StopRequest()

    def ask_to_stop(number: int, _frame: object) -> None:
        if request.received is None:
            request.received = signal.Signals(number)
            # os.write, not print: a handler may interrupt a print to stderr in progress.
            os.write(2, f"{request.received.name}: stopping after the current batch\n".encode())

    previous = {number: signal.signal(number, ask_to_stop) for number in STOP_SIGNALS}
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
