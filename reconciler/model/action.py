"""Actions: what a plan asks apply to do, one job each.

Every action carries its resource kind, its job type, how to describe it, and what a failure means: which
phase its request shows meanwhile and whether trying again by itself can help. `Action` is the closed union
apply's executor registry is checked against; a new kind of work adds a type here and to the union.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from reconciler.model.desired import Desired
from reconciler.model.dns import Record, RecordChange
from reconciler.model.guest import GuestConfig
from reconciler.model.standing import DnsPart, Drift, Standing
from reconciler.model.vocab import DnsState, JobType, Phase, ResourceKind, SetupState, Slot

# A VM's cloud-init keys: Proxmox regenerates the cloud-init drive from them, and the guest reads it at boot.
CLOUD_INIT_KEYS = ("ciuser", "sshkeys", "ipconfig0", "nameserver", "searchdomain")


@dataclass(frozen=True)
class ActionBase:
    """One piece of work on one request's resource, on one node."""

    desired: Desired
    vmid: int
    node: str
    kind: ClassVar[ResourceKind]
    job_type: ClassVar[JobType]
    # The phase a request shows while this action's failure waits for its retry.
    failure_phase: ClassVar[Phase] = Phase.FAILED
    # Whether the action makes the resource: until it succeeds, the request has no VMID to show.
    creates: ClassVar[bool] = False
    # What the job holds while it runs: a Proxmox task, a pct session, or nothing on the node.
    slot: ClassVar[Slot] = Slot.TASK
    # Whether the container is as the request asks while this action is still to do (or failed).
    applied: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.desired.name

    @property
    def revision(self) -> str | None:
        return self.desired.revision

    @property
    def profile(self) -> str | None:
        return self.desired.profile

    @property
    def guest(self) -> str:
        """The guest as plans name it: `lxc 123` or `vm 123`."""
        return f"{self.desired.kind} {self.vmid}"

    @property
    def word(self) -> str:
        """The kind of guest as messages name it: container or VM."""
        return self.desired.kind.word

    def describe(self) -> str:
        """What the action will do, for plans and job logs."""
        raise NotImplementedError

    def progress(self) -> str:
        """What the request's status says while the action is queued or running."""
        raise NotImplementedError

    def worth_retry(self, temporary: bool) -> bool:
        """Whether to try again after a backoff; otherwise only a change of the request (or an hour) retries."""
        return temporary

    def standing(self, job: int | None = None, failure: str | None = None, output: tuple[str, ...] = ()) -> Standing:
        """Where the request stands while this action is queued or running, or after it failed with `failure`."""
        d = self.desired
        failed = failure is not None and self.failure_phase == Phase.FAILED
        shown = not (self.creates and failure is not None)  # a failed create made nothing to point at
        setup = self.setup_state(failure is not None)
        return Standing(
            d.name,
            d.path,
            self.failure_phase if failure is not None else Phase.PROVISIONING,
            failure if failure is not None and failed else self.progress(),
            d.revision,
            self.vmid if shown else None,
            self.node if shown else None,
            self.address,
            job=job,
            applied=self.applied,
            healthy=False if setup == SetupState.FAILED else None,  # setup, its health check included, failed
            setup=setup,
            output=output if failed else (),
        )

    @property
    def address(self) -> str | None:
        """The container's address, where the action knows it."""
        return str(self.desired.static_ip) if self.desired.static_ip is not None else None

    def setup_state(self, failed: bool) -> SetupState | None:
        """Where setup stands while this action is to do, or after it failed; None before setup's turn."""
        return None

    def details(self) -> dict[str, object]:
        """What the job record keeps beside the VMID, node and revision."""
        return {}


@dataclass(frozen=True)
class CreateContainer(ActionBase):
    """Create the request's container with this VMID on its node, started when the request says so."""

    kind = ResourceKind.LXC
    job_type = JobType.CREATE
    creates = True

    def describe(self) -> str:
        c = self.desired.container
        cores = f"{c.cores} core" if c.cores == 1 else f"{c.cores} cores"
        return (
            f"create {self.name}: lxc {self.vmid} on {self.node} ({self.desired.profile}, {cores},"
            f" {c.memory} MB, {c.disk} GB, {c.network.mode})"
        )

    def progress(self) -> str:
        return f"creating container {self.vmid} on {self.node}"


@dataclass(frozen=True)
class CloneVm(ActionBase):
    """Clone the request's VM from its template, write its config and cloud-init keys, grow its disk, start it.

    The marker is written by the config update right after the clone: a clone whose job ended before that
    (a crash) is found by its VMID and name, and resumed rather than cloned again.
    """

    kind = ResourceKind.VM
    job_type = JobType.CLONE
    creates = True
    source: str = ""  # the node that holds the template
    resume: bool = False  # the clone exists already (made before a restart): its config, disk and start remain

    def describe(self) -> str:
        d = self.desired
        assert d.vm is not None
        c = d.container
        cores = f"{c.cores} core" if c.cores == 1 else f"{c.cores} cores"
        how = "full" if d.vm.full_clone else "linked"
        made = "finish the clone" if self.resume else f"{how} clone of template {d.vm.template} ({d.vm.template_vmid})"
        return (
            f"create {self.name}: vm {self.vmid} on {self.node}, {made} ({d.profile}, {cores}, {c.memory} MB,"
            f" {c.disk} GB, {c.network.mode})"
        )

    def progress(self) -> str:
        assert self.desired.vm is not None
        return f"cloning VM {self.vmid} on {self.node} from template {self.desired.vm.template}"

    def details(self) -> dict[str, object]:
        return {"source": self.source, "resume": self.resume}


@dataclass(frozen=True)
class StartContainer(ActionBase):
    """Start the request's stopped container where it is."""

    kind = ResourceKind.LXC
    job_type = JobType.START

    def describe(self) -> str:
        return f"start {self.name}: {self.guest} on {self.node}"

    def progress(self) -> str:
        return f"starting {self.word} {self.vmid} on {self.node}"


@dataclass(frozen=True)
class FindAddress(ActionBase):
    """Wait for the DHCP address of the request's running container."""

    kind = ResourceKind.LXC
    job_type = JobType.FIND_ADDRESS
    failure_phase = Phase.PROVISIONING  # a lease that has not come yet is a wait, not a failure
    slot = Slot.WAIT
    applied = True

    def describe(self) -> str:
        return f"find address of {self.name}: {self.guest} on {self.node}"

    def progress(self) -> str:
        if self.desired.vm is not None:
            return f"VM {self.vmid} running on {self.node}; waiting for its address from the QEMU guest agent"
        return f"container {self.vmid} running on {self.node}; waiting for a DHCP address"

    def worth_retry(self, temporary: bool) -> bool:
        return True

    def standing(self, job: int | None = None, failure: str | None = None, output: tuple[str, ...] = ()) -> Standing:
        """A VM's wait says what it waits for (its agent, or DHCP), in place of the plain progress."""
        base = super().standing(job, failure, output)
        if failure is None or self.desired.vm is None:
            return base
        said = failure.removeprefix(f"{self.job_type.value.replace('-', ' ')} failed: ")
        return replace(base, message=f"VM {self.vmid} running on {self.node}; {said}")


@dataclass(frozen=True)
class Provision(ActionBase):
    """Run the request's setup steps inside its running container, then check its health path."""

    kind = ResourceKind.LXC
    job_type = JobType.PROVISION
    slot = Slot.SETUP
    applied = True
    found_address: str | None = None  # a DHCP address found earlier (a static one comes from the request)

    def describe(self) -> str:
        return f"set up {self.name}: {self.guest} on {self.node}: {self.desired.setup.names()}"

    def progress(self) -> str:
        return f"{self.word} {self.vmid} running on {self.node}; setting it up ({self.desired.setup.names()})"

    @property
    def address(self) -> str | None:
        return super().address or self.found_address

    def setup_state(self, failed: bool) -> SetupState | None:
        return SetupState.FAILED if failed else SetupState.RUNNING

    def details(self) -> dict[str, object]:
        setup = self.desired.setup
        return {"digest": setup.digest, "steps": [s.name.value for s in setup.steps]}


@dataclass(frozen=True)
class UpdateContainer(ActionBase):
    """Change the container's owned config in place (PUT config with the digest read), and grow its disk."""

    kind = ResourceKind.LXC
    job_type = JobType.UPDATE
    seen: GuestConfig | None = None  # the config the plan compared, with its digest
    changes: tuple[Drift, ...] = ()  # field, desired (to write), observed (there now)
    grow_to: int | None = None  # GB
    corrects: tuple[str, ...] = ()  # the fields among changes that put back a change made by hand
    disk: str = "rootfs"  # the disk grow_to grows: a VM's boot disk (scsi0, virtio0, ...)

    @property
    def next_boot(self) -> tuple[str, ...]:
        """The changed fields that take effect only at the guest's next boot: a VM's cloud-init keys."""
        if self.desired.vm is None:
            return ()
        return tuple(c.field for c in self.changes if c.field in CLOUD_INIT_KEYS)

    def lines(self) -> list[str]:
        """One line per change: `field: old -> new`, the disk last."""
        out = [f"{c.field}: {_short(c.observed)} -> {_short(c.desired)}" for c in self.changes]
        if self.grow_to is not None:
            out.append(f"resize {self.disk} -> {self.grow_to} GB")
        if self.next_boot:
            out.append(f"cloud-init ({', '.join(self.next_boot)}) takes effect at the VM's next boot")
        return out

    def describe(self) -> str:
        return f"update {self.name}: {self.guest} on {self.node}: " + "; ".join(self.lines())

    def progress(self) -> str:
        fields = [c.field for c in self.changes] + (["disk"] if self.grow_to is not None else [])
        return f"updating {self.word} {self.vmid} on {self.node}: {', '.join(fields)}"

    def details(self) -> dict[str, object]:
        return {
            "changes": [{"field": c.field, "old": c.observed, "new": c.desired} for c in self.changes],
            "grow_to": self.grow_to,
            "corrects": list(self.corrects),
        }


@dataclass(frozen=True)
class MigrateContainer(ActionBase):
    """Move the container to the node the request names (restart mode when it runs); node is where it is."""

    kind = ResourceKind.LXC
    job_type = JobType.MIGRATE
    target: str = ""
    running: bool = False

    def describe(self) -> str:
        mode = " (restart mode: it stops and starts again)" if self.running else ""
        return f"migrate {self.name}: lxc {self.vmid} from {self.node} to {self.target}{mode}"

    def progress(self) -> str:
        return f"migrating container {self.vmid} from {self.node} to {self.target}"

    def details(self) -> dict[str, object]:
        return {"target": self.target, "restart": self.running}


@dataclass(frozen=True)
class StopContainer(ActionBase):
    """Shut the container down (state: stopped), hard after the shutdown timeout."""

    kind = ResourceKind.LXC
    job_type = JobType.STOP

    def describe(self) -> str:
        return f"stop {self.name}: {self.guest} on {self.node} (state: stopped)"

    def progress(self) -> str:
        return f"stopping {self.word} {self.vmid} on {self.node} (state: stopped)"


@dataclass(frozen=True)
class DestroyContainer(ActionBase):
    """Stop and destroy the container with its volumes (state: absent)."""

    kind = ResourceKind.LXC
    job_type = JobType.DESTROY

    def describe(self) -> str:
        return f"destroy {self.name}: {self.guest} on {self.node} and its volumes (state: absent)"

    def progress(self) -> str:
        return f"destroying {self.word} {self.vmid} on {self.node} (state: absent)"


@dataclass(frozen=True)
class AdoptContainer(ActionBase):
    """Write the reconciler's marker on an existing guest (adopt: true) and change nothing else."""

    kind = ResourceKind.LXC
    job_type = JobType.ADOPT
    seen: GuestConfig | None = None

    def describe(self) -> str:
        return f"adopt {self.name}: {self.guest} on {self.node} (its marker only; nothing else changes)"

    def progress(self) -> str:
        return f"adopting {self.word} {self.vmid} on {self.node}: writing its marker"


@dataclass(frozen=True)
class ChangeRecords:
    """Create, change or delete a request's DNS records: one signed update per record name, each atomic.

    It needs no Desired: the records of a removed request are deleted too. base is where the request stands
    apart from its records (its container's standing); a DNS failure fails only the records, never base.
    """

    base: Standing
    changes: tuple[RecordChange, ...]
    records: tuple[Record, ...] = ()  # the request's records once the changes are made
    profile: str | None = None
    kind: ClassVar[ResourceKind] = ResourceKind.DNS
    job_type: ClassVar[JobType] = JobType.DNS
    creates: ClassVar[bool] = False
    slot: ClassVar[Slot] = Slot.WAIT  # holds nothing on a node
    applied: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def revision(self) -> str | None:
        return self.base.revision

    @property
    def vmid(self) -> int:
        return self.base.vmid or 0

    @property
    def node(self) -> str:
        return self.base.node or ""

    @property
    def address(self) -> str | None:
        return self.base.address

    def describe(self) -> str:
        return f"DNS records of {self.name}: " + "; ".join(str(c) for c in self.changes)

    def progress(self) -> str:
        return "updating: " + "; ".join(str(c) for c in self.changes)

    def worth_retry(self, temporary: bool) -> bool:
        return temporary

    def standing(self, job: int | None = None, failure: str | None = None, output: tuple[str, ...] = ()) -> Standing:
        """The base standing with its records pending (this job), or failed with the server's answer."""
        records = tuple(str(r) for r in self.records)
        before = self.base.dns  # what the rule found: a note, or names it refuses to write
        if failure is None:
            state = before.state if before is not None and before.state == DnsState.FAILED else DnsState.PENDING
            said = "; ".join(m for m in (self.progress(), before.message if before else "") if m)
            return replace(self.base, job=job, dns=DnsPart(state, records, said))
        return failed_records(self.base, job, records, failure)

    def details(self) -> dict[str, object]:
        return {"changes": [str(c) for c in self.changes]}


def failed_records(base: Standing, job: int | None, records: tuple[str, ...], failure: str) -> Standing:
    """base with its DNS records failed: said in the records' part and at the end of the message."""
    suffix = "; DNS records failed"
    message = base.message if base.message.endswith(suffix) else base.message + suffix
    return replace(base, job=job, message=message, dns=DnsPart(DnsState.FAILED, records, failure))


def _short(value: str, limit: int = 60) -> str:
    """A value for one line of a plan: long texts (descriptions) cut, empty ones shown as such."""
    flat = value.replace("\n", " ")
    if not flat:
        return "(none)"
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


Action = (
    CreateContainer
    | CloneVm
    | StartContainer
    | FindAddress
    | Provision
    | UpdateContainer
    | MigrateContainer
    | StopContainer
    | DestroyContainer
    | AdoptContainer
    | ChangeRecords
)
