"""Opening the trail for writing: the audit keys from the settings, a signing key auditors can
check, and who is writing."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import retention
from retention.audit.keys import AuditKeyError, load_public_keys, load_signer
from retention.config import AuditSettings
from retention.errors import AuditFailure, ConfigError, ConfigIssue
from retention.runtime.logging import get_logger
from retention.runtime.secrets import read_secret, secret_path

if TYPE_CHECKING:
    from retention.audit.trail import TrailWriter


def identity() -> dict[str, str]:
    """Who is running: tool version, host name and user (for the auditor's "who/what ran it")."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {
        "tool": f"retention {retention.__version__}",
        "host": socket.gethostname(),
        "user": user,
    }


def audit_keys(settings: AuditSettings) -> tuple[bytes, Any]:
    """Given the audit settings, return the HMAC key and the signer; ConfigError if missing."""
    hmac_key = read_secret(
        settings.hmac_key_file,
        settings.hmac_key_credential,
        "audit.hmac_key_file",
        "audit.hmac_key_credential",
    )
    signing_path = secret_path(
        settings.signing_key_file, settings.signing_key_credential, "audit.signing_key_credential"
    )
    if hmac_key is None or signing_path is None:
        raise ConfigError([ConfigIssue("audit", "the audit keys are not configured")])
    if not signing_path.exists():
        raise ConfigError(
            [
                ConfigIssue(
                    "audit.signing_key_file",
                    f"{str(signing_path)!r} does not exist (create keys: retention audit keygen)",
                )
            ]
        )
    return hmac_key, load_signer(signing_path)


@contextmanager
def open_trail(settings: AuditSettings, clock: Callable[[], datetime]) -> Iterator[TrailWriter]:
    """Open the trail for writing; refuse (AuditFailure) a signing key that auditors could not
    verify: missing from the public key file, or outside its validity window."""
    # Imported here: `config validate` reads the audit keys (audit_keys) and writes no trail.
    from retention.audit.trail import TrailWriter

    hmac_key, signer = audit_keys(settings)
    now = clock()
    try:
        published = load_public_keys(settings.public_keys_file)
    except AuditKeyError as error:
        raise AuditFailure(f"{error}: create keys with `retention audit keygen`") from error
    if not any(key.key_id == signer.key_id and key.covers(now) for key in published):
        raise AuditFailure(
            f"signing key {signer.key_id} is not valid now in {settings.public_keys_file}: "
            "its checkpoints would not verify (rotate with `retention audit keygen --rotate`)"
        )
    with TrailWriter(settings.directory, hmac_key, signer, clock) as writer:
        if writer.recovered_bytes:
            # Never acknowledged, so nothing acted on it; but the operator hears of the crash.
            get_logger().warning(
                "audit.torn_write_dropped",
                bytes=writer.recovered_bytes,
                note="the last line of the trail was cut by a crash or a full disk",
            )
        yield writer
