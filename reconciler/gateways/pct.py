"""The only module that reaches a node's `pct`: here (transport local) or over SSH with OpenSSH's client.

Nothing but `pct exec VMID -- COMMAND...` and `pct set VMID ...` runs on a node, so its key can be pinned to
`pct` (README). SSH authenticates with the configured key only and checks the node's host key against the
configured known_hosts: an unknown or changed key fails the step and is never accepted. Every line a command
prints is handed on as it comes; a command that outlives its timeout, or a stop, is killed, here and (through
`timeout` inside the container) on the node.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable, Sequence

from reconciler.config import ProvisionConfig, SshConfig
from reconciler.gateways.ssh import (
    KEEPALIVES,
    KILL_RECORDED,
    SSH_FAILED,
    Abort,
    OnLine,
    Outcome,
    SshErrors,
    SshFailure,
    bounded,
    client_options,
    explain,
    ignore,
    keepalive_of,
    never,
    run,
)
from reconciler.model.errors import SetupError
from reconciler.model.vocab import Transport

# What OpenSSH's client says when it, not the remote command, failed; and whether trying again can help.
_SSH_ERRORS: SshErrors = {
    SshFailure.HOST_KEY: "the node's SSH host key is not the one in {known_hosts} (unknown or changed); it is never"
    " accepted: add the node's real key there",
    SshFailure.REFUSED: "the node refused the key {key} for user {user}",
    SshFailure.UNREACHABLE: "cannot connect to {address} port {port}",
    SshFailure.BAD_KEY: "cannot use the key {key}",
    SshFailure.SILENT: "the node stopped answering: no reply to SSH keepalives for {silence} s (the step may go on"
    " there until its own timeout)",
}


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

    def exec(
        self, node: str, vmid: int, command: Sequence[str], stdin: str, step: str, on_line: OnLine, abort: Abort
    ) -> Outcome:
        """Run command inside the container with stdin; killed, in the container too, after the step timeout
        or when abort() gives a reason."""
        pct_args = ["exec", str(vmid), "--", *bounded(command, self.config.step_timeout)]
        return self._run(
            node, pct_args, stdin, step, on_line, abort, on_kill=lambda: self._end_in_container(node, vmid)
        )

    def _end_in_container(self, node: str, vmid: int) -> None:
        """Stop the step still running in the container after the local command was killed (best effort)."""
        ended = self.config.model_copy(update={"step_timeout": 30.0})
        with contextlib.suppress(SetupError):  # the node cannot be reached: the step's own timeout ends it there
            Pct(ended)._run(node, ["exec", str(vmid), "--", "sh", "-c", KILL_RECORDED], "", "stop", ignore, never)

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
        target = ["-i", str(ssh.key), "-p", str(ssh.port), "-l", ssh.user, ssh.address(node)]
        # OpenSSH joins the remote words with spaces for the node's shell: each is quoted to stay one word.
        return ["ssh", *client_options(ssh.known_hosts, ssh.connect_timeout), *target, "--", shlex.join(remote)]

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
        outcome = run(self.argv(node, pct_args), stdin, step, on_line, abort, self.config.step_timeout, on_kill)
        ssh = self.ssh
        if outcome.status == SSH_FAILED and ssh is not None:
            said = explain(
                _SSH_ERRORS,
                outcome.tail,
                known_hosts=ssh.known_hosts,
                key=ssh.key,
                user=ssh.user,
                address=ssh.address(node),
                port=ssh.port,
                silence=keepalive_of(ssh.connect_timeout) * KEEPALIVES,
            )
            if said is not None:
                raise SetupError(f"connect to node {node}", said[0], outcome.tail, temporary=said[1])
        return outcome
