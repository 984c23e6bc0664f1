"""Apply: carry out planned actions on Proxmox, one job each; the only place that changes Proxmox.

Actions on different nodes run in parallel, at most `parallel_per_node` at once on each node. A failed
action fails its own job and request only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from reconciler.config import ProxmoxConfig
from reconciler.desired.validate import Desired
from reconciler.errors import ProxmoxError, RequestFailed
from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.plan import Action, Create, FindAddress, Phase, Start, create_params

JobHook = Callable[[str, bool, float], None]  # (job type, succeeded, seconds)
Heartbeat = Callable[[], None]  # called while waiting on Proxmox, e.g. to ping systemd's watchdog


@dataclass(frozen=True)
class Outcome:
    """What became of one action: the request's new phase and the job that says why."""

    name: str
    job_id: int
    phase: Phase
    message: str
    vmid: int | None = None
    node: str | None = None
    address: str | None = None


class JobLog:
    """The log of one job: every line goes to SQLite and to the structured log, with request and job id."""

    def __init__(self, store: JobStore, job_id: int, request: str, job_type: str) -> None:
        self.store = store
        self.job_id = job_id
        self.log = structlog.get_logger("reconciler.job").bind(request=request, job_id=job_id, job=job_type)

    def info(self, message: str, **context: Any) -> None:
        self.store.log(self.job_id, "info", message)
        self.log.info(message, **context)

    def error(self, message: str, **context: Any) -> None:
        self.store.log(self.job_id, "error", message)
        self.log.error(message, **context)


class Applier:
    """Runs the actions of one cycle against Proxmox and records each as a job."""

    def __init__(
        self,
        pve: Proxmox,
        store: JobStore,
        config: ProxmoxConfig,
        on_job: JobHook | None = None,
        stopping: threading.Event | None = None,
        stop_grace: float = 60.0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.pve = pve
        self.store = store
        self.config = config
        self.on_job = on_job or (lambda job_type, ok, seconds: None)
        self.stopping = stopping or threading.Event()
        self.stop_grace = stop_grace
        self.heartbeat = heartbeat or (lambda: None)
        self._stop_seen: float | None = None

    def apply(self, actions: Iterable[Action]) -> list[Outcome]:
        """Carry out the actions, in the order given; once stopping, the ones not yet started are left out."""
        actions = list(actions)
        by_node: dict[str, list[int]] = {}
        for index, action in enumerate(actions):
            by_node.setdefault(action.node, []).append(index)
        outcomes: list[Outcome | None] = [None] * len(actions)

        def run_node(indexes: list[int]) -> None:
            with ThreadPoolExecutor(self.config.parallel_per_node, thread_name_prefix="apply") as pool:
                for index, outcome in zip(indexes, pool.map(lambda i: self.run(actions[i]), indexes), strict=True):
                    outcomes[index] = outcome

        with ThreadPoolExecutor(max(1, len(by_node)), thread_name_prefix="node") as nodes:
            list(nodes.map(run_node, by_node.values()))
        return [o for o in outcomes if o is not None]

    def run(self, action: Action) -> Outcome | None:
        """One action as one job; never raises for a failure of the request itself. None: not started."""
        if self.stopping.is_set():
            return None
        d = action.desired
        job_type = {Create: "create", Start: "start", FindAddress: "find-address"}[type(action)]
        payload: dict[str, object] = {"vmid": action.vmid, "node": action.node, "revision": d.revision}
        if isinstance(action, Create):
            payload["params"] = create_params(d, action.vmid)
        job_id = self.store.create_job(job_type, d.name, d.profile.name, payload)
        log = JobLog(self.store, job_id, d.name, job_type)
        began = time.monotonic()
        self.store.start_job(job_id)
        log.info(action.describe())
        error = None
        try:
            if isinstance(action, Create):
                outcome = self._create(action, log)
            elif isinstance(action, Start):
                outcome = self._start_and_address(action.desired, action.vmid, action.node, log)
            else:
                outcome = self._address(action.desired, action.vmid, action.node, log)
        except RequestFailed as exc:
            error = exc.reason
            log.error(f"{exc.step} failed: {exc.reason}", step=exc.step)
            known = self.store.resource(d.name)
            created = known if known is not None and known.state == "created" else None
            outcome = Outcome(
                d.name,
                job_id,
                "Failed",
                f"{exc.step} failed: {exc.reason}",
                vmid=created.vmid if created else None,
                node=created.node if created else None,
            )
        except Exception as exc:  # a bug must fail this request, not the cycle
            error = f"{type(exc).__name__}: {exc}"
            log.log.exception("internal error")
            self.store.log(job_id, "error", f"internal error: {error}")
            outcome = Outcome(d.name, job_id, "Failed", f"internal error in {job_type}: {error}")
        ok = outcome.phase in ("Ready", "Provisioning")
        result: dict[str, object] = {"vmid": outcome.vmid, "node": outcome.node, "address": outcome.address}
        self.store.finish_job(job_id, ok, outcome.message, result=result, error=error)
        if error is None:
            log.info(f"done: {outcome.phase}: {outcome.message}", phase=outcome.phase)
        self.on_job(job_type, ok, time.monotonic() - began)
        return outcome

    def _task(self, name: str, step: str, node: str, submit: Callable[[], str], log: JobLog) -> None:
        """Submit a task and wait for it; a failed task raises RequestFailed with Proxmox's own message."""
        try:
            upid = submit()
            log.info(f"{step} task {upid}", upid=upid)
            result = self.pve.wait_task(node, upid, self.config.task_timeout, step, abort=self._abort)
        except ProxmoxError as exc:
            raise RequestFailed(name, step, exc.reason) from None
        if not result.ok:
            for line in result.log:
                self.store.log(log.job_id, "error", f"task log: {line}")
            raise RequestFailed(name, step, result.exitstatus)

    def _abort(self) -> str | None:
        """Why to stop waiting on a task: the stop grace after SIGTERM ran out. Also beats the heart."""
        self.heartbeat()
        if not self.stopping.is_set():
            return None
        now = time.monotonic()
        if self._stop_seen is None:
            self._stop_seen = now
        if now - self._stop_seen < self.stop_grace:
            return None
        return "interrupted: the reconciler stopped"

    def _create(self, action: Create, log: JobLog) -> Outcome:
        d, node, vmid = action.desired, action.node, action.vmid
        params = create_params(d, vmid)
        # Written before the call, so that a crash mid-create is recognised after a restart, not repeated.
        self.store.record_resource(d.name, vmid, node, "creating", log.job_id)
        self._task(d.name, "create", node, lambda: self.pve.create_lxc(node, params), log)
        self.store.record_resource(d.name, vmid, node, "created", log.job_id)
        log.info(f"container {vmid} created on {node}")
        actions = ", ".join(d.profile.post_create_actions) or "none"
        log.info(f"post-create actions of profile {d.profile.name} ({actions}) are left to node-side setup")
        if not d.request.start:
            address = str(d.static_ip) if d.static_ip else None
            message = f"container {vmid} created on {node}, not started (start: false)"
            return Outcome(d.name, log.job_id, "Ready", message, vmid, node, address)
        return self._start_and_address(d, vmid, node, log)

    def _start_and_address(self, d: Desired, vmid: int, node: str, log: JobLog) -> Outcome:
        self._task(d.name, "start", node, lambda: self.pve.start_lxc(node, vmid), log)
        log.info(f"container {vmid} started")
        return self._address(d, vmid, node, log)

    def _address(self, d: Desired, vmid: int, node: str, log: JobLog) -> Outcome:
        if d.static_ip is not None:
            address = str(d.static_ip)
        else:
            found = self._dhcp_address(d.name, vmid, node)
            if found is None:
                log.error(f"no IPv4 address on eth0 after {self.config.address_timeout:g} s")
                message = f"container {vmid} running on {node}; waiting for a DHCP address"
                return Outcome(d.name, log.job_id, "Provisioning", message, vmid, node)
            address = found
            log.info(f"DHCP address {address}")
        self.store.set_address(d.name, address)
        return Outcome(d.name, log.job_id, "Ready", f"container {vmid} running on {node}", vmid, node, address)

    def _dhcp_address(self, name: str, vmid: int, node: str) -> str | None:
        """Poll the container's interfaces until eth0 has an IPv4 address, for at most address_timeout."""
        deadline = time.monotonic() + self.config.address_timeout
        delay = 0.05
        while True:
            try:
                interfaces = self.pve.interfaces(node, vmid)
            except ProxmoxError as exc:
                raise RequestFailed(name, "find address", exc.reason) from None
            for interface in interfaces:
                if interface.name == "eth0" and interface.ipv4:
                    return interface.ipv4[0]
            if time.monotonic() >= deadline or self.stopping.is_set():
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
