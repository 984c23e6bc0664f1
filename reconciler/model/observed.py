"""Observed state: the cluster's guests, what the inventory holds, and the reconciler's own work in flight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address

from reconciler.model.action import Action
from reconciler.model.dns import ZoneView
from reconciler.model.guest import GuestConfig
from reconciler.model.owner import owner_of
from reconciler.model.retry import Attempt
from reconciler.model.setup import SetupRecord
from reconciler.model.vocab import GUEST_KINDS, GuestStatus, ResourceKind, ResourceState


@dataclass(frozen=True)
class Guest:
    """A VM or container as /cluster/resources lists it."""

    vmid: int
    node: str
    type: str  # lxc | qemu
    name: str
    status: GuestStatus
    tags: tuple[str, ...]
    lock: str | None
    template: bool
    cores: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Intent:
    """A call about to change Proxmox, recorded before it is made: after a crash its outcome is unknown
    until the cluster is looked at."""

    id: int
    request: str
    vmid: int
    node: str
    action: str  # the job type: create, update, resize, migrate, stop, destroy, adopt
    job_id: int | None
    created_at: str


@dataclass(frozen=True)
class Applied:
    """The values of the owned fields the reconciler last wrote to a request's guest (field -> normal form):
    a field that still reads so but differs from the request was edited in Git, not by hand."""

    vmid: int
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Interface:
    name: str
    ipv4: tuple[str, ...]
    mac: str | None = None  # as the guest agent reports it (lower case)


def vm_address(interfaces: Sequence[Interface], mac: str | None) -> str | None:
    """The address a VM's guest agent reports for it: an IPv4 address that is neither loopback nor link-local,
    on the interface whose MAC is net0's when there is one (a Docker bridge's comes second), else the first."""
    found = []
    for order, interface in enumerate(interfaces):
        for ip in interface.ipv4:
            try:
                address = IPv4Address(ip)
            except ValueError:
                continue
            if address.is_loopback or address.is_link_local or address.is_unspecified:
                continue
            found.append((0 if mac and interface.mac == mac.lower() else 1, order, ip))
    return min(found)[2] if found else None


@dataclass(frozen=True)
class Held:
    """A resource the inventory says the reconciler made (or is making) for a request."""

    request: str
    kind: ResourceKind
    key: str  # the VMID for a guest
    node: str
    state: ResourceState
    address: str | None = None
    job_id: int | None = None

    @property
    def vmid(self) -> int:
        return int(self.key)


@dataclass(frozen=True)
class Running:
    """A job queued or running for a request."""

    job_id: int
    action: Action


@dataclass(frozen=True)
class Observed:
    """Everything plan reads besides the request files, taken at one moment."""

    guests: tuple[Guest, ...]
    held: Mapping[str, tuple[Held, ...]] = field(default_factory=dict)
    in_flight: Mapping[str, Running] = field(default_factory=dict)
    attempts: Mapping[str, Attempt] = field(default_factory=dict)
    # Requests whose job just succeeded: what it made is trusted over a lagging contrary report for a while.
    settling: frozenset[str] = frozenset()
    last_jobs: Mapping[str, int] = field(default_factory=dict)
    # Static addresses configured on guests the reconciler does not own -> vmid (read only when needed).
    foreign_ips: Mapping[IPv4Address, int] = field(default_factory=dict)
    setups: Mapping[str, SetupRecord] = field(default_factory=dict)  # request -> its last setup run
    configs: Mapping[int, GuestConfig] = field(default_factory=dict)  # vmid -> config, for owned and adopted guests
    applied: Mapping[str, Applied] = field(default_factory=dict)  # request -> the values last written
    corrections: Mapping[str, int] = field(default_factory=dict)  # request -> drift corrections in the last hour
    intents: tuple[Intent, ...] = ()  # calls recorded before they were made, outcome not yet seen
    addresses: Mapping[int, str] = field(default_factory=dict)  # vmid -> eth0's IPv4 as last read (DHCP guests)
    zones: Mapping[str, ZoneView] = field(default_factory=dict)  # zone -> its last transfer (where one is allowed)
    at: float = 0.0  # wall-clock time of the observation (seconds since the epoch)

    @cached_property
    def owned(self) -> dict[str, list[Guest]]:
        """Request name -> the guests marked as created for it (more than one is an error to report)."""
        out: dict[str, list[Guest]] = {}
        for guest in self.guests:
            name = owner_of(guest.tags)
            if name is not None:
                out.setdefault(name, []).append(guest)
        return out

    @cached_property
    def by_vmid(self) -> dict[int, Guest]:
        return {g.vmid: g for g in self.guests}

    @cached_property
    def foreign(self) -> list[Guest]:
        """Guests the reconciler does not own and must never touch."""
        return [g for g in self.guests if owner_of(g.tags) is None]

    def intent(self, request: str) -> Intent | None:
        """The request's oldest unsettled intent."""
        return next((i for i in self.intents if i.request == request), None)

    def container(self, request: str) -> Held | None:
        """The guest (container or VM) the inventory holds for a request."""
        return next((h for h in self.held.get(request, ()) if h.kind in GUEST_KINDS), None)
