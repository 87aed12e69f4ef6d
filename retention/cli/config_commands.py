"""`retention config`: check the configuration."""

from __future__ import annotations

import sys

import click

from retention.cli.shared import (
    Context,
    collector_paused,
    echo,
    expected_errors,
    resolve_config_path,
)
from retention.errors import ConfigError, ExitCode
from retention.wording import counted


@click.group("config")
def config_group() -> None:
    """Check the configuration, or print its schema or a sample."""


@config_group.command("validate")
@click.option(
    "--offline",
    is_flag=True,
    help="Check the file alone (keys, types, periods, conditions, cron, references): open no "
    "store and read no secret, e.g. in a CI job that reaches no database.",
)
@click.pass_obj
def config_validate(context: Context, offline: bool) -> None:
    """Load the config and check every rule against the live schema; print every error."""
    with expected_errors(), collector_paused():
        if offline:
            config = context.config()
            from retention.clock_reach import clocks_cut_by_other_rules

            for issue in clocks_cut_by_other_rules(config.rules):
                echo(f"warning: {issue}", err=True)
            echo(
                f"{config.source}: valid as a file ({counted(len(config.rules), 'rule')}, "
                f"{counted(len(config.stores), 'store')}; stores and secrets not checked)"
            )
            return
        from retention.store_checks import live_checks

        # The S3 stores' child, if any, starts before the config is read (store_checks.py).
        with live_checks(resolve_config_path(context.config_path)) as check_live:
            config = context.config()
            issues, unreachable = check_live(config)
        from retention.clock_reach import clocks_cut_by_other_rules

        for issue in clocks_cut_by_other_rules(config.rules) + issues:
            if issue.warning:
                echo(f"warning: {issue}", err=True)
        for reason in unreachable.values():
            echo(f"error: {reason}", err=True)
        errors = [issue for issue in issues if not issue.warning]
        if errors:
            raise ConfigError(errors)
        if unreachable:
            sys.exit(int(ExitCode.STORE_UNAVAILABLE))
        echo(
            f"{config.source}: valid ({counted(len(config.rules), 'rule')}, "
            f"{counted(len(config.stores), 'store')})"
        )


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file, for editors (docs/config.md, "The schema").

    Reads no config file."""
    import json

    # pydantic is imported here, by the commands that need it, not by every start.
    from retention.config.compile import json_schema

    echo(json.dumps(json_schema(), indent=2, ensure_ascii=False))


@config_group.command("example")
def config_example() -> None:
    """Print a sample config: every key, commented with what it does. Reads no config file."""
    from retention.config.example import config_example as sample

    echo(sample(), nl=False)
