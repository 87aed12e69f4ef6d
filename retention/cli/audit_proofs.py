"""`retention audit prove`, `check-proof` and `erasures`: one record's or one person's trace in
the trail."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from retention.cli.audit import (
    audit_dir_option,
    audit_group,
)
from retention.cli.shared import (
    Context,
    echo,
    expected_errors,
    subject_given,
)
from retention.errors import ExitCode, UsageError


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

            echo(json.dumps(proof_document(search), indent=2, ensure_ascii=False))
        else:
            echo(render_search(search))
            if note and not search.proofs:
                echo(f"note: {note}")
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
                echo(f"bundle     {target} (batch seq {proof.seq}; check: audit check-proof)")
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
    from retention.audit.entry_checks import load_verification_keys

    with expected_errors():
        keys = load_verification_keys(keys_file)
        checked = check_bundle(read_bundle(bundle_file), keys)
    echo(render_checked(checked))


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
    from retention.app.erasure import erasure_subject
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

        echo(json.dumps(erasures_document(erasures), indent=2, ensure_ascii=False))
    else:
        echo(render_erasures(erasures))
    if not erasures:
        sys.exit(int(ExitCode.PARTIAL_FAILURE))
