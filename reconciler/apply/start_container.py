"""Executor: start a stopped container."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import StartContainer


def start_container(action: StartContainer, job: JobContext) -> str:
    node, vmid = action.node, action.vmid
    job.task("start", node, lambda: job.pve.start_lxc(node, vmid))
    return f"container {vmid} started on {node}"
