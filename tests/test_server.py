"""The HTTP listener under hostile clients: idle and dripping connections, garbled requests, replays, floods.

Real sockets throughout: a listener in this process (small limits, so that deadlines pass in a second or two)
and `reconciler run` as a subprocess for what must hold in the daemon (no cycle, bounded memory, no traceback).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog.testing
from conftest import WEBHOOK_SECRET, DaemonProcess, FakeCluster, OperatorClone, request_yaml

from reconciler.daemon.metrics import Metrics
from reconciler.daemon.server import Endpoints, serve

SECRET = b"listener-secret"


@dataclass
class Listener:
    port: int
    pushes: list[str]
    ready: list[tuple[bool, str]]
    hold: threading.Event = field(default_factory=threading.Event)  # /readyz waits on it while cleared
    metrics: Metrics | None = None

    def raw(self, data: bytes, timeout: float = 10) -> tuple[int, str]:
        """Send these bytes, then read the answer to the end: (status, body); (0, "") when cut without one."""
        return raw(self.port, data, timeout)

    def get(self, path: str) -> tuple[int, str]:
        return self.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Content-Length": str(len(body)), **headers}.items())
        return self.raw(f"POST /webhook HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, str]:
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed before all was sent (a refusal): the answer may still be there to read
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    if not answer:
        return 0, ""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def signed(body: bytes, event: str = "push", **more: str) -> dict[str, str]:
    return {
        "X-Gitea-Signature": hmac.new(SECRET, body, hashlib.sha256).hexdigest(),
        "X-Gitea-Event": event,
        "Content-Type": "application/json",
        **more,
    }


PUSH = json.dumps({"ref": "refs/heads/main"}).encode()


def start(max_connections: int = 4, read_timeout: float = 2.0) -> tuple[Listener, Callable[[], None]]:
    pushes: list[str] = []
    listener = Listener(0, pushes, [(True, "ready; last successful cycle 1 s ago")])
    listener.hold.set()

    def readiness() -> tuple[bool, str]:
        listener.hold.wait(30)
        return listener.ready[-1]

    listener.metrics = Metrics()
    endpoints = Endpoints(
        listener.metrics,
        "main",
        64 * 1024,
        lambda: SECRET,
        pushes.append,
        readiness,
        max_connections=max_connections,
        read_timeout=read_timeout,
    )
    server = serve("127.0.0.1", 0, endpoints)
    listener.port = server.server_address[1]

    def stop() -> None:
        listener.hold.set()
        server.shutdown()
        server.server_close()

    return listener, stop


@pytest.fixture
def listener(capfd: pytest.CaptureFixture[str]) -> Iterator[Listener]:
    """A listener with 4 connections and 2 s to send a request; no traceback may reach stdout or stderr."""
    server, stop = start()
    yield server
    stop()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Exception in thread" not in err


def idle(port: int, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if sent:
        sock.sendall(sent)
    return sock


def closed_after(sock: socket.socket) -> bytes:
    """Everything the server sent before it closed the connection (waits for the close)."""
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return answer


def test_idle_connections_beyond_the_limit_keep_out_neither_healthz_nor_metrics_nor_the_webhook() -> None:
    listener, stop = start(max_connections=4, read_timeout=6.0)
    try:
        threads = threading.active_count()
        opened = time.monotonic()
        sockets = [idle(listener.port, b"GET /heal" if n % 2 else b"") for n in range(4 + 6)]
        # Within the deadline, while every slot is held by a client that says nothing: each answers at once.
        assert listener.get("/healthz") == (200, "ok\n")
        status, text = listener.get("/metrics")
        assert status == 200 and "reconciler_cycles_total" in text
        assert listener.post(PUSH, signed(PUSH)) == (202, "accepted: reconciling\n")
        assert listener.pushes == ["webhook"]
        assert time.monotonic() - opened < 6.0
        assert threading.active_count() <= threads + 4  # one thread per slot, none for the connections beyond
        # The idle ones are all closed by the server, without an answer, by their deadline at the latest.
        for sock in sockets:
            assert closed_after(sock) == b""
        assert time.monotonic() - opened < 6.0 + 3.0
    finally:
        stop()


def test_a_client_dripping_its_request_is_cut_at_the_deadline_however_steady_the_drip() -> None:
    listener, stop = start(read_timeout=1.5)
    try:
        for head in (b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"POST /webhook HTTP/1.1\r\nContent-Length: 900\r\n\r\n"):
            sock = idle(listener.port, head)
            began = time.monotonic()
            sent = threading.Event()

            def drip(sock: socket.socket = sock, sent: threading.Event = sent) -> None:
                # A byte every 0.1 s: a per-recv timeout never fires; the request would take 90 s to complete.
                try:
                    for _ in range(900):
                        sock.send(b"a")
                        time.sleep(0.1)
                except OSError:
                    sent.set()

            threading.Thread(target=drip, daemon=True).start()
            assert closed_after(sock) == b""
            assert 1.4 < time.monotonic() - began < 1.5 + 2.0
            assert sent.wait(5)  # the drip failed: the server closed its end
        assert listener.get("/healthz") == (200, "ok\n")
    finally:
        stop()


def test_when_every_slot_is_answering_a_new_connection_gets_503_and_no_thread() -> None:
    listener, stop = start(max_connections=3)
    try:
        listener.hold.clear()  # /readyz now blocks inside its handler, the request fully read
        threads = threading.active_count()
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(listener.get, "/readyz") for _ in range(3)]
            deadline = time.monotonic() + 10
            while threading.active_count() < threads + 3 + 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # waiting for the 3 handler threads (and the 3 clients) to be there
            assert listener.get("/healthz") == (503, "busy\n")
            assert listener.post(PUSH, signed(PUSH)) == (503, "busy\n")
            assert threading.active_count() == threads + 3 + 3
            listener.hold.set()
            assert [f.result() for f in held] == [(200, "ready; last successful cycle 1 s ago\n")] * 3
        assert listener.pushes == []
        assert listener.get("/healthz") == (200, "ok\n")
    finally:
        stop()


GARBLED = [
    (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
    (b"GET /healthz HTTP/1.1 extra\r\n\r\n", 400, "malformed request line"),
    (b"GET /healthz HTTP/x.y\r\n\r\n", 400, "malformed request line"),
    (b"GET /healthz HTTP/\xc2\xb9.\xc2\xb9\r\n\r\n", 400, "malformed request line"),
    (b"GET /healthz\r\n\r\n", 400, "malformed request line"),  # HTTP/0.9: no headers, no status line
    (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "HTTP version not supported"),
    (b"DELETE /webhook HTTP/1.1\r\n\r\n", 405, "method not allowed"),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431, "request headers too long or too many"),
    (b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 40_000 + b"\r\n\r\n", 431, "request headers too long or too many"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "request line too long"),
    (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\x00\xff: \xfe\r\n\r\n", 200, "ok\n"),
    (b"POST /webhook HTTP/1.1\r\n\r\n", 411, "Content-Length required"),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400, "Content-Length is not a number of bytes"),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length is not a number of bytes"),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400, "Content-Length is not a number of bytes"),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400, "Content-Length is not a number of bytes"),
    (
        b"POST /webhook HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "more than one Content-Length",
    ),
    (
        b"POST /webhook HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "Transfer-Encoding is not supported: send the body with a Content-Length",
    ),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413, "body over 65536 bytes"),
    (b"POST /webhook HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 401, "bad or missing signature"),
    (
        b"POST /webhook HTTP/1.1\r\nX-Gitea-Signature: \xe9\xe9\r\nContent-Length: 2\r\n\r\n{}",
        401,
        "bad or missing signature",
    ),
    (b"POST /elsewhere HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 404, "not found"),
]


@pytest.mark.parametrize(("request_bytes", "status", "answer"), GARBLED, ids=[str(n) for n in range(len(GARBLED))])
def test_a_garbled_request_gets_its_4xx_in_plain_words_and_never_a_traceback(
    listener: Listener, request_bytes: bytes, status: int, answer: str
) -> None:
    assert listener.raw(request_bytes) == (status, answer.rstrip("\n") + "\n")
    assert listener.pushes == []
    assert listener.get("/healthz") == (200, "ok\n")  # and the listener goes on


def test_a_body_over_the_limit_is_answered_413_that_the_sender_gets_to_read(listener: Listener) -> None:
    # The body is read and dropped after the answer: closing with 40 MiB unread would reset the connection,
    # and a sender still writing its body (as urllib, and forges, do before they read) sees a broken pipe.
    request = urllib.request.Request(
        f"http://127.0.0.1:{listener.port}/webhook", data=b"x" * (40 * 1024 * 1024), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert (refused.value.code, refused.value.read()) == (413, b"body over 65536 bytes\n")


def test_signed_deliveries_that_are_deeply_nested_not_utf8_or_not_an_object_are_400(listener: Listener) -> None:
    for body, answer in (
        (b"[" * 60_000, "body is JSON nested too deeply"),
        (b'{"ref": "refs/heads/\xff"}', "body is not JSON"),
        (b'["refs/heads/main"]', "push payload is not a JSON object"),
    ):
        assert listener.post(body, signed(body)) == (400, answer + "\n")
    assert listener.post(PUSH, signed(PUSH, "issues")) == (
        400,
        "unknown event type issues: only push and ping are handled\n",
    )
    assert listener.pushes == []


def test_a_replayed_delivery_is_ignored_and_triggers_nothing(listener: Listener) -> None:
    first = signed(PUSH, **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    # An unsigned delivery carrying the id first: it must not make the real one look like a replay.
    assert listener.post(PUSH, {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})[0] == 401
    assert listener.post(PUSH, first) == (202, "accepted: reconciling\n")
    assert listener.post(PUSH, first) == (200, "ignored: replayed delivery\n")
    # The same id under Gitea's header name is the same delivery.
    assert listener.post(PUSH, signed(PUSH, **{"X-Gitea-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}))[0] == 200
    # The id is not signed: the same signed body under another id, or none, is the same capture sent again.
    assert listener.post(PUSH, signed(PUSH, **{"X-GitHub-Delivery": "another"})) == (
        200,
        "ignored: replayed delivery\n",
    )
    assert listener.post(PUSH, signed(PUSH)) == (200, "ignored: replayed delivery\n")
    assert listener.pushes == ["webhook"]
    # Another push (another body) is new, whatever its id.
    other = PUSH.replace(b"}", b', "after": "1111111111111111111111111111111111111111"}', 1)
    assert other != PUSH
    assert listener.post(other, signed(other)) == (202, "accepted: reconciling\n")
    assert listener.pushes == ["webhook", "webhook"]


def test_a_delivery_refused_400_is_not_remembered_so_the_forge_may_redeliver_it(listener: Listener) -> None:
    delivery = {"X-Gitea-Delivery": "f6266f16"}
    assert listener.post(b"[", signed(b"[", **delivery))[0] == 400
    assert listener.post(PUSH, signed(PUSH, **delivery)) == (202, "accepted: reconciling\n")


def test_readyz_names_the_failing_part_and_never_a_librarys_message(listener: Listener) -> None:
    listener.ready.append((False, "Proxmox failing: list guests: 401 Unauthorized: PVEAPIToken=r@pam!t=s3cr3t\r"))
    assert listener.get("/readyz") == (503, "Proxmox failing\n")
    listener.ready.append((False, "no successful cycle yet"))
    assert listener.get("/readyz") == (503, "no successful cycle yet\n")


def test_a_bug_behind_an_endpoint_answers_500_and_logs_only_the_errors_type(
    listener: Listener, capfd: pytest.CaptureFixture[str]
) -> None:
    listener.ready.append(None)  # type: ignore[arg-type]  # readiness() then fails to unpack
    with structlog.testing.capture_logs() as events:
        assert listener.get("/readyz") == (500, "internal error\n")
    assert {"event": "http handler failed", "error": "TypeError", "log_level": "warning"} in events
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert listener.get("/healthz") == (200, "ok\n")


# The daemon itself.


def http_limits(daemon: DaemonProcess, **limits: object) -> DaemonProcess:
    """Add listener settings to the http block DaemonProcess.configure wrote."""
    listen = f"http: {{listen: '127.0.0.1:{daemon.port}'"
    extra = "".join(f", {key}: {value}" for key, value in limits.items())
    text = daemon.config_path.read_text()
    assert listen in text
    daemon.config_path.write_text(text.replace(listen, listen + extra))
    return daemon


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood(port: int, rounds: int) -> dict[int, int]:
    """rounds x (unsigned, badly signed, garbled, half-sent) requests from 8 clients: the answers' statuses."""
    unsigned = b"POST /webhook HTTP/1.1\r\nContent-Length: 16384\r\nX-Gitea-Event: push\r\n\r\n" + b"{" * 16384
    bad_sig = b"POST /webhook HTTP/1.1\r\nContent-Length: 2\r\nX-Gitea-Signature: " + b"0" * 64 + b"\r\n\r\n{}"
    garbled = b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n"
    half = b"POST /webhook HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"  # closes before the body: nobody to answer

    def one(n: int) -> int:
        return raw(port, (unsigned, bad_sig, garbled, half)[n % 4], timeout=30)[0]

    counts: dict[int, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for status in pool.map(one, range(4 * rounds)):
            counts[status] = counts.get(status, 0) + 1
    return counts


def test_a_flood_of_unauthenticated_garbled_and_idle_requests_starts_no_cycle_and_grows_no_memory(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    http_limits(daemon.configure(), max_connections=16, read_timeout=2).start()  # hourly polls, no watcher
    assert daemon.proc is not None
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.push()  # only a cycle started by the flood could create it
    flood(daemon.port, 25)  # warm up: lazy imports, thread stacks, allocator arenas
    cycles = daemon.metric("reconciler_cycles_total", result="success")
    before = rss_kib(daemon.proc.pid)

    idlers = [idle(daemon.port, b"GET /metr") for _ in range(40)]
    counts = flood(daemon.port, 500)  # 2000 requests
    assert daemon.get("/healthz") == (200, "ok\n")  # while 40 idle connections wait for their deadline
    for sock in idlers:
        closed_after(sock)
    after = rss_kib(daemon.proc.pid)

    assert counts.get(401, 0) >= 900 and counts.get(431, 0) >= 450, counts
    assert daemon.metric("reconciler_cycles_total", result="success") == cycles
    assert daemon.metric("reconciler_triggers_total", reason="webhook") == 0
    assert (daemon.metric("reconciler_webhook_requests_total", result="unauthorized") or 0) >= 900
    assert cluster.containers() == []
    assert after - before < 30 * 1024, f"RSS {before} KiB before the flood, {after} KiB after"
    log = daemon.log()
    assert "Traceback" not in log
    assert log.count("\n") < 3000  # one line per webhook answer; slow and garbled clients are tallied


def test_signed_but_malformed_deliveries_to_the_daemon_are_400_and_log_no_traceback(daemon: DaemonProcess) -> None:
    daemon.configure().start()
    cycles = daemon.metric("reconciler_cycles_total", result="success")
    secret = WEBHOOK_SECRET.encode()
    for body, event, answer in (
        (b"[" * 200_000, "push", "body is JSON nested too deeply"),
        (b"\xff\xfe", "push", "body is not JSON"),
        (b"[]", "push", "push payload is not a JSON object"),
        (b"{}", "issues", "unknown event type issues: only push and ping are handled"),
    ):
        signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
        headers = {"X-Gitea-Signature": signature, "X-Gitea-Event": event, "Content-Type": "application/json"}
        assert daemon.post("/webhook", body, headers) == (400, answer + "\n")
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    headers = {
        "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": "one",
        "Content-Type": "application/json",
    }
    assert daemon.post("/webhook", body, headers) == (202, "accepted: reconciling\n")
    assert daemon.post("/webhook", body, headers) == (200, "ignored: replayed delivery\n")
    assert daemon.metric("reconciler_triggers_total", reason="webhook") == 1
    daemon.wait_for(lambda: daemon.metric("reconciler_cycles_total", result="success") == (cycles or 0) + 1)
    assert daemon.metric("reconciler_webhook_requests_total", result="bad_request") == 4
    assert "Traceback" not in daemon.log()
