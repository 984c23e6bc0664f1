"""OpenSSH's client and the local commands it runs: the one runner every setup command goes through (a node's
`pct`, locally or over SSH, and a VM's shell over SSH), and the VM side of it.

A VM is reached as its cloud-init user with the key the operator configures (provision.vm.key), and its host
key is never trusted on first use: the keys are the ones its guest agent read from /etc/ssh inside the guest,
handed in by the caller and written to a known_hosts file of this session's own under an alias that names the
VM, so a changed key or another machine at its address fails the step.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from reconciler.config import VmSshConfig
from reconciler.model.errors import SetupError

TAIL = 15  # lines of output kept for the status file
MAX_LINE = 1000  # bytes of one line of a step's output that are kept
KILL_GRACE = 10  # seconds `timeout` in the guest waits after TERM before KILL
SSH_FAILED = 255  # OpenSSH's exit status for its own failures
KEEPALIVES = 4  # unanswered keepalives, each connect_timeout apart, before ssh gives the other side up

PID_FILE = "/run/reconciler-setup.pid"
RECORD_PID = f'{{ echo $$ >{PID_FILE}; }} 2>/dev/null; exec "$@"'  # $0 is the limit, unused
KILL_RECORDED = f'[ -f {PID_FILE} ] && kill -TERM "$(cat {PID_FILE})" 2>/dev/null; rm -f {PID_FILE}; true'
TIMED_OUT = (124, 137)  # `timeout`: TERM ended the command; KILL did, when it ignored TERM

OnLine = Callable[[str], None]
Abort = Callable[[], str | None]


class SshFailure(Enum):
    """A failure of OpenSSH's client itself, not of the remote command: what it prints, and whether trying again
    can help."""

    HOST_KEY = (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key .* not known", False)
    REFUSED = (r"Permission denied \(|Too many authentication failures", False)
    UNREACHABLE = (r"Could not resolve hostname|Connection refused|Connection timed out|No route to host", True)
    BAD_KEY = (r"Load key .*|Bad permissions|UNPROTECTED PRIVATE KEY", False)
    SILENT = (r"Timeout, server .* not responding|Connection to .* timed out while waiting", True)

    def __init__(self, pattern: str, temporary: bool) -> None:
        self.pattern = re.compile(pattern)
        self.temporary = temporary


# Each failure in plain words for one kind of peer: a format string of the caller's words.
SshErrors = Mapping[SshFailure, str]


def ignore(line: str) -> None:
    """An on_line that keeps nothing."""


def never() -> str | None:
    """An abort that never asks to stop."""
    return None


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its exit status and its last lines of output."""

    status: int
    tail: tuple[str, ...]


def bounded(command: Sequence[str], step_timeout: float) -> list[str]:
    """command under `timeout`, its pid recorded so that a stop can end it on the other side too: closing an
    SSH session ends nothing there. `timeout` leads its own process group, which it signals whole."""
    limit = f"{step_timeout:g}"
    return ["sh", "-c", RECORD_PID, limit, "timeout", "-k", str(KILL_GRACE), limit, *command]


def client_options(known_hosts: Path, connect_timeout: float, **more: str) -> list[str]:
    """OpenSSH client options: the given key only, the host key checked against known_hosts and never learned,
    no forwarding, and keepalives so that a peer that stops answering ends the command now."""
    keepalive = keepalive_of(connect_timeout)
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
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
        "ConnectTimeout": str(int(connect_timeout)),
        "ServerAliveInterval": str(keepalive),
        "ServerAliveCountMax": str(KEEPALIVES),
        # INFO, not ERROR: ssh says "Timeout, server ... not responding" at INFO, and is otherwise quiet there.
        "LogLevel": "INFO",
        **more,
    }
    return ["-F", "/dev/null", "-T", *(item for key, value in options.items() for item in ("-o", f"{key}={value}"))]


def keepalive_of(connect_timeout: float) -> int:
    """Seconds between SSH keepalives: the patience given to a connect (0 would turn them off)."""
    return max(1, round(connect_timeout))


def explain(errors: SshErrors, tail: Sequence[str], **words: object) -> tuple[str, bool] | None:
    """The plain-words reason, and whether a retry can help, for a failure of the SSH client itself."""
    text = "\n".join(tail)
    for failure in SshFailure:
        if failure.pattern.search(text):
            return errors[failure].format(**words), failure.temporary
    return None


def run(
    argv: Sequence[str],
    stdin: str,
    step: str,
    on_line: OnLine,
    abort: Abort,
    step_timeout: float,
    on_kill: Callable[[], None] | None = None,
) -> Outcome:
    """Run argv with stdin, handing on each line; killed after step_timeout (and a grace) or when abort() gives a
    reason, and on_kill (given for a command under `bounded`) then ends it on the other side."""
    # Only what the client needs: never the daemon's secrets.
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    try:
        proc = subprocess.Popen(
            list(argv),
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
    overdue = f"took longer than provision.step_timeout ({step_timeout:g} s); it was killed"
    began = time.monotonic()
    deadline = began + step_timeout + KILL_GRACE + 5
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
    if on_kill is not None and status in TIMED_OUT and time.monotonic() - began >= step_timeout:
        raise SetupError(step, overdue, tuple(tail))
    return Outcome(status, tuple(tail))


# The VM's side of OpenSSH's own failures; the keys come from its guest agent, so a mismatch is never learned.
_VM_SSH_ERRORS: SshErrors = {
    SshFailure.HOST_KEY: "the SSH server at {address} port {port} did not show the host key the VM's guest agent read"
    " from its /etc/ssh (another machine at that address, or the key changed); it is never accepted",
    SshFailure.REFUSED: "the VM refused the key {key} for user {user}: is its public key in the request's"
    " cloud_init.ssh_keys?",
    SshFailure.UNREACHABLE: "cannot connect to {address} port {port} (is its SSH server up yet?)",
    SshFailure.BAD_KEY: "cannot use the key {key}",
    SshFailure.SILENT: "the VM stopped answering: no reply to SSH keepalives for {silence} s",
}


class GuestSsh:
    """Runs commands inside a VM over SSH as its cloud-init user, as root through `sudo -n` unless it is root."""

    def __init__(self, config: VmSshConfig, step_timeout: float) -> None:
        self.config = config
        self.step_timeout = step_timeout

    def exec(
        self,
        guest: GuestLogin,
        command: Sequence[str],
        stdin: str,
        step: str,
        on_line: OnLine,
        abort: Abort,
    ) -> Outcome:
        """Run command inside the VM with stdin; killed, in the VM too, after the step timeout or when abort()
        gives a reason."""
        with tempfile.TemporaryDirectory(prefix="reconciler-vm-") as folder:
            known = Path(folder) / "known_hosts"
            known.write_text("".join(f"{guest.alias} {key}\n" for key in guest.host_keys))
            outcome = run(
                self.argv(guest, known, bounded(command, self.step_timeout)),
                stdin,
                step,
                on_line,
                abort,
                self.step_timeout,
                on_kill=lambda: self._end_in_guest(guest, known),
            )
        if outcome.status == SSH_FAILED:
            c = self.config
            said = explain(
                _VM_SSH_ERRORS,
                outcome.tail,
                address=guest.address,
                port=c.port,
                key=c.key,
                user=guest.user,
                silence=keepalive_of(c.connect_timeout) * KEEPALIVES,
            )
            if said is not None:
                raise SetupError(f"connect to VM {guest.vmid}", said[0], outcome.tail, temporary=said[1])
        return outcome

    def argv(self, guest: GuestLogin, known_hosts: Path, command: Sequence[str]) -> list[str]:
        """The local command line that runs command in the VM; its host key is looked up under the VM's alias."""
        c = self.config
        remote = ([] if guest.user == "root" else ["sudo", "-n", "--"]) + list(command)
        options = client_options(known_hosts, c.connect_timeout, HostKeyAlias=guest.alias)
        target = ["-i", str(c.key), "-p", str(c.port), "-l", guest.user, guest.address]
        # OpenSSH joins the remote words with spaces for the VM's shell: each is quoted to stay one word.
        return ["ssh", *options, *target, "--", shlex.join(remote)]

    def _end_in_guest(self, guest: GuestLogin, known_hosts: Path) -> None:
        """Stop the step still running in the VM after the local command was killed (best effort)."""
        with contextlib.suppress(SetupError):  # the VM cannot be reached: the step's own timeout ends it there
            run(self.argv(guest, known_hosts, ["sh", "-c", KILL_RECORDED]), "", "stop", ignore, never, 30.0)


@dataclass(frozen=True)
class GuestLogin:
    """Where and as whom a VM is reached, and the host keys its guest agent read inside it."""

    vmid: int
    address: str
    user: str
    host_keys: tuple[str, ...]  # "type base64" lines

    @property
    def alias(self) -> str:
        """The name its keys are known under: the VM, whatever address it has."""
        return f"reconciler-vm-{self.vmid}"


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
