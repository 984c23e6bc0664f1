"""Executor: destroy a container or VM its request marks `state: absent`, with its volumes.

Only a guest that still carries the request's marker is touched. It is shut down first (hard after the
shutdown timeout), then destroyed with purge (its backup-job, replication and HA entries go too).
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import DestroyContainer
from reconciler.model.vocab import GuestStatus, JobType


def destroy_container(action: DestroyContainer, job: JobContext) -> str:
    d, node, vmid, kind = action.desired, action.node, action.vmid, action.desired.kind.api
    running = job.owned_state(node, vmid, d.name, kind) == GuestStatus.RUNNING
    timeout = int(job.tools.proxmox.shutdown_timeout)
    with job.intent(JobType.DESTROY, vmid, node, d.name):
        if running:
            job.task("shutdown", node, lambda: job.pve.shutdown(node, vmid, timeout, kind), vmid=vmid, kind=kind)
        job.task("destroy", node, lambda: job.pve.destroy(node, vmid, kind))
    job.record(lambda: job.store.forget(d.name))
    return f"{action.word} {vmid} destroyed on {node} with its volumes (state: absent)"
