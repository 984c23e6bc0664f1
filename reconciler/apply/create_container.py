"""Executor: create a container (and start it, in the same task, when the request says so)."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox_body import create_container as body
from reconciler.model.action import CreateContainer
from reconciler.model.vocab import ResourceKind, ResourceState


def create_container(action: CreateContainer, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    params = body(d, vmid)
    # Recorded before the call, so that a crash mid-create is recognised after a restart, not repeated.
    job.store.hold(d.name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATING, job.job_id)
    job.task("create", node, lambda: job.pve.create_lxc(node, params))
    job.store.hold(d.name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATED, job.job_id)
    actions = ", ".join(d.post_create) or "none"
    job.log.info(f"post-create actions of profile {d.profile} ({actions}) are left to node-side setup")
    if not d.container.start:
        return f"container {vmid} created on {node}, not started (start: false)"
    return f"container {vmid} created and started on {node}"
