"""docs/operations.md's install steps, run as written: scripts/install into a scratch root
(DESTDIR), then the installed unit, config and credentials agree, the unit verifies, and the
config validates as the service would see it (its credentials handed over as LoadCredential=
would)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from retention.config import load_config
from retention.config.compile import json_schema
from retention.wording import counted

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install"
PROGRAM = Path(sys.executable).parent / "retention"
UNIT = "etc/systemd/system/retention.service"


def install(destdir: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "DESTDIR": str(destdir), "RETENTION_PROGRAM": str(PROGRAM)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def credentials_loaded(unit: str) -> dict[str, str]:
    """The unit's LoadCredential= lines: credential id -> source file."""
    return dict(re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", unit, flags=re.MULTILINE))


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_install_script_puts_everything_in_place_and_keeps_what_is_there(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    install(root)
    etc = root / "etc" / "retention"
    assert mode(etc / "retention.toml") == 0o644
    assert mode(etc / "retention.env") == 0o600
    assert mode(etc / "audit-public-keys.json") == 0o644
    # The config's #:schema line names the schema the program wrote beside it (for editors).
    assert (etc / "retention.toml").read_text().startswith("#:schema ./retention.schema.json\n")
    assert mode(etc / "retention.schema.json") == 0o644
    assert json.loads((etc / "retention.schema.json").read_text()) == json_schema()
    assert mode(etc / "credentials") == 0o700
    for secret in ("hash-key", "audit-hmac-key", "audit-signing-key.pem"):
        assert mode(etc / "credentials" / secret) == 0o600
    assert len((etc / "credentials" / "hash-key").read_text()) == 64
    unit = (root / UNIT).read_text()
    # Documentation= names files that are installed.
    documentation = re.findall(r"^Documentation=file://(\S+)$", unit, flags=re.MULTILINE)
    assert documentation
    assert all((root / path.lstrip("/")).is_file() for path in documentation)

    # Again: the program is reinstalled, the config and the keys are kept.
    (etc / "retention.toml").write_text("# edited\n")
    key = (etc / "credentials" / "audit-signing-key.pem").read_bytes()
    again = install(root)
    assert "kept /etc/retention/retention.toml" in again.stdout
    assert (etc / "retention.toml").read_text() == "# edited\n"
    assert (etc / "credentials" / "audit-signing-key.pem").read_bytes() == key


def test_the_install_script_puts_retention_on_the_path_the_docs_type_it_from(
    tmp_path: Path,
) -> None:
    """deploy/systemd/README.md and operations.md have the admin type `retention status`,
    `retention hold add`: the script links /usr/local/bin/retention to the program (it once
    left it in /opt/retention/venv/bin alone: `retention: command not found`), and keeps
    another `retention` found there."""
    root = tmp_path / "root"
    result = install(root)
    link = root / "usr" / "local" / "bin" / "retention"
    assert link.is_symlink()
    assert os.readlink(link) == "/opt/retention/venv/bin/retention"
    assert "linked /usr/local/bin/retention to /opt/retention/venv/bin/retention" in result.stdout
    guide = (ROOT / "deploy" / "systemd" / "README.md").read_text()
    assert "retention --config /etc/retention/retention.toml status" in guide

    other = tmp_path / "other"
    (other / "usr" / "local" / "bin").mkdir(parents=True)
    (other / "usr" / "local" / "bin" / "retention").write_text("#!/bin/sh\n")
    kept = install(other)
    assert (other / "usr" / "local" / "bin" / "retention").read_text() == "#!/bin/sh\n"
    assert "kept /usr/local/bin/retention, which is not a link" in kept.stdout


def test_the_installed_unit_loads_exactly_the_credentials_the_config_names_and_it_validates(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    install(root)
    etc = root / "etc" / "retention"
    # Step 2 of the docs: the database URL (here a SQLite database with the example's table).
    database = tmp_path / "app.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TABLE connection_logs (id INTEGER PRIMARY KEY, logged_at TIMESTAMP)"
        )
    (etc / "credentials" / "app-db-url").write_text(f"sqlite:///{database}")

    config_text = (etc / "retention.toml").read_text()
    named = set(re.findall(r'^\w+_credential = "([^"]+)"', config_text, flags=re.MULTILINE))
    loaded = credentials_loaded((root / UNIT).read_text())
    assert set(loaded) == named
    # What systemd does with LoadCredential=: each file, under its id, in $CREDENTIALS_DIRECTORY.
    handed = tmp_path / "credentials"
    handed.mkdir()
    for name, source in loaded.items():
        shutil.copyfile(root / source.lstrip("/"), handed / name)
    state = tmp_path / "var" / "lib" / "retention"
    state.mkdir(parents=True)
    seen_by_service = tmp_path / "retention.toml"
    seen_by_service.write_text(
        config_text.replace("/var/lib/retention", str(state)).replace("/etc/retention", str(etc))
    )
    result = subprocess.run(
        [str(PROGRAM), "--config", str(seen_by_service), "config", "validate"],
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(handed), "STATE_DIRECTORY": str(state)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_admin_places_a_hold_on_the_installed_config_with_its_credentials_by_id(
    tmp_path: Path,
) -> None:
    """operations.md, Day to day: from a root shell, `hold add` on the installed config needs
    the credentials it names (exit 78 without), given as a folder of links under their ids."""
    root = tmp_path / "root"
    install(root)
    etc = root / "etc" / "retention"
    database = tmp_path / "app.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TABLE connection_logs (id INTEGER PRIMARY KEY, logged_at TIMESTAMP)"
        )
    (etc / "credentials" / "app-db-url").write_text(f"sqlite:///{database}")
    state = tmp_path / "var" / "lib" / "retention"
    state.mkdir(parents=True)
    config = tmp_path / "retention.toml"
    config.write_text(
        (etc / "retention.toml")
        .read_text()
        .replace("/var/lib/retention", str(state))
        .replace("/etc/retention", str(etc))
    )
    operations = (ROOT / "docs" / "operations.md").read_text()
    recipe = operations.split("## Day to day")[1].split("```sh\n")[2].split("```")[0]
    folder = tmp_path / "run" / "retention-admin"
    script = recipe.replace("/run/retention-admin", str(folder)).replace("/etc/retention", str(etc))
    hold = ["hold", "add", "--rule", "connection-logs", "--key", "1", "--reason", "case 1"]
    environment = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}

    refused = subprocess.run(
        [str(PROGRAM), "--config", str(config), *hold],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert "needs $CREDENTIALS_DIRECTORY to be set" in refused.stderr

    links = "\n".join(line for line in script.splitlines() if not line.startswith("CREDENTIALS"))
    subprocess.run(["bash", "-euc", links], check=True)
    assert folder.stat().st_mode & 0o777 == 0o700
    placed = subprocess.run(
        [str(PROGRAM), "--config", str(config), *hold],
        env={**environment, "CREDENTIALS_DIRECTORY": str(folder)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert placed.returncode == 0, placed.stdout + placed.stderr
    assert "hold 1 on rule connection-logs" in placed.stdout


def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip(
            "systemd-analyze is not installed here (Debian/Ubuntu: apt-get install systemd); "
            "the installed unit is not checked"
        )
    root = tmp_path / "root"
    install(root)
    # The unit as installed names /opt/retention/...: verify it where the staged tree is.
    unit = tmp_path / "retention.service"
    unit.write_text((root / UNIT).read_text().replace("/opt/retention", f"{root}/opt/retention"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "retention.service" not in result.stderr, result.stderr


def test_the_docs_install_with_the_script_and_say_the_status_the_example_config_gives() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    install_section = operations.split("## Install\n")[1].split("\n## ")[0]
    assert "scripts/install" in install_section
    example = load_config(ROOT / "deploy" / "systemd" / "retention.toml.example")
    expected = f"{counted(len(example.rules), 'rule')} scheduled ({example.daemon.timezone.key})"
    for text in (operations, (ROOT / "deploy" / "systemd" / "README.md").read_text()):
        statuses = re.findall(r"(\d+ rules? scheduled \([^)]+\))", text)
        assert statuses
        assert set(statuses) == {expected}
