"""Outside systems that stop answering never hang the reconciler: a Git remote that takes the connection and says
nothing (as behind a dead proxy), and a node whose SSH server freezes mid-step.

Each test bounds its wait far below what a hang would take and asserts the process ended and what it said,
never how long it took.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import DaemonProcess, FakeCluster, NodeSshd

from reconciler.config import GitConfig, ProvisionConfig
from reconciler.gateways.git import Checkout, GitTimeout
from reconciler.gateways.pct import Pct
from reconciler.model.errors import GitError, SetupError


class StalledServer:
    """Takes TCP connections on 127.0.0.1 and never answers; knows how many its peers still hold open."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stalled", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        conn, _ = sock.accept()
                        selector.register(conn, selectors.EVENT_READ)
                        with self._lock:
                            self.accepted += 1
                            self._open.add(conn)
                    elif not sock.recv(65536):  # what the client sends is read and never answered; b"": it left
                        selector.unregister(sock)
                        sock.close()
                        with self._lock:
                            self._open.discard(sock)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def wait_all_closed(self, timeout: float = 30.0) -> None:
        """Until every client has closed its end: nothing the reconciler started still holds a connection."""
        deadline = time.monotonic() + timeout
        while self.open_connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.open_connections() == 0, "a process the reconciler started still holds the connection"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()


@pytest.fixture
def stalled() -> Iterator[StalledServer]:
    server = StalledServer()
    yield server
    server.close()


def bounded(call: Callable[[], object], seconds: float = 60.0) -> BaseException | None:
    """Run call in a thread; what it raised (None if nothing). Fails the test if it has not ended after seconds,
    far past any timeout under test, so a hang is a failure rather than a test that never ends."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds:g} s"
    return raised[0] if raised else None


def url(scheme: str, server: StalledServer) -> str:
    return f"{scheme}://127.0.0.1:{server.port}/infra.git"


def point_at(config_path: Path, remote: str, timeout: float) -> None:
    """Make the test config's Git remote `remote`, with git.timeout `timeout`."""
    doc = yaml.safe_load(config_path.read_text())
    doc["git"]["remote"] = remote
    doc["git"]["timeout"] = timeout
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


# --- the git gateway


@pytest.mark.parametrize("scheme", ["http", "git"])
def test_a_fetch_from_a_remote_that_never_answers_is_killed_at_the_timeout(
    stalled: StalledServer, tmp_path: Path, scheme: str
) -> None:
    checkout = Checkout(GitConfig(remote=url(scheme, stalled), checkout=tmp_path / "co", timeout=1))
    error = bounded(checkout.sync)
    assert isinstance(error, GitTimeout)
    assert str(error) == "git fetch: the remote did not answer within 1 s"
    assert error.temporary
    assert stalled.accepted >= 1
    stalled.wait_all_closed()  # git-remote-http, or git itself, was killed with the command
    assert checkout.remote_step() is None


def test_ls_remote_against_a_remote_that_never_answers_is_killed_too(stalled: StalledServer, tmp_path: Path) -> None:
    checkout = Checkout(GitConfig(remote=url("http", stalled), checkout=tmp_path / "co", timeout=1))
    error = bounded(checkout.remote_tip)
    assert isinstance(error, GitTimeout) and str(error) == "git ls-remote: the remote did not answer within 1 s"
    stalled.wait_all_closed()


def test_a_stop_ends_a_hanging_fetch_long_before_its_timeout(stalled: StalledServer, tmp_path: Path) -> None:
    checkout = Checkout(GitConfig(remote=url("http", stalled), checkout=tmp_path / "co", timeout=3600))

    def stop_when_it_hangs() -> None:
        deadline = time.monotonic() + 30
        while stalled.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = checkout.remote_step()
        assert running is not None and running[0] == "fetch"  # what /readyz names
        checkout.finish_by(time.monotonic())

    stopper = threading.Thread(target=stop_when_it_hangs, daemon=True)
    stopper.start()
    error = bounded(checkout.sync)  # the fetch's own timeout is an hour away

    assert isinstance(error, GitError) and not isinstance(error, GitTimeout)
    assert str(error) == "git fetch: not finished: the reconciler is stopping"
    stalled.wait_all_closed()
    later = bounded(checkout.remote_tip)  # nor does a later step start
    assert isinstance(later, GitError) and str(later) == "git ls-remote: not finished: the reconciler is stopping"
    assert stalled.accepted == 1


def test_a_push_the_remote_never_finishes_is_killed_with_its_hook(remote: Path, tmp_path: Path) -> None:
    checkout = Checkout(GitConfig(remote=str(remote), checkout=tmp_path / "co", timeout=2))
    checkout.sync()
    pid_file = tmp_path / "hook.pid"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec sleep 600\n")
    hook.chmod(0o755)

    error = bounded(lambda: checkout.publish({"status/web.yaml": "phase: Ready\n"}, "status"))

    assert isinstance(error, GitTimeout) and str(error) == "git push: the remote did not answer within 2 s"
    hook_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(hook_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(hook_pid), "the remote's hook outlived the push"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --- `reconciler once` and `reconciler run`


def test_once_against_a_remote_that_never_answers_ends_with_a_clear_error(
    stalled: StalledServer, config_path: Path, env: dict[str, str], cluster: FakeCluster
) -> None:
    point_at(config_path, url("http", stalled), timeout=2)
    once = subprocess.run(
        [sys.executable, "-m", "reconciler", "once", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # without the timeout it would wait for ever
    )
    assert once.returncode == 2, once.stderr
    assert once.stderr.strip().splitlines()[-1] == "reconciler: git fetch: the remote did not answer within 2 s"
    stalled.wait_all_closed()
    assert cluster.containers() == []


def test_readyz_names_a_hanging_fetch_and_sigterm_ends_it_within_the_stop_grace(
    stalled: StalledServer, daemon: DaemonProcess, config_path: Path
) -> None:
    point_at(config_path, url("http", stalled), timeout=3600)
    daemon.configure(stop_grace=1).start(wait_ready=False)

    daemon.wait_for(lambda: "git fetch running for" in daemon.get("/readyz")[1], timeout=60, what="readyz naming git")
    status, text = daemon.get("/readyz")
    assert status == 503
    assert text.startswith("no successful cycle yet (git fetch running for ") and text.endswith(" s)\n")

    assert daemon.stop(timeout=60) == 0  # the fetch's timeout is an hour: the stop grace ended it
    stalled.wait_all_closed()
    assert "the reconciler is stopping" in daemon.log()


def test_readyz_says_in_fixed_words_that_the_fetch_timed_out(
    stalled: StalledServer, daemon: DaemonProcess, config_path: Path
) -> None:
    point_at(config_path, url("http", stalled), timeout=2)
    daemon.configure().start(wait_ready=False)
    expected = "no successful cycle yet (git fetch timed out after 2 s)\n"
    daemon.wait_for(lambda: daemon.get("/readyz") == (503, expected), timeout=60, what="readyz after the timeout")
    assert "the remote did not answer within 2 s" in daemon.log()
    assert daemon.stop(timeout=60) == 0


# --- a node whose SSH server freezes mid-step


def _children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _sshd_listener(sshd: NodeSshd) -> int:
    config = str(sshd.log.parent / "sshd_config")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if config.encode() in cmdline:  # sshd rewrites its title, keeping its arguments in it
                return int(entry)
    raise AssertionError("the test's sshd is not running")


def test_a_node_that_stops_answering_mid_step_ends_the_step(host_sshd: NodeSshd) -> None:
    # Keepalives a second apart (provision.ssh.connect_timeout); the step's own timeout is ten minutes away.
    config = host_sshd.provision(step_timeout=600)
    config["ssh"]["connect_timeout"] = 1
    pct = Pct(ProvisionConfig.model_validate(config))
    listener = _sshd_listener(host_sshd)
    frozen: list[int] = []

    def freeze(line: str) -> None:
        if line == "started" and not frozen:  # the node's side of the session stops, as a frozen node's would
            frozen.extend(_children(listener))
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)

    try:
        error = bounded(
            lambda: pct.exec("pve1", 200, ["sh", "-c", "echo started; exec sleep 600"], "", "step", freeze, never), 45
        )
    finally:
        for pid in frozen:  # the processes this test froze: let them go, and end them
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
    assert frozen
    assert isinstance(error, SetupError), error
    assert str(error) == (
        "connect to node pve1: the node stopped answering: no reply to SSH keepalives for 4 s"
        " (the step may go on there until its own timeout)"
    )
    assert error.temporary


def never() -> str | None:
    return None
