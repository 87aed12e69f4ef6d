"""structlog set-up: JSON lines for machines, readable lines on a terminal.

With $JOURNAL_STREAM set (running under systemd), each JSON line starts with the journald
priority prefix ``<N>`` so that ``journalctl -p warning`` works. Standard-library loggers
(SQLAlchemy, botocore, ...) go through the same renderer.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal, TextIO

from retention.errors import RetentionError, message_without_values

LogFormat = Literal["auto", "json", "console"]

_JOURNAL_PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def _journal_prefix(_logger: Any, method: str, event_dict: Any) -> Any:
    priority = _JOURNAL_PRIORITIES.get(method, 6)
    return f"<{priority}>{event_dict}"


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def redacted_traceback(error: BaseException) -> str:
    """Given an exception, return its traceback as Python prints it (causes and contexts
    first), but with every exception's message passed through ``message_without_values``: a driver's
    message quotes the rows it refused, and a traceback is a log line like any other."""
    parts: list[str] = []
    seen: set[int] = set()

    def add(current: BaseException) -> None:
        seen.add(id(current))
        cause, context = current.__cause__, current.__context__
        if cause is not None and id(cause) not in seen:
            add(cause)
            parts.append(_CAUSE)
        elif context is not None and not current.__suppress_context__ and id(context) not in seen:
            add(context)
            parts.append(_CONTEXT)
        if current.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(current.__traceback__))
        kind = type(current)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        message = (
            str(current) if isinstance(current, RetentionError) else message_without_values(current)
        )
        parts.append(f"{name}: {message}\n")

    add(error)
    return "".join(parts).rstrip("\n")


def _redact_exc_info(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog's format_exc_info, with ``redacted_traceback``."""
    exc_info = event_dict.pop("exc_info", None)
    error: BaseException | None = None
    if isinstance(exc_info, BaseException):
        error = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
    elif exc_info:
        error = sys.exc_info()[1]
    if error is not None:
        event_dict["exception"] = redacted_traceback(error)
    return event_dict


def _print_redacted(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """sys.excepthook: a bug's traceback on stderr, its messages redacted."""
    if trace is not None and error.__traceback__ is None:
        error = error.with_traceback(trace)
    print(redacted_traceback(error), file=sys.stderr)


def _structlog() -> ModuleType:
    """structlog, imported on first use: its import brings asyncio's (tens of ms, a sixth of
    `config validate`), and a command that writes no log line has no use for it."""
    # structlog.dev imports rich's console and tracebacks (tens of ms) whenever rich is
    # installed; retention needs rich only for progress on a terminal (runtime/progress.py
    # imports it then). Hide it while structlog loads.
    if "rich" in sys.modules:
        import structlog
    else:
        sys.modules["rich"] = None  # type: ignore[assignment]
        try:
            import structlog
        finally:
            del sys.modules["rich"]
    return structlog


@dataclass(frozen=True)
class _Settings:
    use_console: bool
    level: int


class _DeferredFormatter(logging.Formatter):
    """The root handler's formatter while structlog is not configured yet: the first record,
    or the first ``get_logger``, configures it (``configure``); records are then formatted by
    structlog's formatter, as if it had been configured at once."""

    def __init__(self, settings: _Settings) -> None:
        super().__init__()
        self._settings = settings
        self._formatter: logging.Formatter | None = None
        self._lock = threading.Lock()

    def configure(self) -> logging.Formatter:
        if self._formatter is not None:
            return self._formatter
        with self._lock:
            if self._formatter is None:
                self._formatter = _configured(self._settings)
            return self._formatter

    def format(self, record: logging.LogRecord) -> str:
        return (self._formatter or self.configure()).format(record)


# The configuration configure_logging() deferred, until structlog's first use.
_deferred: _DeferredFormatter | None = None


def configure_logging(
    *, log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Given a format, a level and a stream (stderr by default), configure structlog and the
    standard logging module to write there. structlog is configured at once if it was imported
    already, else on the first logger or log line (``get_logger``, a standard-library logger's
    first record): the same lines, without its import for a command that logs nothing."""
    global _deferred
    output = stream or sys.stderr
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    settings = _Settings(
        use_console=log_format == "console" or (log_format == "auto" and output.isatty()),
        level=numeric_level,
    )
    handler = logging.StreamHandler(output)
    if "structlog" in sys.modules:
        _deferred = None
        handler.setFormatter(_configured(settings))
    else:
        _deferred = _DeferredFormatter(settings)
        handler.setFormatter(_deferred)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    sys.excepthook = _print_redacted
    root.setLevel(numeric_level)
    # Library chatter (SQL echo, connection pool) stays out unless asked for.
    for noisy in ("sqlalchemy", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def _configured(settings: _Settings) -> logging.Formatter:
    """Configure structlog with ``settings``; return the formatter of standard-library
    records (SQLAlchemy, botocore, ...), which renders them as structlog's lines."""
    structlog = _structlog()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_exc_info,
    ]
    renderer: list[Any]
    if settings.use_console:
        # plain: rich (installed for progress) would draw boxed tracebacks in log lines.
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    else:
        renderer = [structlog.processors.JSONRenderer(sort_keys=True)]
        if os.environ.get("JOURNAL_STREAM"):
            renderer.append(_journal_prefix)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        cache_logger_on_first_use=False,
    )
    formatter: logging.Formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    return formatter


def get_logger(**bound: Any) -> Any:
    """Given context fields, return a structlog logger carrying them."""
    if _deferred is not None:
        _deferred.configure()
    return _structlog().get_logger("retention").bind(**bound)
