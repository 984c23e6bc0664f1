"""Executor: start a stopped container or VM (a container after the node-side features it needs, if any)."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import StartContainer
from reconciler.model.vocab import GuestStatus


def start_container(action: StartContainer, job: JobContext) -> str:
    node, vmid, kind, word = action.node, action.vmid, action.desired.kind.api, action.word
    if job.owned_state(node, vmid, action.name, kind) == GuestStatus.RUNNING:
        return f"{word} {vmid} on {node} was running already"  # the plan saw a state Proxmox had not updated
    features = action.desired.setup.node_features
    if features and job.tools.pct is not None:
        # A create whose job ended before its features were set (a crash, a refused pct) is mended here.
        job.set_node_features(node, vmid, features)
    job.task("start", node, lambda: job.pve.start(node, vmid, kind))
    return f"{word} {vmid} started on {node}"
