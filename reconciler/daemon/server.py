"""The daemon's HTTP endpoints on one listener: POST /webhook, POST /reconcile, GET /metrics, /healthz, /readyz.

Whoever can reach the listener is untrusted until a webhook's signature says otherwise, so every connection is
bounded: at most `max_connections` at once, each a thread; the whole request (line, headers, body) must arrive
within `read_timeout`, however slowly it drips; the head within HEAD_LIMIT bytes, a body within `max_body`.
When every slot is taken, the oldest connection still sending its request makes room: a slow or idle client
cannot keep the webhook, the scrape or /healthz out. One request per connection (HTTP/1.0, closed after).
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import re
import socket
import socketserver
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.daemon import webhook
from reconciler.daemon.metrics import Metrics

log = structlog.get_logger("reconciler.http")

HEAD_LIMIT = 32 * 1024  # bytes for the request line and headers together; forges send about 1 KiB
# A refused body is read and dropped up to this many bytes (within the deadline): closing with bytes unread
# resets the connection, and a forge still sending its body would then see a broken pipe instead of our 413.
DRAIN_LIMIT = 64 * 1024 * 1024
EVICT_WAIT = 2.0  # s to wait for an evicted connection's thread to give its slot back
QUIET = 10.0  # s between two log lines about slow, evicted or refused connections (with a count)
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nbusy\n"
ERRORS = {  # our own words for the standard library's refusals, which would quote the client's bytes
    400: "malformed request line",
    405: "method not allowed",
    414: "request line too long",
    431: "request headers too long or too many",
    501: "method not allowed",
    505: "HTTP version not supported",
}
RESULTS = {400: "bad_request", 401: "unauthorized", 411: "bad_request", 413: "too_large", 503: "disabled"}
ASK_MAX_BODY = 16 * 1024  # a list of request names
ASK_MAX_WAIT = 3600.0  # s an asker may wait for its named requests to settle


@dataclass
class Endpoints:
    """What the handlers need from the daemon."""

    metrics: Metrics
    branch: str
    max_body: int
    secret: Callable[[], bytes | None]  # the webhook secret, read from the environment
    on_push: Callable[[str], None]
    # (ready, reason in fixed words); as a safety net only the reason's first clause, before ": ", is answered.
    readiness: Callable[[], tuple[bool, str]]
    max_connections: int = 32
    read_timeout: float = 10.0
    # POST /reconcile: the bearer token (None: the endpoint is off), and the pass it asks for (names, seconds to
    # wait) -> HTTP status and the answer's document.
    token: Callable[[], bytes | None] = lambda: None
    reconcile: Callable[[list[str], float], tuple[int, dict[str, object]]] | None = None


def public_reason(reason: str) -> str:
    """The part of a readiness reason fit for an unauthenticated answer: which part fails, not a library's words."""
    return webhook.shown(reason.split(": ", 1)[0], 200)


class _Overrun(Exception):
    """The client sent more than its request may hold."""


class _Reader(io.RawIOBase):
    """A connection's bytes under one deadline for the whole request and a byte budget (a per-recv timeout
    alone would let a client dripping one byte every few seconds hold its thread for ever)."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = deadline
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.budget <= 0:
            raise _Overrun
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not read in time")
        self.sock.settimeout(remaining)
        got = self.sock.recv_into(memoryview(buffer).cast("B")[: self.budget])
        self.budget -= got
        return got


class _Quiet:
    """Log lines about misbehaving clients, at most one per event every QUIET seconds with a count, so that a
    flood of them cannot flood the journal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def note(self, event: str) -> None:
        with self._lock:
            self._count[event] = self._count.get(event, 0) + 1
            now = time.monotonic()
            if now - self._last.get(event, -QUIET) < QUIET:
                return
            self._last[event] = now
            count = self._count.pop(event)
        log.info(event, count=count, within_seconds=QUIET)


def _content_length(headers: Any) -> int | tuple[int, str]:
    """The body's length in bytes as the headers declare it, or the status and message to refuse them with."""
    if headers.get("Transfer-Encoding") is not None:
        return 400, "Transfer-Encoding is not supported: send the body with a Content-Length"
    values = [v.strip() for v in headers.get_all("Content-Length") or []]
    if not values:
        return 411, "Content-Length required"
    if len(set(values)) > 1:
        return 400, "more than one Content-Length"
    if not re.fullmatch(r"[0-9]{1,15}", values[0]):  # not str.isdigit: that admits "²", which int() refuses
        return 400, "Content-Length is not a number of bytes"
    return int(values[0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "reconciler"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        ep = self.server.endpoints
        self.reader = _Reader(self.connection, time.monotonic() + ep.read_timeout, HEAD_LIMIT)
        self.rfile = io.BufferedReader(self.reader)

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests worth knowing about are logged by the handlers, structured

    def handle(self) -> None:
        """One request, then close; nothing a client sends ends in a traceback."""
        self.close_connection = True
        self.answered = False
        try:
            self._handle()
        except TimeoutError:
            self.server.quiet.note("http client too slow")
        except _Overrun:
            with contextlib.suppress(OSError):
                self.send_error(431)
        except OSError:
            pass  # the client went away, or its connection was closed to make room
        except Exception as exc:  # a bug must not print the request back, nor end the listener
            log.warning("http handler failed", error=type(exc).__name__)
            if not self.answered:
                with contextlib.suppress(OSError):
                    self._answer(500, "internal error\n")

    def _handle(self) -> None:
        self.requestline, self.request_version, self.command = "", "HTTP/1.0", ""  # for an early refusal
        try:
            self.raw_requestline = self.rfile.readline(HEAD_LIMIT + 1)
        except _Overrun:
            self.send_error(414)
            return
        if not self.raw_requestline:
            return
        if not self.parse_request():
            return
        if self.request_version == "HTTP/0.9":
            self.send_error(400)
            return
        path = self.path.split("?", 1)[0]
        if self.command == "GET":
            self.server.done_reading(self.connection)
            self._get(path)
        elif self.command == "POST":
            self._post(path)
        else:
            self.send_error(405)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's refusals, in our words: the client's bytes are never echoed."""
        self.server.quiet.note("http malformed request")
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # a refusal of a garbled line still gets a status line
        self._answer(code, (ERRORS.get(code) or HTTPStatus(code).phrase.lower()) + "\n")

    def _answer(self, status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.answered = True
        self.connection.settimeout(self.server.endpoints.read_timeout)  # a client that never reads cannot pin us
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _get(self, path: str) -> None:
        ep = self.server.endpoints
        if path == "/metrics":
            self._answer(200, ep.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, "ok\n")
        elif path == "/readyz":
            ready, why = ep.readiness()
            self._answer(200 if ready else 503, public_reason(why) + "\n")
        else:
            self._answer(404, "not found\n")

    def _post(self, path: str) -> None:
        if path == "/reconcile":
            self._ask()
            return
        ep = self.server.endpoints
        if path != "/webhook":
            self._answer(404, "not found\n")
            return
        length = _content_length(self.headers)
        if isinstance(length, tuple):  # no telling where the body ends: the connection is closed after
            status, message = length
            self._result(RESULTS[status], status, message)
            return
        secret = ep.secret()
        if secret is None:
            self._result("disabled", 503, "webhook secret not set in the environment")
            self._drain(length)
            return
        if length > ep.max_body:
            self._result("too_large", 413, f"body over {ep.max_body} bytes")
            self._drain(length)
            return
        self.reader.budget += length
        body = self.rfile.read(length)
        if len(body) < length:
            return  # the client closed before sending it all: nobody to answer
        self.server.done_reading(self.connection)
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = webhook.judge(secret, body, headers, ep.branch)
        if verdict.status < 300 and not self.server.deliveries.first_time(webhook.delivery_keys(headers, body)):
            verdict = webhook.Verdict(200, webhook.REPLAYED)
        result = RESULTS.get(verdict.status, "accepted" if verdict.reconcile else "ignored")
        self._result(result, verdict.status, verdict.message)
        if verdict.reconcile:
            ep.on_push("webhook")

    def _ask(self) -> None:
        """POST /reconcile: a pass now, for whoever shows the API token; its answer as JSON."""
        ep = self.server.endpoints
        length = _content_length(self.headers)
        token = ep.token()
        if token is None or ep.reconcile is None:
            self._asked("disabled", 503, {"error": "reconcile endpoint off: the API token is not set for the daemon"})
            self._drain(length if isinstance(length, int) else 0)
            return
        shown = self.headers.get("Authorization", "")
        # Compared in constant time, as bytes: a wrong token says nothing of the right one.
        if not hmac.compare_digest(shown.encode("utf-8", "replace"), b"Bearer " + token):
            self.server.quiet.note("http reconcile refused: wrong or missing token")
            self._asked("unauthorized", 401, {"error": "wrong or missing API token"})
            self._drain(length if isinstance(length, int) else 0)
            return
        if isinstance(length, tuple):
            self._asked("bad_request", length[0], {"error": length[1]})
            return
        if length > ASK_MAX_BODY:
            self._asked("bad_request", 413, {"error": f"body over {ASK_MAX_BODY} bytes"})
            self._drain(length)
            return
        self.reader.budget += length
        body = self.rfile.read(length)
        if len(body) < length:
            return
        self.server.done_reading(self.connection)
        asked = _asked_for(body)
        if isinstance(asked, str):
            self._asked("bad_request", 400, {"error": asked})
            return
        names, wait = asked
        log.info("reconcile asked", names=names, wait=wait, peer=self.client_address[0])
        status, doc = ep.reconcile(names, wait)
        self._asked("answered", status, doc)

    def _asked(self, result: str, status: int, doc: dict[str, object]) -> None:
        self.server.endpoints.metrics.asks.labels(result).inc()
        self._answer(status, json.dumps(doc, indent=2) + "\n", "application/json")

    def _drain(self, length: int) -> None:
        """Read and drop a refused body, up to DRAIN_LIMIT and within the request's deadline."""
        left = min(length, DRAIN_LIMIT)
        self.reader.budget += left
        with contextlib.suppress(OSError, _Overrun):  # too slow (TimeoutError) or gone: closed all the same
            while left > 0 and (got := len(self.rfile.read(min(left, 64 * 1024)))):
                left -= got

    def _result(self, result: str, status: int, message: str) -> None:
        self.server.endpoints.metrics.webhooks.labels(result).inc()
        log.info("webhook", result=result, status=status, detail=message, peer=self.client_address[0])
        self._answer(status, message + "\n")


def _asked_for(body: bytes) -> tuple[list[str], float] | str:
    """The names and the wait of a /reconcile body ({"names": [...], "wait": seconds}, both optional), or why not."""
    try:
        doc = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return "the body is not JSON"
    if not isinstance(doc, dict) or set(doc) - {"names", "wait"}:
        return 'the body is an object with "names" (a list of request names) and "wait" (seconds)'
    names = doc.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= 255 for n in names):
        return '"names" is a list of request names'
    wait = doc.get("wait", 300)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= ASK_MAX_WAIT:
        return f'"wait" is a number of seconds from 0 to {ASK_MAX_WAIT:g}'
    return list(dict.fromkeys(names))[:1000], float(wait)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False  # stopping never waits for a client
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.deliveries = webhook.Deliveries()
        self.quiet = _Quiet()
        self._slots = threading.BoundedSemaphore(endpoints.max_connections)
        self._lock = threading.Lock()
        self._reading: OrderedDict[socket.socket, None] = OrderedDict()  # still sending their request, oldest first
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs in the accepting thread: a slot for the connection, or no thread at all."""
        if not self._slots.acquire(blocking=False) and not self._make_room():
            self.quiet.note("http busy")
            self._refuse(request)
            return
        with self._lock:
            self._reading[request] = None
        try:
            super().process_request(request, client_address)
        except Exception as exc:  # no thread to be had (a task limit): this connection only is dropped
            log.warning("http handler not started", error=type(exc).__name__)
            self.done_reading(request)
            self._slots.release()
            self.shutdown_request(request)

    def _make_room(self) -> bool:
        """Close the oldest connection still sending its request and take its slot; False when none is."""
        with self._lock:
            if not self._reading:
                return False
            oldest, _ = self._reading.popitem(last=False)
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its thread's recv returns at once; the thread ends
        self.quiet.note("http connection closed to make room")
        return self._slots.acquire(timeout=EVICT_WAIT)

    def done_reading(self, request: Any) -> None:
        """The request is in: its connection can no longer be closed to make room."""
        with self._lock:
            self._reading.pop(request, None)

    def _refuse(self, request: Any) -> None:
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(BUSY)
            # Unread bytes at close make the kernel reset the connection, and the client may lose the answer:
            # take what already arrived, without waiting for more.
            request.recv(HEAD_LIMIT)
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.done_reading(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Instead of a traceback on stderr: the error's type only."""
        log.warning("http handler failed", error=type(sys.exc_info()[1]).__name__)


def serve(host: str, port: int, endpoints: Endpoints) -> _Server:
    """Start the listener in a thread; shutdown() on the returned server stops it."""
    server = _Server((host, port), endpoints)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
