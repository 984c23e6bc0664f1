"""The daemon's HTTP endpoints on one listener: POST /webhook, GET /metrics, /healthz, /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.daemon import webhook
from reconciler.daemon.metrics import Metrics

log = structlog.get_logger("reconciler.http")


@dataclass
class Endpoints:
    """What the handlers need from the daemon."""

    metrics: Metrics
    branch: str
    max_body: int
    secret: Callable[[], bytes | None]  # the webhook secret, read from the environment
    on_push: Callable[[str], None]
    readiness: Callable[[], tuple[bool, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "reconciler"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests worth knowing about are logged by the handlers, structured

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        ep = self.server.endpoints
        if self.path == "/metrics":
            self._answer(200, ep.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self._answer(200, b"ok\n")
        elif self.path == "/readyz":
            ready, why = ep.readiness()
            self._answer(200 if ready else 503, (why + "\n").encode())
        else:
            self._answer(404, b"not found\n")

    def do_POST(self) -> None:
        ep = self.server.endpoints
        if self.path != "/webhook":
            self._answer(404, b"not found\n")
            return
        secret = ep.secret()
        length = self.headers.get("Content-Length")
        if secret is None:
            self._result("disabled", 503, "webhook secret not set in the environment")
            return
        if length is None or not length.isdigit():
            self._result("bad_request", 411, "Content-Length required")
            return
        if int(length) > ep.max_body:
            self.close_connection = True  # the body is not read
            self._result("too_large", 413, f"body over {ep.max_body} bytes")
            return
        body = self.rfile.read(int(length))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = webhook.judge(secret, body, headers, ep.branch)
        result = {401: "unauthorized", 400: "bad_request"}.get(
            verdict.status, "accepted" if verdict.reconcile else "ignored"
        )
        self._result(result, verdict.status, verdict.message)
        if verdict.reconcile:
            ep.on_push("webhook")

    def _result(self, result: str, status: int, message: str) -> None:
        self.server.endpoints.metrics.webhooks.labels(result).inc()
        log.info("webhook", result=result, status=status, detail=message, peer=self.client_address[0])
        self._answer(status, (message + "\n").encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoints: Endpoints


def serve(host: str, port: int, endpoints: Endpoints) -> _Server:
    """Start the listener in a thread; shutdown() on the returned server stops it."""
    server = _Server((host, port), _Handler)
    server.endpoints = endpoints
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
