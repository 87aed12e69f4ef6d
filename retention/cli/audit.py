"""`retention audit`: keys, verification, anchors and the reports of the trail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from retention.cli.shared import (
    Context,
    complete_rule_names,
    echo,
    expected_errors,
    output_width,
    wide_option,
)
from retention.errors import UsageError
from retention.wording import counted


@click.group("audit")
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
    from retention.app import create_audit_keys

    with expected_errors():
        config = context.config()
        if config.audit is None or not config.audit.enabled:
            raise UsageError("the config has no enabled [audit] table")
        for line in create_audit_keys(config.audit, datetime.now(UTC), rotate=rotate):
            echo(line)


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
    checkpoint, or the trail cannot be read (a folder this user may not enter); 2 usage (no
    trail there, no such anchor); 69 S3 unreachable;
    78 unreadable public key file.
    """
    from retention.audit.anchor import load_anchors
    from retention.audit.entry_checks import load_verification_keys
    from retention.audit.locations import audit_locations
    from retention.audit.verify import verify_trail
    from retention.audit.verify_text import render_verification
    from retention.errors import AuditFailure

    with expected_errors():
        directory, keys_file = audit_locations(directory, keys_file, context.config)
        keys = load_verification_keys(keys_file)
        loaded = [found for anchor in anchors for found in load_anchors(anchor, endpoint_url)]
        result = verify_trail(directory, keys, loaded)
        if result.problem is not None:
            raise AuditFailure(f"invalid audit trail: {result.problem}")
    echo(render_verification(result))


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
    from retention.audit.entry_checks import load_verification_keys
    from retention.audit.locations import audit_locations
    from retention.audit.verify import verify_trail
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
    echo(
        f"anchored checkpoint seq {content['seq']} (size {content['size']}, key "
        f"{content['key_id']}) to {receipt.location}{retained}"
    )
    if receipt.warning:
        echo(f"warning: {receipt.warning}", err=True)


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
    from retention.audit.locations import audit_directory
    from retention.audit.report import parse_bound, rule_runs
    from retention.audit.report_render import render

    with expected_errors():
        config_rules = None
        # With --dir and no config given, the trail alone tells which rule names are known.
        if rules and (directory is None or context.config_path is not None):
            config_rules = [rule.name for rule in context.config().rules]
        rows = rule_runs(
            audit_directory(directory, context.config),
            since=parse_bound(since, "--since"),
            until=parse_bound(until, "--until"),
            rules=rules,
            config_rules=config_rules,
        )
    if output == "csv":
        # A machine format, its lines ending in CRLF: written as the trail holds it.
        click.echo(render(rows, output, width), nl=False)
    else:
        echo(render(rows, output, width), nl=False)


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
        echo(f"warning: cannot note the anchor's time in {directory}: {error}", err=True)


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
    Exit codes: 0; 2 usage (a bad date, no trail there, a --rule neither it nor the config knows);
    70 the trail or a segment cannot be read (a folder this user may not enter). A malformed
    entry is left out, with a warning.
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
    Exit codes: 0; 2 usage (a bad date, no trail there, a --rule neither it nor the config knows);
    70 the trail or a segment cannot be read (a folder this user may not enter). A malformed
    entry is left out, with a warning.
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
    from retention.audit.entry_checks import load_verification_keys
    from retention.audit.locations import audit_locations
    from retention.audit.report_html import render_report_html
    from retention.audit.verify import verify_trail
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
        purged = sum(
            count for name, count in overall.items() if name not in ("bytes", "child_rows")
        )
        echo(
            f"report written to {output_file}: {counted(purged, 'record')} purged and "
            f"{counted(overall['child_rows'], 'child row')} with them in signed entries, "
            f"{counted(len(document['not_yet_signed']), 'entry')} not yet signed"
        )
        if verification.problem is not None:
            raise AuditFailure(f"invalid audit trail (the report says so): {verification.problem}")
