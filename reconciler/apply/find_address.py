"""Executor: wait for a running guest's DHCP address and keep it in the inventory.

A container's comes from Proxmox's view of its interfaces. A VM's comes from its QEMU guest agent, which
answers only once the guest has booted: "not running" and "got timeout" answers mean not yet, and the wait is
bounded (proxmox.agent_timeout), after which the status says what it waits for.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import FindAddress
from reconciler.model.errors import ReconcilerError
from reconciler.model.observed import vm_address
from reconciler.model.props import nic_mac
from reconciler.model.vocab import ResourceState


class NoAddressYet(ReconcilerError):
    """No address within the wait: the request stays Provisioning and the wait is tried again later."""

    temporary = True

    def __init__(self, reason: str) -> None:
        self.step = "find address"
        self.reason = reason
        super().__init__(self.reason)


def find_address(action: FindAddress, job: JobContext) -> str:
    node, vmid, name, kind = action.node, action.vmid, action.name, action.desired.kind
    job.owned_state(node, vmid, name, kind.api)
    if action.desired.vm is not None:
        address = _from_agent(action, job)
    else:
        timeout = job.tools.proxmox.address_timeout

        def look() -> str | None:
            for interface in job.pve.interfaces(node, vmid):
                if interface.name == "eth0" and interface.ipv4:
                    return interface.ipv4[0]
            return None

        found = job.poll(timeout, look)
        if found is None:
            raise NoAddressYet(f"no IPv4 address on eth0 after {timeout:g} s")
        address = found
    # A guest found running without an inventory entry (adopted after a lost database) gets one here.
    job.record(lambda: job.store.hold(name, kind, str(vmid), node, ResourceState.CREATED, job.job_id, address))
    job.log.info(f"DHCP address {address}")
    return f"{action.word} {vmid} running on {node} at {address}"


def _from_agent(action: FindAddress, job: JobContext) -> str:
    node, vmid = action.node, action.vmid
    timeout = job.tools.proxmox.agent_timeout
    mac = nic_mac(job.pve.container_config(node, vmid, "qemu").get("net0"))
    answered = False

    def look() -> str | None:
        nonlocal answered
        interfaces = job.pve.agent_interfaces(node, vmid)
        if interfaces is None:
            return None
        if not answered:
            job.log.info("the QEMU guest agent answers")
        answered = True
        return vm_address(interfaces, mac)

    address = job.poll(timeout, look)
    if address is not None:
        return address
    if answered:
        raise NoAddressYet(
            f"its QEMU guest agent reports no IPv4 address (other than loopback and link-local) after {timeout:g} s;"
            " is DHCP answering on its bridge?"
        )
    raise NoAddressYet(
        f"waiting for its QEMU guest agent, which has not answered after {timeout:g} s (proxmox.agent_timeout):"
        " is qemu-guest-agent installed and running in the template? If it is not, set agent: false in the"
        " profile, or give the VM a static address"
    )
