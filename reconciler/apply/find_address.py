"""Executor: wait for a running container's DHCP address and keep it in the inventory."""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import FindAddress
from reconciler.model.errors import ReconcilerError
from reconciler.model.vocab import ResourceKind, ResourceState


class NoAddressYet(ReconcilerError):
    """No lease within the wait: the request stays Provisioning and the wait is tried again later."""

    temporary = True

    def __init__(self, seconds: float) -> None:
        self.step = "find address"
        self.reason = f"no IPv4 address on eth0 after {seconds:g} s"
        super().__init__(self.reason)


def find_address(action: FindAddress, job: JobContext) -> str:
    node, vmid, name = action.node, action.vmid, action.name
    timeout = job.tools.proxmox.address_timeout
    job.owned_state(node, vmid, name)

    def look() -> str | None:
        for interface in job.pve.interfaces(node, vmid):
            if interface.name == "eth0" and interface.ipv4:
                return interface.ipv4[0]
        return None

    address = job.poll(timeout, look)
    if address is None:
        raise NoAddressYet(timeout)
    # A container found running without an inventory entry (adopted after a lost database) gets one here.
    job.record(
        lambda: job.store.hold(name, ResourceKind.LXC, str(vmid), node, ResourceState.CREATED, job.job_id, address)
    )
    job.log.info(f"DHCP address {address}")
    return f"container {vmid} running on {node} at {address}"
