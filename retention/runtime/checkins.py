"""Monitoring check-ins, as borgmatic's monitoring hooks do: a GET to the ``[checkins]`` URL for
the event when a run starts, succeeds or fails (healthchecks.io's ``/start`` and ``/fail``, Uptime
Kuma's push URL with ``?status=up``/``down``, Cronitor's ``?state=run|complete|fail``).

A ping never blocks or fails a purge: it is sent from a thread of its own, with the configured
timeout; the end of a one-off run waits for its pings at most that long. A ping that fails is
logged with the URL's scheme and host only: the rest of a check-in URL is its secret token.
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from retention.config import CheckinSettings

Event = Literal["start", "success", "fail"]


class Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class Checkins:
    """The pings of one run (a `retention run`, or one of the daemon's jobs)."""

    def __init__(self, settings: CheckinSettings, log: Logger, *, enabled: bool = True) -> None:
        self.settings = settings
        self.log = log
        # A dry run purges nothing: it checks in nowhere.
        self.enabled = enabled
        self._threads: list[threading.Thread] = []
        self._ended = False

    def ping(self, event: Event) -> None:
        """Given an event, ping its URL (if configured) from a thread; return at once."""
        url = getattr(self.settings, event)
        if url is None or not self.enabled:
            return
        thread = threading.Thread(
            target=self._send, args=(event, url), name=f"checkin-{event}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def finished(self, succeeded: bool) -> None:
        """Given how the run ended, ping ``success`` or ``fail`` (once: the first call wins)."""
        if not self._ended:
            self._ended = True
            self.ping("success" if succeeded else "fail")

    def wait(self) -> None:
        """Wait for the pings sent, each at most the timeout (a one-off run, before it exits)."""
        for thread in self._threads:
            thread.join(self.settings.timeout.total_seconds())
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def _send(self, event: Event, url: str) -> None:
        # Imported where a ping is sent: a run without check-ins (most) need not load the
        # HTTP client, nor read the package's version.
        import urllib.error
        import urllib.request

        from retention import __version__

        where = _public_part(url)
        # The scheme is checked when the config is read: http(s) only.
        request = urllib.request.Request(  # noqa: S310
            url, headers={"User-Agent": f"retention/{__version__}"}, method="GET"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.settings.timeout.total_seconds()
            ) as response:
                response.read(1024)
        except urllib.error.HTTPError as error:
            self.log.warning("checkin.failed", checkin=event, to=where, error=f"HTTP {error.code}")
        except (OSError, ValueError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            self.log.warning("checkin.failed", checkin=event, to=where, error=_error_text(reason))
        else:
            self.log.info("checkin.sent", checkin=event, to=where)


def _public_part(url: str) -> str:
    """Given a check-in URL, return what can be logged: its scheme, host and port."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _error_text(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__
