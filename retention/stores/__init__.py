"""Stores: where records live. Each kind implements retention.planner.RecordStore."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.exc import ArgumentError

from retention.config import Config
from retention.errors import ConfigError, ConfigIssue, StoreUnavailable
from retention.planner import RecordStore
from retention.runtime.secrets import store_url
from retention.stores.sql import SqlStore, create_sql_engine


@contextmanager
def open_stores(config: Config, *, read_only: bool) -> Iterator[Callable[[str], RecordStore]]:
    """Given a config, yield a function that opens (once) and returns the store of a name; every
    store opened is closed on exit. An unreachable store raises StoreUnavailable when asked for,
    so that rules on other stores can go on."""
    opened: dict[str, SqlStore] = {}
    failed: dict[str, StoreUnavailable] = {}

    def store_for(name: str) -> RecordStore:
        if name in failed:
            raise failed[name]
        if name not in opened:
            store_config = config.stores[name]
            try:
                engine = create_sql_engine(store_url(store_config), read_only=read_only)
            except (ArgumentError, ImportError) as error:
                raise ConfigError(
                    [ConfigIssue(f"stores.{name}.url", f"cannot use this database URL: {error}")]
                ) from error
            try:
                store = SqlStore(store_config, engine)
                store.ping()
            except StoreUnavailable as error:
                failed[name] = error
                raise
            opened[name] = store
        return opened[name]

    try:
        yield store_for
    finally:
        for store in opened.values():
            store.close()
