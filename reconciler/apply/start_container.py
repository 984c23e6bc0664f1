"""Executor: start a stopped container (after the node-side features it needs, when it has any)."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import StartContainer
from reconciler.model.vocab import GuestStatus


def start_container(action: StartContainer, job: JobContext) -> str:
    node, vmid = action.node, action.vmid
    if job.owned_state(node, vmid, action.name) == GuestStatus.RUNNING:
        return f"container {vmid} on {node} was running already"  # the plan saw a state Proxmox had not updated
    features = action.desired.setup.node_features
    if features and job.tools.pct is not None:
        # A create whose job ended before its features were set (a crash, a refused pct) is mended here.
        job.set_node_features(node, vmid, features)
    job.task("start", node, lambda: job.pve.start_lxc(node, vmid))
    return f"container {vmid} started on {node}"
