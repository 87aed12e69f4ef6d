"""The `retention` command: parse options, call one function, render. No logic here.

Expected failures (RetentionError) print one line per problem on stderr and exit with their code
(docs/exit-codes.md); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click

from retention import __version__
from retention.app import (
    check_secrets,
    create_audit_keys,
    make_plan,
    run_ledger,
    run_plan,
    write_metrics_textfile,
)
from retention.app.erasure import erasure_request, erasure_rules, erasure_subject
from retention.app.holds import lift_hold, place_hold
from retention.app.saved_plans import check_saved_plan, load_saved_plan, save_plan
from retention.audit.recorder import identity
from retention.config import Config, load_config
from retention.documents import hold_state, holds_document, report_document
from retention.errors import ConfigError, ExitCode, RetentionError, UsageError
from retention.executor import RunReport
from retention.layout import wrap
from retention.planner import Plan, check_against_stores, plan_document
from retention.render import render_erasure_scope, render_plan, render_report
from retention.rules import EARLIEST_AS_OF, LATEST_AS_OF
from retention.runtime.checkins import Checkins
from retention.runtime.logging import configure_logging, get_logger
from retention.runtime.progress import terminal_progress
from retention.runtime.secrets import state_url, write_new_key
from retention.runtime.signals import stop_on_signals
from retention.state_holds import load_holds
from retention.stores import open_stores
from retention.wording import counted

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


def subject_given(option: str) -> str:
    """A --subject as given: '-' reads it from standard input (out of the shell history)."""
    return sys.stdin.readline() if option == "-" else option


def confirm_plan_id(plan_id: str, doing: str, refused: str) -> None:
    """Ask for the plan id on the terminal; anything else raises UsageError (exit 2)."""
    typed = click.prompt(f"{doing}, type the plan id ({plan_id})", default="", show_default=False)
    if typed.strip() != plan_id:
        raise UsageError(f"not confirmed: {refused}")


def parse_as_of(text: str | None, config: Config) -> datetime:
    """--as-of: ISO 8601; without an offset it is read on the calendar of settings.timezone.
    Only instants from 1970 to 9998 (rules.EARLIEST_AS_OF, LATEST_AS_OF): every cutoff of
    every period then stays on the calendar."""
    if text is None:
        return datetime.now(UTC)
    moment = parse_instant(text, "--as-of", config)
    if not EARLIEST_AS_OF <= moment < LATEST_AS_OF:
        raise UsageError(
            f"--as-of {text!r} is out of range: give an instant from "
            f"{EARLIEST_AS_OF:%Y-%m-%d} to before {LATEST_AS_OF:%Y-%m-%d}"
        )
    return moment


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
@click.version_option(__version__, prog_name="retention")
@click.pass_context
def main(context: click.Context, config_path: Path | None, log_format: str, log_level: str) -> None:
    """Enforce data-retention periods: plan, purge and prove it.

    Results go to standard output, log lines to standard error (`retention daemon` writes its
    log lines to standard output, for the journal)."""
    configure_logging(log_format=log_format, level=log_level)  # type: ignore[arg-type]
    # Everything imported so far lives as long as the process: keep the collector off it, so
    # that full collections (tens of ms) do not land inside purge transactions.
    gc.freeze()
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
            f"{config.source}: valid ({counted(len(config.rules), 'rule')}, "
            f"{counted(len(config.stores), 'store')})"
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
    """Create the demo data that config/retention.toml points at: the SQLite database, the
    backup folder and, on a local S3 server that answers (`make demo` starts one), the buckets;
    and the hash and audit keys."""
    from retention.demo import create_demo_database, create_demo_objects

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
            f"demo database {database}: {counted(total, 'row')} in "
            f"{counted(len(counts), 'table')}, "
            f"as of {moment:%Y-%m-%d %H:%M} UTC"
        )
        for line in create_demo_objects(
            config, as_of=moment, seed=seed, database_url=f"sqlite:///{database}"
        ):
            click.echo(line)


def complete_rule_names(
    context: click.Context, _parameter: click.Parameter, incomplete: str
) -> list[str]:
    """Shell completion of a rule name: the config's rules that start with what was typed.
    A config that cannot be read completes nothing (and prints nothing)."""
    given = context.find_root().params.get("config_path")
    try:
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


@main.command()
@rule_option
@as_of_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--save",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the plan here, for `run --plan-file`.",
)
@wide_option
@click.option(
    "--show-keys",
    is_flag=True,
    help="Show sample keys in clear (object keys and row keys can hold personal data; by "
    "default they are keyed hashes).",
)
@click.pass_obj
def plan(
    context: Context,
    rule_names: tuple[str, ...],
    as_of: str | None,
    output: str,
    save: Path | None,
    wide: bool,
    show_keys: bool,
) -> None:
    """Show what each rule would purge. Read-only: the stores are opened read-only."""
    with expected_errors():
        config = context.config()
        rules = config.rules_named(rule_names)
        moment = parse_as_of(as_of, config)
        with open_stores(config, read_only=True) as store_for:
            the_plan = make_plan(config, rules, store_for, moment, show_keys=show_keys)
        if save is not None:
            save_plan(the_plan, save, config)
    if output == "json":
        click.echo(json.dumps(plan_document(the_plan), indent=2, ensure_ascii=False))
    else:
        click.echo(render_plan(the_plan, config.settings.timezone.key, output_width(wide)))
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
@click.option(
    "--plan-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Purge exactly this saved plan (`plan --save`): its rules, its cutoffs.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="With --plan-file: how far (in percent) a rule's due count may have moved since.",
)
@click.option(
    "--allow-over-limit",
    "over_limit",
    multiple=True,
    metavar="RULE",
    shell_complete=complete_rule_names,
    help="Lift this rule's max_delete / max_fraction brake for this run (repeatable).",
)
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document on stdout (docs/json.md); needs --yes or --dry-run.",
)
@wide_option
@click.option(
    "--metrics-textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the run's metrics here (node-exporter textfile collector, *.prom).",
)
@click.pass_obj
def run(
    context: Context,
    rule_names: tuple[str, ...],
    as_of: str | None,
    yes: bool,
    dry_run: bool,
    plan_file: Path | None,
    tolerance: float,
    over_limit: tuple[str, ...],
    output: str,
    wide: bool,
    metrics_textfile: Path | None,
) -> None:
    """Purge what is due now: batch by batch, each rule on its own."""
    with expected_errors():
        if output == "json" and not (yes or dry_run):
            raise UsageError("--output json prints no plan to confirm: pass --yes (or --dry-run)")
        config = context.config()
        saved = load_saved_plan(plan_file, config) if plan_file else None
        if saved is not None and (rule_names or as_of):
            raise UsageError("--plan-file fixes the rules and the instant: drop --rule/--as-of")
        rules = config.rules_named(saved.rules if saved else rule_names)
        moment = saved.as_of if saved else parse_as_of(as_of, config)
        config.rules_named(over_limit)
        if not (yes or dry_run) and not stdin_is_terminal():
            raise UsageError("standard input is not a terminal: pass --yes to purge (or --dry-run)")
        checkins = Checkins(config.checkins, get_logger(), enabled=not dry_run)
        try:
            with (
                run_ledger(config, rules, dry_run=dry_run) as state,
                open_stores(config, read_only=dry_run) as store_for,
            ):
                the_plan = make_plan(config, rules, store_for, moment)
                if saved is not None:
                    check_saved_plan(saved, the_plan, tolerance)
                if not (yes or dry_run):
                    zone = config.settings.timezone.key
                    click.echo(render_plan(the_plan, zone, output_width(wide)))
                    confirm_plan_id(the_plan.plan_id, "\nTo purge", "nothing was purged")
                checkins.ping("start")
                with terminal_progress() as progress, stop_on_signals() as stop:
                    report = run_plan(
                        config,
                        the_plan,
                        store_for,
                        dry_run=dry_run,
                        stop_requested=stop,
                        allow_over_limit=frozenset(over_limit),
                        state=state,
                        progress=progress,
                    )
                checkins.finished(report.exit_code == ExitCode.OK and not stop.exit_code)
                if metrics_textfile is not None:
                    write_metrics_textfile(
                        config, report, state, metrics_textfile, datetime.now(UTC)
                    )
        except BaseException:
            checkins.finished(False)
            raise
        finally:
            checkins.wait()
    echo_report(report, the_plan, output, wide)
    sys.exit(int(stop.exit_code or report.exit_code))


def echo_report(report: RunReport, the_plan: Plan, output: str, wide: bool) -> None:
    if output == "json":
        document = report_document(report, plan_document(the_plan))
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo(render_report(report, output_width(wide)))


@main.command()
@click.option(
    "--subject",
    required=True,
    help="The person, as the rules' erase_by columns name them (e.g. an e-mail address); "
    "'-' reads it from standard input, out of the shell history and the process list.",
)
@click.option(
    "--request",
    "reference",
    required=True,
    help="Your reference for the request (a ticket number; no personal data): the audit trail "
    "keeps it.",
)
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal)."
)
@click.option("--dry-run", is_flag=True, help="Show the plan and walk its batches, write nothing.")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document on stdout (docs/json.md); needs --yes or --dry-run.",
)
@click.option(
    "--allow-over-limit",
    "over_limit",
    multiple=True,
    metavar="RULE",
    shell_complete=complete_rule_names,
    help="Lift this rule's max_delete / max_fraction brake for this erasure (repeatable).",
)
@wide_option
@click.pass_obj
def erase(
    context: Context,
    subject: str,
    reference: str,
    yes: bool,
    dry_run: bool,
    output: str,
    over_limit: tuple[str, ...],
    wide: bool,
) -> None:
    """Erase everything about one person, now, in every rule with erase_by (audited)."""
    with expected_errors():
        if output == "json" and not (yes or dry_run):
            raise UsageError("--output json prints no plan to confirm: pass --yes (or --dry-run)")
        config = context.config()
        request = erasure_request(subject_given(subject), reference)
        rules, left_out = erasure_rules(config)
        config.rules_named(over_limit)
        if not (yes or dry_run) and not stdin_is_terminal():
            raise UsageError("standard input is not a terminal: pass --yes to erase (or --dry-run)")
        with (
            run_ledger(config, rules, dry_run=dry_run),
            open_stores(config, read_only=dry_run) as store_for,
        ):
            the_plan = make_plan(config, rules, store_for, datetime.now(UTC), erasure=request)
            if output == "text":
                width = output_width(wide)
                click.echo(render_plan(the_plan, config.settings.timezone.key, width))
                click.echo("\n" + render_erasure_scope(rules, left_out, width) + "\n")
            if not (yes or dry_run):
                confirm_plan_id(the_plan.plan_id, "To erase", "nothing was erased")
            # No run ledger: an erasure is not a rule's scheduled run (its last success).
            with terminal_progress() as progress, stop_on_signals() as stop:
                report = run_plan(
                    config,
                    the_plan,
                    store_for,
                    dry_run=dry_run,
                    stop_requested=stop,
                    allow_over_limit=frozenset(over_limit),
                    progress=progress,
                )
    echo_report(report, the_plan, output, wide)
    sys.exit(int(stop.exit_code or report.exit_code))


@main.command()
@click.pass_context
def daemon(context: click.Context) -> None:
    """Run as a service: each rule on its schedule, until SIGTERM (docs/operations.md). Logs go
    to standard output."""
    from retention.daemon import serve

    options = context.find_root().params
    configure_logging(
        log_format=options["log_format"], level=options["log_level"], stream=sys.stdout
    )
    with expected_errors():
        path = resolve_config_path(context.obj.config_path)
    sys.exit(serve(path))


@main.command()
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@wide_option
@click.pass_obj
def status(context: Context, output: str, wide: bool) -> None:
    """Show each rule's last run, outcome, counts and next run, from the run ledger."""
    from retention.scheduler import load_status, render_status, status_document

    with expected_errors():
        config = context.config()
        statuses, daemons = load_status(config, datetime.now(UTC))
    if output == "json":
        click.echo(json.dumps(status_document(statuses, daemons), indent=2))
    else:
        click.echo(render_status(statuses, config.daemon.timezone, daemons, output_width(wide)))


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


audit_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="The audit directory (default: audit.directory of the config).",
)
audit_keys_option = click.option(
    "--keys",
    "keys_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The public key file (default: audit.public_keys_file of the config).",
)
endpoint_option = click.option(
    "--endpoint-url", help="S3 endpoint for s3:// anchors (default: AWS; credentials: boto3's)."
)


@audit_group.command("verify")
@audit_dir_option
@audit_keys_option
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    help="An anchored checkpoint: a file, a directory of them, or s3://bucket/prefix[/object] "
    "(repeatable). Detects a truncated tail or a rewritten history.",
)
@endpoint_option
@click.pass_obj
def audit_verify(
    context: Context,
    directory: Path | None,
    keys_file: Path | None,
    anchors: tuple[str, ...],
    endpoint_url: str | None,
) -> None:
    """Check every entry of the trail: canonical bytes, seq, hash links, leaves files and their
    Merkle roots, checkpoints (size, root, Ed25519 signature, key window); and, with --anchor,
    that the trail still holds the anchored checkpoints. Needs no config with --dir and --keys.

    \b
    Exit codes: 0 valid (a summary is printed); 70 invalid: the first bad entry is named
    (segment file, line, seq) with the reason, or an anchor is not a validly signed
    checkpoint; 2 usage (no trail there, no such anchor); 69 S3 unreachable;
    78 unreadable public key file.
    """
    from retention.audit.anchor import load_anchors
    from retention.audit.verify import (
        audit_locations,
        load_verification_keys,
        render_verification,
        verify_trail,
    )
    from retention.errors import AuditFailure

    with expected_errors():
        directory, keys_file = audit_locations(directory, keys_file, context.config)
        keys = load_verification_keys(keys_file)
        loaded = [found for anchor in anchors for found in load_anchors(anchor, endpoint_url)]
        result = verify_trail(directory, keys, loaded)
        if result.problem is not None:
            raise AuditFailure(f"invalid audit trail: {result.problem}")
    click.echo(render_verification(result))


@audit_group.command("anchor")
@click.option(
    "--to",
    "destination",
    required=True,
    help="A directory (created if missing; one file per checkpoint, never replaced) or "
    "s3://bucket/prefix.",
)
@endpoint_option
@click.option(
    "--retain-days",
    type=click.IntRange(min=1),
    help="S3 only: keep the object under Object Lock COMPLIANCE retention for N days.",
)
@audit_dir_option
@audit_keys_option
@click.pass_obj
def audit_anchor(
    context: Context,
    destination: str,
    endpoint_url: str | None,
    retain_days: int | None,
    directory: Path | None,
    keys_file: Path | None,
) -> None:
    """Verify the trail, then export its latest signed checkpoint (its exact line) out of the
    host's reach, so that `audit verify --anchor` can later detect truncation or rewriting.

    \b
    Exit codes: 0 anchored; 70 the trail is invalid, has no checkpoint yet, or the anchor
    cannot be written (S3 refused, or --retain-days on a bucket without Object Lock);
    69 S3 unreachable or no credentials; 2 usage; 78 unreadable public key file.
    """
    from retention.audit.anchor import export_anchor
    from retention.audit.verify import audit_locations, load_verification_keys, verify_trail
    from retention.errors import AuditFailure

    with expected_errors():
        directory, keys_file = audit_locations(directory, keys_file, context.config)
        result = verify_trail(directory, load_verification_keys(keys_file))
        if result.problem is not None:
            raise AuditFailure(f"not anchoring an invalid audit trail: {result.problem}")
        checkpoint = result.last_checkpoint
        if checkpoint is None:
            raise AuditFailure("the trail has no signed checkpoint yet: nothing to anchor")
        receipt = export_anchor(
            checkpoint,
            destination,
            endpoint_url=endpoint_url,
            retain_days=retain_days,
            now=datetime.now(UTC),
        )
    _note_anchor(directory, checkpoint.content["seq"])
    content = checkpoint.content
    retained = (
        f", retained (COMPLIANCE) until {receipt.retained_until:%Y-%m-%dT%H:%M:%SZ}"
        if receipt.retained_until
        else ""
    )
    click.echo(
        f"anchored checkpoint seq {content['seq']} (size {content['size']}, key "
        f"{content['key_id']}) to {receipt.location}{retained}"
    )
    if receipt.warning:
        click.echo(f"warning: {receipt.warning}", err=True)


def _audit_report(
    context: Context,
    directory: Path | None,
    since: str | None,
    until: str | None,
    rules: tuple[str, ...],
    output: str,
    width: int | None = None,
) -> None:
    """show and export: the same rows, in the chosen format."""
    from retention.audit.report import parse_bound, render, rule_runs
    from retention.audit.verify import audit_directory

    with expected_errors():
        rows = rule_runs(
            audit_directory(directory, context.config),
            since=parse_bound(since, "--since"),
            until=parse_bound(until, "--until"),
            rules=rules,
        )
    click.echo(render(rows, output, width), nl=False)


since_option = click.option("--since", help="Only runs started at or after (ISO 8601; UTC).")
until_option = click.option("--until", help="Only runs started before (ISO 8601; UTC).")
report_rule_option = click.option(
    "--rule",
    "rules",
    multiple=True,
    shell_complete=complete_rule_names,
    help="Only this rule (repeatable; default: all).",
)
report_format_option = click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json", "jsonl", "csv"]),
    help="Default: text for show, jsonl for export. json: one document (docs/json.md).",
)


def _note_anchor(directory: Path, seq: int) -> None:
    """Leave the anchor's time where the metrics read it; an anchor that went out still counts
    when the note cannot be written."""
    from retention.audit.freshness import record_anchor

    try:
        record_anchor(directory, seq, datetime.now(UTC))
    except OSError as error:
        click.echo(f"warning: cannot note the anchor's time in {directory}: {error}", err=True)


@audit_group.command("show")
@audit_dir_option
@since_option
@until_option
@report_rule_option
@report_format_option
@wide_option
@click.pass_obj
def audit_show(
    context: Context,
    directory: Path | None,
    since: str | None,
    until: str | None,
    rules: tuple[str, ...],
    output: str | None,
    wide: bool,
) -> None:
    """What was purged, per run and rule: when, under which policy and category, from which
    store and dataset, how (action, cutoff, batches), how many (selected, done, held, failed,
    skipped), and who ran it. Times are UTC. Needs no config with --dir.

    \b
    Exit codes: 0; 2 usage (a bad date, no trail there).
    """
    _audit_report(context, directory, since, until, rules, output or "text", output_width(wide))


@audit_group.command("export")
@audit_dir_option
@since_option
@until_option
@report_rule_option
@report_format_option
@click.pass_obj
def audit_export(
    context: Context,
    directory: Path | None,
    since: str | None,
    until: str | None,
    rules: tuple[str, ...],
    output: str | None,
) -> None:
    """What `audit show` shows, for machines: JSON Lines (default) or CSV, one row per run and
    rule, every counter and time (ISO 8601 UTC) in its own field.

    \b
    Exit codes: 0; 2 usage (a bad date, no trail there).
    """
    _audit_report(context, directory, since, until, rules, output or "jsonl")


@audit_group.command("report")
@click.option("--from", "start", help="Start of the period (ISO 8601 date or time; UTC).")
@click.option("--to", "end", help="End of the period (a date: that whole day; UTC).")
@click.option(
    "--format", "output", type=click.Choice(["html", "json"]), default="html", show_default=True
)
@click.option(
    "-o",
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the report.",
)
@audit_dir_option
@audit_keys_option
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    help="An anchored checkpoint to verify against (as for `audit verify`; repeatable).",
)
@endpoint_option
@click.pass_obj
def audit_report(
    context: Context,
    start: str | None,
    end: str | None,
    output: str,
    output_file: Path,
    directory: Path | None,
    keys_file: Path | None,
    anchors: tuple[str, ...],
    endpoint_url: str | None,
) -> None:
    """Write the auditor's report for a period: the verification result (computed now), the
    rules in force as the trail recorded them, totals per policy clause, rule and day,
    exceptions, legal holds, erasure requests and signing keys. Only signed entries count.
    HTML is one self-contained, printable file; JSON has the same content.

    \b
    Exit codes: 0 written, the trail verifies; 70 written, but the trail is invalid (the
    report says so first); 2 usage; 69 S3 anchor unreachable; 78 unreadable public key file.
    """
    from retention.audit.anchor import load_anchors
    from retention.audit.auditor_report import parse_period_bound, report_document
    from retention.audit.report_html import render_report_html
    from retention.audit.verify import audit_locations, load_verification_keys, verify_trail
    from retention.errors import AuditFailure

    with expected_errors():
        directory, keys_file = audit_locations(directory, keys_file, context.config)
        keys = load_verification_keys(keys_file)
        loaded = [found for anchor in anchors for found in load_anchors(anchor, endpoint_url)]
        verification = verify_trail(directory, keys, loaded)
        document = report_document(
            directory,
            verification,
            keys,
            start=parse_period_bound(start, "--from", end=False),
            end=parse_period_bound(end, "--to", end=True),
            now=datetime.now(UTC),
        )
        if output == "json":
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        else:
            text = render_report_html(document)
        try:
            output_file.write_text(text, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write {str(output_file)!r}: {error.strerror}") from error
        overall = document["totals"]["overall"]
        click.echo(
            f"report written to {output_file}: {sum(overall.values()):,} records in signed "
            f"entries, {len(document['not_yet_signed']):,} entries not yet signed"
        )
        if verification.problem is not None:
            raise AuditFailure(f"invalid audit trail (the report says so): {verification.problem}")


@audit_group.command("prove")
@click.option("--store", required=True, help="The store name (as in the config).")
@click.option("--table", required=True, help="The table (dataset).")
@click.option(
    "--key",
    "key",
    multiple=True,
    required=True,
    help="The record's key value; repeat it for each column of a composite key, in order.",
)
@click.option(
    "--bundle",
    "bundle_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a proof bundle there, which `audit check-proof` checks with the public "
    "key file alone.",
)
@audit_dir_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def audit_prove(
    context: Context,
    store: str,
    table: str,
    key: tuple[str, ...],
    bundle_file: Path | None,
    directory: Path | None,
    output: str,
) -> None:
    """Show in which batch, run and rule (and when, and how) a record was purged, with the
    inclusion proof of its leaf (HMAC of its locator under the audit key, from the config), or
    that it is not in the trail.

    \b
    Exit codes: 0 proven (the proof verifies); 3 not in the trail (never purged, or only in a
    rolled-back batch); 70 found, but the proof does not verify (the trail was altered: run
    `audit verify`), or --bundle and no signed checkpoint covers it yet; 78 no readable audit
    HMAC key; 2 usage (a store or table neither the config nor the trail knows).
    """
    from retention.audit.bundle import make_bundle
    from retention.audit.prove import audit_hmac_key, check_names, prove_record, render_search
    from retention.errors import AuditFailure

    with expected_errors():
        config = context.config()
        hmac_key = audit_hmac_key(config.audit)
        assert config.audit is not None
        audit_dir = directory or config.audit.directory
        search = prove_record(audit_dir, hmac_key, store, table, key)
        note = check_names(config, search, store, table)
        if output == "json":
            from retention.audit.documents import proof_document

            click.echo(json.dumps(proof_document(search), indent=2, ensure_ascii=False))
        else:
            click.echo(render_search(search))
            if note and not search.proofs:
                click.echo(f"note: {note}")
        if search.proofs and not search.proven:
            raise AuditFailure("the inclusion proof does not verify: the trail was altered")
        if bundle_file is not None:
            # One bundle per batch that purged it (every version of an object key): FILE, then
            # FILE's stem with -2, -3, ...
            for number, proof in enumerate(search.proofs, start=1):
                target = (
                    bundle_file
                    if number == 1
                    else bundle_file.with_name(f"{bundle_file.stem}-{number}{bundle_file.suffix}")
                )
                bundle = make_bundle(audit_dir, search, proof)
                try:
                    target.write_bytes(bundle + b"\n")
                except OSError as error:
                    raise UsageError(f"cannot write {str(target)!r}: {error.strerror}") from error
                click.echo(f"bundle     {target} (batch seq {proof.seq}; check: audit check-proof)")
    if not search.proofs:
        sys.exit(int(ExitCode.PARTIAL_FAILURE))


@audit_group.command("check-proof")
@click.argument("bundle_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The public key file, as received from the operator through another channel.",
)
def audit_check_proof(bundle_file: Path, keys_file: Path) -> None:
    """Check a proof bundle (from `audit prove --bundle`) with the public key file alone: no
    config, no HMAC key, no trail. It proves that a record's leaf was purged in a batch, and
    that a signed checkpoint covers that batch.

    \b
    Exit codes: 0 valid; 70 invalid (the first check that fails is named); 2 the bundle cannot
    be read; 78 the public key file cannot be read or is malformed.
    """
    from retention.audit.bundle import check_bundle, read_bundle, render_checked
    from retention.audit.verify import load_verification_keys

    with expected_errors():
        keys = load_verification_keys(keys_file)
        checked = check_bundle(read_bundle(bundle_file), keys)
    click.echo(render_checked(checked))


@audit_group.command("erasures")
@click.option(
    "--subject",
    required=True,
    help="The person, as given to `retention erase`; '-' reads it from standard input.",
)
@audit_dir_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def audit_erasures(context: Context, subject: str, directory: Path | None, output: str) -> None:
    """Show the runs that carried out an erasure request for this subject: reference, times,
    exit code and each rule's counts. The trail holds only the subject's HMAC under the audit
    key (from the config), so this needs that key.

    \b
    Exit codes: 0 found; 3 no erasure of this subject in the trail; 78 no readable audit HMAC
    key; 2 usage.
    """
    from retention.audit.prove import audit_hmac_key, find_erasures, render_erasures

    with expected_errors():
        config = context.config()
        hmac_key = audit_hmac_key(config.audit)
        assert config.audit is not None
        erasures = find_erasures(
            directory or config.audit.directory, hmac_key, erasure_subject(subject_given(subject))
        )
    if output == "json":
        from retention.audit.documents import erasures_document

        click.echo(json.dumps(erasures_document(erasures), indent=2, ensure_ascii=False))
    else:
        click.echo(render_erasures(erasures))
    if not erasures:
        sys.exit(int(ExitCode.PARTIAL_FAILURE))


@main.group("hold")
def hold_group() -> None:
    """Legal holds: records that must not be purged, whatever their rule says."""


@hold_group.command("add")
@click.option(
    "--rule",
    "rule_name",
    required=True,
    shell_complete=complete_rule_names,
    help="The rule whose records are held.",
)
@click.option("--key", "keys", multiple=True, help="A record key (parts of a composite key: a/b).")
@click.option("--where", help='A condition on the rule\'s table, e.g. "customer_id = 42".')
@click.option("--prefix", help="An object key prefix (object stores).")
@click.option("--reason", required=True, help="Why (a case or ticket reference; no personal data).")
@click.option("--until", help="The hold ends by itself at this date/time (ISO 8601).")
@click.pass_obj
def hold_add(
    context: Context,
    rule_name: str,
    keys: tuple[str, ...],
    where: str | None,
    prefix: str | None,
    reason: str,
    until: str | None,
) -> None:
    """Hold records: they are never deleted nor anonymised while the hold is in force."""
    with expected_errors():
        config = context.config()
        now = datetime.now(UTC)
        hold = place_hold(
            config,
            rule_name=rule_name,
            keys=keys,
            where=where,
            prefix=prefix,
            reason=reason,
            until=parse_until(until, config, now),
            now=now,
            by=operator(),
        )
    click.echo(f"hold {hold.id} on rule {hold.rule}: {hold.target} ({hold.reason})")


@hold_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also released and expired holds.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@wide_option
@click.pass_obj
def hold_list(context: Context, show_all: bool, output: str, wide: bool) -> None:
    """List the holds in force (with --all, every hold ever placed)."""
    with expected_errors():
        config = context.config()
        now = datetime.now(UTC)
        holds = [h for h in load_holds(state_url(config.state)) if show_all or h.in_force(now)]
    if output == "json":
        click.echo(json.dumps(holds_document(holds, now), indent=2, ensure_ascii=False))
        return
    if not holds:
        click.echo("no holds" if show_all else "no holds in force")
    for hold in holds:
        state = hold_state(hold, now)
        until = f" until {hold.until:%Y-%m-%d %H:%M}" if hold.until else ""
        line = (
            f"{hold.id:>4}  {state:<8}  {hold.rule}  {hold.target}{until}  "
            f"by {hold.created_by} on {hold.created_at:%Y-%m-%d}: {hold.reason}"
        )
        for part in wrap([line], output_width(wide)):
            click.echo(part)


@hold_group.command("release")
@click.argument("hold_id", type=int)
@click.option("--reason", required=True, help="Why the hold ends.")
@click.pass_obj
def hold_release(context: Context, hold_id: int, reason: str) -> None:
    """Release a hold: its records become due again from the next run on."""
    with expected_errors():
        config = context.config()
        hold = lift_hold(config, hold_id, reason=reason, now=datetime.now(UTC), by=operator())
    click.echo(
        f"released hold {hold.id} on rule {hold.rule}; its records are due from the next run"
    )


def operator() -> str:
    """Who runs this command, for holds: user@host."""
    who = identity()
    return f"{who['user']}@{who['host']}"
