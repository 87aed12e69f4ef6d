"""Database URLs read before an engine is made on them: a URL that cannot be used is refused
with what is wrong in it, never quoting it (it may hold a password), rather than by the
traceback of a library deeper down (``int()`` of a port, a driver refusing its options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from retention.errors import message_without_values

HIGHEST_PORT = 65535


class UnusableUrl(ValueError):
    """A database URL that no engine can be made on; the message says why, quoting nothing of
    the URL."""


def parsed_url(url: str) -> URL:
    """Given a database URL, return it parsed, or raise UnusableUrl saying which part is wrong.

    Example: ``parsed_url("postgresql+psycopg://app:secret@db:5432/app").port`` returns
    ``5432``; with the port ``54x2`` it raises UnusableUrl("its port is not a number").
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise UnusableUrl(
            "it is not a database URL (dialect+driver://user:password@host:port/database)"
        ) from None
    except ValueError:
        # SQLAlchemy reads the port with int(): its message quotes it.
        raise UnusableUrl("its port is not a number") from None
    if parsed.port is not None and not 1 <= parsed.port <= HIGHEST_PORT:
        raise UnusableUrl(f"its port is not a number from 1 to {HIGHEST_PORT}")
    return parsed


def engine_of(make: Callable[..., Engine], url: str, **options: Any) -> Engine:
    """Given SQLAlchemy's ``create_engine`` (or a stand-in), a URL and the engine's options,
    return the engine, or raise UnusableUrl when the URL names a dialect or driver that is not
    installed (a URL from a variable or a credential, whose scheme the config's check never
    saw), or its query holds a value its dialect or driver cannot take
    (``connect_timeout=soon``), the library's own words without the value."""
    try:
        return make(url, **options)
    except (ImportError, sa_exc.ArgumentError):
        raise UnusableUrl(
            "use sqlite:///PATH, postgresql+psycopg://... or mysql+pymysql://... (the drivers "
            "retention ships with)"
        ) from None
    except (ValueError, TypeError) as error:
        raise UnusableUrl(
            f"a parameter of its query cannot be used: {message_without_values(error)}"
        ) from None
