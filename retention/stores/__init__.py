"""Stores: where records live. Each kind implements retention.planner.RecordStore: SQL
databases (sql.py), S3-compatible buckets (s3.py) and local backup folders (files.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from retention.config import Config, FilesStoreConfig, S3StoreConfig, SqlStoreConfig
from retention.errors import ConfigError, ConfigIssue, StoreUnavailable
from retention.runtime.secrets import store_url
from retention.store_protocol import RecordStore


@contextmanager
def open_stores(config: Config, *, read_only: bool) -> Iterator[Callable[[str], RecordStore]]:
    """Given a config, yield a function that opens (once) and returns the store of a name; every
    store opened is closed on exit. An unreachable store raises StoreUnavailable when asked for,
    so that rules on other stores can go on."""
    opened: dict[str, Any] = {}
    failed: dict[str, StoreUnavailable] = {}

    def store_for(name: str) -> RecordStore:
        if name in failed:
            raise failed[name]
        if name not in opened:
            try:
                store = _open(config.stores[name], read_only, store_for)
                store.ping()
            except StoreUnavailable as error:
                failed[name] = error
                raise
            opened[name] = store
        return opened[name]  # type: ignore[no-any-return]

    try:
        yield store_for
    finally:
        for store in opened.values():
            store.close()


def _open(
    store_config: SqlStoreConfig | S3StoreConfig | FilesStoreConfig,
    read_only: bool,
    store_for: Callable[[str], RecordStore],
) -> Any:
    if isinstance(store_config, S3StoreConfig):
        from retention.stores.s3 import open_s3_store

        return open_s3_store(store_config, read_only=read_only, store_for=store_for)
    if isinstance(store_config, FilesStoreConfig):
        from retention.stores.files import open_files_store

        return open_files_store(store_config, read_only=read_only)
    # Each kind's library (SQLAlchemy, boto3) is imported when a store of that kind opens: a
    # command that reaches none of them starts without it (docs/performance.md, start-up).
    from retention.runtime.database_urls import UnusableUrl
    from retention.stores.sql import SqlStore, create_sql_engine

    try:
        engine = create_sql_engine(store_url(store_config), read_only=read_only)
    except UnusableUrl as error:
        raise ConfigError(
            [
                ConfigIssue(
                    f"stores.{store_config.name}.url", f"cannot use this database URL: {error}"
                )
            ]
        ) from error
    return SqlStore(store_config, engine)
