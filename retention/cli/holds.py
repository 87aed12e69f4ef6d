"""`retention hold`: legal holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from retention.cli.shared import (
    Context,
    complete_rule_names,
    echo,
    expected_errors,
    output_width,
    parse_until,
    wide_option,
)
from retention.layout import wrap

if TYPE_CHECKING:
    from retention.holds import Hold


@click.group("hold")
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
    """Hold records: they are never deleted nor anonymised while the hold is in force.

    During a run (the daemon's too), the hold is in force at once, from the run's next batch
    on, and the run records it in the audit trail at that batch (exit 0; `hold list` shows it
    "not yet in the audit trail" until then)."""
    from retention.app.holds import place_hold

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
    echo(f"hold {hold.id} on rule {hold.rule}: {hold.target} ({hold.reason})")
    if not hold.recorded:
        for part in wrap([unrecorded_note(hold)], output_width(False)):
            echo(part)


def unrecorded_note(hold: Hold) -> str:
    """What `hold add` says of a hold placed while a run held the audit trail."""
    return (
        f"in force now: its records are kept from the running purge's next batch on. Not yet "
        f"in the audit trail: {hold.placed_while}; that process records it at its next batch "
        "(or, if it stops first, the trail's next writer: a run, the daemon's heartbeat, a "
        "hold command). `retention hold list` shows it as not yet recorded until then"
    )


@hold_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also released and expired holds.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@wide_option
@click.pass_obj
def hold_list(context: Context, show_all: bool, output: str, wide: bool) -> None:
    """List the holds in force (with --all, every hold ever placed)."""
    from retention.documents import hold_state, holds_document
    from retention.runtime.secrets import state_url
    from retention.state_holds import load_holds

    with expected_errors():
        config = context.config()
        now = datetime.now(UTC)
        holds = [h for h in load_holds(state_url(config.state)) if show_all or h.in_force(now)]
    if output == "json":
        echo(json.dumps(holds_document(holds, now), indent=2, ensure_ascii=False))
        return
    if not holds:
        echo("no holds" if show_all else "no holds in force")
    for hold in holds:
        state = hold_state(hold, now)
        until = f" until {hold.until:%Y-%m-%d %H:%M}" if hold.until else ""
        pending = "" if hold.recorded else "  [not yet in the audit trail]"
        line = (
            f"{hold.id:>4}  {state:<8}  {hold.rule}  {hold.target}{until}  "
            f"by {hold.created_by} on {hold.created_at:%Y-%m-%d}: {hold.reason}{pending}"
        )
        for part in wrap([line], output_width(wide)):
            echo(part)


@hold_group.command("release")
@click.argument("hold_id", type=int)
@click.option("--reason", required=True, help="Why the hold ends.")
@click.pass_obj
def hold_release(context: Context, hold_id: int, reason: str) -> None:
    """Release a hold: its records become due again from the next run on.

    During a run (the daemon's too) it exits 75 and the hold stays in force: a release must be
    in the audit trail before its records can go. Release it after the run."""
    from retention.app.holds import lift_hold

    with expected_errors():
        config = context.config()
        hold = lift_hold(config, hold_id, reason=reason, now=datetime.now(UTC), by=operator())
    echo(f"released hold {hold.id} on rule {hold.rule}; its records are due from the next run")


def operator() -> str:
    """Who runs this command, for holds: user@host."""
    from retention.audit.opening import identity

    who = identity()
    return f"{who['user']}@{who['host']}"
