"""Executor: clone a VM from its cloud-init template, give it the request's config in one update, grow its
disk, and start it.

The clone is held `creating` before the call and named after the request's hostname: a job that ended between
the clone and the config update (a crash) is recognised by both and finished, never cloned again. The marker
comes with that one config update, with the cloud-init keys. Clones onto one storage run one at a time (the
plan sees to that); a clone Proxmox's storage lock refuses fails as temporary, and is tried again after a
backoff.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.gateways.proxmox_body import configure_vm
from reconciler.model.action import CloneVm
from reconciler.model.errors import ProxmoxError
from reconciler.model.owner import owner_of
from reconciler.model.props import split_tags
from reconciler.model.vocab import JobType, ResourceKind, ResourceState
from reconciler.plan.compare import GROWN, boot_disk, disk_gb, wanted

QEMU = ResourceKind.VM.api


def clone_vm(action: CloneVm, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    vm, c = d.vm, d.container
    assert vm is not None
    if action.resume:
        job.log.info(f"VM {vmid} was cloned before a restart: its config, disk and start remain")
    else:
        # A setup recorded for an earlier guest of the request (maybe with this very VMID) is not this one's.
        job.store.forget_setup(d.name)
        # Recorded before the call, so that a crash mid-clone is recognised after a restart, not repeated.
        job.store.hold(d.name, ResourceKind.VM, str(vmid), node, ResourceState.CREATING, job.job_id)
        how = "full" if vm.full_clone else "linked"
        job.log.info(f"{how} clone of template {vm.template} ({vm.template_vmid}) on {action.source} as VM {vmid}")
        with job.intent(JobType.CLONE, vmid, node, d.name):
            job.task(
                "clone",
                action.source,
                lambda: job.pve.clone_vm(
                    action.source, vm.template_vmid, vmid, c.hostname, vm.full_clone, c.storage, node
                ),
            )
            job.pve.wait_unlocked(node, vmid, job.tools.proxmox.task_timeout, "clone", job.abort, QEMU)
    seen = job.pve.container_config(node, vmid, QEMU)
    owner = owner_of(split_tags(seen.get("tags")))
    if owner not in (None, d.name) or seen.get("name") != c.hostname:
        raise ProxmoxError("configure", f"VM {vmid} on {node} is not the clone this job made; it is left alone")
    with job.intent(JobType.CLONE, vmid, node, d.name):
        job.pve.update_config(node, vmid, configure_vm(d, seen), [], seen.digest, QEMU)
    job.record(lambda: job.store.hold(d.name, ResourceKind.VM, str(vmid), node, ResourceState.CREATED, job.job_id))
    job.log.info(f"config written: marker, {c.cores} cores, {c.memory} MB, cloud-init for user {vm.cloud_init.user}")
    fields = wanted(d)
    disk, size = boot_disk(seen), disk_gb(seen, vm=True)
    if disk is not None and size is not None and c.disk > size:
        job.task("resize", node, lambda: job.pve.resize(node, vmid, disk, c.disk, None, QEMU), vmid, QEMU)
        job.log.info(f"{disk} grown from {size} GB to {c.disk} GB")
        fields[GROWN] = str(c.disk)
    job.record(lambda: job.store.record_applied(d.name, vmid, fields, job.job_id))
    if not c.start:
        return f"VM {vmid} cloned from template {vm.template} on {node}, not started (start: false)"
    job.task("start", node, lambda: job.pve.start(node, vmid, QEMU), vmid, QEMU)
    return f"VM {vmid} cloned from template {vm.template} and started on {node}"
