"""Proxmox request bodies, rendered from model specs in PVE's parameter names and formats (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.model.desired import Desired, Network
from reconciler.model.guest import GuestConfig
from reconciler.model.owner import tags_for
from reconciler.model.props import join_props, normal_tags, split_props
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


def update_container(
    desired: Desired, changes: Sequence[Drift], seen: GuestConfig
) -> tuple[dict[str, ParamValue], list[str]]:
    """The body of PUT /nodes/{node}/lxc/{vmid}/config for these changes, and the keys to delete.

    Property strings are merged key by key into what the guest has: net0 keeps its hwaddr (a new one would
    be a new MAC) and keys the request does not set; features keeps flags other than nesting.
    """
    c = desired.container
    params: dict[str, ParamValue] = {}
    delete: list[str] = []
    for change in changes:
        name = change.field
        if name == "description":
            params["description"] = c.description
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
        else:
            params[name] = change.desired
    return params, delete
