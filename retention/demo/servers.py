"""Whose local S3 server the demo may fill: the one this checkout's scripts/demo-s3 started, or one
the user says is theirs (`retention demo --s3-endpoint-is-mine`).

A local server that answers is not necessarily this demo's: another checkout's `make demo` may
have started it on the same port. Its buckets are that demo's, and a run of this demo's rules
there would empty them. scripts/demo-s3 records the server it starts in the checkout's var/
(its pid and port); `retention demo` trusts a server only when that record names it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from retention.config import Config, S3StoreConfig
from retention.demo.objects import _LOCAL_HOSTS, _unreachable

# Written by scripts/demo-s3 start, relative to the checkout (keep the two in step).
PID_RECORD = Path("var/demo-s3.pid")
PORT_RECORD = Path("var/demo-s3.port")


def checkout_of(config_path: Path) -> Path:
    """Given the config file, return the folder that holds the config's folder: for the shipped
    ``config/retention.toml``, the checkout, where scripts/demo-s3 keeps its records in var/.
    Example: ``checkout_of(Path("/src/retention/config/retention.toml"))`` is
    ``Path("/src/retention")``."""
    return config_path.resolve().parent.parent


def started_by_checkout(checkout: Path, port: int) -> bool:
    """Given a checkout and a port, return whether the server on that port is the one the
    checkout's scripts/demo-s3 started: its var/ records name that port and a pid that is still
    a moto server running in the checkout (the same test as `scripts/demo-s3 status`). Without
    /proc (not Linux), nothing can be checked: False."""
    try:
        recorded_port = (checkout / PORT_RECORD).read_text().strip()
        pid = (checkout / PID_RECORD).read_text().strip()
    except OSError:
        return False
    if recorded_port != str(port) or not pid.isdigit():
        return False
    process = Path("/proc") / pid
    try:
        command_line = (process / "cmdline").read_bytes()
        directory = os.readlink(process / "cwd")
    except OSError:
        return False
    return b"moto_server" in command_line and Path(directory) == checkout.resolve()


def foreign_s3_endpoints(config: Config, checkout: Path) -> list[str]:
    """Given the config and its checkout, return the endpoints (in config order, once each) that
    `retention demo` would fill but that the checkout's scripts/demo-s3 did not start: the
    local endpoints (127.0.0.1, localhost) of the S3 stores the object rules name, where
    something answers. Remote endpoints and silent ones are not listed: the demo leaves their
    buckets alone anyway."""
    stores = {rule.store for rule in config.rules if rule.objects is not None}
    foreign: list[str] = []
    for name, store in config.stores.items():
        if name not in stores or not isinstance(store, S3StoreConfig):
            continue
        endpoint = store.endpoint_url
        if endpoint is None or endpoint in foreign:
            continue
        parts = urlsplit(endpoint)
        if parts.hostname not in _LOCAL_HOSTS or _unreachable(endpoint) is not None:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not started_by_checkout(checkout, port):
            foreign.append(endpoint)
    return foreign
