"""Desired state: a request file, resolved against its profile and the site, as plan and apply read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from reconciler.model.problem import Problem
from reconciler.model.setup import Setup
from reconciler.model.vocab import NetworkMode


@dataclass(frozen=True)
class RequestFile:
    """A request file as read from the checkout."""

    path: str  # relative to the repository root
    name: str  # the file's stem, which names the request and its status file
    text: bytes
    revision: str | None = None  # the commit that last changed the file


@dataclass(frozen=True)
class Network:
    """The container's one network device; gateway is resolved (the request's, else the bridge's)."""

    mode: NetworkMode
    bridge: str
    address: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    vlan: int | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """An LXC container as the request and its profile want it."""

    node: str
    hostname: str
    description: str
    template: str  # the OS template's volume id
    storage: str
    cores: int
    memory: int  # MB
    disk: int  # GB
    network: Network
    start: bool = True
    nesting: bool = False


@dataclass(frozen=True)
class Service:
    domain: str | None = None
    expose: bool = False
    visibility: str = "internal"
    port: int | None = None  # resolved: the request's, else the profile's default
    health: str | None = None


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
    setup: Setup = field(default_factory=Setup)

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
