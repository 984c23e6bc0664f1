"""Executor: change a guest's owned config in place, with the digest the plan read, and grow its disk.

The digest makes Proxmox refuse the change when the guest changed after the plan looked at it: the job fails
as temporary, and the next pass reads it again and plans again. Nothing the request does not own is sent. A
VM's cloud-init keys change its cloud-init drive at once and the guest at its next boot: the summary says so.
"""

from __future__ import annotations

import time

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox_body import update_guest as body
from reconciler.model.action import UpdateContainer
from reconciler.model.vocab import JobType
from reconciler.plan.compare import GROWN, wanted


def update_guest(action: UpdateContainer, job: JobContext) -> str:
    d, node, vmid, kind = action.desired, action.node, action.vmid, action.desired.kind.api
    seen = action.seen
    if seen is None:  # an update planned without a config (clearing protection before a destroy): read it now
        job.owned_state(node, vmid, d.name, kind)
        seen = job.pve.container_config(node, vmid, kind)
    params, delete = body(d, action.changes, seen)
    for line in action.lines():
        job.log.info(line)
    with job.intent(JobType.UPDATE, vmid, node, d.name):
        if params or delete:
            job.pve.update_config(node, vmid, params, delete, seen.digest, kind)
        grow_to = action.grow_to
        if grow_to is not None:
            # The digest again: the config must still be the one compared, or the size asked may be stale.
            digest = seen.digest if not (params or delete) else None
            job.task("resize", node, lambda: job.pve.resize(node, vmid, action.disk, grow_to, digest, kind), vmid, kind)
    fields = wanted(d)
    if d.vm is not None:
        before = job.store.applied().get(d.name)
        grown = str(grow_to) if grow_to is not None else (before.fields.get(GROWN) if before else None)
        if grown is not None:
            fields[GROWN] = grown
    job.record(lambda: job.store.record_applied(d.name, vmid, fields, job.job_id))
    if action.corrects:
        job.record(lambda: job.store.record_correction(d.name, vmid, action.corrects, time.time()))
        job.log.info(f"put back what was changed by hand: {', '.join(action.corrects)}")
    return f"{action.word} {vmid} updated on {node}: " + "; ".join(action.lines())
