"""Reaching an S3-compatible store: the botocore session and clients, and S3's errors turned
into the project's (one line each, never quoting a key or a value)."""

from __future__ import annotations

import configparser
import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote, quote_plus

import botocore.loaders  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
from botocore.utils import parse_timestamp  # type: ignore[import-untyped]

from retention.config import S3StoreConfig
from retention.errors import (
    ConfigError,
    ConfigIssue,
    RetentionError,
    StoreUnavailable,
    without_values,
)
from retention.runtime.secrets import secret_path

NULL_VERSION = "null"
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
PING_ATTEMPTS = 3
GONE_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})
CONNECTION_ERRORS = (
    boto_errors.EndpointConnectionError,
    boto_errors.ConnectionError,
    boto_errors.HTTPClientError,
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
    boto_errors.CredentialRetrievalError,
)
ClientError = boto_errors.ClientError


def s3_clients(config: S3StoreConfig) -> tuple[Callable[[], Any], Any]:
    """Given an S3 store's config, return a function that makes its client, and the client of
    its ping (the same, with a short retry schedule). The ping's client is made now, so that a
    config botocore refuses fails here; the store's own client when first used: `config
    validate` only pings, and each client costs milliseconds of start-up (docs/performance.md).
    """
    session = s3_session(config)
    client_config = BotoConfig(
        region_name=config.region,
        s3={"addressing_style": config.addressing_style},
        # total_max_attempts counts the first attempt, as max_attempts does in the config;
        # botocore's own max_attempts would count retries only.
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        max_pool_connections=max(10, config.max_concurrency + 2),
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    # A store that cannot be reached at all should say so in seconds, not after a full retry
    # schedule: ping has its own short one.
    ping_config = client_config.merge(
        BotoConfig(
            retries={
                "mode": "standard",
                "total_max_attempts": min(PING_ATTEMPTS, config.max_attempts),
            }
        )
    )

    def client_of(client_config: Any) -> Any:
        try:
            return session.create_client(
                "s3", endpoint_url=config.endpoint_url, config=client_config
            )
        except ValueError as error:
            raise ConfigError(
                [ConfigIssue(f"stores.{config.name}", f"cannot make an S3 client: {error}")]
            ) from error

    ping_client = client_of(ping_config)
    return functools.partial(client_of, client_config), ping_client


def s3_session(config: S3StoreConfig) -> Any:
    """A botocore session: the credentials file when one is configured, else botocore's own
    chain (environment, shared files, instance role)."""
    key_path = f"stores.{config.name}.credentials_credential"
    path = secret_path(config.credentials_file, config.credentials_credential, key_path)
    if path is None:
        try:
            return _session(profile=config.profile)
        except boto_errors.ProfileNotFound as error:
            raise ConfigError(
                [ConfigIssue(f"stores.{config.name}.profile", f"no such AWS profile: {error}")]
            ) from error
    where = key_path if config.credentials_credential else f"stores.{config.name}.credentials_file"
    section = config.profile or "default"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(
            [ConfigIssue(where, f"cannot read {str(path)!r}: {error.strerror}")]
        ) from error
    except configparser.Error as error:
        # The parser's message can quote a line of the file: never show it (a secret).
        raise ConfigError(
            [ConfigIssue(where, f"{str(path)!r} is not a shared-credentials (INI) file")]
        ) from error
    if not parser.has_section(section):
        raise ConfigError([ConfigIssue(where, f"{str(path)!r} has no [{section}] section")])
    values = parser[section]
    missing = [
        name for name in ("aws_access_key_id", "aws_secret_access_key") if not values.get(name)
    ]
    if missing:
        raise ConfigError(
            [ConfigIssue(where, f"[{section}] in {str(path)!r} lacks {', '.join(missing)}")]
        )
    return _session(
        credentials=(
            values["aws_access_key_id"].strip(),
            values["aws_secret_access_key"].strip(),
            (values.get("aws_session_token") or "").strip() or None,
        )
    )


def _session(
    *, profile: str | None = None, credentials: tuple[str, str, str | None] | None = None
) -> Any:
    """A botocore session (with ``profile``, or these access key, secret and token) whose
    clients read S3's timestamps with ``timestamp_of`` and share the process's data loader."""
    core = botocore.session.get_session()
    core.lazy_register_component(
        "data_loader", lambda: _data_loader(core.get_config_variable("data_path"))
    )
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=timestamp_of)
    if profile is not None:
        core.set_config_variable("profile", profile)
    if credentials is not None:
        core.set_credentials(*credentials)
    return core


@functools.cache
def _data_loader(data_path: str | None) -> Any:
    """Given botocore's data path (AWS_DATA_PATH), return the one loader of S3's service model
    and endpoint rules that every S3 store's session shares: it caches what it parsed, so a
    second store's clients do not parse the same JSON files again (docs/performance.md,
    start-up)."""
    if data_path is None:
        return _S3Loader()
    # As botocore.loaders.create_loader reads the data path.
    paths = [os.path.expanduser(os.path.expandvars(path)) for path in data_path.split(os.pathsep)]
    return _S3Loader(extra_search_paths=paths)


class _DictJSONFileLoader(botocore.loaders.JSONFileLoader):  # type: ignore[misc]
    """botocore's JSON file loader, reading into dicts where botocore's reads into OrderedDicts:
    the same data in the same order (a dict keeps its keys' order), and botocore asks no more
    of it; S3's service model and endpoints.json parse in about half the time (together some
    15 ms of CPU of the S3 half of `config validate` here, performance-history.md)."""

    def _load_file(self, full_path: str, open_method: Callable[..., Any]) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as handle:
            payload = handle.read().decode("utf-8")
        return json.loads(payload)


class _S3Loader(botocore.loaders.Loader):  # type: ignore[misc]
    """botocore's loader, which knows S3 alone among the services: only S3 clients are made
    here. botocore asks which services have a model of a kind before it loads S3's; its own
    answer lists every service's folders (some 450 of them, a directory listing and a few
    stats each, twice: the service model and the endpoint rules), about a twentieth of the S3
    half of `config validate` (performance-history.md, validate's fourth pass). S3 is listed
    when one of its API versions has a model of that kind, as botocore would list it."""

    FILE_LOADER_CLASS = _DictJSONFileLoader

    @botocore.loaders.instance_cache  # type: ignore[untyped-decorator]
    def list_available_services(self, type_name: str) -> list[str]:
        try:
            self.list_api_versions("s3", type_name)
        except boto_errors.DataNotFoundError:
            return []
        return ["s3"]


def timestamp_of(value: Any) -> datetime:
    """Given a timestamp of an S3 response, return the datetime botocore's own parser would: an
    ISO 8601 one with its offset (every LastModified of a listing) by the standard library, in
    about a third of the time; any other form by botocore's parser.

    >>> timestamp_of("2026-12-03T03:59:06.000Z").isoformat()
    '2026-12-03T03:59:06+00:00'
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    return parse_timestamp(value)  # type: ignore[no-any-return]


@contextmanager
def reachable(where: str, doing: str) -> Iterator[None]:
    """Turn network and credential failures into StoreUnavailable and S3's refusals into
    RetentionError: one line each, the S3 error code first; ``where`` names the store."""
    try:
        yield
    except CONNECTION_ERRORS as error:
        raise StoreUnavailable(f"{where} is unreachable: {first_line(error)}") from error
    except boto_errors.ClientError as error:
        code, message = error_of(error)
        raise RetentionError(f"{where}: {doing}: S3 refused: {code} ({message})") from error
    except boto_errors.BotoCoreError as error:
        raise RetentionError(f"{where}: {doing}: {first_line(error)}") from error


def ping(ping_client: Any, bucket: str, where: str) -> None:
    """Raise StoreUnavailable, saying why in one line, unless the bucket answers HeadBucket
    with these credentials."""
    try:
        ping_client.head_bucket(Bucket=bucket)
    except boto_errors.NoCredentialsError as error:
        raise StoreUnavailable(
            f"{where}: no credentials found (environment, shared files, instance "
            "role, or credentials_file / credentials_credential)"
        ) from error
    except CONNECTION_ERRORS as error:
        raise StoreUnavailable(f"{where} is unreachable: {first_line(error)}") from error
    except boto_errors.ClientError as error:
        code, message = error_of(error)
        reason = {
            "404": "no such bucket",
            "NoSuchBucket": "no such bucket",
            "403": "access denied (check the credentials and the bucket policy)",
            "AccessDenied": "access denied (check the credentials and the bucket policy)",
            "301": "the bucket is in another region (set region)",
            "PermanentRedirect": "the bucket is in another region (set region)",
        }.get(code, f"S3 refused: {code} ({message})")
        raise StoreUnavailable(f"{where}: {reason}") from error
    except boto_errors.BotoCoreError as error:
        raise StoreUnavailable(f"{where}: {first_line(error)}") from error


def version_arguments(bucket: str, key: str, version_id: str) -> dict[str, str]:
    """The arguments of a HeadObject on one version."""
    arguments = {"Bucket": bucket, "Key": key}
    # Some servers (moto among them) refuse versionId=null on HEAD of unversioned objects.
    if version_id != NULL_VERSION:
        arguments["VersionId"] = version_id
    return arguments


def error_of(error: Any) -> tuple[str, str]:
    """A ClientError's S3 code and its message, shortened and without values."""
    details = error.response.get("Error", {}) if hasattr(error, "response") else {}
    code = str(details.get("Code") or "?")
    return code, short(str(details.get("Message") or ""))


def short(message: str, key: str = "") -> str:
    """A message of S3 or botocore, which can quote a key or a parameter's value, without
    values and at most 200 characters long; ``key``, the object's key when the message is
    about one, is left out wherever the message spells it (whole, URL-encoded, or any of its
    /-separated parts), quoted or not: a key can name a person.

    Example: ``short("The object a/jane doe.csv is archived", "a/jane doe.csv")`` returns
    ``"The object … is archived"``.
    """
    if key:
        parts = {key, *key.split("/")}
        spellings = {spelled for part in parts for spelled in (part, quote(part), quote_plus(part))}
        for spelling in sorted(
            (part for part in spellings if len(part) > 2), key=len, reverse=True
        ):
            message = message.replace(spelling, "…")
    return without_values(message)[:200]


def first_line(error: Exception) -> str:
    return short(str(error)) or type(error).__name__
