"""retention: enforce data-retention periods on databases, object stores and backup folders."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("retention")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
