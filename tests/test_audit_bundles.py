"""Proofs an auditor checks alone (issue 13): `audit prove --bundle` writes a self-contained
proof; `audit check-proof` checks it with the public key file only, and fails on any changed
byte; an unknown store or table is a usage error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from retention.cli import Context, main
from retention.errors import ExitCode
from tests.support import plan_and_run
from tests.test_audit_verify import Trail, build_trail, customer_code
from tests.test_files_store import make_config as files_config
from tests.test_files_store import make_file


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(tmp_path_factory.mktemp("bundles"))


@pytest.fixture
def with_config(built: Trail, monkeypatch: pytest.MonkeyPatch) -> Trail:
    monkeypatch.setattr(Context, "config", lambda self: built.config)
    return built


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(main, ["--log-format", "json", "audit", *arguments])


def prove_bundle(bundle: Path, store: str, table: str, *keys: str) -> Result:
    key_options = [option for key in keys for option in ("--key", key)]
    return invoke(
        "prove", "--store", store, "--table", table, *key_options, "--bundle", str(bundle)
    )


def check(bundle: Path, keys_file: Path) -> Result:
    return invoke("check-proof", str(bundle), "--keys", str(keys_file))


@pytest.mark.parametrize(
    ("table", "keys", "rule"),
    [
        ("customers", (customer_code(3),), "stale-customers (delete)"),
        ("orders", (customer_code(3), "7"), "old-orders (delete)"),
        ("contacts", ("503",), "dormant-contacts (anonymise)"),
    ],
    ids=["row", "composite-key", "anonymised-row"],
)
def test_a_bundle_round_trips_with_the_public_keys_alone(
    with_config: Trail,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    table: str,
    keys: tuple[str, ...],
    rule: str,
) -> None:
    bundle = tmp_path / "proof.json"
    proven = prove_bundle(bundle, "db", table, *keys)
    assert proven.exit_code == 0, proven.output
    # The auditor has the bundle and the public key file: no config, no HMAC key, no trail.
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    (auditor / "proof.json").write_bytes(bundle.read_bytes())
    (auditor / "keys.json").write_bytes(with_config.keys_file.read_bytes())
    monkeypatch.setattr(Context, "config", lambda self: pytest.fail("the config was read"))
    monkeypatch.chdir(auditor)
    checked = check(auditor / "proof.json", auditor / "keys.json")
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith("valid: leaf ")
    assert f"rule       {rule.split()[0]} " in checked.stdout
    assert f"on db/{table}" in checked.stdout
    assert f"db/{table}/{keys[0]}".encode() not in bundle.read_bytes(), "it names no record"
    if not keys[0].isdigit():  # a short number can appear in hex by chance
        assert keys[0].encode() not in bundle.read_bytes()


def single_byte_edits_that_pass(original: bytes, keys_file: Path) -> list[tuple[int, str, str]]:
    """Given a valid bundle and its public key file, change each byte in turn (a letter's case,
    a digit to the next, anything else to x) and return the edits that still pass the check."""
    from retention.audit.bundle import check_bundle
    from retention.audit.entry_checks import load_verification_keys
    from retention.errors import AuditFailure

    keys = load_verification_keys(keys_file)
    check_bundle(original, keys)
    passed = []
    for position in range(len(original) - 1):  # the final newline is not part of the JSON
        byte = chr(original[position])
        variant = byte.swapcase() if byte.isalpha() else "x" if byte != "x" else "y"
        if byte.isdigit():
            variant = str((int(byte) + 1) % 10)
        edited = original[:position] + variant.encode() + original[position + 1 :]
        try:
            check_bundle(edited, keys)
        except AuditFailure:
            continue
        passed.append((position, byte, variant))
    return passed


def file_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A bundle of a file purged from a backup folder, and the public key file."""
    root = tmp_path / "backups"
    make_file(root, "nightly/db-old.sql.gz", datetime(2020, 1, 1, tzinfo=UTC))
    rules = '[[rules]]\nname = "backups"\nstore = "backups"\nperiod = "30d"\n'
    config = files_config(tmp_path, root, rules, audit=tmp_path / "audit")
    plan_and_run(config, datetime(2026, 11, 23, 12, tzinfo=UTC))
    monkeypatch.setattr(Context, "config", lambda self: config)
    bundle = tmp_path / "proof.json"
    proven = prove_bundle(bundle, "backups", str(root), "nightly/db-old.sql.gz")
    assert proven.exit_code == 0, proven.output
    assert config.audit is not None
    return bundle, config.audit.public_keys_file


def object_bundle(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, marker: bool
) -> tuple[Path, Path]:
    """A bundle of one object version (or of one delete marker) purged from a versioned bucket,
    named by key and version id, and the public key file."""
    from tests.test_s3_store import make_s3_config, new_bucket, s3_rule

    versioned = new_bucket(s3_server, versioned=True)
    client, name = versioned.client, versioned.name
    version = client.put_object(Bucket=name, Key="exports/a.csv", Body=b"12")["VersionId"]
    if marker:
        version = client.delete_object(Bucket=name, Key="exports/a.csv")["VersionId"]
    config = make_s3_config(versioned, s3_rule(period="1d"), tmp_path, audit=True)
    plan_and_run(config, datetime.now(UTC) + timedelta(days=2))
    monkeypatch.setattr(Context, "config", lambda self: config)
    bundle = tmp_path / "proof.json"
    proven = prove_bundle(bundle, "content", name, "exports/a.csv", version)
    assert proven.exit_code == 0, proven.output
    assert not (tmp_path / "proof-2.json").exists(), "one version named, one bundle"
    assert config.audit is not None
    return bundle, config.audit.public_keys_file


@pytest.mark.parametrize(
    "kind",
    ["row", "composite-key", "anonymised-row", "file", "s3-object-version", "s3-delete-marker"],
)
def test_any_single_byte_changed_in_a_bundle_fails_the_check(
    built: Trail,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    kind: str,
) -> None:
    rows = {
        "row": ("customers", customer_code(5)),
        "composite-key": ("orders", customer_code(3), "7"),
        "anonymised-row": ("contacts", "503"),
    }
    if kind in rows:
        monkeypatch.setattr(Context, "config", lambda self: built.config)
        bundle, keys_file = tmp_path / "proof.json", built.keys_file
        proven = prove_bundle(bundle, "db", *rows[kind])
        assert proven.exit_code == 0, proven.output
    elif kind == "file":
        bundle, keys_file = file_bundle(tmp_path, monkeypatch)
    else:
        s3_server = request.getfixturevalue("s3_server")
        marker = kind == "s3-delete-marker"
        bundle, keys_file = object_bundle(s3_server, tmp_path, monkeypatch, marker=marker)
    original = bundle.read_bytes()
    assert single_byte_edits_that_pass(original, keys_file) == []
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(original.replace(b'"leaf":"', b'"leaf":"0', 1)[:-2] + b"}\n")
    result = check(tampered, keys_file)
    assert result.exit_code == ExitCode.AUDIT_FAILURE, result.output


def test_a_bundle_needs_the_right_public_key(with_config: Trail, tmp_path: Path) -> None:
    bundle = tmp_path / "proof.json"
    assert prove_bundle(bundle, "db", "customers", customer_code(2)).exit_code == 0
    other_keys = tmp_path / "other.json"
    other_keys.write_text(
        with_config.keys_file.read_text().replace(with_config.signer.key_id, "0123456789abcdef")
    )
    result = check(bundle, other_keys)
    assert result.exit_code == 78 or result.exit_code == ExitCode.AUDIT_FAILURE, result.output


@pytest.mark.parametrize(
    ("store", "table", "words"),
    [("dbx", "customers", "--store 'dbx'"), ("db", "customer", "--table 'customer'")],
    ids=["store", "table"],
)
def test_an_unknown_store_or_table_is_a_usage_error(
    with_config: Trail, store: str, table: str, words: str
) -> None:
    result = invoke("prove", "--store", store, "--table", table, "--key", customer_code(3))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert words in result.stderr


def test_a_file_of_a_backup_folder_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "backups"
    make_file(root, "nightly/db-old.sql.gz", datetime(2020, 1, 1, tzinfo=UTC))
    make_file(root, "nightly/db-new.sql.gz", datetime(2026, 11, 20, tzinfo=UTC))
    rules = '[[rules]]\nname = "backups"\nstore = "backups"\nperiod = "30d"\n'
    config = files_config(tmp_path, root, rules, audit=tmp_path / "audit")
    plan_and_run(config, datetime(2026, 11, 23, 12, tzinfo=UTC))
    monkeypatch.setattr(Context, "config", lambda self: config)
    bundle = tmp_path / "proof.json"
    proven = prove_bundle(bundle, "backups", str(root), "nightly/db-old.sql.gz")
    assert proven.exit_code == 0, proven.output
    assert config.audit is not None
    checked = check(bundle, config.audit.public_keys_file)
    assert checked.exit_code == 0, checked.output
    assert "rule       backups (delete)" in checked.stdout
    kept = invoke(
        "prove", "--store", "backups", "--table", str(root), "--key", "nightly/db-new.sql.gz"
    )
    assert kept.exit_code == ExitCode.PARTIAL_FAILURE, kept.output


def test_an_s3_object_key_alone_proves_every_version_and_marker_that_went(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_s3_store import make_s3_config, new_bucket, s3_rule

    versioned = new_bucket(s3_server, versioned=True)
    client, name = versioned.client, versioned.name
    first = client.put_object(Bucket=name, Key="exports/a.csv", Body=b"1")["VersionId"]
    client.put_object(Bucket=name, Key="exports/a.csv", Body=b"2")
    client.put_object(Bucket=name, Key="exports/b.csv", Body=b"3")
    marker = client.delete_object(Bucket=name, Key="exports/b.csv")["VersionId"]
    config = make_s3_config(versioned, s3_rule(period="1d"), tmp_path, audit=True)
    as_of = datetime.now(UTC) + timedelta(days=2)
    client.put_object(Bucket=name, Key="other/kept.csv", Body=b"5")
    plan_and_run(config, as_of)
    assert versioned.versions("exports/") == []
    monkeypatch.setattr(Context, "config", lambda self: config)
    assert config.audit is not None

    def prove(*keys: str, bundle: Path | None = None) -> Result:
        options = [option for key in keys for option in ("--key", key)]
        extra = ["--bundle", str(bundle)] if bundle else []
        return invoke("prove", "--store", "content", "--table", name, *options, *extra)

    both = prove("exports/a.csv", bundle=tmp_path / "a.json")
    assert both.exit_code == 0, both.output
    assert both.stdout.count("  batch      seq") == 2, "both versions of a.csv"
    for bundle in (tmp_path / "a.json", tmp_path / "a-2.json"):
        checked = check(bundle, config.audit.public_keys_file)
        assert checked.exit_code == 0, checked.output
        assert f"on content/{name}" in checked.stdout
    version_and_marker = prove("exports/b.csv")
    assert version_and_marker.exit_code == 0, version_and_marker.output
    assert version_and_marker.stdout.count("  batch      seq") == 2, "b.csv and its marker"
    assert prove("exports/b.csv", marker).exit_code == 0, "a delete marker by its version id"
    assert prove("exports/a.csv", first).exit_code == 0
    assert versioned.versions("other/") != [], "outside the rule's prefix"
    assert prove("other/kept.csv").exit_code == ExitCode.PARTIAL_FAILURE
    versions_files = list((tmp_path / "audit" / "leaves").glob("*.versions"))
    assert versions_files
    assert all(b"exports" not in path.read_bytes() for path in versions_files)


def test_a_record_of_a_batch_reconciled_after_a_crash_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.audit.recorder import TrailRecorder
    from tests.support import make_config
    from tests.test_audit_reports import Crash
    from tests.test_audit_verify import FIRST_RUN, RULES, create_database

    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    create_database(url)
    config = make_config(url, RULES, audit_directory=tmp_path / "audit")
    original = TrailRecorder.result
    results: list[int] = []

    def crash_on_the_second_result(self: TrailRecorder, *arguments: object) -> None:
        results.append(1)
        if len(results) == 2:
            raise Crash
        original(self, *arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(TrailRecorder, "result", crash_on_the_second_result)
    with pytest.raises(Crash):
        plan_and_run(config, FIRST_RUN)
    monkeypatch.undo()
    plan_and_run(config, FIRST_RUN)
    monkeypatch.setattr(Context, "config", lambda self: config)
    bundle = tmp_path / "proof.json"
    proven = prove_bundle(bundle, "db", "customers", customer_code(7))
    assert proven.exit_code == 0, proven.output
    assert "batch.reconciled" in proven.stdout
    assert config.audit is not None
    checked = check(bundle, config.audit.public_keys_file)
    assert checked.exit_code == 0, checked.output
    assert "(batch.reconciled)" in checked.stdout
    assert "reconciled after a crash" in checked.stdout


def test_the_versions_file_is_covered_by_the_signed_entry(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention.audit.entries import read_entries
    from retention.audit.entry_checks import load_verification_keys
    from retention.audit.verify import verify_trail
    from tests.test_s3_store import make_s3_config, new_bucket, s3_rule

    versioned = new_bucket(s3_server, versioned=True)
    client, name = versioned.client, versioned.name
    client.put_object(Bucket=name, Key="exports/a.csv", Body=b"12")
    client.put_object(Bucket=name, Key="exports/a.csv", Body=b"345")
    client.put_object(Bucket=name, Key="exports/b.csv", Body=b"6789")
    marker = client.delete_object(Bucket=name, Key="exports/b.csv")["VersionId"]
    config = make_s3_config(versioned, s3_rule(period="1d"), tmp_path, audit=True)
    plan_and_run(config, datetime.now(UTC) + timedelta(days=2))
    monkeypatch.setattr(Context, "config", lambda self: config)
    assert config.audit is not None
    directory = tmp_path / "audit"
    entries = [stored.content for stored in read_entries(directory)]
    intent = next(entry for entry in entries if entry["type"] == "batch.intent")
    result = next(entry for entry in entries if entry["type"] == "batch.result")
    # Three versions of 2 + 3 + 4 bytes and one delete marker, recorded in the signed entries.
    assert (intent["selected"], intent["markers"], intent["bytes"]) == (4, 1, 9)
    assert (result["done"], result["markers"], result["bytes"]) == (4, 1, 9)
    versions = directory / "leaves" / f"{intent['seq']:08d}.versions"
    assert len(intent["versions_digest"]) == 64
    keys = load_verification_keys(config.audit.public_keys_file)
    assert verify_trail(directory, keys, []).valid
    # A delete marker's bundle round-trips like a version's.
    both = invoke(
        "prove", "--store", "content", "--table", name, "--key", "exports/b.csv",
        "--bundle", str(tmp_path / "b.json"),
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    for bundle in (tmp_path / "b.json", tmp_path / "b-2.json"):
        checked = check(bundle, config.audit.public_keys_file)
        assert checked.exit_code == 0, checked.output
    # Someone rewrites the versions file: one version id swapped for another.
    text = versions.read_text()
    assert marker in text
    versions.write_text(text.replace(marker, "forged-version-id"))
    broken = verify_trail(directory, keys, [])
    assert not broken.valid
    assert broken.problem is not None
    assert broken.problem.seq == intent["seq"]
    assert "versions" in str(broken.problem)
    refused = invoke("prove", "--store", "content", "--table", name, "--key", "exports/b.csv")
    assert refused.exit_code == ExitCode.AUDIT_FAILURE, refused.output
    assert "versions file" in refused.output
    versions.unlink()
    assert "is missing" in str(verify_trail(directory, keys, []).problem)
