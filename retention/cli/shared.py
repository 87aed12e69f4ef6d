"""The helpers every command shares: the config it reads, its errors, its options, its parsing of
instants and subjects, and the width of its text."""

from __future__ import annotations

import gc
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from retention.errors import ConfigError, RetentionError, UsageError
from retention.wording import printable

if TYPE_CHECKING:
    from retention.config import Config

DEFAULT_CONFIG_PATHS = (Path("config/retention.toml"), Path("/etc/retention/retention.toml"))


@dataclass(frozen=True)
class Context:
    config_path: Path | None

    def config(self) -> Config:
        # Imported here, as every library a command needs: `retention --help` reads no config.
        from retention.config import load_config

        return load_config(resolve_config_path(self.config_path))


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Given a message for standard output (or ``err``or), print it with what a terminal would
    act on escaped (``printable``): plans, listings and errors quote policies, holds, trail
    entries and database messages written by someone else."""
    click.echo(printable(message), err=err, nl=nl)


def freeze_start_up() -> None:
    """Keep the collector off every object alive now: what start-up imported and opened lives
    as long as the process, and full collections (tens of ms) must not land inside purge
    transactions. Called again once a command has imported and opened what it purges with
    (libraries are imported where they are used, docs/performance.md)."""
    gc.freeze()


@contextmanager
def start_up_uncollected() -> Iterator[Callable[[], None]]:
    """Run a purge's start-up with the cyclic garbage collector off; yield the function that
    ends it once the command has imported and opened what it purges with: what is alive then
    is frozen (``freeze_start_up``) and the collector turned back on, for the batches (flat
    RSS). It is back on, as it was, when the block ends before (an error). Start-up imports
    SQLAlchemy, the driver and the trail's libraries: the collections they set off (about
    40 ms of a `retention run` here, one of them a full one) free next to nothing."""
    was_enabled = gc.isenabled()
    gc.disable()

    def started() -> None:
        freeze_start_up()
        if was_enabled:
            gc.enable()

    try:
        yield started
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with the cyclic garbage collector off (as it was after), and keep the
    collector off what the body left alive. For a short command that allocates a bounded heap
    and exits: `config validate` makes a few hundred thousand long-lived objects (imports, S3's
    service model, reflected tables), and the collector's passes over them cost about a sixth
    of its time while freeing next to nothing (docs/performance.md, start-up)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Frozen, not handed back: the first collection after gc.enable() would walk all of
        # them (every allocation of the body counts towards it), and so would the one the
        # interpreter makes at exit, about 35 ms of a 0.3 s command between them.
        gc.freeze()
        if was_enabled:
            gc.enable()


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


def output_width(wide: bool) -> int | None:
    """The columns text output fits in: none with --wide; else $COLUMNS, else the terminal's
    width when stdout is one; else no limit (a pipe or a file gets the wide form)."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), 40)
    if sys.stdout.isatty():
        return max(shutil.get_terminal_size().columns, 40)
    return None


wide_option = click.option(
    "--wide",
    is_flag=True,
    help="Do not fit the text to the terminal's width: one line per row, every column.",
)


def fail(error: RetentionError) -> NoReturn:
    if isinstance(error, ConfigError):
        for issue in error.issues:
            echo(f"error: {issue}", err=True)
        echo(f"{error} (exit {int(error.exit_code)})", err=True)
    else:
        echo(f"error: {error}", err=True)
    sys.exit(int(error.exit_code))


@contextmanager
def expected_errors() -> Iterator[None]:
    try:
        yield
    except RetentionError as error:
        fail(error)


def subject_given(option: str) -> str:
    """A --subject as given: '-' reads it from standard input (out of the shell history)."""
    if option != "-":
        return option
    try:
        return sys.stdin.readline()
    except UnicodeDecodeError as error:  # a strict stdin (a UTF-8 locale) reads no such bytes
        raise UsageError(
            "--subject holds bytes that are not UTF-8: no record names such a person"
        ) from error


def confirm_plan_id(plan_id: str, doing: str, refused: str) -> None:
    """Ask for the plan id on the terminal; anything else raises UsageError (exit 2)."""
    typed = click.prompt(f"{doing}, type the plan id ({plan_id})", default="", show_default=False)
    if typed.strip() != plan_id:
        raise UsageError(f"not confirmed: {refused}")


def parse_as_of(text: str | None, config: Config) -> datetime:
    """--as-of: ISO 8601; without an offset it is read on the calendar of settings.timezone.
    Only instants from 1970 to 9998 (rules.EARLIEST_AS_OF, LATEST_AS_OF): every cutoff of
    every period then stays on the calendar."""
    from retention.rules import EARLIEST_AS_OF, LATEST_AS_OF

    if text is None:
        return datetime.now(UTC)
    moment = parse_instant(text, "--as-of", config)
    if not EARLIEST_AS_OF <= moment < LATEST_AS_OF:
        # The instant in UTC too: '1970-01-01' read in Paris is 1969-12-31 23:00 UTC.
        raise UsageError(
            f"--as-of {text!r} ({moment:%Y-%m-%d %H:%M:%S} UTC) is out of range: give an instant "
            f"from {EARLIEST_AS_OF:%Y-%m-%d %H:%M} UTC to before {LATEST_AS_OF:%Y-%m-%d %H:%M} UTC"
        )
    return moment


def refuse_future_as_of(moment: datetime, source: str) -> None:
    """A purge as of an instant still to come deletes records before their period has passed:
    refused (UsageError) unless the operator says so (``run --allow-future-as-of``).
    ``source`` names where the instant came from as the operator wrote it (``--as-of
    '2099-01-01'``); the instant is then given in UTC, as the rest of the run reports it."""
    now = datetime.now(UTC)
    if moment > now:
        raise UsageError(
            f"{source} ({moment:%Y-%m-%d %H:%M} UTC) is in the future (now is "
            f"{now:%Y-%m-%d %H:%M} UTC): records would be purged before they are due; "
            "use --dry-run to see that plan, or --allow-future-as-of to purge it anyway"
        )


def parse_instant(text: str, option: str, config: Config) -> datetime:
    """An option's ISO 8601 date or time, as an aware UTC instant; without an offset it is
    read on the calendar of settings.timezone."""
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=config.settings.timezone)
        return moment.astimezone(UTC)
    except ValueError as error:
        raise UsageError(f"{option} {text!r} is not an ISO 8601 date or time") from error
    except OverflowError as error:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise UsageError(f"{option} {text!r} is out of range") from error


def parse_until(text: str | None, config: Config, now: datetime) -> datetime | None:
    """hold add --until: an instant after ``now`` (a hold that ended before it began protects
    nothing, and most likely is a typo)."""
    if text is None:
        return None
    moment = parse_instant(text, "--until", config)
    if moment <= now:
        raise UsageError(
            f"--until {text!r} is not in the future: a hold ends after it is placed "
            f"(now is {now:%Y-%m-%d %H:%M} UTC)"
        )
    return moment


def complete_rule_names(
    context: click.Context, _parameter: click.Parameter, incomplete: str
) -> list[str]:
    """Shell completion of a rule name: the config's rules that start with what was typed.
    A config that cannot be read completes nothing (and prints nothing)."""
    given = context.find_root().params.get("config_path")
    try:
        from retention.config import load_config

        config = load_config(resolve_config_path(given))
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [rule.name for rule in config.rules if rule.name.startswith(incomplete)]


rule_option = click.option(
    "--rule",
    "rule_names",
    multiple=True,
    shell_complete=complete_rule_names,
    help="Only this rule (repeatable; default: all).",
)
as_of_option = click.option(
    "--as-of",
    help="Plan as of this instant (ISO 8601; without offset: settings.timezone). Default: now.",
)
