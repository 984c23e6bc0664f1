"""Executor: start a stopped container."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import StartContainer
from reconciler.model.vocab import GuestStatus


def start_container(action: StartContainer, job: JobContext) -> str:
    node, vmid = action.node, action.vmid
    if job.owned_state(node, vmid, action.name) == GuestStatus.RUNNING:
        return f"container {vmid} on {node} was running already"  # the plan saw a state Proxmox had not updated
    job.task("start", node, lambda: job.pve.start_lxc(node, vmid))
    return f"container {vmid} started on {node}"
