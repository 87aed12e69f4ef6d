"""Writing the demo tables to a database (any SQLAlchemy URL, Core only)."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    Engine,
    MetaData,
    Table,
    create_engine,
    inspect,
    make_url,
    select,
    text,
)

from retention.demo.fake import (
    Row,
    _Fake,
)
from retention.demo.rows import (
    _generate,
)
from retention.demo.schema import (
    DEMO_TABLES,
    demo_metadata,
)
from retention.errors import ExitCode, RetentionError

_CHUNK_ROWS = 1000


class DemoExistsError(RetentionError):
    """The demo tables already hold rows and the caller did not ask to replace them."""

    exit_code = ExitCode.USAGE


def create_demo_database(
    url: str, *, as_of: datetime, seed: int = 2026, scale: int = 1, replace: bool = False
) -> dict[str, int]:
    """Given a database URL and the demo's "now", create the demo tables there, fill them, and
    return the number of rows inserted per table, in DEMO_TABLES order.

    The rows depend only on ``as_of`` (an aware datetime), ``seed`` and ``scale`` (a multiplier
    of the ~16,000 rows of scale 1). Raise DemoExistsError when demo tables already hold rows,
    unless ``replace`` is true: then the demo tables (and only they) are dropped and recreated.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    if scale < 1:
        raise ValueError(f"scale must be at least 1, not {scale}")
    rows = _generate(_Fake(random.Random(seed), as_of), scale)
    _create_sqlite_directory(url)
    metadata = demo_metadata()
    engine = create_engine(url)
    try:
        if not replace and _holds_rows(engine, metadata):
            shown = make_url(url).render_as_string(hide_password=True)
            raise DemoExistsError(
                f"the demo tables in {shown} already hold rows; pass replace=True "
                "to drop and recreate them"
            )
        metadata.drop_all(engine)
        metadata.create_all(engine)
        for name in DEMO_TABLES:
            _insert(engine, metadata.tables[name], rows[name])
    finally:
        engine.dispose()
    return {name: len(rows[name]) for name in DEMO_TABLES}


def _create_sqlite_directory(url: str) -> None:
    parsed = make_url(url)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")
    if parsed.get_backend_name() == "sqlite" and not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _holds_rows(engine: Engine, metadata: MetaData) -> bool:
    present = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return any(
            conn.execute(select(text("1")).select_from(table).limit(1)).first() is not None
            for name, table in metadata.tables.items()
            if name in present
        )


def _insert(engine: Engine, table: Table, rows: list[Row]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), _CHUNK_ROWS):
            conn.execute(table.insert(), rows[start : start + _CHUNK_ROWS])
        if rows and engine.dialect.name == "postgresql":
            # Ids are given explicitly so children can refer to them; PostgreSQL's sequence does
            # not see them, and the next ordinary insert would collide with id 1.
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:table, 'id'), :last)"),
                {"table": table.name, "last": len(rows)},
            )
