"""`retention demo`: create the demo data that config/retention.toml points at."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from retention.cli.shared import (
    Context,
    expected_errors,
    parse_as_of,
)
from retention.wording import counted

if TYPE_CHECKING:
    from retention.config import Config


@click.command()
@click.option(
    "--database",
    type=click.Path(path_type=Path, dir_okay=False),
    help="SQLite file to (re)create with the demo data set "
    "[default: the config's first SQLite store, e.g. var/demo.sqlite beside config/].",
)
@click.option("--as-of", help="The demo's 'now' (ISO 8601; default: now).")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.pass_obj
def demo(context: Context, database: Path | None, as_of: str | None, seed: int, scale: int) -> None:
    """Create the demo data that config/retention.toml points at: the SQLite database, the
    backup folder and, on a local S3 server that answers (`make demo` starts one), the buckets;
    and the hash and audit keys."""
    from retention.app import create_audit_keys
    from retention.demo import create_demo_database, create_demo_objects
    from retention.runtime.secrets import write_new_key

    with expected_errors():
        config = context.config()
        moment = parse_as_of(as_of, config)
        if database is None:
            database = first_sqlite_file(config)
        if database is None:
            raise click.UsageError(
                "the config has no SQL store with a sqlite:/// url for the demo data: "
                "give --database FILE"
            )
        counts = create_demo_database(
            f"sqlite:///{database}", as_of=moment, seed=seed, scale=scale, replace=True
        )
        key_path = config.settings.hash_key_file
        if key_path and write_new_key(key_path):
            click.echo(f"wrote a new hash key to {key_path} (mode 0600)")
        if config.audit and config.audit.enabled and config.audit.signing_key_file:
            for line in create_audit_keys(
                config.audit, datetime.now(UTC), rotate=False, quiet=True
            ):
                click.echo(line)
        total = sum(counts.values())
        click.echo(
            f"demo database {database}: {counted(total, 'row')} in "
            f"{counted(len(counts), 'table')}, "
            f"as of {moment:%Y-%m-%d %H:%M} UTC"
        )
        for line in create_demo_objects(
            config, as_of=moment, seed=seed, database_url=f"sqlite:///{database}"
        ):
            click.echo(line)


def first_sqlite_file(config: Config) -> Path | None:
    """Given the config, return the file of its first SQL store whose ``url`` is SQLite (already
    resolved against the config's folder), or None: where a plain `retention demo` puts its data,
    whatever the directory it starts in. Example: the shipped config gives
    ``Path("/path/to/checkout/var/demo.sqlite")``."""
    from retention.config import SqlStoreConfig

    for store in config.stores.values():
        if not isinstance(store, SqlStoreConfig) or store.url is None:
            continue
        url = store.url
        if url.startswith("sqlite:///"):
            file_part = url[len("sqlite:///") :].split("?", 1)[0]
            if file_part and file_part != ":memory:":
                return Path(file_part)
    return None
