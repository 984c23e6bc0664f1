"""Executor: shut a container or VM down (state: stopped); Proxmox stops it hard after the shutdown timeout."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import StopContainer
from reconciler.model.vocab import GuestStatus, JobType


def stop_container(action: StopContainer, job: JobContext) -> str:
    d, node, vmid, kind = action.desired, action.node, action.vmid, action.desired.kind.api
    if job.owned_state(node, vmid, d.name, kind) != GuestStatus.RUNNING:
        return f"{action.word} {vmid} on {node} was stopped already"
    timeout = int(job.tools.proxmox.shutdown_timeout)
    with job.intent(JobType.STOP, vmid, node, d.name):
        job.task("shutdown", node, lambda: job.pve.shutdown(node, vmid, timeout, kind), vmid=vmid, kind=kind)
    return f"{action.word} {vmid} shut down on {node} (state: stopped)"
