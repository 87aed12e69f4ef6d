"""Audit keys: an Ed25519 signing key (checkpoints), an HMAC key (record locators), and the public
key file auditors verify with. Public keys carry validity windows so that keys can rotate: a
checkpoint signed outside its key's window does not verify."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from retention.audit.entries import parse_json
from retention.config import read_at_most, read_within
from retention.errors import ExitCode, RetentionError


class AuditKeyError(RetentionError):
    """A key file is missing, unreadable or malformed: a configuration problem."""

    exit_code = ExitCode.BAD_CONFIG


@dataclass(frozen=True)
class PublicKey:
    """A verification key and the window in which its signatures are valid."""

    key_id: str
    raw: bytes
    not_before: datetime
    not_after: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return self.not_before <= moment and (self.not_after is None or moment < self.not_after)

    def verify(self, signature: bytes, payload: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, payload)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private signing key and its id (the first 16 hex digits of SHA-256 of the public key)."""

    private: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_raw)

    def sign(self, payload: bytes) -> bytes:
        return self.private.sign(payload)


def key_id_of(public_raw: bytes) -> str:
    """Given a raw Ed25519 public key, return its key id: 16 hex digits."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)


def generate_signer(path: Path) -> Signer:
    """Given a path that does not exist yet, write a new Ed25519 private key there (PEM, 0600)."""
    private = Ed25519PrivateKey.generate()
    _write_private(
        path,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return Signer(private)


def generate_hmac_key(path: Path) -> None:
    """Given a path that does not exist yet, write a new random 32-byte HMAC key (hex, 0600)."""
    _write_private(path, (os.urandom(32).hex() + "\n").encode())


# Past these sizes a file is not what it was named for: /dev/zero or /dev/urandom never ends. A
# PEM key is a few hundred bytes; a public key entry as many, one more per rotation.
LONGEST_SIGNING_KEY_BYTES = 64 * 1024
LONGEST_PUBLIC_KEYS_BYTES = 16 * 2**20


def load_signer(path: Path) -> Signer:
    content = read_within(
        path,
        LONGEST_SIGNING_KEY_BYTES,
        "a key",
        lambda message: AuditKeyError(f"the signing key: {message}"),
    )
    try:
        private = serialization.load_pem_private_key(content, password=None)
    except ValueError as error:
        raise AuditKeyError(f"{str(path)!r} is not a PEM private key") from error
    if not isinstance(private, Ed25519PrivateKey):
        raise AuditKeyError(f"{str(path)!r} is not an Ed25519 key")
    return Signer(private)


PUBLIC_KEY_FIELDS = ("key_id", "public_key", "not_before", "not_after")


def _public_key(item: object, number: int) -> PublicKey:
    """Given one item of the file's ``keys`` list and its position, return the key; ValueError
    when a field is missing or unknown: a misspelled ``not_after`` must not reopen a window."""
    if not isinstance(item, dict):
        raise ValueError(f"keys[{number}] is not an object")
    unknown = sorted(set(item) - set(PUBLIC_KEY_FIELDS))
    missing = [name for name in PUBLIC_KEY_FIELDS if name not in item]
    if unknown or missing:
        raise ValueError(
            f"keys[{number}] has unknown fields {unknown} / lacks {missing}: each key has exactly "
            f"{', '.join(PUBLIC_KEY_FIELDS)} (not_after null while the key is open)"
        )
    not_after = item["not_after"]
    return PublicKey(
        key_id=item["key_id"],
        raw=base64.b64decode(item["public_key"], validate=True),
        not_before=datetime.fromisoformat(item["not_before"]),
        not_after=None if not_after is None else datetime.fromisoformat(not_after),
    )


def load_public_keys(path: Path) -> tuple[PublicKey, ...]:
    """Given the public key file, return its keys; raise AuditKeyError when it cannot be read,
    or has a field it does not know or lacks one."""
    try:
        content = read_at_most(path, LONGEST_PUBLIC_KEYS_BYTES)
        if content is None:
            raise ValueError(f"longer than {LONGEST_PUBLIC_KEYS_BYTES // 2**20} MiB")
        document = parse_json(content)
        if not isinstance(document, dict) or set(document) != {"keys"}:
            raise ValueError('the file must be an object with one field, "keys"')
        if not isinstance(document["keys"], list):
            raise ValueError('"keys" is not a list')
        return tuple(_public_key(item, number) for number, item in enumerate(document["keys"]))
    except OSError as error:
        raise AuditKeyError(
            f"cannot read the public keys {str(path)!r}: {error.strerror}"
        ) from error
    except (ValueError, KeyError, TypeError) as error:
        raise AuditKeyError(f"{str(path)!r} is not a public key file: {error}") from error


def save_public_keys(path: Path, keys: tuple[PublicKey, ...]) -> None:
    document = {
        "keys": [
            {
                "key_id": key.key_id,
                "public_key": base64.b64encode(key.raw).decode(),
                "not_before": key.not_before.isoformat(),
                "not_after": key.not_after.isoformat() if key.not_after else None,
            }
            for key in keys
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def add_public_key(path: Path, signer: Signer, now: datetime) -> tuple[PublicKey, ...]:
    """Given the public key file, a new signer and the time, add the signer's key (valid from now)
    and close the window of every key still open; return the keys now in the file."""
    existing = load_public_keys(path) if path.exists() else ()
    closed = tuple(
        key if key.not_after is not None else PublicKey(key.key_id, key.raw, key.not_before, now)
        for key in existing
    )
    keys = (*closed, PublicKey(signer.key_id, signer.public_raw, now))
    save_public_keys(path, keys)
    return keys
