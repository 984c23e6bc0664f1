"""The plan rule for a request's LXC container (pure): create, start, find its address, set it up, or say where
it stands."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from reconciler.model.action import Action, CreateContainer, FindAddress, Provision, StartContainer
from reconciler.model.desired import Desired
from reconciler.model.observed import Guest, Observed
from reconciler.model.standing import Standing
from reconciler.model.vocab import GuestStatus, Phase, ResourceState, SetupState


def _drift(d: Desired, guest: Guest) -> list[str]:
    c = d.container
    out = []
    if guest.node != c.node:
        out.append(f"node {guest.node} -> {c.node}")
    for key, have, want in (
        ("cores", guest.cores, c.cores),
        ("memory", guest.memory_mb, c.memory),
        ("disk", guest.disk_gb, c.disk),
    ):
        if have and have != want:
            out.append(f"{key} {have} -> {want}")
    return out


def container_rule(
    d: Desired, observed: Observed, free: Iterator[int], vmids: range, setup_on: bool = False
) -> Action | Standing:
    """The next action for the request's container, or its standing when there is nothing to do.

    setup_on: whether setup inside containers can run (provision.transport is not off).
    """

    def standing(phase: Phase, message: str, guest: Guest | None = None, address: str | None = None) -> Standing:
        vmid, node = (guest.vmid, guest.node) if guest else (None, None)
        return Standing(d.name, d.path, phase, message, d.revision, vmid, node, address)

    guests = observed.owned.get(d.name, [])
    if len(guests) > 1:
        ids = ", ".join(str(g.vmid) for g in sorted(guests, key=lambda g: g.vmid))
        return standing(
            Phase.FAILED, f"containers {ids} all carry the marker of request {d.name}; remove all but one by hand"
        )
    held = observed.container(d.name)
    if not guests:
        pending = observed.by_vmid.get(held.vmid) if held and held.state == ResourceState.CREATING else None
        if pending is not None and pending.lock == "create":
            # A create begun before a restart: its guest shows, locked and without tags, until the task ends.
            return standing(Phase.PROVISIONING, f"create task of container {pending.vmid} still running", pending)
        vmid = next(free, None)
        if vmid is None:
            return standing(Phase.FAILED, f"no free VMID left in the approved range {vmids.start}..{vmids.stop - 1}")
        return CreateContainer(d, vmid, d.container.node)
    guest = guests[0]
    if guest.lock == "create":
        return standing(Phase.PROVISIONING, f"container {guest.vmid} is being created", guest)
    settling = d.name in observed.settling
    if settling and (
        guest.status == GuestStatus.UNKNOWN or (guest.status != GuestStatus.RUNNING and d.container.start)
    ):
        # The job that just ended made it; Proxmox's list of guests shows its state some seconds late.
        return standing(Phase.PROVISIONING, f"waiting for Proxmox to report the state of container {guest.vmid}", guest)
    if guest.status == GuestStatus.UNKNOWN:
        return standing(Phase.FAILED, f"node {guest.node} is offline: state of container {guest.vmid} unknown", guest)
    if guest.status != GuestStatus.RUNNING and d.container.start:
        return StartContainer(d, guest.vmid, guest.node)
    known = held.address if held is not None and held.vmid == guest.vmid else None
    address = str(d.static_ip) if d.static_ip is not None else known
    if address is None and guest.status == GuestStatus.RUNNING:
        return FindAddress(d, guest.vmid, guest.node)
    message = f"container {guest.vmid} {guest.status} on {guest.node}"
    drift = _drift(d, guest)
    if drift:
        message += "; differs from the request (not changed automatically): " + ", ".join(drift)
    ready = replace(standing(Phase.READY, message, guest, address), applied=True)
    steps = len(d.setup.steps)
    if not setup_on:
        return replace(
            ready,
            message=f"{message}; setup is off (provision.transport: off), {steps} steps not run",
            setup=SetupState.OFF,
        )
    record = observed.setups.get(d.name)
    if record is not None and record.done(guest.vmid, d.setup):
        health = d.service.health if d.service else None
        done = f"{message}; set up ({steps} steps" + (f", {health} answers)" if health else ")")
        return replace(ready, message=done, healthy=True, setup=SetupState.DONE, job=record.job_id)
    if guest.status != GuestStatus.RUNNING:
        return replace(ready, message=f"{message}; setup waits until it runs (start: false)", setup=SetupState.WAITING)
    return Provision(d, guest.vmid, guest.node, found_address=known)


def orphan(name: str, guests: list[Guest], observed: Observed) -> Standing:
    """An owned container whose request file is gone: reported, never touched."""
    ids = ", ".join(str(g.vmid) for g in guests)
    held = observed.container(name)
    return Standing(
        name,
        f"{name} (removed)",
        Phase.ORPHANED,
        f"request file removed; container {ids} left as it is (remove it by hand if it should go)",
        None,
        guests[0].vmid,
        guests[0].node,
        held.address if held else None,
    )
