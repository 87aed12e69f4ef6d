"""A fault-injecting HTTP reverse proxy for S3 tests: put it between a client and the moto server.

Every request is forwarded verbatim (method, path, query, headers, body) unless a fault says
otherwise; every request is logged with its kind (``delete_objects``, ``list_objects``, ...) so
that tests can count retries. Faults:

- ``fail_requests(kind, times, ...)``: the next ``times`` requests of that kind are answered with
  an S3 error (by default HTTP 503 SlowDown) and never reach the server;
- ``key_errors(pattern, code, times=None)``: in DeleteObjects, the objects whose key matches
  ``pattern`` are taken out of the forwarded request (so they really stay) and reported back as
  ``<Error>`` entries with ``code``; with ``times``, only the first ``times`` attempts of each
  (key, version) fail, later ones go through.

Standard library only (http.server + http.client). Example::

    with FaultProxy(moto_endpoint) as proxy:
        proxy.fail_requests("delete_objects", times=2)
        client = boto3.client("s3", endpoint_url=proxy.endpoint)
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, unescape

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
_OBJECT = re.compile(rb"<Object>(.*?)</Object>", re.DOTALL)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_VERSION = re.compile(rb"<VersionId>(.*?)</VersionId>", re.DOTALL)
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "AccessDenied": "Access Denied",
    # As some S3-compatible servers word it: the object's key, unquoted, in the message.
    "InvalidObjectState": "The object {key} is archived and cannot be deleted",
}


@dataclass(frozen=True)
class DeleteEntry:
    """One object named in a DeleteObjects request."""

    key: str
    version_id: str | None


@dataclass(frozen=True)
class Exchange:
    """One request the proxy saw, and what became of it. ``objects`` lists the objects a
    DeleteObjects request named (as the client sent it), ``failed`` those a key fault answered
    for; ``injected`` says the answer (or part of it) was made up by a fault."""

    method: str
    path: str
    query: dict[str, list[str]]
    kind: str
    status: int
    objects: tuple[DeleteEntry, ...] = ()
    injected: bool = False
    failed: tuple[DeleteEntry, ...] = ()


@dataclass
class _RequestFault:
    kind: str
    remaining: int
    status: int
    code: str
    drop: bool = False


@dataclass
class _KeyFault:
    pattern: re.Pattern[str]
    code: str
    times: int | None
    seen: dict[DeleteEntry, int] = field(default_factory=dict)

    def fails(self, entry: DeleteEntry) -> bool:
        """Whether this attempt at ``entry`` fails (and count it)."""
        if not self.pattern.search(entry.key):
            return False
        attempts = self.seen.get(entry, 0)
        self.seen[entry] = attempts + 1
        return self.times is None or attempts < self.times


def request_kind(method: str, path: str, query: dict[str, list[str]]) -> str:
    """Given a request, return the S3 operation it is, roughly (path-style addressing).

    Example: ``request_kind("POST", "/b", {"delete": [""]})`` returns ``"delete_objects"``.
    """
    parts = [part for part in path.split("/") if part]
    on_bucket = len(parts) <= 1
    if method == "POST" and "delete" in query:
        return "delete_objects"
    if method == "GET" and on_bucket and "versions" in query:
        return "list_object_versions"
    if method == "GET" and on_bucket and query.get("list-type") == ["2"]:
        return "list_objects_v2"
    if method == "GET" and on_bucket and not query:
        return "list_objects"
    if method == "HEAD" and on_bucket:
        return "head_bucket"
    if method == "DELETE" and not on_bucket:
        return "delete_object"
    if method == "PUT" and not on_bucket and not query:
        return "put_object"
    if method == "GET" and not on_bucket and not query:
        return "get_object"
    if method == "HEAD" and not on_bucket:
        return "head_object"
    return f"{method.lower()}_{'bucket' if on_bucket else 'object'}"


def delete_entries(body: bytes) -> list[tuple[bytes, DeleteEntry]]:
    """Given a DeleteObjects request body, return each ``<Object>`` element's bytes and what it
    names, in order."""
    entries = []
    for match in _OBJECT.finditer(body):
        inner = match.group(1)
        key = _KEY.search(inner)
        version = _VERSION.search(inner)
        entries.append(
            (
                match.group(0),
                DeleteEntry(
                    unescape(key.group(1).decode()) if key else "",
                    unescape(version.group(1).decode()) if version else None,
                ),
            )
        )
    return entries


def error_entry(entry: DeleteEntry, code: str) -> bytes:
    """An ``<Error>`` element of a DeleteObjects response."""
    version = f"<VersionId>{escape(entry.version_id)}</VersionId>" if entry.version_id else ""
    message = escape(_MESSAGES.get(code, code).replace("{key}", entry.key))
    return (
        f"<Error><Key>{escape(entry.key)}</Key>{version}<Code>{code}</Code>"
        f"<Message>{message}</Message></Error>"
    ).encode()


def error_document(code: str) -> bytes:
    """The body of a whole-request S3 error."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{_MESSAGES.get(code, code)}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


def with_checksums(headers: dict[str, str], body: bytes) -> dict[str, str]:
    """Given the headers of a request whose body changed, return them with every checksum of
    the body recomputed (or dropped when it cannot be: CRC32C, CRC64NVME) and the new length."""
    updated: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-length":
            value = str(len(body))
        elif lower == "content-md5":
            value = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
        elif lower == "x-amz-checksum-crc32":
            value = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        elif lower == "x-amz-checksum-sha1":
            value = base64.b64encode(hashlib.sha1(body).digest()).decode()  # noqa: S324
        elif lower == "x-amz-checksum-sha256":
            value = base64.b64encode(hashlib.sha256(body).digest()).decode()
        elif lower == "x-amz-content-sha256" and re.fullmatch(r"[0-9a-f]{64}", value):
            value = hashlib.sha256(body).hexdigest()
        elif lower.startswith("x-amz-checksum-") or lower == "x-amz-sdk-checksum-algorithm":
            continue
        updated[name] = value
    return updated


class FaultProxy:
    """A reverse proxy in front of ``upstream`` (``http://host:port``) on 127.0.0.1, a free port.
    Use it as a context manager; ``endpoint`` is where clients connect."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self.exchanges: list[Exchange] = []
        self._request_faults: list[_RequestFault] = []
        self._key_faults: list[_KeyFault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- life cycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="s3-fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # --- faults -----------------------------------------------------------------------------

    def fail_requests(
        self, kind: str, times: int, *, status: int = 503, code: str = "SlowDown"
    ) -> None:
        """Answer the next ``times`` requests of ``kind`` with an S3 error, without forwarding."""
        with self._lock:
            self._request_faults.append(_RequestFault(kind, times, status, code))

    def drop_requests(self, kind: str, times: int) -> None:
        """Close the connection of the next ``times`` requests of ``kind`` without answering (the
        request never reaches the server)."""
        with self._lock:
            self._request_faults.append(_RequestFault(kind, times, 0, "", drop=True))

    def key_errors(
        self, pattern: str, code: str = "AccessDenied", times: int | None = None
    ) -> None:
        """In DeleteObjects, fail the objects whose key matches ``pattern`` (re.search) with
        ``code``: always, or the first ``times`` attempts of each object version."""
        with self._lock:
            self._key_faults.append(_KeyFault(re.compile(pattern), code, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._request_faults.clear()
            self._key_faults.clear()

    # --- what was seen ----------------------------------------------------------------------

    def seen(self, kind: str | None = None) -> list[Exchange]:
        """The requests seen so far (of ``kind``), in order."""
        with self._lock:
            return [e for e in self.exchanges if kind is None or e.kind == kind]

    def count(self, kind: str) -> int:
        return len(self.seen(kind))

    def injected(self, kind: str | None = None) -> list[Exchange]:
        return [exchange for exchange in self.seen(kind) if exchange.injected]

    def deleted_keys(self) -> Iterator[DeleteEntry]:
        """Every object named by a DeleteObjects request that reached the server as named."""
        for exchange in self.seen("delete_objects"):
            if exchange.status == 200:
                yield from (entry for entry in exchange.objects if entry not in exchange.failed)

    # --- the work ---------------------------------------------------------------------------

    def _take_request_fault(self, kind: str) -> _RequestFault | None:
        with self._lock:
            for fault in self._request_faults:
                if fault.kind == kind and fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
        return None

    def _failing_entries(self, entries: list[tuple[bytes, DeleteEntry]]) -> dict[DeleteEntry, str]:
        failing: dict[DeleteEntry, str] = {}
        with self._lock:
            for _raw, entry in entries:
                for fault in self._key_faults:
                    if fault.fails(entry):
                        failing[entry] = fault.code
                        break
        return failing

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            if body and not any(name.lower() == "content-length" for name in headers):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            content = response.read()
            return response.status, response.reason, response.getheaders(), content
        finally:
            connection.close()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        method = handler.command
        split = urlsplit(handler.path)
        query = parse_qs(split.query, keep_blank_values=True)
        kind = request_kind(method, split.path, query)
        body = _read_body(handler)
        headers = {
            name: value for name, value in handler.headers.items() if name.lower() not in HOP_BY_HOP
        }
        entries = delete_entries(body) if kind == "delete_objects" else []
        objects = tuple(entry for _raw, entry in entries)

        fault = self._take_request_fault(kind)
        if fault is not None and fault.drop:
            self._record(Exchange(method, split.path, query, kind, 0, objects, True))
            handler.close_connection = True
            return
        if fault is not None:
            self._record(Exchange(method, split.path, query, kind, fault.status, objects, True))
            _respond(handler, fault.status, [("Content-Type", "application/xml")], _body(fault))
            return

        failing = self._failing_entries(entries) if entries else {}
        if failing:
            kept = [raw for raw, entry in entries if entry not in failing]
            for raw, entry in entries:
                if entry in failing:
                    body = body.replace(raw, b"", 1)
            headers = with_checksums(headers, body)
            errors = b"".join(error_entry(entry, code) for entry, code in failing.items())
            if kept:
                status, _reason, response_headers, content = self._forward(
                    method, handler.path, headers, body
                )
                if status == 200:
                    content = content.replace(b"</DeleteResult>", errors + b"</DeleteResult>", 1)
            else:  # S3 refuses an empty Delete: answer for the server
                status, response_headers = 200, [("Content-Type", "application/xml")]
                content = (
                    b'<?xml version="1.0" encoding="UTF-8"?>\n'
                    b'<DeleteResult xmlns="'
                    + S3_NAMESPACE.encode()
                    + b'">'
                    + errors
                    + b"</DeleteResult>"
                )
            failed = tuple(failing)
            self._record(Exchange(method, split.path, query, kind, status, objects, True, failed))
            _respond(handler, status, response_headers, content)
            return

        status, _reason, response_headers, content = self._forward(
            method, handler.path, headers, body
        )
        self._record(Exchange(method, split.path, query, kind, status, objects))
        _respond(handler, status, response_headers, content, head=method == "HEAD")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _body(fault: _RequestFault) -> bytes:
    return error_document(fault.code)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _respond(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: list[tuple[str, str]],
    content: bytes,
    *,
    head: bool = False,
) -> None:
    handler.send_response(status)
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == "content-length" and not head):
            continue
        if lower in ("server", "date"):
            continue
        handler.send_header(name, value)
    if not head:
        handler.send_header("Content-Length", str(len(content)))
    elif not any(name.lower() == "content-length" for name, _ in headers):
        handler.send_header("Content-Length", "0")
    handler.end_headers()
    if not head:
        handler.wfile.write(content)


# --- helpers for tests of the S3 store: buckets on the moto server, seeded and listed ---------


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client on ``endpoint`` (path-style, few retries), with the session's dummy
    credentials."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            retries={"mode": "standard", "max_attempts": 2}, s3={"addressing_style": "path"}
        ),
    )


def make_bucket(
    endpoint: str, prefix: str = "test", *, versioned: bool = False, object_lock: bool = False
) -> str:
    """Create a bucket with a fresh name on the server at ``endpoint`` (Object Lock enables
    versioning); return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def put_objects(endpoint: str, bucket: str, keys: list[str], body: bytes = b"x") -> None:
    """Put an object at each key, through the S3 API."""
    client = s3_client(endpoint)
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=body)


def put_many_in_process(bucket: str, keys: list[str], body: bytes = b"x") -> None:
    """Put many objects fast, straight into the in-process moto backend that ThreadedMotoServer
    serves (thousands of PUTs over HTTP take seconds); list them over HTTP to check."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[import-untyped]
    from moto.s3.models import s3_backends  # type: ignore[import-untyped]

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(bucket, key, body)


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> set[str]:
    """The keys of the current objects under ``prefix``."""
    pages = (
        s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    )
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def object_versions(endpoint: str, bucket: str, prefix: str = "") -> list[tuple[str, str, bool]]:
    """Every version and delete marker under ``prefix``: (key, version id, is a delete marker)."""
    pages = (
        s3_client(endpoint)
        .get_paginator("list_object_versions")
        .paginate(Bucket=bucket, Prefix=prefix)
    )
    found = []
    for page in pages:
        found += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
        found += [(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
    return sorted(found)
