"""Each rule's progress on a terminal (stderr), for `run` and `erase`: done of due, rate, time
left. Nothing at all when stderr is not a terminal. While the display is live, log lines go
through it (above the bars, never inside a line); the result tables are printed after it ends.

rich is imported only here, and only on a terminal: every other command starts without it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


class TerminalProgress:
    """One bar per rule as it starts: its records done of the plan's due count."""

    def __init__(self, display: Any) -> None:
        self._display = display
        self._tasks: dict[str, Any] = {}

    def rule_started(self, rule: str, due: int) -> None:
        self._tasks[rule] = self._display.add_task(rule, total=max(due, 0))

    def rule_advanced(self, rule: str, done: int) -> None:
        task = self._tasks.get(rule)
        if task is not None:
            self._display.update(task, completed=done)

    def rule_finished(self, rule: str) -> None:
        task = self._tasks.get(rule)
        if task is not None:
            self._display.stop_task(task)


@contextmanager
def terminal_progress(stream: IO[str] | None = None) -> Iterator[TerminalProgress | None]:
    """Given the stream progress would go to (stderr by default), yield a TerminalProgress
    showing on it when it is a terminal, else None (nothing is shown)."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f}/s")

    display = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        redirect_stdout=False,
        redirect_stderr=False,
    )
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    with display:
        # Log lines through the live display: it prints them above its bars.
        through = _ThroughDisplay(display.console)
        for handler in handlers:
            handler.setStream(through)
        try:
            yield TerminalProgress(display)
        finally:
            for handler in handlers:
                handler.setStream(stream)
    stream.flush()


class _ThroughDisplay:
    """A text stream that hands whole lines to a rich console (which keeps its live display
    below them)."""

    def __init__(self, console: Any) -> None:
        self._console = console
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        lines = self._pending.split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.write("\n")
