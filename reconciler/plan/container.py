"""The plan rule for a request's guest, an LXC container or a VM (pure): create (a VM by cloning), change,
move, start, stop, destroy, adopt, find its address, set it up, or say where it stands."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import replace
from datetime import datetime

from reconciler.model.action import (
    Action,
    AdoptContainer,
    CloneVm,
    CreateContainer,
    DestroyContainer,
    FindAddress,
    MigrateContainer,
    Provision,
    StartContainer,
    StopContainer,
    UpdateContainer,
)
from reconciler.model.desired import Desired
from reconciler.model.observed import Guest, Observed
from reconciler.model.owner import owner_of
from reconciler.model.props import flag
from reconciler.model.standing import Drift, Refusal, Standing
from reconciler.model.vocab import (
    GUEST_KINDS,
    DriftMode,
    GuestState,
    GuestStatus,
    JobType,
    Phase,
    ResourceState,
    SetupState,
)
from reconciler.plan.compare import Comparison, compare, disk_key, fields_of

# The locks of a guest being made: a container's create task, a VM's clone.
CREATING_LOCKS = ("create", "clone")
FLAP_LIMIT = 3  # drift corrections of one guest within the window before it is called flapping
FLAP_WINDOW = 3600.0  # seconds


def _standing(
    d: Desired, phase: Phase, message: str, guest: Guest | None = None, address: str | None = None, **more: object
) -> Standing:
    vmid, node = (guest.vmid, guest.node) if guest else (None, None)
    return replace(Standing(d.name, d.path, phase, message, d.revision, vmid, node, address), **more)  # type: ignore[arg-type]


def examine(d: Desired, observed: Observed) -> tuple[Comparison | None, bool]:
    """How the request's own container differs from it (None when its config is not known), and whether its
    drift is flapping."""
    guests = observed.owned.get(d.name, [])
    if len(guests) != 1:
        return None, False
    config = observed.configs.get(guests[0].vmid)
    if config is None:
        return None, False
    flapping = observed.corrections.get(d.name, 0) >= FLAP_LIMIT
    return compare(d, guests[0], config, observed.applied.get(d.name)), flapping


Examined = tuple[Comparison | None, bool]  # what examine() found


def drift_of(d: Desired, examined: Examined) -> tuple[tuple[Drift, ...], bool]:
    """The drift a status reports for the request, and whether it is flapping, from what examine() found."""
    if d.life.adopt:
        return (), False
    found, flapping = examined
    drift = found.drift if found is not None else ()
    return drift, flapping and bool(drift)


def unclaimed_creates(observed: Observed, vmids: range) -> list[int]:
    """Guests in the approved range being created by a task nobody here knows of (a job database lost
    mid-create): until their task ends and their marker shows, they may be a request's container."""
    known = {h.vmid for held in observed.held.values() for h in held if h.kind in GUEST_KINDS}
    known.update(r.action.vmid for r in observed.in_flight.values())
    return sorted(
        g.vmid
        for g in observed.guests
        if g.lock in CREATING_LOCKS and g.vmid in vmids and g.vmid not in known and owner_of(g.tags) is None
    )


def _age(observed: Observed, since: str) -> float:
    try:
        return observed.at - datetime.fromisoformat(since).timestamp()
    except ValueError:
        return 0.0


def container_rule(
    d: Desired,
    observed: Observed,
    free: Iterator[int],
    vmids: range,
    setup_on: bool = False,
    *,
    unclaimed: Collection[int] = (),
    task_timeout: float = 600.0,
    examined: Examined | None = None,
) -> Action | Standing:
    """The next action for the request's container, or its standing when there is nothing to do.

    setup_on: whether setup inside guests of the request's kind can run. unclaimed: see unclaimed_creates.
    task_timeout: how long a create begun before a restart may still be running before the request is Failed.
    examined: what examine() found for the request, when the caller has it already.
    """
    guests = observed.owned.get(d.name, [])
    if len(guests) > 1:
        ids = ", ".join(str(g.vmid) for g in sorted(guests, key=lambda g: g.vmid))
        return _standing(
            d, Phase.FAILED, f"guests {ids} all carry the marker of request {d.name}; remove all but one by hand"
        )
    if guests and guests[0].type != d.kind.api:
        other = "container" if guests[0].type == "lxc" else "VM"
        return _standing(
            d,
            Phase.FAILED,
            f"guest {guests[0].vmid} is a {other} carrying the marker of request {d.name}; this request is for a"
            f" {d.kind.word}, and the {other} is left as it is",
            guests[0],
        )
    if d.life.adopt:
        return _adopt(d, observed, guests)
    if not guests:
        return _without_guest(d, observed, free, vmids, unclaimed, task_timeout)
    guest = guests[0]
    if guest.lock in CREATING_LOCKS:
        return _standing(d, Phase.PROVISIONING, f"{d.kind.word} {guest.vmid} is being created", guest)
    step = _with_guest(d, observed, guest, setup_on, examined if examined is not None else examine(d, observed))
    if guest.lock and not isinstance(step, Standing | FindAddress | Provision):
        # A backup, snapshot or migration holds the guest: its config cannot change until the lock is gone.
        intent = observed.intent(d.name)
        begun = f"; its {intent.action} begun before a restart may still be running" if intent else ""
        return _standing(
            d,
            Phase.PROVISIONING,
            f"{d.kind.word} {guest.vmid} is locked ({guest.lock}){begun}; {step.describe()} waits",
            guest,
        )
    return step


def _without_guest(
    d: Desired, observed: Observed, free: Iterator[int], vmids: range, unclaimed: Collection[int], task_timeout: float
) -> Action | Standing:
    held = observed.container(d.name)
    if held is not None:
        earlier = observed.by_vmid.get(held.vmid)
        if earlier is not None and earlier.lock in CREATING_LOCKS and held.state == ResourceState.CREATING:
            # A create begun before a restart: its guest shows, locked and without tags, until the task ends.
            intent = observed.intent(d.name)
            if intent is not None and _age(observed, intent.created_at) > task_timeout:
                return _standing(
                    d,
                    Phase.FAILED,
                    f"the create task of {d.kind.word} {earlier.vmid} has run for more than {task_timeout:g} s"
                    " (proxmox.task_timeout); see its task log in Proxmox",
                    earlier,
                )
            return _standing(
                d, Phase.PROVISIONING, f"create task of {d.kind.word} {earlier.vmid} still running", earlier
            )
        if (
            d.vm is not None
            and earlier is not None
            and held.state == ResourceState.CREATING
            and earlier.type == "qemu"
            and earlier.lock is None
            and owner_of(earlier.tags) is None
            and earlier.name == d.container.hostname
        ):
            # Cloned before a restart, its marker not yet written: the clone is finished, not made again.
            return CloneVm(d, earlier.vmid, earlier.node, source=earlier.node, resume=True)
        if (
            earlier is not None
            and earlier.lock not in CREATING_LOCKS  # a backup or migration lock hides nothing: the marker is gone
            and owner_of(earlier.tags) is None
            and earlier.name == d.container.hostname
        ):
            return _standing(
                d,
                Phase.FAILED,
                f"{d.kind.word} {earlier.vmid} lost its marker (the tags reconciler and reconciler.{d.name});"
                f" nothing is created meanwhile. Put the tags back, or set adopt: true and vmid: {earlier.vmid}",
                earlier,
            )
    if d.life.state == GuestState.ABSENT:
        return _standing(d, Phase.DELETED, f"no {d.kind.word} (state: absent); remove the request file when done")
    if unclaimed:
        ids = ", ".join(str(v) for v in unclaimed)
        return _standing(
            d,
            Phase.PENDING,
            f"waiting: container {ids} in the approved range is being created by a task the job database does not"
            " know of; new containers wait until its marker shows",
        )
    template = None
    if d.vm is not None:
        template = observed.by_vmid.get(d.vm.template_vmid)
        if template is None or template.type != "qemu" or not template.template:
            what = "is not on the cluster" if template is None else "is not a template VM"
            return _standing(
                d,
                Phase.FAILED,
                f"template {d.vm.template} (VMID {d.vm.template_vmid} in site.vm_templates) {what}; nothing was"
                " cloned (see the README's VM templates)",
            )
    vmid = d.life.vmid if d.life.vmid is not None else next(free, None)
    if vmid is None:
        return _standing(d, Phase.FAILED, f"no free VMID left in the approved range {vmids.start}..{vmids.stop - 1}")
    if template is not None:
        return CloneVm(d, vmid, d.container.node, source=template.node)
    return CreateContainer(d, vmid, d.container.node)


def _with_guest(d: Desired, observed: Observed, guest: Guest, setup_on: bool, examined: Examined) -> Action | Standing:
    config = observed.configs.get(guest.vmid)
    if d.life.state == GuestState.ABSENT:
        return _destroy(d, guest, config.get("protection") if config else None)
    settling = d.name in observed.settling
    want_running = d.container.start and d.life.state == GuestState.PRESENT
    if settling and (guest.status == GuestStatus.UNKNOWN or (guest.status != GuestStatus.RUNNING and want_running)):
        # The job that just ended made it; Proxmox's list of guests shows its state some seconds late.
        return _standing(
            d, Phase.PROVISIONING, f"waiting for Proxmox to report the state of {d.kind.word} {guest.vmid}", guest
        )
    if guest.status == GuestStatus.UNKNOWN:
        return _standing(
            d, Phase.FAILED, f"node {guest.node} is offline: state of {d.kind.word} {guest.vmid} unknown", guest
        )
    found, flapping = examined
    if found is not None:
        if found.refused:
            return _refused(d, guest, found.refused)
        if found.move_to is not None:
            return MigrateContainer(
                d, guest.vmid, guest.node, target=found.move_to, running=guest.status == GuestStatus.RUNNING
            )
        correct = d.life.drift == DriftMode.CORRECT and not flapping
        changes = found.edits + (found.drift if correct else ())
        if changes or found.grow_to is not None:
            return UpdateContainer(
                d,
                guest.vmid,
                guest.node,
                seen=config,
                changes=tuple(sorted(changes)),
                grow_to=found.grow_to,
                corrects=tuple(sorted(c.field for c in found.drift)) if correct else (),
                disk=(disk_key(config, d.vm is not None) if config else None) or "rootfs",
            )
    if d.life.state == GuestState.STOPPED and guest.status == GuestStatus.RUNNING:
        return StopContainer(d, guest.vmid, guest.node)
    if guest.status != GuestStatus.RUNNING and want_running:
        return StartContainer(d, guest.vmid, guest.node)
    return _in_place(d, observed, guest, setup_on, found, flapping)


def _in_place(
    d: Desired, observed: Observed, guest: Guest, setup_on: bool, found: Comparison | None, flapping: bool
) -> Action | Standing:
    held = observed.container(d.name)
    # The address read last (a DHCP lease can move), else the one found when it was first given.
    known = observed.addresses.get(guest.vmid) or (
        held.address if held is not None and held.vmid == guest.vmid else None
    )
    address = str(d.static_ip) if d.static_ip is not None else known
    blind = d.vm is not None and not d.vm.agent  # a DHCP VM without a guest agent: nothing can tell its address
    if address is None and guest.status == GuestStatus.RUNNING and not blind:
        return FindAddress(d, guest.vmid, guest.node)
    message = f"{d.kind.word} {guest.vmid} {guest.status} on {guest.node}"
    if address is None and blind:
        message += (
            "; its DHCP address is unknown: its profile says the template has no QEMU guest agent to report it"
            " (use a template with the agent, or a static address), so it has no DNS record, Caddy backend or"
            " scrape target"
        )
    if d.life.state == GuestState.STOPPED:
        message += " (state: stopped)"
    config = observed.configs.get(guest.vmid)
    waiting = [k for k in config.pending if k in fields_of(d)] if config is not None else []
    if waiting and guest.status == GuestStatus.RUNNING:
        message += f"; {', '.join(waiting)} changed, in effect at its next boot"
    if found is not None and found.drift:
        why = "flapping: it came back after corrections" if flapping else "drift: report"
        message += f"; {len(found.drift)} field(s) changed by hand, not corrected ({why})"
    ready = replace(_standing(d, Phase.READY, message, guest, address), applied=True)
    steps = len(d.setup.steps)
    if d.vm is not None and not steps:
        return ready  # nothing to set up inside
    off = _setup_off(d, setup_on)
    if off is not None:
        return replace(ready, message=f"{message}; {off}, {steps} steps not run", setup=SetupState.OFF)
    record = observed.setups.get(d.name)
    if record is not None and record.done(guest.vmid, d.setup):
        health = d.service.health if d.service else None
        done = f"{message}; set up ({steps} steps" + (f", {health} answers)" if health else ")")
        return replace(ready, message=done, healthy=True, setup=SetupState.DONE, job=record.job_id)
    if guest.status != GuestStatus.RUNNING:
        why = "state: stopped" if d.life.state == GuestState.STOPPED else "start: false"
        return replace(ready, message=f"{message}; setup waits until it runs ({why})", setup=SetupState.WAITING)
    return Provision(d, guest.vmid, guest.node, found_address=known)


def _setup_off(d: Desired, setup_on: bool) -> str | None:
    """Why the request's setup steps cannot run in its guest, or None when they can."""
    if d.vm is not None and not d.vm.agent:
        # Its host key is learned through the agent, never trusted on first use.
        return (
            "setup is off for this VM: its profile says the template has no QEMU guest agent (agent: false),"
            " through which the VM's SSH host key is learned"
        )
    if not setup_on:
        return "setup is off for VMs (provision.vm is not set)" if d.vm else "setup is off (provision.transport: off)"
    return None


def _destroy(d: Desired, guest: Guest, protection: str | None) -> Action | Standing:
    if d.container.protected:
        return _standing(
            d,
            Phase.FAILED,
            f"{d.kind.word} {guest.vmid} not destroyed: the request sets protected: true, which blocks destruction;"
            " set protected: false to let state: absent destroy it",
            guest,
            refused=(Refusal("state", "absent", "present (protected: true)"),),
        )
    if flag(protection) == "1":
        # protected: false clears Proxmox's flag first; the destroy follows on the next pass.
        return UpdateContainer(d, guest.vmid, guest.node, changes=(Drift("protection", "0", "1"),))
    if guest.status == GuestStatus.UNKNOWN:
        return _standing(
            d, Phase.FAILED, f"node {guest.node} is offline: {d.kind.word} {guest.vmid} cannot be destroyed now", guest
        )
    return DestroyContainer(d, guest.vmid, guest.node)


def _refused(d: Desired, guest: Guest, refused: tuple[Refusal, ...]) -> Standing:
    said = "; ".join(str(r) for r in refused)
    return _standing(
        d,
        Phase.FAILED,
        f"cannot change {d.kind.word} {guest.vmid} as asked: {said}; nothing was changed",
        guest,
        refused=refused,
    )


def _adopt(d: Desired, observed: Observed, guests: list[Guest]) -> Action | Standing:
    vmid = d.life.vmid
    assert vmid is not None  # validation: adopt needs a vmid
    if guests and guests[0].vmid != vmid:
        return _standing(
            d, Phase.FAILED, f"request already owns {d.kind.word} {guests[0].vmid}; adopt names {vmid}", guests[0]
        )
    target = observed.by_vmid.get(vmid)
    if target is None:
        return _standing(d, Phase.FAILED, f"no guest {vmid} to adopt")
    if target.type != d.kind.api:
        other = "container" if target.type == "lxc" else "VM"
        return _standing(d, Phase.FAILED, f"guest {vmid} is a {other}; this request is for a {d.kind.word}", target)
    owner = owner_of(target.tags)
    if owner not in (None, d.name):
        return _standing(d, Phase.FAILED, f"guest {vmid} already belongs to request {owner}", target)
    config = observed.configs.get(vmid)
    if config is None:
        return _standing(d, Phase.PENDING, f"reading the config of guest {vmid} to adopt it", target)
    if owner is None:
        return AdoptContainer(d, vmid, target.node, seen=config)
    diffs = compare(d, target, config, None).everything
    if diffs:
        message = (
            f"{d.kind.word} {vmid} adopted on {target.node}: {len(diffs)} difference(s) from the request, reported and"
            " not applied; remove adopt: true to apply them"
        )
    else:
        message = f"{d.kind.word} {vmid} adopted on {target.node}: it matches the request; remove adopt: true"
    return _standing(d, Phase.READY, message, target, drift=diffs, applied=not diffs)


def orphan(name: str, guests: list[Guest], observed: Observed) -> Standing:
    """An owned container whose request file is gone: reported, never touched."""
    ids = ", ".join(str(g.vmid) for g in guests)
    held = observed.container(name)
    return Standing(
        name,
        f"{name} (removed)",
        Phase.ORPHANED,
        f"request file removed; container {ids} left as it is (to destroy it, restore the file with state: absent)",
        None,
        guests[0].vmid,
        guests[0].node,
        held.address if held else None,
    )


DESTRUCTIVE = (JobType.DESTROY, JobType.STOP)
