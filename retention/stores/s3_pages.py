"""List requests sent one page ahead: a listing's next request goes out as soon as its arguments
can be read from the raw response, while botocore still parses this page (about a fifth of a
page's time on moto, a tenth of it on S3), so that the server is never left waiting for the
client between pages.

The next page's arguments are read twice: from the raw XML, to send the request early, and from
the parsed response, as before. The early request is used only when both agree; otherwise it is
dropped and the request sent again. At most one page is fetched ahead of the listing's reader.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_plus

Arguments = dict[str, Any]
# Given a request's arguments and the fields of its response that say where the listing goes
# on, return the next request's arguments (None: that was the last page).
NextArguments = Callable[[Arguments, Mapping[str, Any]], "Arguments | None"]


def next_object_arguments(arguments: Arguments, response: Mapping[str, Any]) -> Arguments | None:
    """ListObjectsV2: the same request with the response's continuation token.

    >>> next_object_arguments({"Prefix": "a/"}, {"IsTruncated": True, "NextContinuationToken": "t"})
    {'Prefix': 'a/', 'ContinuationToken': 't'}
    """
    if not response.get("IsTruncated"):
        return None
    return {**arguments, "ContinuationToken": response.get("NextContinuationToken")}


def next_version_arguments(arguments: Arguments, response: Mapping[str, Any]) -> Arguments | None:
    """ListObjectVersions: the same request after the response's next key (and version) marker.

    >>> next_version_arguments({"Prefix": "a/"}, {"IsTruncated": True, "NextKeyMarker": "a/b"})
    {'Prefix': 'a/', 'KeyMarker': 'a/b'}
    """
    if not response.get("IsTruncated"):
        return None
    following = {**arguments, "KeyMarker": response.get("NextKeyMarker")}
    following.pop("VersionIdMarker", None)
    if response.get("NextVersionIdMarker"):
        following["VersionIdMarker"] = response["NextVersionIdMarker"]
    return following


OPERATIONS: dict[str, tuple[str, NextArguments, tuple[str, ...]]] = {
    # operation: (client method, next arguments, the response fields they read)
    "ListObjectsV2": ("list_objects_v2", next_object_arguments, ("NextContinuationToken",)),
    "ListObjectVersions": (
        "list_object_versions",
        next_version_arguments,
        ("NextKeyMarker", "NextVersionIdMarker"),
    ),
}
# botocore asks for keys URL-encoded and decodes these fields after parsing (as S3 encodes them).
_URL_ENCODED = frozenset({"NextKeyMarker"})
_URL_ENCODING = re.compile(rb"<EncodingType>\s*url\s*</EncodingType>")
_TRUNCATED = re.compile(rb"<IsTruncated>\s*(true|false)\s*</IsTruncated>")
_FIELDS = {
    name: re.compile(b"<" + name.encode() + b">([^<]*)</" + name.encode() + b">")
    for _method, _next, names in OPERATIONS.values()
    for name in names
}
# The listing whose request the current thread is sending (its raw response goes to it).
_sending = threading.local()


def raw_fields(operation: str, body: bytes) -> dict[str, Any] | None:
    """Given a list operation and the raw XML of its response, return the fields that say where
    the listing goes on, as botocore would parse them (None where the body does not say).

    >>> raw_fields("ListObjectVersions", b"<IsTruncated>true</IsTruncated><EncodingType>url"
    ...     b"</EncodingType><NextKeyMarker>logs/a%26b+c</NextKeyMarker>")
    {'IsTruncated': True, 'NextKeyMarker': 'logs/a&b c'}
    """
    truncated = _TRUNCATED.search(body)
    if truncated is None:
        return None
    fields: dict[str, Any] = {"IsTruncated": truncated.group(1) == b"true"}
    url_encoded = _URL_ENCODING.search(body) is not None
    for name in OPERATIONS[operation][2]:
        found = _FIELDS[name].search(body)
        if found is not None:
            value = html.unescape(found.group(1).decode("utf-8"))
            fields[name] = unquote_plus(value) if url_encoded and name in _URL_ENCODED else value
    return fields


def on_raw_response(
    response_dict: Mapping[str, Any], operation_model: Any = None, **_: Any
) -> None:
    """botocore's before-parse hook: a page of a PageChain's listing has come back; send the
    next request while this one is parsed. Other requests of the client are left alone."""
    chain: PageChain | None = getattr(_sending, "chain", None)
    if chain is None or response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if isinstance(body, bytes):
        chain.read_ahead(_sending.arguments, body)


def register(client: Any) -> None:
    """Have ``client`` tell the PageChains using it of each list response before parsing it."""
    for operation in OPERATIONS:
        client.meta.events.register(
            f"before-parse.s3.{operation}", on_raw_response, unique_id=f"retention-{operation}"
        )


class PageChain:
    """One listing's requests of ``operation`` (a key of OPERATIONS) through ``client`` (on
    which ``register`` was called), sent by ``pool`` (two workers or more: one parses a page
    while another sends the next request). ``pages`` yields the responses in order."""

    def __init__(self, client: Any, operation: str, pool: ThreadPoolExecutor) -> None:
        method, self.next_arguments, _fields = OPERATIONS[operation]
        self._operation = operation
        self._call = getattr(client, method)
        self._pool = pool
        self._lock = threading.Lock()
        # The request sent ahead and not yet read, and the one its answer names next (when it
        # came back before it was read: sent once it is).
        self._ahead: tuple[Arguments, Future[Any]] | None = None
        self._after_ahead: tuple[Arguments, Arguments] | None = None
        self._closed = False
        self.used_ahead = 0

    def pages(self, arguments: Arguments) -> Iterator[Any]:
        """Yield the response of ``arguments``, then of each next request, to the last page."""
        following: Arguments | None = arguments
        try:
            while following is not None:
                response = self._fetch(following).result()
                yield response
                following = self.next_arguments(following, response)
        finally:
            self.close()

    def close(self) -> None:
        """Send nothing more ahead (a request on its way is left to end by itself)."""
        with self._lock:
            self._closed = True
            self._ahead = self._after_ahead = None

    def _fetch(self, arguments: Arguments) -> Future[Any]:
        with self._lock:
            ahead, self._ahead = self._ahead, None
            after_ahead, self._after_ahead = self._after_ahead, None
            if ahead is None or ahead[0] != arguments:
                return self._pool.submit(self._send, arguments)
            self.used_ahead += 1
            if after_ahead is not None and after_ahead[0] == arguments:
                self._ahead = (after_ahead[1], self._pool.submit(self._send, after_ahead[1]))
            return ahead[1]

    def _send(self, arguments: Arguments) -> Any:
        _sending.chain, _sending.arguments = self, arguments
        try:
            return self._call(**arguments)
        finally:
            _sending.chain = _sending.arguments = None

    def read_ahead(self, arguments: Arguments, body: bytes) -> None:
        """A response to ``arguments`` came back as ``body``: send the next request now, or
        once the page sent ahead is read (at most one page ahead of the reader)."""
        fields = raw_fields(self._operation, body)
        following = None if fields is None else self.next_arguments(arguments, fields)
        if following is None:
            return
        with self._lock:
            if self._closed:
                return
            if self._ahead is None:
                self._ahead = (following, self._pool.submit(self._send, following))
            elif self._ahead[0] == arguments:
                self._after_ahead = (arguments, following)
