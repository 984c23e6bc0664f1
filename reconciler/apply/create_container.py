"""Executor: create a container, and start it when the request says so.

Usually the create task starts it too. A container that needs features only root@pam may set (keyctl, for
Docker) is created stopped, given them with `pct set` on its node, then started: they must be there before
its first start.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox_body import create_container as body
from reconciler.model.action import CreateContainer
from reconciler.model.vocab import ResourceKind, ResourceState


def create_container(action: CreateContainer, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    features = d.setup.node_features if job.tools.pct is not None else ()
    start = d.container.start
    params = body(d, vmid, start=start and not features)
    # Recorded before the call, so that a crash mid-create is recognised after a restart, not repeated; a setup
    # recorded for an earlier container of the request (maybe with this very VMID) is not this one's.
    job.store.forget_setup(d.name)
    job.store.hold(d.name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATING, job.job_id)
    job.task("create", node, lambda: job.pve.create_lxc(node, params))
    job.store.hold(d.name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATED, job.job_id)
    if features:
        job.set_node_features(node, vmid, features)
        if start:
            job.task("start", node, lambda: job.pve.start_lxc(node, vmid))
    if not start:
        return f"container {vmid} created on {node}, not started (start: false)"
    return f"container {vmid} created and started on {node}"
