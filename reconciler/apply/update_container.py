"""Executor: change a container's owned config in place, with the digest the plan read, and grow its disk.

The digest makes Proxmox refuse the change when the guest changed after the plan looked at it: the job fails
as temporary, and the next pass reads it again and plans again. Nothing the request does not own is sent.
"""

from __future__ import annotations

import time

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox_body import update_container as body
from reconciler.model.action import UpdateContainer
from reconciler.model.vocab import JobType
from reconciler.plan.compare import wanted


def update_container(action: UpdateContainer, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    seen = action.seen
    if seen is None:  # an update planned without a config (clearing protection before a destroy): read it now
        job.owned_state(node, vmid, d.name)
        seen = job.pve.container_config(node, vmid)
    params, delete = body(d, action.changes, seen)
    for line in action.lines():
        job.log.info(line)
    with job.intent(JobType.UPDATE, vmid, node, d.name):
        if params or delete:
            job.pve.update_config(node, vmid, params, delete, seen.digest)
        if action.grow_to is not None:
            # The digest again: the config must still be the one compared, or the size asked may be stale.
            digest = seen.digest if not (params or delete) else None
            job.task("resize", node, lambda: job.pve.resize(node, vmid, "rootfs", action.grow_to or 0, digest), vmid)
    job.record(lambda: job.store.record_applied(d.name, vmid, wanted(d), job.job_id))
    if action.corrects:
        job.record(lambda: job.store.record_correction(d.name, vmid, action.corrects, time.time()))
        job.log.info(f"put back what was changed by hand: {', '.join(action.corrects)}")
    return f"container {vmid} updated on {node}: " + "; ".join(action.lines())
