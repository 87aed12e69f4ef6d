"""Database URLs read before an engine is made on them: a URL that cannot be used is refused
with what is wrong in it, never quoting it (it may hold a password), rather than by the
traceback of a library deeper down (``int()`` of a port, a driver refusing its options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from retention.config.model import SUPPORTED_URL, SUPPORTED_URL_FORMS
from retention.errors import message_without_values

HIGHEST_PORT = 65535


class UnusableUrl(ValueError):
    """A database URL that no engine can be made on; the message says why, quoting nothing of
    the URL."""


def parsed_url(url: str) -> URL:
    """Given a database URL, return it parsed, or raise UnusableUrl saying which part is wrong:
    its scheme (one read from url_env or url_credential, which the config's check never saw),
    or its port.

    Example: ``parsed_url("postgresql+psycopg://app:secret@db:5432/app").port`` returns
    ``5432``; with the port ``54x2`` it raises UnusableUrl("its port is not a number").
    """
    if not SUPPORTED_URL.match(url):
        raise UnusableUrl(SUPPORTED_URL_FORMS)
    try:
        parsed = make_url(url)
    except ValueError:
        # SQLAlchemy reads the port with int(): its message quotes it.
        raise UnusableUrl("its port is not a number") from None
    if parsed.port is not None and not 1 <= parsed.port <= HIGHEST_PORT:
        raise UnusableUrl(f"its port is not a number from 1 to {HIGHEST_PORT}")
    return parsed


def engine_of(make: Callable[..., Engine], url: str, **options: Any) -> Engine:
    """Given SQLAlchemy's ``create_engine`` (or a stand-in), a URL that ``parsed_url`` took and
    the engine's options, return the engine, or raise UnusableUrl when the URL's query holds a
    value its dialect or driver cannot take (``connect_timeout=soon``), the library's own words
    without the value."""
    try:
        engine = make(url, **options)
    except (ValueError, TypeError) as error:
        raise UnusableUrl(
            f"a parameter of its query cannot be used: {message_without_values(error)}"
        ) from None
    _check_driver_options(engine)
    return engine


def _check_driver_options(engine: Engine) -> None:
    """Given an engine, raise UnusableUrl when its driver would refuse the URL's query as it
    connects: PyMySQL reads some of it only then (``charset=nosuch`` an AttributeError,
    ``read_timeout=0`` a ValueError, a missing ``ssl_ca`` an OSError), a traceback from every
    command. Its connection object, made without connecting, checks them and asks no server."""
    dialect = getattr(engine, "dialect", None)
    if getattr(dialect, "driver", None) != "pymysql":
        return
    arguments, keywords = dialect.create_connect_args(engine.url)  # type: ignore[union-attr]
    try:
        dialect.loaded_dbapi.connect(*arguments, **keywords, defer_connect=True)  # type: ignore[union-attr]
    except (ValueError, TypeError, AttributeError, LookupError, OSError) as error:
        engine.dispose()
        raise UnusableUrl(
            f"a parameter of its query cannot be used: {message_without_values(error)}"
        ) from None


def postgres_options(parsed: URL, *settings: str) -> str:
    """Given a PostgreSQL URL and server settings (``-c name=value``), return the ``options``
    to connect with: the URL's own (a search_path) first, then these, so that the URL cannot
    turn them off (connect_args' options would otherwise replace the URL's). Example: for
    ``postgresql+psycopg://h/db?options=-csearch_path%3Dapp`` and ``-c lock_timeout=5s``,
    ``"-csearch_path=app -c lock_timeout=5s"``."""
    given = parsed.query.get("options", ())
    return " ".join([*((given,) if isinstance(given, str) else given), *settings])
