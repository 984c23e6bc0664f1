"""The only module that reaches a node's `pct`: here (transport local) or over SSH with OpenSSH's client.

Nothing but `pct exec VMID -- COMMAND...` and `pct set VMID ...` runs on a node, so its key can be pinned to
`pct` (README). SSH authenticates with the configured key only and checks the node's host key against the
configured known_hosts: an unknown or changed key fails the step and is never accepted. Every line a command
prints is handed on as it comes; a command that outlives its timeout, or a stop, is killed, here and (through
`timeout` inside the container) on the node.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.config import ProvisionConfig, SshConfig
from reconciler.model.errors import SetupError
from reconciler.model.vocab import Transport

TAIL = 15  # lines of output kept for the status file
MAX_LINE = 1000  # bytes of one line of a step's output that are kept
KILL_GRACE = 10  # seconds `timeout` in the container waits after TERM before KILL
SSH_FAILED = 255  # OpenSSH's exit status for its own failures

PID_FILE = "/run/reconciler-setup.pid"
RECORD_PID = f'{{ echo $$ >{PID_FILE}; }} 2>/dev/null; exec "$@"'  # $0 is the limit, unused
KILL_RECORDED = f'[ -f {PID_FILE} ] && kill -TERM "$(cat {PID_FILE})" 2>/dev/null; rm -f {PID_FILE}; true'
TIMED_OUT = (124, 137)  # `timeout`: TERM ended the command; KILL did, when it ignored TERM

OnLine = Callable[[str], None]
Abort = Callable[[], str | None]


def _ignore(line: str) -> None:
    pass


def _never() -> str | None:
    return None


# What OpenSSH's client says when it, not the remote command, failed; and whether trying again can help.
_SSH_ERRORS: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (
        re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key .* not known"),
        "the node's SSH host key is not the one in {known_hosts} (unknown or changed); it is never accepted:"
        " add the node's real key there",
        False,
    ),
    (
        re.compile(r"Permission denied \(|Too many authentication failures"),
        "the node refused the key {key} for user {user}",
        False,
    ),
    (
        re.compile(r"Could not resolve hostname|Connection refused|Connection timed out|No route to host"),
        "cannot connect to {address} port {port}",
        True,
    ),
    (re.compile(r"Load key .*|Bad permissions|UNPROTECTED PRIVATE KEY"), "cannot use the key {key}", False),
    (
        re.compile(r"Timeout, server .* not responding|Connection to .* timed out while waiting"),
        "the node stopped answering: no reply to SSH keepalives for {silence} s (the step may go on there until"
        " its own timeout)",
        True,
    ),
)
KEEPALIVES = 4  # unanswered keepalives, each provision.ssh.connect_timeout apart, before ssh gives the node up


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its exit status and its last lines of output."""

    status: int
    tail: tuple[str, ...]


class Pct:
    """Runs pct commands on the node that hosts a container."""

    def __init__(self, config: ProvisionConfig) -> None:
        if config.transport == Transport.OFF:
            raise ValueError("provision.transport is off")
        self.config = config
        self.ssh: SshConfig | None = config.ssh if config.transport == Transport.SSH else None

    @property
    def root(self) -> bool:
        """Whether pct runs as root on the node, as setting any feature but nesting needs."""
        if self.ssh is None:
            return True  # pct refuses a non-root caller itself, with its own words
        return self.ssh.user == "root" or self.ssh.sudo

    @property
    def _keepalive(self) -> int:
        """Seconds between SSH keepalives: the patience given to a connect (0 would turn them off)."""
        assert self.ssh is not None
        return max(1, round(self.ssh.connect_timeout))

    def exec(
        self, node: str, vmid: int, command: Sequence[str], stdin: str, step: str, on_line: OnLine, abort: Abort
    ) -> Outcome:
        """Run command inside the container with stdin; killed, in the container too, after the step timeout
        or when abort() gives a reason."""
        limit = f"{self.config.step_timeout:g}"
        # The command's `timeout` records its pid, so a stop can end it in the container: closing an SSH
        # session ends nothing on the other side. `timeout` leads its own process group, which it signals whole.
        bounded = ["sh", "-c", RECORD_PID, limit, "timeout", "-k", str(KILL_GRACE), limit, *command]
        pct_args = ["exec", str(vmid), "--", *bounded]
        return self._run(
            node, pct_args, stdin, step, on_line, abort, on_kill=lambda: self._end_in_container(node, vmid)
        )

    def _end_in_container(self, node: str, vmid: int) -> None:
        """Stop the step still running in the container after the local command was killed (best effort)."""
        ended = self.config.model_copy(update={"step_timeout": 30.0})
        with contextlib.suppress(SetupError):  # the node cannot be reached: the step's own timeout ends it there
            Pct(ended)._run(node, ["exec", str(vmid), "--", "sh", "-c", KILL_RECORDED], "", "stop", _ignore, _never)

    def set(self, node: str, vmid: int, options: Sequence[str], step: str, on_line: OnLine, abort: Abort) -> Outcome:
        """`pct set VMID OPTIONS...` on the node."""
        return self._run(node, ["set", str(vmid), *options], "", step, on_line, abort)

    def argv(self, node: str, pct_args: Sequence[str]) -> list[str]:
        """The local command line for a pct call on node."""
        if self.ssh is None:
            return [self.config.local.pct, *pct_args]
        if any("\\" in word for word in pct_args):
            # The forced command splits words with Perl's shellwords, which reads a backslash differently from
            # sh; no argument the reconciler makes holds one, and none may.
            raise SetupError("run pct", "an argument holds a backslash, which cannot pass the node's forced command")
        ssh = self.ssh
        remote = (["sudo", "-n"] if ssh.sudo else []) + ["pct", *pct_args]
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(ssh.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "UpdateHostKeys": "no",
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "ClearAllForwardings": "yes",
            "ControlMaster": "no",
            "ControlPath": "none",
            "PermitLocalCommand": "no",
            "ConnectTimeout": str(int(ssh.connect_timeout)),
            # A node that stops answering mid-step (frozen, cut off) ends the step now, not at its timeout.
            "ServerAliveInterval": str(self._keepalive),
            "ServerAliveCountMax": str(KEEPALIVES),
            # INFO, not ERROR: ssh says "Timeout, server ... not responding" at INFO, and is otherwise quiet there.
            "LogLevel": "INFO",
        }
        flags = [item for key, value in options.items() for item in ("-o", f"{key}={value}")]
        target = ["-i", str(ssh.key), "-p", str(ssh.port), "-l", ssh.user, ssh.address(node)]
        # OpenSSH joins the remote words with spaces for the node's shell: each is quoted to stay one word.
        return ["ssh", "-F", "/dev/null", "-T", *flags, *target, "--", shlex.join(remote)]

    def _run(
        self,
        node: str,
        pct_args: Sequence[str],
        stdin: str,
        step: str,
        on_line: OnLine,
        abort: Abort,
        on_kill: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run pct with stdin, handing on each line; on_kill (given for a timed `exec`) follows a kill here."""
        argv = self.argv(node, pct_args)
        # Only what the client needs: never the daemon's secrets.
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so a kill reaches ssh or pct and their children
            )
        except OSError as exc:
            raise SetupError(step, f"cannot run {argv[0]}: {exc.strerror}", temporary=False) from None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
        threading.Thread(target=_read, args=(proc, lines), daemon=True).start()
        tail: deque[str] = deque(maxlen=TAIL)
        overdue = f"took longer than provision.step_timeout ({self.config.step_timeout:g} s); it was killed"
        began = time.monotonic()
        deadline = began + self.config.step_timeout + KILL_GRACE + 5
        stopped: str | None = None
        eof = False
        ended: float | None = None
        while True:
            try:
                line = lines.get(timeout=0.2) if not eof else lines.get_nowait()
            except queue.Empty:
                if eof:
                    time.sleep(0.1)
            else:
                if line is None:
                    eof = True
                else:
                    tail.append(line)
                    on_line(line)
            if proc.poll() is not None:
                # A daemon the command started may hold its output open: the command's end is the end.
                ended = ended or time.monotonic()
                if eof or time.monotonic() - ended > 2:
                    break
            # Checked after every line too: a command that never stops printing is still bounded.
            stopped = abort() or (overdue if time.monotonic() > deadline else None)
            if stopped is not None:
                _kill(proc)
                break
        status = proc.wait()
        if stopped is not None:
            if on_kill is not None:
                on_kill()
            raise SetupError(step, stopped, tuple(tail))
        if on_kill is not None and status in TIMED_OUT and time.monotonic() - began >= self.config.step_timeout:
            raise SetupError(step, overdue, tuple(tail))
        if status == SSH_FAILED and self.ssh is not None:
            self._ssh_failure(node, step, tuple(tail))
        return Outcome(status, tuple(tail))

    def _ssh_failure(self, node: str, step: str, tail: tuple[str, ...]) -> None:
        """Raise the plain-words error for a failure of the SSH client itself, when the output shows one."""
        assert self.ssh is not None
        ssh = self.ssh
        text = "\n".join(tail)
        for pattern, reason, temporary in _SSH_ERRORS:
            if pattern.search(text):
                said = reason.format(
                    known_hosts=ssh.known_hosts,
                    key=ssh.key,
                    user=ssh.user,
                    address=ssh.address(node),
                    port=ssh.port,
                    silence=self._keepalive * KEEPALIVES,
                )
                raise SetupError(f"connect to node {node}", said, tail, temporary=temporary)


def _feed(proc: subprocess.Popen[bytes], stdin: str) -> None:
    """Write the script and close stdin (in a thread: a command that reads nothing must not block us)."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    except OSError:  # it ended without reading: its exit status says why
        pass


def _read(proc: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
    """Each line of the command's output, cut at MAX_LINE bytes: a step printing one endless line must not fill
    memory, nor a status file past what the reconciler reads back."""
    assert proc.stdout is not None
    cut = False
    while raw := proc.stdout.readline(MAX_LINE + 1):
        whole = raw.endswith(b"\n")
        if not cut:
            text = raw[:MAX_LINE].decode("utf-8", errors="replace").rstrip("\r\n")
            text = text.rsplit("\r", 1)[-1]  # a progress line keeps its last state
            lines.put(text if whole or len(raw) <= MAX_LINE else text + " [line cut]")
        cut = not whole  # the rest of an over-long line is skipped
    lines.put(None)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """TERM the command's process group, then KILL what is left after a few seconds."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
