"""Executor: take an existing container or VM under management (adopt: true) by writing the marker, nothing else.

The values it has are recorded as the ones last applied: once the operator removes `adopt`, the request's
differences are edits, and are applied.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import AdoptContainer
from reconciler.model.owner import NAME_PREFIX, OWNER_TAG
from reconciler.model.props import normal_tags, split_tags
from reconciler.model.vocab import JobType, ResourceState
from reconciler.plan.compare import seen as seen_fields


def adopt_container(action: AdoptContainer, job: JobContext) -> str:
    d, node, vmid, kind = action.desired, action.node, action.vmid, action.desired.kind
    seen = action.seen if action.seen is not None else job.pve.container_config(node, vmid, kind.api)
    tags = normal_tags([*split_tags(seen.get("tags")), OWNER_TAG, NAME_PREFIX + d.name])
    with job.intent(JobType.ADOPT, vmid, node, d.name):
        # The digest: a guest changed since the plan read it is read and planned again, never overwritten.
        job.pve.update_config(node, vmid, {"tags": tags}, [], seen.digest, kind.api)
    job.record(lambda: job.store.hold(d.name, kind, str(vmid), node, ResourceState.CREATED, job.job_id))
    fields = {**seen_fields(seen, d.vm is not None), "tags": tags}
    job.record(lambda: job.store.record_applied(d.name, vmid, fields, job.job_id))
    return f"{action.word} {vmid} on {node} adopted: marker written ({tags}); nothing else changed"
