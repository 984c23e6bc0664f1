"""Desired state: a request file, resolved against its profile and the site, as plan and apply read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from reconciler.model.problem import Problem
from reconciler.model.setup import Setup
from reconciler.model.vocab import DriftMode, GuestState, NetworkMode, ResourceKind


@dataclass(frozen=True)
class RequestFile:
    """A request file as read from the checkout."""

    path: str  # relative to the repository root
    name: str  # the file's stem, which names the request and its status file
    text: bytes
    revision: str | None = None  # the commit that last changed the file


@dataclass(frozen=True)
class Network:
    """The guest's one network device (a VM's net0 and ipconfig0); gateway is resolved (the request's, else the
    bridge's)."""

    mode: NetworkMode
    bridge: str
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    vlan: int | None = None

    def owned_props(self) -> dict[str, str]:
        """The keys of net0 the request sets; Proxmox's own (hwaddr, type) and the operator's others stay."""
        props = {"name": "eth0", "bridge": self.bridge}
        if self.mode == NetworkMode.DHCP:
            props["ip"] = "dhcp"
        else:
            props["ip"] = str(self.address)
            if self.gateway is not None:
                props["gw"] = str(self.gateway)
        if self.vlan is not None:
            props["tag"] = str(self.vlan)
        return props


@dataclass(frozen=True)
class ContainerSpec:
    """A guest (an LXC container, or a VM with its VmSpec beside) as the request and its profile want it."""

    node: str
    hostname: str
    description: str
    template: str  # the OS template's volume id (a VM's template is in its VmSpec)
    storage: str
    cores: int
    memory: int  # MB
    disk: int  # GB
    network: Network
    start: bool = True
    nesting: bool = False
    swap: int = 512  # MB
    protected: bool = False  # Proxmox's protection flag: blocks destruction
    tags: tuple[str, ...] = ()  # the operator's own tags, beside the reconciler's


@dataclass(frozen=True)
class CloudInit:
    """What cloud-init sets up in a VM at its first boot (and again at a boot after a change)."""

    user: str
    ssh_keys: tuple[str, ...] = ()  # OpenSSH public keys, one line each
    nameserver: str | None = None
    search_domain: str | None = None


@dataclass(frozen=True)
class VmSpec:
    """What a VM has beside the shape it shares with a container: the template it is cloned from."""

    template: str  # the template's name, a key of site.vm_templates
    template_vmid: int
    cloud_init: CloudInit
    full_clone: bool = True  # False: a linked clone, on the template's storage
    agent: bool = False  # the template runs the QEMU guest agent: a DHCP address is read through it


@dataclass(frozen=True)
class Lifecycle:
    """What the request says about its guest's life beyond its spec."""

    state: GuestState = GuestState.PRESENT
    drift: DriftMode = DriftMode.CORRECT
    adopt: bool = False  # take the existing guest `vmid` under management
    vmid: int | None = None  # the guest's VMID: chosen from the approved range when None
    migrate: bool = False  # a change of node moves the container (restart mode) instead of being refused


@dataclass(frozen=True)
class Service:
    domain: str | None = None
    expose: bool = False
    visibility: str = "internal"
    port: int | None = None  # resolved: the request's, else the profile's default
    health: str | None = None


@dataclass(frozen=True)
class Scrape:
    """The scrape targets of a monitored request: (exporter, port) pairs, node exporter first, and its labels."""

    exporters: tuple[tuple[str, int], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Desired:
    """A valid request: what its resources should be, with everything its profile and the site resolve."""

    name: str
    path: str
    revision: str | None
    profile: str
    container: ContainerSpec
    service: Service | None = None
    monitoring: bool = False
    scrape: Scrape = field(default_factory=Scrape)
    dns: bool = True  # records for its hostname and domain (dns: false opts out)
    setup: Setup = field(default_factory=Setup)
    life: Lifecycle = field(default_factory=Lifecycle)
    vm: VmSpec | None = None  # for kind vm; the guest's shape is in `container` for both kinds

    @property
    def kind(self) -> ResourceKind:
        """The kind of guest the request asks for."""
        return ResourceKind.LXC if self.vm is None else ResourceKind.VM

    @property
    def static_ip(self) -> IPv4Address | None:
        address = self.container.network.address
        return address.ip if address is not None else None

    @property
    def domain(self) -> str | None:
        return self.service.domain if self.service else None

    @property
    def exposed(self) -> bool:
        return bool(self.service and self.service.expose)

    @property
    def port(self) -> int | None:
        return self.service.port if self.service else None


@dataclass(frozen=True)
class Invalid:
    """A request refused with every reason found."""

    name: str
    path: str
    revision: str | None
    problems: tuple[Problem, ...]
