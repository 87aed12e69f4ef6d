"""`retention plan`, `run` and `erase`: what is due, and purging it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from retention.cli.shared import (
    Context,
    as_of_option,
    complete_rule_names,
    confirm_plan_id,
    echo,
    expected_errors,
    output_width,
    parse_as_of,
    refuse_future_as_of,
    rule_option,
    start_up_uncollected,
    subject_given,
    wide_option,
)
from retention.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from retention.config import Config
    from retention.planner import Plan
    from retention.run_report import RunReport
    from retention.runtime.signals import StopRequest
    from retention.state import StateDatabase
    from retention.state_leases import LeaseWatch
    from retention.store_protocol import RecordStore


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@contextmanager
def stop_requests(nothing_done: str) -> Iterator[StopRequest]:
    """SIGINT and SIGTERM for a whole purge command (runtime/signals.py): until the purge
    begins they unwind it, giving its leases back, and it exits 130 or 143 with a line ending in
    ``nothing_done`` ("nothing was deleted"); afterwards they stop it after its batch."""
    from retention.runtime.signals import StoppedBeforePurge, stop_on_signals

    try:
        with stop_on_signals() as stop:
            yield stop
    except StoppedBeforePurge as stopped:
        if stdin_is_terminal():  # off the line of a prompt, or of the ^C the terminal echoed
            echo(err=True)
        echo(f"{stopped.received.name}: stopped before the purge began: {nothing_done}", err=True)
        sys.exit(int(stopped.exit_code))


@click.command()
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
    from retention.app import make_plan
    from retention.app.saved_plans import save_plan
    from retention.documents import plan_document
    from retention.render import render_plan
    from retention.stores import open_stores

    with expected_errors():
        config = context.config()
        rules = config.rules_named(rule_names)
        moment = parse_as_of(as_of, config)
        with open_stores(config, read_only=True) as store_for:
            the_plan = make_plan(config, rules, store_for, moment, show_keys=show_keys)
        if save is not None:
            save_plan(the_plan, save, config)
    if output == "json":
        echo(json.dumps(plan_document(the_plan), indent=2, ensure_ascii=False))
    else:
        echo(render_plan(the_plan, config.settings.timezone.key, output_width(wide)))
    if any(rule_plan.error for rule_plan in the_plan.rules):
        all_unreachable = all(
            rule_plan.unavailable for rule_plan in the_plan.rules if rule_plan.error
        )
        sys.exit(int(ExitCode.STORE_UNAVAILABLE if all_unreachable else ExitCode.PARTIAL_FAILURE))


@click.command()
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
    "--allow-future-as-of",
    "future_as_of",
    is_flag=True,
    help="Purge as of an instant still to come (--as-of, or a saved plan's): records then go "
    "before their period has passed. Without it such a run is refused (a dry run never is).",
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
    future_as_of: bool,
    output: str,
    wide: bool,
    metrics_textfile: Path | None,
) -> None:
    """Purge what is due now: batch by batch, each rule on its own."""
    from retention.app import RunNotRecorded, make_plan, run_ledger, write_metrics_textfile
    from retention.render import render_plan
    from retention.runtime.checkins import Checkins
    from retention.runtime.logging import get_logger
    from retention.stores import open_stores

    with (
        stop_requests("nothing was deleted") as stop,
        expected_errors(),
        start_up_uncollected() as started,
    ):
        if output == "json" and not (yes or dry_run):
            raise UsageError("--output json prints no plan to confirm: pass --yes (or --dry-run)")
        config = context.config()
        saved = None
        if plan_file is not None:
            # Only here: a saved plan's checks import the trail's readers (audit.prove).
            from retention.app.saved_plans import load_saved_plan

            saved = load_saved_plan(plan_file, config)
        if saved is not None and (rule_names or as_of):
            raise UsageError("--plan-file fixes the rules and the instant: drop --rule/--as-of")
        rules = config.rules_named(saved.rules if saved else rule_names)
        moment = saved.as_of if saved else parse_as_of(as_of, config)
        if not (dry_run or future_as_of):
            refuse_future_as_of(moment, "the saved plan's as_of" if saved else f"--as-of {as_of!r}")
        config.rules_named(over_limit)
        if not (yes or dry_run) and not stdin_is_terminal():
            raise UsageError("standard input is not a terminal: pass --yes to purge (or --dry-run)")
        checkins = Checkins(config.checkins, get_logger(), enabled=not dry_run)
        try:
            with (
                run_ledger(config, rules, dry_run=dry_run) as (state, leases),
                open_stores(config, read_only=dry_run) as store_for,
            ):
                the_plan = make_plan(config, rules, store_for, moment)
                if saved is not None:
                    from retention.app.saved_plans import check_saved_plan

                    check_saved_plan(saved, the_plan, tolerance)
                if not (yes or dry_run):
                    zone = config.settings.timezone.key
                    echo(render_plan(the_plan, zone, output_width(wide)))
                    confirm_plan_id(the_plan.plan_id, "\nTo purge", "nothing was purged")
                started()
                checkins.ping("start")
                report = purge_until_stopped(
                    config,
                    the_plan,
                    store_for,
                    stop,
                    dry_run=dry_run,
                    over_limit=over_limit,
                    state=state,
                    leases=leases,
                )
                checkins.finished(report.exit_code == ExitCode.OK)
                if metrics_textfile is not None:
                    write_metrics_textfile(
                        config, report, state, metrics_textfile, datetime.now(UTC)
                    )
        except BaseException as error:
            checkins.finished(False)
            if isinstance(error, RunNotRecorded):
                # What the run purged, which only the trail holds now (the ledger could not take
                # it), or that its metrics file lacks; the error follows.
                echo_report(error.report, the_plan, output, wide)
            raise
        finally:
            checkins.wait()
    echo_report(report, the_plan, output, wide)
    sys.exit(int(report.exit_code))


def purge_until_stopped(
    config: Config,
    the_plan: Plan,
    store_for: Callable[[str], RecordStore],
    stop: StopRequest,
    *,
    dry_run: bool,
    over_limit: Sequence[str],
    state: StateDatabase | None = None,
    leases: LeaseWatch | None = None,
) -> RunReport:
    """Run the plan with progress on a terminal; from here SIGINT or SIGTERM (``stop``, armed
    now) stop it after its current batch, and the report then carries the signal's exit code
    (130 or 143). A rule's lease lost (``leases``: another run or daemon took it over while
    this process was frozen past its expiry, exit 75; or the state database did not answer
    until it expired, exit 69) stops it before its next batch too."""
    from retention.app import run_plan
    from retention.runtime.progress import terminal_progress

    lost: list[bool] = []

    def stop_requested() -> bool:
        if stop():
            return True
        if not lost and leases is not None and leases.is_set():
            lost.append(True)
        return bool(lost)

    def stopped_by() -> ExitCode | None:
        if stop.exit_code is not None or not lost or leases is None:
            return stop.exit_code
        return ExitCode.LOCK_HELD if leases.taken else ExitCode.STORE_UNAVAILABLE

    stop.arm()
    try:
        with terminal_progress() as progress:
            return run_plan(
                config,
                the_plan,
                store_for,
                dry_run=dry_run,
                stop_requested=stop_requested,
                stopped_by=stopped_by,
                allow_over_limit=frozenset(over_limit),
                state=state,
                progress=progress,
            )
    finally:
        # Also before the ledger's error, when the state database that cost the lease cannot
        # take the run's end either.
        if lost and leases is not None:
            echo(_lease_lost_message(leases.taken), err=True)


def _lease_lost_message(taken: bool) -> str:
    why = (
        "taken over (another run or daemon holds the rule now, as after this process was "
        "frozen past its lease_ttl)"
        if taken
        else "not renewable: the state database did not answer before it expired"
    )
    return (
        f"error: this run's lease was {why}: it stopped before its next batch; what it purged "
        "is in the audit trail, the next holder purges the rest"
    )


def echo_report(report: RunReport, the_plan: Plan, output: str, wide: bool) -> None:
    from retention.documents import plan_document, report_document
    from retention.render import render_report

    if output == "json":
        document = report_document(report, plan_document(the_plan))
        echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        echo(render_report(report, output_width(wide), the_plan))


@click.command()
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
    from retention.app import make_plan, run_ledger
    from retention.app.erasure import erasure_request, erasure_rules
    from retention.render import render_erasure_scope, render_plan
    from retention.stores import open_stores

    with (
        stop_requests("nothing was erased") as stop,
        expected_errors(),
        start_up_uncollected() as started,
    ):
        if output == "json" and not (yes or dry_run):
            raise UsageError("--output json prints no plan to confirm: pass --yes (or --dry-run)")
        config = context.config()
        request = erasure_request(subject_given(subject), reference)
        rules, left_out = erasure_rules(config)
        config.rules_named(over_limit)
        if not (yes or dry_run) and not stdin_is_terminal():
            raise UsageError("standard input is not a terminal: pass --yes to erase (or --dry-run)")
        with (
            run_ledger(config, rules, dry_run=dry_run) as (_state, leases),
            open_stores(config, read_only=dry_run) as store_for,
        ):
            the_plan = make_plan(config, rules, store_for, datetime.now(UTC), erasure=request)
            if output == "text":
                width = output_width(wide)
                echo(render_plan(the_plan, config.settings.timezone.key, width))
                echo("\n" + render_erasure_scope(rules, left_out, width) + "\n")
            if not (yes or dry_run):
                confirm_plan_id(the_plan.plan_id, "To erase", "nothing was erased")
            started()
            # No run ledger: an erasure is not a rule's scheduled run (its last success).
            report = purge_until_stopped(
                config,
                the_plan,
                store_for,
                stop,
                dry_run=dry_run,
                over_limit=over_limit,
                leases=leases,
            )
    echo_report(report, the_plan, output, wide)
    sys.exit(int(report.exit_code))
