"""The `retention` command: parse options, call one function, render. No logic here.

Expected failures (RetentionError) print one line per problem on stderr and exit with their code
(docs/exit-codes.md); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from retention.cli import audit_proofs
from retention.cli.audit import audit_group
from retention.cli.config_commands import config_group
from retention.cli.demo import demo
from retention.cli.holds import hold_group
from retention.cli.purge import erase, plan, run
from retention.cli.service import daemon, status
from retention.cli.shared import Context, echo, freeze_start_up


def show_version(context: click.Context, given: bool) -> None:
    """--version, as click's version_option prints it, but reading the version only when asked."""
    if not given or context.resilient_parsing:
        return
    from retention import __version__

    echo(f"retention, version {__version__}")
    context.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    # Not dir_okay=False: a directory is a config that cannot be read, exit 78 like any other.
    type=click.Path(path_type=Path),
    envvar="RETENTION_CONFIG",
    help="Config file (else $RETENTION_CONFIG, ./config/retention.toml, "
    "/etc/retention/retention.toml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log lines: JSON, or readable (auto: readable on a terminal). They go to stderr; "
    "`daemon` writes them to stdout.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Log lines below this level are left out.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda context, _parameter, given: show_version(context, given),
    help="Show the version and exit.",
)
@click.pass_context
def main(context: click.Context, config_path: Path | None, log_format: str, log_level: str) -> None:
    """Enforce data-retention periods: plan, purge and prove it.

    Results go to standard output, log lines to standard error (`retention daemon` writes its
    log lines to standard output, for the journal)."""
    from retention.runtime.logging import configure_logging

    configure_logging(log_format=log_format, level=log_level)  # type: ignore[arg-type]
    freeze_start_up()
    context.obj = Context(config_path)


# One module per family of commands (audit_proofs adds its commands to `audit`).
for command in (audit_group, config_group, demo, hold_group, erase, plan, run, daemon, status):
    main.add_command(command)

__all__ = ["Context", "audit_proofs", "main"]
