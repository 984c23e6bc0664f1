"""What an executor gets for one job: its log, the gateways, and task waits bounded by time and shutdown."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from reconciler.config import ProxmoxConfig
from reconciler.gateways.dns import DnsServer
from reconciler.gateways.pct import Pct
from reconciler.gateways.proxmox import Proxmox, TaskFailed
from reconciler.gateways.sqlite import JobStore
from reconciler.gateways.ssh import GuestSsh
from reconciler.model.errors import ProxmoxError, SetupError, StateError
from reconciler.model.owner import owner_of
from reconciler.model.vocab import GuestStatus, JobType

T = TypeVar("T")


def patiently(write: Callable[[], T], abort: Callable[[], str | None], warn: Callable[[str], None]) -> T:
    """A write to the job database, tried again while another process holds it (each try waits
    state.busy_timeout): work already done in Proxmox is recorded late, never failed for a busy database."""
    warned = False
    while True:
        try:
            return write()
        except StateError as exc:
            if not exc.temporary or abort() is not None:
                raise
            if not warned:
                warn(f"{exc.reason}; waiting for it")
                warned = True


@dataclass(frozen=True)
class Tools:
    """The gateways and settings jobs use; a reload gives new jobs new ones, running jobs keep theirs."""

    pve: Proxmox
    proxmox: ProxmoxConfig
    pct: Pct | None = None  # None when provision.transport is off
    vmids: range = range(0)  # the approved range, where a create refused for a taken id chooses again
    dns: DnsServer | None = None  # None when dns.rfc2136 is not configured
    dns_owner: str = "reconciler"  # dns.owner_id, written into each record's ownership TXT
    records_written: Callable[[], None] = lambda: None  # a DNS job sent updates: zone views are stale
    guest_ssh: GuestSsh | None = None  # None when provision.vm is not set: no setup inside VMs


class JobLog:
    """The log of one job: every line goes to SQLite and to the structured log, with request and job id."""

    def __init__(
        self, store: JobStore, job_id: int, request: str, job_type: str, abort: Callable[[], str | None] = lambda: None
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.abort = abort
        self.log = structlog.get_logger("reconciler.job").bind(request=request, job_id=job_id, job=job_type)

    def _write(self, level: str, message: str) -> None:
        patiently(lambda: self.store.log(self.job_id, level, message), self.abort, self.log.warning)

    def info(self, message: str, **context: Any) -> None:
        self._write("info", message)
        self.log.info(message, **context)

    def warning(self, message: str, **context: Any) -> None:
        self._write("warning", message)
        self.log.warning(message, **context)

    def error(self, message: str, **context: Any) -> None:
        self._write("error", message)
        self.log.error(message, **context)


@dataclass
class JobContext:
    """One job's view of the world."""

    job_id: int
    log: JobLog
    store: JobStore
    tools: Tools
    abort: Callable[[], str | None]  # a reason to stop waiting (shutdown grace over), or None

    @property
    def pve(self) -> Proxmox:
        return self.tools.pve

    def record(self, write: Callable[[], T]) -> T:
        """A write to the job database after Proxmox changed something: waited out while the database is busy."""
        return patiently(write, self.abort, self.log.log.warning)

    def owned_state(self, node: str, vmid: int, request: str, kind: str = "lxc") -> GuestStatus:
        """The guest's power state, after checking it still carries the request's marker.

        A job may wait in its node's queue for minutes: meanwhile the guest may have been removed by hand
        and its VMID given to another. A guest that is not the request's is never touched.
        """
        status, tags = self.pve.container_state(node, vmid, kind)
        if owner_of(tags) != request:
            word = "VM" if kind == "qemu" else "container"
            raise ProxmoxError(
                "check owner", f"{word} {vmid} on {node} no longer carries the marker of request {request}"
            )
        return status

    def task(self, step: str, node: str, submit: Callable[[], str], vmid: int | None = None, kind: str = "lxc") -> None:
        """Submit a Proxmox task and wait for it, then (given the guest's vmid) for its lock to clear;
        raises ProxmoxError (TaskFailed with its log) when it fails. Warnings go to the job log."""
        upid = submit()
        self.log.info(f"{step} task {upid}", upid=upid)
        timeout = self.tools.proxmox.task_timeout
        try:
            result = self.pve.wait_task(node, upid, timeout, step, abort=self.abort)
        except TaskFailed as exc:
            for line in exc.log:
                self.log.error(f"task log: {line}")
            raise
        if result.exitstatus != "OK":
            self.log.info(f"{step} task ended with {result.exitstatus}")
        for line in result.warnings:
            self.log.warning(f"task log: {line}")
        if vmid is not None:
            # The next step would be refused while Proxmox still holds the guest's lock from this task.
            self.pve.wait_unlocked(node, vmid, timeout, step, abort=self.abort, kind=kind)

    @contextmanager
    def intent(self, action: JobType, vmid: int, node: str, request: str) -> Iterator[None]:
        """Record the intent before a call that changes Proxmox; settle it once the outcome is known here.

        A crash leaves it unsettled: the next pass looks at the cluster to learn what happened.
        """
        intent_id = self.store.intend(request, vmid, node, action, self.job_id)
        try:
            yield
        except ProxmoxError as exc:
            # Proxmox answered (a refusal, a failed task): nothing is left unknown. No answer, or a task still
            # running at its timeout, leaves the intent for the next pass to resolve by looking.
            if exc.status is not None or isinstance(exc, TaskFailed):
                self.record(lambda: self.store.settle(intent_id))
            raise
        self.record(lambda: self.store.settle(intent_id))

    def poll(self, timeout: float, look: Callable[[], str | None]) -> str | None:
        """Call look until it finds something, backing off up to 2 s, for at most timeout seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            found = look()
            if found is not None:
                return found
            if time.monotonic() >= deadline or self.abort() is not None:
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)

    def set_node_features(self, node: str, vmid: int, features: tuple[str, ...]) -> None:
        """Set container features only root@pam may set (keyctl for Docker) with `pct set` on the node.

        Done before the container's first start; raises SetupError when the node is reached as a user that
        cannot, or pct refuses.
        """
        pct = self.tools.pct
        step = "set container features"
        wanted = ",".join(features)
        if pct is None:
            raise SetupError(step, f"{wanted} needs pct on the node, and provision.transport is off", temporary=False)
        if not pct.root:
            raise SetupError(
                step,
                f"Docker needs the container features {wanted}, which only root may set with pct:"
                " connect as root (provision.ssh.user: root) or allow `sudo -n pct` (provision.ssh.sudo: true)",
                temporary=False,
            )
        self.log.info(f"pct set {vmid} --features {wanted}")
        outcome = pct.set(node, vmid, ["--features", wanted], step, self.log.info, self.abort)
        if outcome.status != 0:
            last = outcome.tail[-1] if outcome.tail else "no output"
            raise SetupError(step, f"pct set exited with status {outcome.status}: {last}", outcome.tail)
