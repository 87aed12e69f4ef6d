"""`retention daemon` and `status`: the service and its run ledger."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from retention.cli.shared import (
    Context,
    echo,
    expected_errors,
    freeze_start_up,
    output_width,
    resolve_config_path,
    wide_option,
)


@click.command()
@click.pass_context
def daemon(context: click.Context) -> None:
    """Run as a service: each rule on its schedule, until SIGTERM (docs/operations.md). Logs go
    to standard output."""
    from retention.daemon import serve
    from retention.runtime.logging import configure_logging

    freeze_start_up()  # the daemon's modules, imported just now
    options = context.find_root().params
    configure_logging(
        log_format=options["log_format"], level=options["log_level"], stream=sys.stdout
    )
    with expected_errors():
        path = resolve_config_path(context.obj.config_path)
    sys.exit(serve(path))


@click.command()
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@wide_option
@click.pass_obj
def status(context: Context, output: str, wide: bool) -> None:
    """Show each rule's last run, outcome, counts and next run, from the run ledger."""
    from retention.status import load_status, render_status, status_document

    with expected_errors():
        config = context.config()
        statuses, daemons = load_status(config, datetime.now(UTC))
    if output == "json":
        echo(json.dumps(status_document(statuses, daemons), indent=2))
    else:
        echo(render_status(statuses, config.daemon.timezone, daemons, output_width(wide)))
