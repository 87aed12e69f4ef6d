"""A saved plan is sealed (HMAC under the audit key): `run --plan-file` refuses, exit 2 with
nothing purged, a plan edited by hand (its instant, a cutoff, a count, its id), one without a
seal and one sealed by another installation."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine

from retention.cli import main
from retention.errors import ExitCode
from tests.support import config_text, create_logs, logs_rule, remaining_ids

AS_OF = "2026-11-23T12:00:00+00:00"
DUE = set(range(1, 11))  # logged in 2020: due a year later
NOT_YET = set(range(11, 21))  # logged 2026-06-01: due only on 2027-06-01


def _setup(tmp_path: Path, url: str) -> Path:
    create_logs(
        url,
        {key: datetime(2020, 1, 1) for key in DUE} | {key: datetime(2026, 6, 1) for key in NOT_YET},
    )
    config = tmp_path / "retention.toml"
    config.write_text(config_text(url, logs_rule(), audit_directory=tmp_path / "audit"))
    return config


def _cli(config: Path, *arguments: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *arguments])


def _remaining(url: str) -> set[int]:
    engine = create_engine(url)
    try:
        return remaining_ids(engine, "logs")
    finally:
        engine.dispose()


def _save(config: Path, path: Path) -> dict[str, object]:
    made = _cli(config, "plan", "--as-of", AS_OF, "--save", str(path))
    assert made.exit_code == 0, made.output
    document: dict[str, object] = json.loads(path.read_text())
    return document


def test_a_sealed_plan_runs_exactly_as_saved(tmp_path: Path, database_url: str) -> None:
    config = _setup(tmp_path, database_url)
    saved = tmp_path / "plan.json"
    document = _save(config, saved)
    assert isinstance(document["seal"], str)
    assert len(document["seal"]) == 64
    ran = _cli(config, "run", "--yes", "--plan-file", str(saved))
    assert ran.exit_code == 0, ran.output
    assert _remaining(database_url) == NOT_YET


def _forge_the_instant(document: dict[str, object]) -> None:
    """What a careful hand does: a later instant, with the cutoff and count it gives."""
    document["as_of"] = "2027-11-23T12:00:00+00:00"
    (rule,) = document["rules"]  # type: ignore[misc]
    rule["cutoff"] = "2026-11-23T12:00:00+00:00"
    rule["due"] = len(DUE | NOT_YET)


def _edit_the_cutoff(document: dict[str, object]) -> None:
    (rule,) = document["rules"]  # type: ignore[misc]
    rule["cutoff"] = "2026-11-23T12:00:00+00:00"


def _edit_the_count(document: dict[str, object]) -> None:
    (rule,) = document["rules"]  # type: ignore[misc]
    rule["due"] = len(DUE | NOT_YET)


def _edit_the_id(document: dict[str, object]) -> None:
    document["plan_id"] = "0123456789abcdef"


def _drop_the_seal(document: dict[str, object]) -> None:
    del document["seal"]


EDITS = {
    "as_of": _forge_the_instant,
    "cutoff": _edit_the_cutoff,
    "due": _edit_the_count,
    "plan_id": _edit_the_id,
    "no seal": _drop_the_seal,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_plan_is_refused_and_nothing_is_purged(
    tmp_path: Path, database_url: str, edit: str
) -> None:
    config = _setup(tmp_path, database_url)
    saved = tmp_path / "plan.json"
    document = _save(config, saved)
    EDITS[edit](document)
    saved.write_text(json.dumps(document, indent=2))

    refused = _cli(config, "run", "--yes", "--plan-file", str(saved), "--tolerance", "100")
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "does not match its seal" in refused.stderr
    assert "nothing was purged" in refused.stderr
    assert _remaining(database_url) == DUE | NOT_YET


def test_a_plan_sealed_by_another_installation_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    """Same data, same config text, another audit HMAC key: its seal does not match."""
    config = _setup(tmp_path, database_url)
    saved = tmp_path / "plan.json"
    _save(config, saved)
    key = tmp_path / "audit-keys" / "hmac.key"
    key.write_text("ab" * 32)
    refused = _cli(config, "run", "--yes", "--plan-file", str(saved))
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "does not match its seal" in refused.stderr
    assert _remaining(database_url) == DUE | NOT_YET


@pytest.mark.parametrize("edit", [None, "as_of", "plan_id"])
def test_without_any_key_a_plan_is_saved_unsealed_and_must_match_its_id(
    tmp_path: Path, database_url: str, edit: str | None
) -> None:
    """Throw-away data: no audit trail, no hash key. Nothing can seal the plan; its id, the
    digest of its content, must still match, and the cutoffs are still re-derived."""
    create_logs(
        database_url,
        {key: datetime(2020, 1, 1) for key in DUE} | {key: datetime(2026, 6, 1) for key in NOT_YET},
    )
    config = tmp_path / "retention.toml"
    config.write_text(config_text(database_url, logs_rule()))
    saved = tmp_path / "plan.json"
    document = _save(config, saved)
    assert "seal" not in document
    if edit is not None:
        EDITS[edit](document)
        saved.write_text(json.dumps(document, indent=2))

    result = _cli(config, "run", "--yes", "--plan-file", str(saved), "--tolerance", "100")
    if edit is None:
        assert result.exit_code == 0, result.output
        assert _remaining(database_url) == NOT_YET
    else:
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "does not match its plan id" in result.stderr
        assert _remaining(database_url) == DUE | NOT_YET


def _huge_count(document: dict[str, object]) -> None:
    (rule,) = document["rules"]  # type: ignore[misc]
    rule["due"] = 10**30  # past JSON's safe integers: canonical JSON refuses it


HOSTILE = {
    "a count past 2**53": (True, _huge_count, "does not match its seal"),
    "an infinite schema": (True, lambda d: d.update(schema_version=float("inf")), "its seal"),
    "no plan_id, unsealed": (False, lambda d: d.pop("plan_id"), "not a saved plan (no 'plan_id')"),
    "a rule that is a list, unsealed": (
        False,
        lambda d: d.update(rules=[["logs"]]),
        "not a saved plan (a field of the wrong type)",
    ),
    "children that are a list, unsealed": (
        False,
        lambda d: d["rules"][0].update(children=[1]),  # type: ignore[index]
        "not a saved plan (a field of the wrong type)",
    ),
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
def test_a_hostile_plan_file_is_refused_with_a_message_not_a_traceback(
    tmp_path: Path, hostile: str
) -> None:
    """Edits that broke the loader: canonical JSON raised on a huge count (a traceback, exit
    1), a list for a rule said 'list indices must be integers', a missing field '(plan_id)'."""
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    sealed, edit, message = HOSTILE[hostile]
    if sealed:
        config = _setup(tmp_path, url)
    else:
        create_logs(url, {key: datetime(2020, 1, 1) for key in DUE})
        config = tmp_path / "retention.toml"
        config.write_text(config_text(url, logs_rule()))
    saved = tmp_path / "plan.json"
    document = _save(config, saved)
    edit(document)
    saved.write_text(json.dumps(document))

    refused = _cli(config, "run", "--yes", "--plan-file", str(saved))

    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert message in refused.stderr
    assert _remaining(url) >= DUE


@pytest.mark.parametrize(
    ("text", "message"),
    [("[]", "not a JSON object"), ("[" * 100_000, "nested too deep"), ("{", "not a saved plan")],
)
def test_a_plan_file_that_is_no_plan_at_all_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    url = f"sqlite:///{tmp_path / 'data.sqlite'}"
    config = _setup(tmp_path, url)
    saved = tmp_path / "plan.json"
    saved.write_text(text)

    refused = _cli(config, "run", "--yes", "--plan-file", str(saved))

    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert message in refused.stderr
