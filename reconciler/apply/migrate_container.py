"""Executor: move a container to the node its request names (migrate: true), in restart mode when it runs."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import MigrateContainer
from reconciler.model.vocab import GuestStatus, JobType, ResourceKind, ResourceState


def migrate_container(action: MigrateContainer, job: JobContext) -> str:
    d, node, vmid, target = action.desired, action.node, action.vmid, action.target
    running = job.owned_state(node, vmid, d.name) == GuestStatus.RUNNING
    with job.intent(JobType.MIGRATE, vmid, node, d.name):
        job.task("migrate", node, lambda: job.pve.migrate(node, vmid, target, restart=running))
        job.pve.wait_unlocked(target, vmid, job.tools.proxmox.task_timeout, "migrate", abort=job.abort)
    job.record(lambda: job.store.hold(d.name, ResourceKind.LXC, str(vmid), target, ResourceState.CREATED, job.job_id))
    return f"container {vmid} moved from {node} to {target}" + (" (restarted)" if running else "")
