"""Executor: run a request's setup steps inside its guest, one at a time: in a container through `pct exec` on its
node, in a VM over SSH as its cloud-init user.

Every line a step prints goes to the job's log as it comes, under a line that names the step. The first step
that fails ends the job with its name, exit status and last lines; the steps are written to be run again,
so the next attempt starts from the top. Success is recorded with the steps' digest, so the same steps are
not run again in the same guest.

A VM's SSH host key is never trusted on first use: its guest agent reads the keys from /etc/ssh inside the guest
(the first boot made them), and only those are accepted from the address the VM has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reconciler.apply.context import JobContext
from reconciler.desired.request import public_key_problem
from reconciler.gateways.ssh import GuestLogin, Outcome
from reconciler.model.action import Provision
from reconciler.model.errors import ProxmoxError, SetupError
from reconciler.model.vocab import GuestStatus

OUTPUT_LINES = 10  # of a failed step, in the status file
# The host keys sshd makes on a Debian or Ubuntu guest's first boot, the strongest first.
HOST_KEY_FILES = tuple(f"/etc/ssh/ssh_host_{kind}_key.pub" for kind in ("ed25519", "ecdsa", "rsa"))
READ_KEYS = "read the VM's SSH host key"
NO_SUCH_FILE = "No such file"  # the guest agent's answer for a file that is not there

Run = Callable[[Sequence[str], str, str], Outcome]  # (command, stdin, step) -> how it ended


def provision(action: Provision, job: JobContext) -> str:
    d, vmid = action.desired, action.vmid
    run = _in_vm(action, job) if d.vm is not None else _in_container(action, job)
    steps = d.setup.steps
    for number, step in enumerate(steps, 1):
        job.log.info(f"step {number}/{len(steps)} {step.name}: {step.summary}", step=step.name)
        name = f"setup step {step.name}"
        outcome = run(["sh", "-s", "--", *step.args], step.script, name)
        if outcome.status != 0:
            last = next((line for line in reversed(outcome.tail) if line.strip()), "no output")
            raise SetupError(name, f"exit status {outcome.status}: {last}", outcome.tail[-OUTPUT_LINES:])
    job.record(lambda: job.store.record_setup(d.name, vmid, d.setup.digest, job.job_id))
    health = d.service.health if d.service else None
    return f"{action.word} {vmid} set up: {len(steps)} steps" + (f"; {health} answers" if health else "")


def _running(action: Provision, job: JobContext) -> None:
    if job.owned_state(action.node, action.vmid, action.name, action.desired.kind.api) != GuestStatus.RUNNING:
        raise SetupError("setup", f"{action.word} {action.vmid} on {action.node} is not running")


def _in_container(action: Provision, job: JobContext) -> Run:
    """Steps through `pct exec` on the container's node."""
    pct = job.tools.pct
    if pct is None:
        raise SetupError("setup", "provision.transport is off", temporary=False)
    _running(action, job)

    def run(command: Sequence[str], stdin: str, step: str) -> Outcome:
        return pct.exec(action.node, action.vmid, command, stdin, step, job.log.info, job.abort)

    return run


def _in_vm(action: Provision, job: JobContext) -> Run:
    """Steps over SSH to the VM as its cloud-init user, accepting only the host keys its guest agent read."""
    ssh, vm, vmid, address = job.tools.guest_ssh, action.desired.vm, action.vmid, action.address
    assert vm is not None
    if ssh is None:
        raise SetupError("setup", "provision.vm is not set: setup inside VMs is off", temporary=False)
    if address is None:
        raise SetupError("setup", f"the address of VM {vmid} is not known yet")
    _running(action, job)
    keys = _host_keys(action, job)
    kinds = ", ".join(key.split()[0] for key in keys)
    job.log.info(f"SSH host keys of VM {vmid} read through its guest agent: {kinds}")
    login = GuestLogin(vmid, address, vm.cloud_init.user, keys)
    job.log.info(f"connecting to {login.user}@{address} port {ssh.config.port}")

    def run(command: Sequence[str], stdin: str, step: str) -> Outcome:
        return ssh.exec(login, command, stdin, step, job.log.info, job.abort)

    return run


def _host_keys(action: Provision, job: JobContext) -> tuple[str, ...]:
    """The VM's SSH host public keys (`type base64`) as its guest agent reads them inside the guest."""
    node, vmid = action.node, action.vmid
    keys = []
    for path in HOST_KEY_FILES:
        try:
            text = job.pve.agent_file(node, vmid, path)
        except ProxmoxError as exc:
            if exc.status == 403:
                raise SetupError(
                    READ_KEYS,
                    f"{exc.reason}; setup inside a VM needs it to learn the VM's host key through its guest agent"
                    " (README: Setup inside a VM), and is not run without it",
                    temporary=False,
                ) from None
            if exc.status == 500 and NO_SUCH_FILE in exc.reason:
                continue  # a key type the guest does not have
            raise SetupError(READ_KEYS, exc.reason, temporary=exc.temporary) from None
        if text is None:
            raise SetupError(READ_KEYS, "its QEMU guest agent does not answer yet")
        line = " ".join(text.split()[:2])
        if public_key_problem(line) is None:
            keys.append(line)
    if not keys:
        raise SetupError(
            READ_KEYS,
            f"no SSH host key in {', '.join(HOST_KEY_FILES)} inside the VM yet: is its first boot still running,"
            " or does its template lack openssh-server?",
        )
    return tuple(keys)
