"""Proxmox request bodies, rendered from model specs in PVE's parameter names and formats (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from reconciler.model.desired import Desired, Network
from reconciler.model.guest import GuestConfig
from reconciler.model.owner import tags_for
from reconciler.model.props import join_props, nic_model, normal_tags, split_props
from reconciler.model.standing import Drift
from reconciler.model.vocab import GuestState, NetworkMode

ParamValue = str | int


def net0(network: Network) -> str:
    """The container's net0 property string."""
    value = f"name=eth0,bridge={network.bridge}"
    if network.mode == NetworkMode.DHCP:
        value += ",ip=dhcp"
    else:
        value += f",ip={network.address}"
        if network.gateway is not None:
            value += f",gw={network.gateway}"
    if network.vlan is not None:
        value += f",tag={network.vlan}"
    return value


def create_container(desired: Desired, vmid: int, start: bool | None = None) -> dict[str, ParamValue]:
    """The body of POST /nodes/{node}/lxc; start (the request's start when None) makes the create task start
    the container too."""
    c = desired.container
    params: dict[str, ParamValue] = {
        "vmid": vmid,
        "ostemplate": c.template,
        "hostname": c.hostname,
        "description": c.description,
        "storage": c.storage,
        "rootfs": f"{c.storage}:{c.disk}",
        "cores": c.cores,
        "memory": c.memory,
        "net0": net0(c.network),
        "swap": c.swap,
        "unprivileged": 1,
        "onboot": 1 if c.start and desired.life.state == GuestState.PRESENT else 0,
        "start": 1 if (c.start if start is None else start) else 0,
        "tags": normal_tags([*tags_for(desired.name, desired.monitoring), *c.tags]),
    }
    if c.protected:
        params["protection"] = 1
    if c.nesting:
        params["features"] = "nesting=1"
    return params


def sshkeys(keys: Sequence[str]) -> str:
    """A VM's `sshkeys` as Proxmox expects it: the keys newline-joined, then URL-encoded with every reserved
    character escaped (`/`, `+`, `:`, `=`, `@` too) and spaces as %20, never `+` (it would decode as a `+`)."""
    return quote("\n".join(keys), safe="")


def ipconfig0(network: Network) -> str:
    """A VM's cloud-init network settings: `ip=dhcp`, or `ip=CIDR[,gw=GW]`."""
    if network.mode == NetworkMode.DHCP or network.address is None:
        return "ip=dhcp"
    return f"ip={network.address}" + (f",gw={network.gateway}" if network.gateway is not None else "")


def vm_net0(network: Network, seen: str | None) -> str:
    """A VM's net0 with the request's bridge and VLAN tag; the model with its MAC and the operator's other keys
    stay (a new MAC would be a new NIC to the guest, and a new DHCP lease)."""
    props = {k: v for k, v in split_props(seen).items() if k not in ("bridge", "tag")}
    props["bridge"] = network.bridge
    if network.vlan is not None:
        props["tag"] = str(network.vlan)
    model = nic_model(props)
    if model is None:
        props[""] = "virtio"  # no NIC in the template: a virtio one, to which Proxmox gives a MAC
    return join_props(props, first=model)


def configure_vm(desired: Desired, seen: GuestConfig) -> dict[str, ParamValue]:
    """The body of PUT /nodes/{node}/qemu/{vmid}/config right after the clone: everything the request owns of
    the VM, its marker and cloud-init keys among it, in one call."""
    c, vm = desired.container, desired.vm
    assert vm is not None
    ci = vm.cloud_init
    params: dict[str, ParamValue] = {
        "name": c.hostname,
        "description": c.description,
        "cores": c.cores,
        "memory": c.memory,
        "tags": normal_tags([*tags_for(desired.name, desired.monitoring), *c.tags]),
        "onboot": 1 if c.start and desired.life.state == GuestState.PRESENT else 0,
        "net0": vm_net0(c.network, seen.get("net0")),
        "ipconfig0": ipconfig0(c.network),
        "ciuser": ci.user,
        "agent": 1 if vm.agent else 0,
    }
    if ci.ssh_keys:
        params["sshkeys"] = sshkeys(ci.ssh_keys)
    if ci.nameserver:
        params["nameserver"] = ci.nameserver
    if ci.search_domain:
        params["searchdomain"] = ci.search_domain
    if c.protected:
        params["protection"] = 1
    return params


def update_guest(
    desired: Desired, changes: Sequence[Drift], seen: GuestConfig
) -> tuple[dict[str, ParamValue], list[str]]:
    """The body of PUT /nodes/{node}/{lxc|qemu}/{vmid}/config for these changes, and the keys to delete.

    Property strings are merged key by key into what the guest has: net0 keeps its MAC (a new one would be a
    new NIC) and keys the request does not set; features keeps flags other than nesting. A VM's cloud-init
    keys the request no longer sets are deleted.
    """
    c, vm = desired.container, desired.vm
    params: dict[str, ParamValue] = {}
    delete: list[str] = []
    for change in changes:
        name = change.field
        if name == "description":
            params["description"] = c.description
        elif name == "net0" and vm is not None:
            params["net0"] = vm_net0(c.network, seen.get("net0"))
        elif name == "net0":
            props = {
                k: v for k, v in split_props(seen.get("net0")).items() if k not in ("name", "bridge", "ip", "gw", "tag")
            }
            props.update(c.network.owned_props())
            params["net0"] = join_props(props, first="name")
        elif name == "features.nesting":
            props = split_props(seen.get("features"))
            props.pop("nesting", None)
            if change.desired == "1":
                props["nesting"] = "1"
            if props:
                params["features"] = join_props(props)
            else:
                delete.append("features")
        elif name == "sshkeys" and vm is not None and vm.cloud_init.ssh_keys:
            params["sshkeys"] = sshkeys(vm.cloud_init.ssh_keys)
        elif name in ("sshkeys", "nameserver", "searchdomain") and not change.desired:
            delete.append(name)
        else:
            params[name] = change.desired
    return params, delete
