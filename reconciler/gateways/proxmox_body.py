"""Proxmox request bodies, rendered from model specs in PVE's parameter names and formats (pure)."""

from __future__ import annotations

from reconciler.model.desired import Desired, Network
from reconciler.model.owner import tags_for
from reconciler.model.vocab import NetworkMode

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
        "unprivileged": 1,
        "onboot": 1 if c.start else 0,
        "start": 1 if (c.start if start is None else start) else 0,
        "tags": ";".join(tags_for(desired.name, desired.monitoring)),
    }
    if c.nesting:
        params["features"] = "nesting=1"
    return params
