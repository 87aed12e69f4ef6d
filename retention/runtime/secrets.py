"""Secrets come from files or the service manager's credentials, never from the TOML."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from retention.config import (
    Settings,
    SqlStoreConfig,
    StateSettings,
    read_within,
    resolve_sqlite_url,
)
from retention.errors import ConfigError, ConfigIssue

MINIMUM_KEY_BYTES = 16


def credential_path(name: str, key_path: str) -> Path:
    """Given a credential name, return its file in $CREDENTIALS_DIRECTORY (systemd's
    LoadCredential=); raise ConfigError naming ``key_path`` when that is not set."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            [ConfigIssue(key_path, f"credential {name!r} needs $CREDENTIALS_DIRECTORY to be set")]
        )
    return Path(directory) / name


def read_hash_key(settings: Settings) -> bytes | None:
    """Given the settings, return the secret hash key, or None when none is configured."""
    return read_secret(
        settings.hash_key_file,
        settings.hash_key_credential,
        "settings.hash_key_file",
        "settings.hash_key_credential",
    )


def secret_path(file: Path | None, credential: str | None, credential_key_path: str) -> Path | None:
    """Given a configured file or credential name, return where the secret is."""
    if credential:
        return credential_path(credential, credential_key_path)
    return file


# A key is a few dozen bytes; past this the file is something else (/dev/urandom never ends).
LONGEST_KEY_FILE_BYTES = 64 * 1024


def _issue_at(key_path: str) -> Callable[[str], ConfigError]:
    return lambda message: ConfigError([ConfigIssue(key_path, message)])


def read_secret(
    file: Path | None, credential: str | None, file_key_path: str, credential_key_path: str
) -> bytes | None:
    """Given a configured file or credential name, return the secret (stripped), or None when
    neither is configured; raise ConfigError naming the key path when it cannot be read."""
    path = secret_path(file, credential, credential_key_path)
    if path is None:
        return None
    key_path = credential_key_path if credential else file_key_path
    content = read_within(path, LONGEST_KEY_FILE_BYTES, "a key", _issue_at(key_path))
    key = content.strip()
    if len(key) < MINIMUM_KEY_BYTES:
        raise ConfigError(
            [
                ConfigIssue(
                    key_path, f"the key in {str(path)!r} is shorter than {MINIMUM_KEY_BYTES} bytes"
                )
            ]
        )
    return key


def write_new_key(path: Path) -> bool:
    """Given a path, create a random 32-byte key there (hex, mode 0600) unless one exists;
    return whether a key was written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(os.urandom(32).hex() + "\n")
    return True


DEFAULT_STATE_FILE = Path("var") / "state.sqlite"


def state_url(state: StateSettings) -> str:
    """Given the [state] settings, return the state database URL (default: the SQLite file
    var/state.sqlite in the config file's folder, whatever the working directory)."""
    if state.url or state.url_env or state.url_credential:
        return resolve_url(state, "state")
    if os.environ.get("STATE_DIRECTORY"):
        # Under systemd's StateDirectory=, the default used to be $STATE_DIRECTORY/state.sqlite,
        # which an admin's shell never sees: a hold placed from there went to another database.
        # Quietly moving the service to a new, empty database would drop its holds: refuse.
        service_directory = Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        raise ConfigError(
            [
                ConfigIssue(
                    "state",
                    "missing, and $STATE_DIRECTORY is set: name the state database so that "
                    "every process using this config finds the same one, e.g. "
                    f'url = "sqlite:///{service_directory / "state.sqlite"}"',
                )
            ]
        )
    return f"sqlite:///{(state.base_directory or Path.cwd()) / DEFAULT_STATE_FILE}"


def store_url(store: SqlStoreConfig) -> str:
    """Given a SQL store's config, return its database URL from the TOML, the environment or a
    credential file."""
    return resolve_url(store, f"stores.{store.name}")


def resolve_url(store: SqlStoreConfig | StateSettings, key_path: str) -> str:
    """Given settings with url / url_env / url_credential, return the URL they lead to."""
    if store.url:
        return store.url
    if store.url_env:
        value = os.environ.get(store.url_env)
        if not value:
            raise ConfigError(
                [
                    ConfigIssue(
                        f"{key_path}.url_env", f"environment variable {store.url_env} is not set"
                    )
                ]
            )
        return resolve_sqlite_url(value, store.base_directory)
    assert store.url_credential is not None
    path = credential_path(store.url_credential, f"{key_path}.url_credential")
    issue_path = f"{key_path}.url_credential"
    content = read_within(path, LONGEST_KEY_FILE_BYTES, "a URL", _issue_at(issue_path))
    try:
        url = content.decode().strip()
    except UnicodeDecodeError as error:
        raise ConfigError([ConfigIssue(issue_path, f"{str(path)!r} is not UTF-8")]) from error
    return resolve_sqlite_url(url, store.base_directory)
