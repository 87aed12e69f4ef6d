"""The `retention` command: parse options, call one function, render. No logic here.

Expected failures (RetentionError) print one line per problem on stderr and exit with their code
(docs/exit-codes.md); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click

from retention import __version__
from retention.app import check_secrets, create_audit_keys, make_plan, run_plan
from retention.config import Config, load_config
from retention.errors import ConfigError, ExitCode, RetentionError, UsageError
from retention.planner import check_against_stores, plan_document
from retention.render import render_plan, render_report
from retention.runtime.logging import configure_logging
from retention.runtime.secrets import write_new_key
from retention.stores import open_stores

DEFAULT_CONFIG_PATHS = (Path("config/retention.toml"), Path("/etc/retention/retention.toml"))
DEFAULT_DEMO_DATABASE = Path("var/demo.sqlite")


@dataclass(frozen=True)
class Context:
    config_path: Path | None

    def config(self) -> Config:
        return load_config(resolve_config_path(self.config_path))


def resolve_config_path(given: Path | None) -> Path:
    """--config, else $RETENTION_CONFIG (click fills it in), else the first default that exists."""
    if given is not None:
        return given
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    searched = ", ".join(str(path) for path in DEFAULT_CONFIG_PATHS)
    raise UsageError(
        f"no configuration file: give --config or $RETENTION_CONFIG (searched {searched})"
    )


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def fail(error: RetentionError) -> NoReturn:
    if isinstance(error, ConfigError):
        for issue in error.issues:
            click.echo(f"error: {issue}", err=True)
        click.echo(f"{error} (exit {int(error.exit_code)})", err=True)
    else:
        click.echo(f"error: {error}", err=True)
    sys.exit(int(error.exit_code))


@contextmanager
def expected_errors() -> Iterator[None]:
    try:
        yield
    except RetentionError as error:
        fail(error)


def parse_as_of(text: str | None, config: Config) -> datetime:
    """--as-of: ISO 8601; without an offset it is read on the calendar of settings.timezone."""
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise UsageError(f"--as-of {text!r} is not an ISO 8601 date or time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=config.settings.timezone)
    return moment.astimezone(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="RETENTION_CONFIG",
    help="Config file (else $RETENTION_CONFIG, ./config/retention.toml, "
    "/etc/retention/retention.toml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="Log lines on stderr: JSON, or readable (auto: readable on a terminal).",
)
@click.option("--log-level", default="info", show_default=True)
@click.version_option(__version__, prog_name="retention")
@click.pass_context
def main(context: click.Context, config_path: Path | None, log_format: str, log_level: str) -> None:
    """Enforce data-retention periods: plan, purge and prove it."""
    configure_logging(log_format=log_format, level=log_level)  # type: ignore[arg-type]
    context.obj = Context(config_path)


@main.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("validate")
@click.pass_obj
def config_validate(context: Context) -> None:
    """Load the config and check every rule against the live schema; print every error."""
    with expected_errors():
        config = context.config()
        with open_stores(config, read_only=True) as store_for:
            issues, unreachable = check_against_stores(config.rules, store_for)
        issues += check_secrets(config)
        for reason in unreachable.values():
            click.echo(f"error: {reason}", err=True)
        if issues:
            raise ConfigError(issues)
        if unreachable:
            sys.exit(int(ExitCode.STORE_UNAVAILABLE))
        click.echo(
            f"{config.source}: valid ({len(config.rules)} rules, {len(config.stores)} stores)"
        )


@main.command()
@click.option(
    "--database",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_DEMO_DATABASE,
    show_default=True,
    help="SQLite file to (re)create with the demo data set.",
)
@click.option("--as-of", help="The demo's 'now' (ISO 8601; default: now).")
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.pass_obj
def demo(context: Context, database: Path, as_of: str | None, seed: int, scale: int) -> None:
    """Create the demo SQLite database (and a hash key) that config/retention.toml points at."""
    from retention.demo import create_demo_database

    with expected_errors():
        config = context.config()
        moment = parse_as_of(as_of, config)
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
        f"demo database {database}: {total:,} rows in {len(counts)} tables, "
        f"as of {moment:%Y-%m-%d %H:%M} UTC"
    )


rule_option = click.option(
    "--rule", "rule_names", multiple=True, help="Only this rule (repeatable; default: all)."
)
as_of_option = click.option(
    "--as-of",
    help="Plan as of this instant (ISO 8601; without offset: settings.timezone). Default: now.",
)


@main.command()
@rule_option
@as_of_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def plan(context: Context, rule_names: tuple[str, ...], as_of: str | None, output: str) -> None:
    """Show what each rule would purge. Read-only: the stores are opened read-only."""
    with expected_errors():
        config = context.config()
        rules = config.rules_named(rule_names)
        moment = parse_as_of(as_of, config)
        with open_stores(config, read_only=True) as store_for:
            the_plan = make_plan(config, rules, store_for, moment)
    if output == "json":
        click.echo(json.dumps(plan_document(the_plan), indent=2, ensure_ascii=False))
    else:
        click.echo(render_plan(the_plan, config.settings.timezone.key))
    if any(rule_plan.error for rule_plan in the_plan.rules):
        all_unreachable = all(
            rule_plan.unavailable for rule_plan in the_plan.rules if rule_plan.error
        )
        sys.exit(int(ExitCode.STORE_UNAVAILABLE if all_unreachable else ExitCode.PARTIAL_FAILURE))


@main.command()
@rule_option
@as_of_option
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option("--dry-run", is_flag=True, help="Walk the same batches, write nothing.")
@click.pass_obj
def run(
    context: Context, rule_names: tuple[str, ...], as_of: str | None, yes: bool, dry_run: bool
) -> None:
    """Purge what is due now: batch by batch, each rule on its own."""
    with expected_errors():
        config = context.config()
        rules = config.rules_named(rule_names)
        moment = parse_as_of(as_of, config)
        if not (yes or dry_run) and not stdin_is_terminal():
            raise UsageError("standard input is not a terminal: pass --yes to purge (or --dry-run)")
        with open_stores(config, read_only=dry_run) as store_for:
            the_plan = make_plan(config, rules, store_for, moment)
            if not (yes or dry_run):
                click.echo(render_plan(the_plan, config.settings.timezone.key))
                if not click.confirm("\nPurge these records now?"):
                    raise UsageError("not confirmed: nothing was purged")
            report = run_plan(config, the_plan, store_for, dry_run=dry_run)
    click.echo(render_report(report))
    sys.exit(int(report.exit_code))


@main.group("audit")
def audit_group() -> None:
    """The audit trail: keys, verification, reports, proofs."""


@audit_group.command("keygen")
@click.option(
    "--rotate",
    is_flag=True,
    help="Replace the signing key: the old one is retired (its window closes now).",
)
@click.pass_obj
def audit_keygen(context: Context, rotate: bool) -> None:
    """Create the audit keys named in [audit] (signing key, HMAC key, public key file)."""
    with expected_errors():
        config = context.config()
        if config.audit is None or not config.audit.enabled:
            raise UsageError("the config has no enabled [audit] table")
        for line in create_audit_keys(config.audit, datetime.now(UTC), rotate=rotate):
            click.echo(line)
