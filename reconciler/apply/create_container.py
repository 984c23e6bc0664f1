"""Executor: create a container, and start it when the request says so.

Usually the create task starts it too. A container that needs features only root@pam may set (keyctl, for
Docker) is created stopped, given them with `pct set` on its node, then started: they must be there before
its first start. The marker (its tags) is part of the create call itself, so the guest is recognised as the
request's from Proxmox alone, even when the job database is lost meanwhile.
"""

from __future__ import annotations

from functools import partial

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox import VmidTaken
from reconciler.gateways.proxmox_body import create_container as body
from reconciler.model.action import CreateContainer
from reconciler.model.vocab import GUEST_KINDS, JobType, ResourceKind, ResourceState
from reconciler.plan.compare import wanted

CHOOSE_AGAIN = 5  # creates refused because something else took the VMID meanwhile


def create_container(action: CreateContainer, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    features = d.setup.node_features if job.tools.pct is not None else ()
    start = d.container.start
    # A setup recorded for an earlier container of the request (maybe with this very VMID) is not this one's.
    job.store.forget_setup(d.name)
    for attempt in range(CHOOSE_AGAIN + 1):
        params = body(d, vmid, start=start and not features)
        # Recorded before the call, so that a crash mid-create is recognised after a restart, not repeated.
        job.store.hold(d.name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATING, job.job_id)
        try:
            with job.intent(JobType.CREATE, vmid, node, d.name):
                job.task("create", node, partial(job.pve.create_lxc, node, params), vmid=vmid)
            break
        except VmidTaken as exc:
            if d.life.vmid is not None or attempt == CHOOSE_AGAIN:
                raise  # a VMID the request names is not changed behind its back
            job.store.forget(d.name)  # its hold on the refused VMID
            vmid = _another(job, vmid)
            job.log.info(f"{exc.reason}: choosing again, VMID {vmid}")
    made = vmid
    job.record(lambda: job.store.hold(d.name, ResourceKind.LXC, str(made), node, ResourceState.CREATED, job.job_id))
    job.record(lambda: job.store.record_applied(d.name, made, wanted(d), job.job_id))
    if features:
        job.set_node_features(node, vmid, features)
        if start:
            job.task("start", node, lambda: job.pve.start(node, vmid), vmid=vmid)
    if not start:
        return f"container {vmid} created on {node}, not started (start: false)"
    return f"container {vmid} created and started on {node}"


def _another(job: JobContext, refused: int) -> int:
    """The next VMID in the approved range that no guest and no other request's container holds."""
    taken = {g.vmid for g in job.pve.guests()}
    taken.update(h.vmid for held in job.store.inventory().values() for h in held if h.kind in GUEST_KINDS)
    for vmid in job.tools.vmids:
        if vmid > refused and vmid not in taken:
            return vmid
    raise VmidTaken("create", f"VMID {refused} was taken meanwhile and no other is free in the approved range", None)
