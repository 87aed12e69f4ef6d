"""`retention demo`: create the demo data that config/retention.toml points at."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from retention.cli.shared import (
    Context,
    echo,
    expected_errors,
    parse_as_of,
    resolve_config_path,
)
from retention.errors import UsageError
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
@click.option(
    "--s3-endpoint-is-mine",
    "any_s3_server",
    is_flag=True,
    help="Fill the buckets on a local S3 server that this checkout's scripts/demo-s3 did not "
    "start (one you run yourself). Without it, such a server is refused: it may be another "
    "checkout's demo, whose buckets a run here would empty.",
)
@click.pass_obj
def demo(
    context: Context,
    database: Path | None,
    as_of: str | None,
    seed: int,
    scale: int,
    any_s3_server: bool,
) -> None:
    """Create the demo data that config/retention.toml points at: the SQLite database, the
    backup folder and, on a local S3 server that answers (`make demo` starts one), the buckets;
    and the hash and audit keys. A server that answers but that this checkout's
    scripts/demo-s3 did not start is refused, before anything is written (exit 2)."""
    from retention.app import create_audit_keys
    from retention.demo import create_demo_database, create_demo_objects
    from retention.runtime.secrets import write_new_key

    with expected_errors():
        config = context.config()
        moment = parse_as_of(as_of, config)
        if not any_s3_server:
            refuse_foreign_s3_servers(config, resolve_config_path(context.config_path))
        if database is None:
            database = first_sqlite_file(config)
        if database is None:
            raise UsageError(
                "the config has no SQL store with a sqlite:/// url for the demo data: "
                "give --database FILE"
            )
        counts = create_demo_database(
            f"sqlite:///{database}", as_of=moment, seed=seed, scale=scale, replace=True
        )
        key_path = config.settings.hash_key_file
        if key_path and write_new_key(key_path):
            echo(f"wrote a new hash key to {key_path} (mode 0600)")
        if config.audit and config.audit.enabled and config.audit.signing_key_file:
            for line in create_audit_keys(
                config.audit, datetime.now(UTC), rotate=False, quiet=True
            ):
                echo(line)
        total = sum(counts.values())
        echo(
            f"demo database {database}: {counted(total, 'row')} in "
            f"{counted(len(counts), 'table')}, "
            f"as of {moment:%Y-%m-%d %H:%M} UTC"
        )
        for line in create_demo_objects(
            config, as_of=moment, seed=seed, database_url=f"sqlite:///{database}"
        ):
            echo(line)


def refuse_foreign_s3_servers(config: Config, config_path: Path) -> None:
    """Raise UsageError, naming them, when the demo would fill buckets on local S3 servers that
    the config's checkout did not start with scripts/demo-s3 (issue 14: another checkout's run
    emptied this demo's buckets on a shared server)."""
    from retention.demo.servers import PID_RECORD, PORT_RECORD, checkout_of, foreign_s3_endpoints

    checkout = checkout_of(config_path)
    foreign = foreign_s3_endpoints(config, checkout)
    if not foreign:
        return
    servers = "the S3 server at" if len(foreign) == 1 else "the S3 servers at"
    raise UsageError(
        f"{servers} {', '.join(foreign)}: not started by this checkout's scripts/demo-s3 "
        f"(its record, {checkout / PID_RECORD} and {PORT_RECORD.name}, names no such server). "
        "It may be another checkout's demo, whose buckets a run here would empty: nothing was "
        "written. Stop that server (`make demo-stop` in the checkout that started it) and run "
        "`make demo`, or give this checkout a server of its own on another port "
        "(DEMO_S3_PORT=N scripts/demo-s3 start, with endpoint_url on that port); if the server "
        "is yours to fill, pass --s3-endpoint-is-mine"
    )


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
