"""Check request files against the format, the profiles and the site's approved values (pure: no I/O)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pydantic import ValidationError

from reconciler.config import SiteConfig
from reconciler.desired.profile import Profile
from reconciler.desired.request import Request
from reconciler.problems import Problem, from_validation_error, load_yaml


@dataclass(frozen=True)
class RequestFile:
    """A request file as read from the checkout."""

    path: str  # relative to the repository root
    name: str  # the file's stem, which names the request and its status file
    text: bytes
    revision: str | None = None  # the commit that last changed the file


@dataclass(frozen=True)
class Desired:
    """A valid request, with everything its profile and the site resolve."""

    request: Request
    profile: Profile
    template: str
    gateway: IPv4Address | None
    port: int | None
    monitoring: bool
    path: str
    revision: str | None

    @property
    def name(self) -> str:
        return self.request.name

    @property
    def static_ip(self) -> IPv4Address | None:
        address = self.request.network.address
        return address.ip if address is not None else None

    @property
    def domain(self) -> str | None:
        return self.request.service.domain if self.request.service else None

    @property
    def exposed(self) -> bool:
        return bool(self.request.service and self.request.service.expose)


@dataclass(frozen=True)
class Invalid:
    """A request refused with every reason found."""

    name: str
    path: str
    revision: str | None
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Claims:
    """What already exists outside the request files and may clash with them."""

    # domain -> the request whose generated service file has it, or None for a hand-written file
    service_domains: Mapping[str, str | None] = field(default_factory=dict)
    # requests that already have a container: they keep their domain and address on a clash
    provisioned: frozenset[str] = frozenset()
    # addresses configured on guests the reconciler does not own -> vmid
    foreign_ips: Mapping[IPv4Address, int] = field(default_factory=dict)


def parse_request(file: RequestFile) -> Request | list[Problem]:
    """Parse one file into a Request, or the problems that stop it."""
    parsed = _parse(file.name, file.text)
    return parsed if isinstance(parsed, Request) else list(parsed)


@functools.lru_cache(maxsize=8192)
def _parse(name: str, text: bytes) -> Request | tuple[Problem, ...]:
    # Pure in (name, text) and the results are immutable: each cycle re-reads every file, few change.
    try:
        raw = load_yaml(text)
    except ValueError as exc:
        return (Problem("", str(exc)),)
    if not isinstance(raw, dict):
        return (Problem("", "must be a YAML mapping with apiVersion, kind, name, ..."),)
    try:
        request = Request.model_validate(raw)
    except ValidationError as exc:
        return tuple(from_validation_error(exc))
    if request.name != name:
        return (Problem("name", f"{request.name!r} must equal the file name ({name})"),)
    return request


def _approved(field_name: str, value: object, allowed: Iterable[object], what: str) -> list[Problem]:
    allowed = list(allowed)
    if value in allowed:
        return []
    listed = ", ".join(str(a) for a in allowed) or "none configured"
    return [Problem(field_name, f"{value!r} is not an approved {what} ({listed})")]


def check_profile(request: Request, profiles: Mapping[str, Profile]) -> list[Problem]:
    """The rules the profile sets: it exists, supports the kind, and allows what the service asks."""
    problems: list[Problem] = []
    if request.kind == "vm":
        problems.append(Problem("kind", "vm is not supported yet; only lxc containers can be requested"))
    profile = profiles.get(request.profile)
    if profile is None:
        return problems + _approved("profile", request.profile, sorted(profiles), "profile")
    if request.kind != profile.supported_kind and request.kind != "vm":
        problems.append(Problem("kind", f"profile {profile.name} supports {profile.supported_kind} only"))
    return problems + _check_service(request, profile)


def check_site(request: Request, site: SiteConfig) -> list[Problem]:
    """The rules that need the site's approved values."""
    problems = _approved("node", request.node, site.nodes, "node")
    problems += _approved("storage", request.storage, site.storages, "storage")
    for key in ("cores", "memory", "disk"):
        value, allowed = getattr(request.resources, key), getattr(site.limits, key)
        if value not in allowed:
            problems.append(Problem(f"resources.{key}", f"{value} is outside the approved range {allowed}"))
    return problems + _check_network(request, site)


def _check_network(request: Request, site: SiteConfig) -> list[Problem]:
    net = request.network
    problems = _approved("network.bridge", net.bridge, sorted(site.bridges), "bridge")
    if net.vlan is not None:
        problems += _approved("network.vlan", net.vlan, site.vlans, "VLAN tag")
    bridge = site.bridges.get(net.bridge)
    if bridge is None or net.address is None:
        return problems
    reserved = set(site.reserved_ips) | {b.gateway for b in site.bridges.values() if b.gateway}
    ip = net.address.ip
    if net.address.network != bridge.cidr:
        problems.append(Problem("network.address", f"{net.address} is not inside {net.bridge}'s {bridge.cidr}"))
    elif ip in (bridge.cidr.network_address, bridge.cidr.broadcast_address):
        problems.append(Problem("network.address", f"{ip} is the network or broadcast address"))
    elif ip in reserved:
        problems.append(Problem("network.address", f"{ip} is reserved"))
    gateway = net.gateway or bridge.gateway
    if net.gateway is not None and net.gateway not in bridge.cidr:
        problems.append(Problem("network.gateway", f"{net.gateway} is outside {net.bridge}'s {bridge.cidr}"))
    elif gateway is not None and gateway == ip:
        problems.append(Problem("network.gateway", "equals the container's own address"))
    return problems


def _check_service(request: Request, profile: Profile) -> list[Problem]:
    service = request.service
    if service is None:
        return []
    problems = []
    if service.domain is not None and not profile.allow_domain:
        problems.append(Problem("service.domain", f"profile {profile.name} does not allow a domain"))
    if service.visibility == "public" and not profile.allow_public_exposure:
        problems.append(Problem("service.visibility", f"profile {profile.name} does not allow public exposure"))
    if service.expose and service.port is None and profile.default_port is None:
        problems.append(Problem("service.port", f"required: profile {profile.name} has no default port"))
    return problems


def _resolve(request: Request, profile: Profile, site: SiteConfig | None, file: RequestFile) -> Desired:
    bridge = site.bridges[request.network.bridge] if site else None
    service = request.service
    return Desired(
        request=request,
        profile=profile,
        template=site.templates[profile.template] if site else profile.template,
        gateway=request.network.gateway or (bridge.gateway if bridge and request.network.mode == "static" else None),
        port=(service.port or profile.default_port) if service else profile.default_port,
        monitoring=profile.monitoring if request.monitoring is None else request.monitoring,
        path=file.path,
        revision=file.revision,
    )


def _claim_losers(claimants: dict[str, list[Desired]], provisioned: frozenset[str]) -> dict[str, tuple[str, str]]:
    """Loser -> (key, winner) for each contested key: a provisioned request keeps what it has, else the first name."""
    losers: dict[str, tuple[str, str]] = {}
    for key, group in claimants.items():
        if len(group) < 2:
            continue
        ordered = sorted(group, key=lambda d: (d.name not in provisioned, d.name))
        for loser in ordered[1:]:
            losers[loser.name] = (key, ordered[0].name)
    return losers


def validate(
    files: Iterable[RequestFile],
    profiles: Mapping[str, Profile],
    site: SiteConfig | None,
    claims: Claims | None = None,
) -> tuple[list[Desired], list[Invalid]]:
    """Split request files into valid, resolved requests and invalid ones with every reason.

    Without a site (offline checks) the site's approved values are not checked.
    """
    claims = claims or Claims()
    valid: list[Desired] = []
    invalid: list[Invalid] = []
    for file in files:
        parsed = parse_request(file)
        if isinstance(parsed, list):
            problems = parsed
        else:
            problems = check_profile(parsed, profiles) + (check_site(parsed, site) if site else [])
        if problems or isinstance(parsed, list):
            invalid.append(Invalid(file.name, file.path, file.revision, sorted(set(problems))))
            continue
        valid.append(_resolve(parsed, profiles[parsed.profile], site, file))

    extra: dict[str, list[Problem]] = {}
    by_domain: dict[str, list[Desired]] = {}
    by_ip: dict[str, list[Desired]] = {}
    for d in valid:
        if d.domain:
            owner = claims.service_domains.get(d.domain, d.name)
            if owner is None:
                extra.setdefault(d.name, []).append(
                    Problem("service.domain", f"{d.domain} is already defined by a hand-written service file")
                )
            elif owner != d.name:
                extra.setdefault(d.name, []).append(
                    Problem("service.domain", f"{d.domain} already belongs to request {owner}")
                )
            else:
                by_domain.setdefault(d.domain, []).append(d)
        if d.static_ip is not None:
            vmid = claims.foreign_ips.get(d.static_ip)
            if vmid is not None and d.name not in claims.provisioned:
                extra.setdefault(d.name, []).append(
                    Problem("network.address", f"{d.static_ip} is already used by guest {vmid}")
                )
            by_ip.setdefault(str(d.static_ip), []).append(d)
    for loser, (domain, winner) in _claim_losers(by_domain, claims.provisioned).items():
        extra.setdefault(loser, []).append(Problem("service.domain", f"{domain} is also requested by {winner}"))
    for loser, (ip, winner) in _claim_losers(by_ip, claims.provisioned).items():
        extra.setdefault(loser, []).append(Problem("network.address", f"{ip} is also requested by {winner}"))

    if extra:
        keep = []
        for d in valid:
            if d.name in extra:
                invalid.append(Invalid(d.name, d.path, d.revision, sorted(set(extra[d.name]))))
            else:
                keep.append(d)
        valid = keep
    return valid, sorted(invalid, key=lambda i: i.name)
