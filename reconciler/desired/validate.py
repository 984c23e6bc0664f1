"""Check each request file on its own against the format, the profiles and the site's approved values (pure).

Clashes between requests, and with what already exists, are decided in plan.conflicts.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from reconciler.config import SiteConfig
from reconciler.desired.profile import NODE_EXPORTER, NODE_EXPORTER_PORT, Profile
from reconciler.desired.request import Request
from reconciler.desired.setup import NODE_EXPORTER_SET, build_setup
from reconciler.model.desired import (
    CloudInit,
    ContainerSpec,
    Desired,
    Invalid,
    Lifecycle,
    Network,
    RequestFile,
    Scrape,
    Service,
    VmSpec,
)
from reconciler.model.owner import MONITORING_TAG, NAME_PREFIX, OWNER_TAG, description_for
from reconciler.model.problem import Problem
from reconciler.model.setup import Setup
from reconciler.model.vocab import DriftMode, GuestState, NetworkMode
from reconciler.parse import counted, from_validation_error, load_yaml, quoted

# Problems one file may report: a file of 10,000 unknown keys must not make a status file and log of as many.
MAX_PROBLEMS = 20


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
    shown = quoted(value) if isinstance(value, str) else repr(value)  # a 1 MB node name is not echoed whole
    return [Problem(field_name, f"{shown} is not an approved {what} ({listed})")]


def check_profile(request: Request, profiles: Mapping[str, Profile]) -> list[Problem]:
    """The rules the profile sets: it exists, supports the kind, and allows what the service asks."""
    problems = _check_kind(request)
    profile = profiles.get(request.profile)
    if profile is None:
        return problems + _approved("profile", request.profile, sorted(profiles), "profile")
    if request.kind != profile.supported_kind:
        problems.append(Problem("kind", f"profile {profile.name} supports {profile.supported_kind} only"))
    return problems + _check_service(request, profile) + _check_setup(request, profile) + _check_tags(request)


def _check_kind(request: Request) -> list[Problem]:
    """The keys of one kind of guest are refused on the other: nothing a request says is silently ignored."""
    if request.kind == "vm":
        problems = []
        if request.cloud_init is None:
            problems.append(Problem("cloud_init", "required for kind vm: at least user (and ssh_keys to log in)"))
        if request.resources.swap is not None:
            problems.append(Problem("resources.swap", "is for containers; a VM's swap lives inside its own disk"))
        if request.migrate:
            problems.append(Problem("migrate", "is for containers; a VM is not moved between nodes"))
        return problems
    return [
        Problem(key, "is for kind vm only")
        for key, value in (("cloud_init", request.cloud_init), ("clone", request.clone))
        if value is not None
    ]


def _check_setup(request: Request, profile: Profile) -> list[Problem]:
    """The optional package sets and the web server a request asks for must be ones its profile offers."""
    problems = []
    offered = ", ".join(profile.optional_package_sets) or "none"
    for name in request.package_sets:
        if name not in profile.optional_package_sets:
            problems.append(
                Problem("package_sets", f"{name!r} is not an optional set of profile {profile.name} ({offered})")
            )
    if len(set(request.package_sets)) != len(request.package_sets):
        problems.append(Problem("package_sets", "names a set twice"))
    monitor = request.monitor
    if NODE_EXPORTER_SET in request.package_sets and monitor is not None and not monitor.enabled:
        problems.append(Problem("package_sets", f"{NODE_EXPORTER_SET} is monitoring: drop it or set monitoring: true"))
    if request.web_server is not None and request.web_server not in profile.web_servers:
        problems.append(Problem("web_server", f"profile {profile.name} has no web server"))
    return problems + _check_exporters(request, profile)


def _check_exporters(request: Request, profile: Profile) -> list[Problem]:
    """Exporters a request adds must be ones its profile offers, and need monitoring on."""
    monitor = request.monitor
    if monitor is None or not monitor.exporters:
        return []
    offered = ", ".join(f"{n} ({p})" for n, p in sorted(profile.exporters.items())) or "none"
    problems = [
        Problem("monitoring.exporters", f"{name!r} is not an exporter of profile {profile.name} ({offered})")
        for name in monitor.exporters
        if name not in profile.exporters
    ]
    if len(set(monitor.exporters)) != len(monitor.exporters):
        problems.append(Problem("monitoring.exporters", "names an exporter twice"))
    if not monitor.enabled:
        problems.append(Problem("monitoring.exporters", "need monitoring on: drop them or set enabled: true"))
    return problems


def check_site(request: Request, site: SiteConfig, profile: Profile | None = None) -> list[Problem]:
    """The rules that need the site's approved values (and, for a VM, its profile's template)."""
    problems = _approved("node", request.node, site.nodes, "node")
    if profile is not None and profile.supported_kind == "vm" and profile.template not in site.vm_templates:
        listed = ", ".join(sorted(site.vm_templates)) or "none configured"
        problems.append(
            Problem("profile", f"{profile.name}'s template {profile.template!r} is not in site.vm_templates ({listed})")
        )
    problems += _approved("storage", request.storage, site.storages, "storage")
    for key in ("cores", "memory", "disk"):
        value, allowed = getattr(request.resources, key), getattr(site.limits, key)
        if value not in allowed:
            problems.append(Problem(f"resources.{key}", f"{value} is outside the approved range {allowed}"))
    return problems + _check_network(request, site)


def _check_tags(request: Request) -> list[Problem]:
    """The reconciler's own tags say who owns a guest: a request cannot set them."""
    reserved = [t for t in request.tags if t in (OWNER_TAG, MONITORING_TAG) or t.startswith(NAME_PREFIX)]
    return [Problem("tags", f"{t!r} is the reconciler's own tag; use monitoring: true or drop it") for t in reserved]


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
        problems.append(Problem("network.gateway", "equals the guest's own address"))
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
    net = request.network
    bridge = site.bridges.get(net.bridge) if site else None
    gateway = net.gateway or (bridge.gateway if bridge and net.mode == "static" else None)
    service = request.service
    monitor = request.monitor
    monitoring = profile.monitoring if monitor is None else monitor.enabled
    monitoring = monitoring or NODE_EXPORTER_SET in request.package_sets
    exporters = (
        (
            (NODE_EXPORTER, NODE_EXPORTER_PORT),
            *((n, profile.exporters[n]) for n in (monitor.exporters if monitor else [])),
        )
        if monitoring
        else ()
    )
    port = (service.port if service else None) or profile.default_port
    container = ContainerSpec(
        node=request.node,
        hostname=request.host,
        description=description_for(request.name, file.path, request.description, profile.name),
        template=site.templates[profile.template] if site and profile.supported_kind == "lxc" else profile.template,
        storage=request.storage,
        cores=request.resources.cores,
        memory=request.resources.memory,
        disk=request.resources.disk,
        network=Network(NetworkMode(net.mode), net.bridge, net.address, gateway, net.vlan),
        start=request.start,
        nesting=profile.features.nesting,
        swap=request.resources.swap if request.resources.swap is not None else 512,
        protected=request.protected,
        tags=tuple(request.tags),
    )
    return Desired(
        vm=_vm(request, profile, site),
        name=request.name,
        path=file.path,
        revision=file.revision,
        profile=profile.name,
        container=container,
        service=Service(
            domain=service.domain,
            expose=service.expose,
            visibility=service.visibility,
            port=port,
            health=service.health,
        )
        if service
        else None,
        monitoring=monitoring,
        scrape=Scrape(exporters, tuple(sorted((monitor.labels if monitor else {}).items()))),
        dns=request.dns,
        life=Lifecycle(
            state=GuestState(request.state),
            drift=DriftMode(request.drift),
            adopt=request.adopt,
            vmid=request.vmid,
            migrate=request.migrate,
        ),
        setup=Setup()  # a VM's steps are its profile's post-create actions only (its template holds the rest)
        if request.kind == "vm" and not profile.post_create_actions
        else build_setup(
            name=request.name,
            path=file.path,
            hostname=request.host,
            description=request.description,
            actions=list(profile.post_create_actions),
            package_sets=[*profile.package_sets, *request.package_sets],
            packages=profile.packages,
            web_server=request.web_server or profile.default_web_server,
            monitoring=monitoring,
            domain=service.domain if service else None,
            port=port,
            health=service.health if service else None,
        ),
    )


def _vm(request: Request, profile: Profile, site: SiteConfig | None) -> VmSpec | None:
    """A VM's template and cloud-init settings; None for a container."""
    ci = request.cloud_init
    if request.kind != "vm" or ci is None:
        return None
    return VmSpec(
        template=profile.template,
        template_vmid=site.vm_templates[profile.template] if site else 0,
        cloud_init=CloudInit(
            user=ci.user,
            ssh_keys=tuple(ci.ssh_keys),
            nameserver=str(ci.nameserver) if ci.nameserver is not None else None,
            search_domain=ci.search_domain,
        ),
        full_clone=request.clone.full if request.clone is not None else True,
        agent=profile.agent,
    )


def validate(
    files: Iterable[RequestFile], profiles: Mapping[str, Profile], site: SiteConfig | None
) -> tuple[list[Desired], list[Invalid]]:
    """Split request files into valid, resolved requests and invalid ones with every reason.

    Without a site (offline checks) the site's approved values are not checked.
    """
    valid: list[Desired] = []
    invalid: list[Invalid] = []
    for file in files:
        parsed = parse_request(file)
        if isinstance(parsed, list):
            problems = parsed
        else:
            profile = profiles.get(parsed.profile)
            problems = check_profile(parsed, profiles) + (check_site(parsed, site, profile) if site else [])
        if not problems and not isinstance(parsed, list):
            try:
                valid.append(_resolve(parsed, profiles[parsed.profile], site, file))
                continue
            except ValueError as exc:  # a value its setup cannot carry: this request is refused, never the pass
                problems = [Problem("", f"cannot build its setup: {exc}")]
        invalid.append(Invalid(file.name, file.path, file.revision, capped(sorted(set(problems)))))
    return valid, sorted(invalid, key=lambda i: i.name)


def capped(problems: list[Problem]) -> tuple[Problem, ...]:
    """The first MAX_PROBLEMS problems, then one line saying how many more there are."""
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    more = len(problems) - MAX_PROBLEMS
    return (*problems[:MAX_PROBLEMS], Problem("", f"... and {counted(more, 'more problem')}"))
