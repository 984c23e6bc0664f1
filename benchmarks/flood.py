"""The daemon's listener under a bounded flood: memory, threads, and /healthz, /metrics and a webhook meanwhile.

    python benchmarks/flood.py [--requests 2000] [--idle 200] [--drippers 50] [--clients 16]

Against the real `reconciler run` subprocess with the default listener settings (http.max_connections 32,
http.read_timeout 10 s): first --idle connections that send half a request line and then nothing, and
--drippers that send one byte a second for ever; then --requests requests from --clients threads, a quarter
each of unsigned webhook POSTs (16 KiB bodies), badly signed ones, requests with 150 headers (431) and POSTs
closed before their body. Meanwhile /healthz, /metrics and a signed push (to another branch: answered, no
cycle) are timed every 0.1 s. Printed: VmRSS before, after and at its peak (VmHWM), the most threads seen,
the answers' statuses, the cycles started (must be 0) and the latencies of the timed requests.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import environment

UNSIGNED = b"POST /webhook HTTP/1.1\r\nContent-Length: 16384\r\nX-Gitea-Event: push\r\n\r\n" + b"{" * 16384
BAD_SIG = b"POST /webhook HTTP/1.1\r\nContent-Length: 2\r\nX-Gitea-Signature: " + b"0" * 64 + b"\r\n\r\n{}"
GARBLED = b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n"
HALF = b"POST /webhook HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"
KINDS = (UNSIGNED, BAD_SIG, GARBLED, HALF)


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def exchange(port: int, data: bytes, timeout: float = 30) -> int:
    """Send a request, read the answer to the end: its status (0: closed without one)."""
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        pass
    return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0


def signed_push(secret: str, branch: str) -> bytes:
    # A push of its own each time (a body already answered is a replay, answered 200 and ignored).
    body = json.dumps({"ref": f"refs/heads/{branch}", "after": secrets.token_hex(20)}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST /webhook HTTP/1.1\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n"
        f"X-Gitea-Event: push\r\nX-Gitea-Signature: {signature}\r\n\r\n"
    )
    return head.encode() + body


def drip(port: int, stop: threading.Event) -> None:
    """One byte a second until the server closes the connection or the benchmark ends."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            while not stop.wait(1.0):
                sock.send(b"a")
    except OSError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--drippers", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp), lambda pve: None) as env:
        daemon = env.daemon
        assert daemon.proc is not None
        pid, port = daemon.proc.pid, daemon.port
        with ThreadPoolExecutor(args.clients) as pool:  # warm up: lazy imports, thread stacks, arenas
            list(pool.map(lambda n: exchange(port, KINDS[n % 4]), range(100)))
        cycles = daemon.metric("reconciler_cycles_total", result="success")
        before = proc_status(pid, "VmRSS")

        stop = threading.Event()
        timings: dict[str, list[float]] = {"/healthz": [], "/metrics": [], "signed webhook": []}
        failures: Counter[str] = Counter()
        threads = [proc_status(pid, "Threads")]

        def probe() -> None:
            probes = (
                ("/healthz", lambda: b"GET /healthz HTTP/1.1\r\n\r\n", 200),
                ("/metrics", lambda: b"GET /metrics HTTP/1.1\r\n\r\n", 200),
                ("signed webhook", lambda: signed_push(daemon.env["RECONCILER_WEBHOOK_SECRET"], "elsewhere"), 202),
            )
            n = 0
            while not stop.is_set():
                name, make, wanted = probes[n % 3]
                data = make()
                began = time.monotonic()
                status = exchange(port, data)
                timings[name].append(time.monotonic() - began)
                if status != wanted:
                    failures[f"{name} {status}"] += 1
                threads.append(proc_status(pid, "Threads"))
                n += 1
                stop.wait(0.1)

        prober = threading.Thread(target=probe)
        prober.start()
        idlers = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(args.idle)]
        for sock in idlers:
            sock.sendall(b"GET /metr")
        drippers = [threading.Thread(target=drip, args=(port, stop)) for _ in range(args.drippers)]
        for thread in drippers:
            thread.start()
        began = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            statuses = Counter(pool.map(lambda n: exchange(port, KINDS[n % 4]), range(args.requests)))
        flood_seconds = time.monotonic() - began
        for sock in idlers:  # each closed by the server: to make room, or at its deadline
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            sock.close()
        idle_closed = time.monotonic() - began
        stop.set()
        prober.join()
        for thread in drippers:
            thread.join()
        after = proc_status(pid, "VmRSS")
        peak = proc_status(pid, "VmHWM")
        started = (daemon.metric("reconciler_cycles_total", result="success") or 0) - (cycles or 0)
        webhook_triggers = daemon.metric("reconciler_triggers_total", reason="webhook") or 0
        tracebacks = daemon.log().count("Traceback")

    print(
        f"flood: {args.requests} requests from {args.clients} clients in {flood_seconds:.1f} s, with {args.idle} idle"
        f" connections and {args.drippers} dripping a byte a second (all closed {idle_closed:.1f} s in)"
    )
    print(f"  answers: {dict(sorted(statuses.items()))} (0: closed without one: half-sent requests)")
    print(f"  VmRSS before {before / 1024:.1f} MiB, after {after / 1024:.1f} MiB ({(after - before) / 1024:+.1f} MiB),")
    print(f"  peak (VmHWM) {peak / 1024:.1f} MiB; threads: at most {max(threads)} (at rest {threads[0]})")
    print(f"  cycles started: {started:g}, webhook triggers: {webhook_triggers:g}, tracebacks in the log: {tracebacks}")
    for name, seconds in timings.items():
        if seconds:
            print(
                f"  {name} during the flood: median {statistics.median(seconds) * 1000:.0f} ms,"
                f" max {max(seconds) * 1000:.0f} ms over {len(seconds)}"
            )
    print(f"  probes not answered as expected: {dict(failures) or 'none'}")
    return 0 if started == 0 and webhook_triggers == 0 and tracebacks == 0 and not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
