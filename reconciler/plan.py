"""Plan: a pure function from desired and observed state to the actions that close the gap (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from reconciler.config import Range
from reconciler.desired.validate import Desired
from reconciler.gateways.proxmox import GuestInfo
from reconciler.gateways.sqlite import Resource
from reconciler.marker import description_for, tags_for
from reconciler.observe import Observed

Phase = Literal["Pending", "Provisioning", "Ready", "Failed", "Invalid", "Orphaned"]


@dataclass(frozen=True)
class Create:
    """Create the request's container with this VMID on its node (and start it when asked)."""

    desired: Desired
    vmid: int

    @property
    def node(self) -> str:
        return self.desired.request.node

    def describe(self) -> str:
        r = self.desired.request
        res = r.resources
        return (
            f"create {r.name}: lxc {self.vmid} on {r.node} ({r.profile}, {res.cores} cores,"
            f" {res.memory} MB, {res.disk} GB, {r.network.mode})"
        )


@dataclass(frozen=True)
class _OnGuest:
    """An action on the request's existing container."""

    desired: Desired
    vmid: int
    node: str
    verb: ClassVar[str]

    def describe(self) -> str:
        return f"{self.verb} {self.desired.name}: lxc {self.vmid} on {self.node}"


class Start(_OnGuest):
    """Start the request's stopped container."""

    verb = "start"


class FindAddress(_OnGuest):
    """Read the DHCP address of the request's running container."""

    verb = "find address of"


Action = Create | Start | FindAddress


@dataclass(frozen=True)
class Verdict:
    """Where a request stands when no action is needed for it (or none can be taken)."""

    phase: Phase
    message: str
    vmid: int | None = None
    node: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)


def create_params(desired: Desired, vmid: int) -> dict[str, str | int]:
    """The body of POST /nodes/{node}/lxc for a request (PVE's parameter names and formats)."""
    r = desired.request
    net = r.network
    net0 = f"name=eth0,bridge={net.bridge}"
    if net.mode == "dhcp":
        net0 += ",ip=dhcp"
    else:
        net0 += f",ip={net.address}"
        if desired.gateway is not None:
            net0 += f",gw={desired.gateway}"
    if net.vlan is not None:
        net0 += f",tag={net.vlan}"
    params: dict[str, str | int] = {
        "vmid": vmid,
        "ostemplate": desired.template,
        "hostname": r.host,
        "description": description_for(r.name, desired.path, r.description),
        "storage": r.storage,
        "rootfs": f"{r.storage}:{r.resources.disk}",
        "cores": r.resources.cores,
        "memory": r.resources.memory,
        "net0": net0,
        "unprivileged": 1,
        "onboot": 1 if r.start else 0,
        "tags": ";".join(tags_for(r.name, desired.monitoring)),
    }
    features = desired.profile.features.pve_value()
    if features:
        params["features"] = features
    return params


def _drift(desired: Desired, guest: GuestInfo) -> list[str]:
    r = desired.request
    out = []
    if guest.node != r.node:
        out.append(f"node {guest.node} -> {r.node}")
    for key, have in (("cores", guest.cores), ("memory", guest.memory_mb), ("disk", guest.disk_gb)):
        want = getattr(r.resources, key)
        if have and have != want:
            out.append(f"{key} {have} -> {want}")
    return out


def _free_vmids(vmid_range: Range, taken: Iterable[int]) -> Iterator[int]:
    used = set(taken)
    return (v for v in range(vmid_range.low, vmid_range.high + 1) if v not in used)


def plan(
    desired: Iterable[Desired],
    observed: Observed,
    resources: Mapping[str, Resource],
    vmid_range: Range,
    request_names: Iterable[str] = (),
) -> Plan:
    """What to do for each valid request, and the verdict for those that need nothing (or cannot be helped).

    request_names are all request files, valid or not: an owned guest whose request file is gone is Orphaned.
    """
    result = Plan()
    creating = {
        r.vmid: r.request
        for r in resources.values()
        if r.state == "creating" and (g := observed.by_vmid.get(r.vmid)) is not None and g.lock == "create"
    }
    free = _free_vmids(vmid_range, observed.by_vmid)
    for d in sorted(desired, key=lambda d: d.name):
        name = d.name
        guests = observed.owned.get(name, [])
        known = resources.get(name)
        if len(guests) > 1:
            ids = ", ".join(str(g.vmid) for g in sorted(guests, key=lambda g: g.vmid))
            result.verdicts[name] = Verdict(
                "Failed", f"containers {ids} all carry the marker of request {name}; remove all but one by hand"
            )
            continue
        if not guests:
            in_flight = [vmid for vmid, owner in creating.items() if owner == name]
            if in_flight:
                result.verdicts[name] = Verdict(
                    "Provisioning", f"create task of container {in_flight[0]} still running", vmid=in_flight[0]
                )
                continue
            vmid = next(free, None)
            if vmid is None:
                result.verdicts[name] = Verdict("Failed", f"no free VMID left in the approved range {vmid_range}")
                continue
            result.actions.append(Create(d, vmid))
            continue
        guest = guests[0]
        if guest.lock == "create":
            result.verdicts[name] = Verdict(
                "Provisioning", f"container {guest.vmid} is being created", vmid=guest.vmid, node=guest.node
            )
            continue
        if guest.status == "unknown":
            result.verdicts[name] = Verdict(
                "Failed",
                f"node {guest.node} is offline: state of container {guest.vmid} unknown",
                vmid=guest.vmid,
                node=guest.node,
            )
            continue
        if guest.status != "running" and d.request.start:
            result.actions.append(Start(d, guest.vmid, guest.node))
            continue
        address = str(d.static_ip) if d.static_ip is not None else (known.address if known else None)
        if address is None and guest.status == "running":
            result.actions.append(FindAddress(d, guest.vmid, guest.node))
            continue
        message = f"container {guest.vmid} {guest.status} on {guest.node}"
        drift = _drift(d, guest)
        if drift:
            message += "; differs from the request (not changed automatically): " + ", ".join(drift)
        result.verdicts[name] = Verdict("Ready", message, address=address, vmid=guest.vmid, node=guest.node)
    wanted = set(request_names) | {d.name for d in desired}
    for name, guests in sorted(observed.owned.items()):
        if name not in wanted:
            ids = ", ".join(str(g.vmid) for g in guests)
            result.verdicts[name] = Verdict(
                "Orphaned",
                f"request file removed; container {ids} left as it is (remove it by hand if it should go)",
                vmid=guests[0].vmid,
                node=guests[0].node,
                address=resources[name].address if name in resources else None,
            )
    return result
