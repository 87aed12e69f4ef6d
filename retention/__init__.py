"""retention: enforce data-retention periods on databases, object stores and backup folders."""

from __future__ import annotations

import functools


def __getattr__(name: str) -> str:
    # The version is read on first use: importlib.metadata costs `retention --help` 20 ms.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'retention' has no attribute {name!r}")


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retention")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"
