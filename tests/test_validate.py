"""Request validation (pure): every rule of the spec, one reason per problem, nothing lost."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from conftest import PROFILES, SITE, request_yaml, static
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired.validate import validate
from reconciler.model.desired import Invalid, RequestFile
from reconciler.plan.conflicts import Claims, resolve_clashes


def check(files: list[RequestFile], claims: Claims | None = None) -> list[Invalid]:
    """Each file on its own, then the clash rule every pass uses: what an operator sees as Invalid."""
    valid, invalid = validate(files, PROFILES, SITE)
    _, refused = resolve_clashes(valid, claims or Claims())
    return invalid + refused


def problems(stem: str = "w", claims: Claims | None = None, /, **changes: Any) -> list[str]:
    file = RequestFile(f"requests/{stem}.yaml", stem, request_yaml(stem, **changes).encode())
    return [str(p) for i in check([file], claims) for p in i.problems]


def test_the_readme_request_is_valid() -> None:
    assert (
        problems(
            "blog",
            profile="static-website",
            hostname="blog",
            network=static("192.168.50.210/24", gateway="192.168.50.1", vlan=20),
            service={
                "domain": "blog.example.com",
                "expose": True,
                "visibility": "public",
                "port": 80,
                "health": "/healthz",
            },
            monitoring=True,
        )
        == []
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"apiVersion": "v2"}, "apiVersion: Input should be 'reconciler/v1'"),
        ({"name": "other"}, "name: 'other' must equal the file name (w)"),
        ({"hostname": "Bad_Host"}, "hostname: String should match pattern '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'"),
        (
            {"profile": "kitchen-sink"},
            "profile: 'kitchen-sink' is not an approved profile (generic-service, monitoring-node, static-website, "
            "web-app)",
        ),
        ({"node": "pve9"}, "node: 'pve9' is not an approved node (pve1, pve2, pve3)"),
        ({"storage": "nfs"}, "storage: 'nfs' is not an approved storage (local-lvm)"),
        (
            {"resources": {"cores": 1, "memory": 100, "disk": 8}},
            "resources.memory: 100 is outside the approved range 256..16384",
        ),
        ({"resources": {"cores": 1, "memory": 512}}, "resources.disk: required"),
        ({"network": {"mode": "dhcp", "bridge": "vmbr9"}}, "network.bridge: 'vmbr9' is not an approved bridge (vmbr0)"),
        (
            {"network": {"mode": "dhcp", "bridge": "vmbr0", "vlan": 30}},
            "network.vlan: 30 is not an approved VLAN tag (10, 20)",
        ),
        ({"network": {"mode": "static", "bridge": "vmbr0"}}, "network: address is required when mode is static"),
        ({"network": static("192.168.50.300/24")}, "network.address: Input is not a valid IPv4 interface"),
        ({"network": static("10.0.0.5/24")}, "network.address: 10.0.0.5/24 is not inside vmbr0's 192.168.50.0/24"),
        (
            {"network": static("192.168.50.5/16")},
            "network.address: 192.168.50.5/16 is not inside vmbr0's 192.168.50.0/24",
        ),
        (
            {"network": static("192.168.50.255/24")},
            "network.address: 192.168.50.255 is the network or broadcast address",
        ),
        ({"network": static("192.168.50.1/24")}, "network.address: 192.168.50.1 is reserved"),
        (
            {"network": static("192.168.50.9/24", gateway="10.0.0.1")},
            "network.gateway: 10.0.0.1 is outside vmbr0's 192.168.50.0/24",
        ),
        (
            {"network": {"mode": "dhcp", "bridge": "vmbr0", "address": "192.168.50.9/24"}},
            "network: address and gateway are for mode static; DHCP assigns them",
        ),
        ({"service": {"expose": True}}, "service: expose: true needs a domain"),
        ({"service": {"domain": "not a domain"}}, "service.domain: String should match pattern"),
        (
            {"service": {"domain": "x.example.com", "visibility": "public"}},
            "service.visibility: profile generic-service does not allow public exposure",
        ),
        (
            {"profile": "monitoring-node", "service": {"domain": "m.example.com"}},
            "service.domain: profile monitoring-node does not allow a domain",
        ),
        (
            {"service": {"domain": "x.example.com", "port": 70000}},
            "service.port: Input should be less than or equal to 65535",
        ),
        ({"service": {"domain": "x.example.com", "health": "healthz"}}, "service.health: String should match pattern"),
        ({"kind": "vm"}, "kind: vm is not supported yet; only lxc containers can be requested"),
        (
            {"profile": "static-website", "package_sets": ["docker"]},
            "package_sets: 'docker' is not an optional set of profile static-website (none)",
        ),
        (
            {"package_sets": ["nginx"]},
            "package_sets: 'nginx' is not an optional set of profile generic-service (docker, node-exporter)",
        ),
        ({"package_sets": ["curl"]}, "package_sets: 'curl' is not an optional set"),
        ({"package_sets": ["docker", "docker"]}, "package_sets: names a set twice"),
        (
            {"package_sets": ["node-exporter"], "monitoring": False},
            "package_sets: node-exporter is monitoring: drop it or set monitoring: true",
        ),
        ({"web_server": "apache"}, "web_server: profile generic-service has no web server"),
        ({"web_server": "caddy"}, "web_server: Input should be 'nginx' or 'apache'"),
    ],
)
def test_each_rule_names_the_field_and_the_reason(changes: dict[str, Any], expected: str) -> None:
    found = problems(**changes)
    assert any(p.startswith(expected) for p in found), found


def test_every_site_problem_is_reported_at_once() -> None:
    assert problems(node="pve9", storage="nfs", resources={"cores": 99, "memory": 512, "disk": 999}) == [
        "node: 'pve9' is not an approved node (pve1, pve2, pve3)",
        "resources.cores: 99 is outside the approved range 1..8",
        "resources.disk: 999 is outside the approved range 2..200",
        "storage: 'nfs' is not an approved storage (local-lvm)",
    ]


def files(*docs: tuple[str, dict[str, Any]]) -> list[RequestFile]:
    return [RequestFile(f"requests/{n}.yaml", n, request_yaml(n, **c).encode()) for n, c in docs]


def test_a_domain_wanted_twice_goes_to_the_first_name_unless_the_other_is_already_provisioned() -> None:
    svc = {"service": {"domain": "app.example.com"}}
    invalid = check(files(("b", svc), ("a", svc)))
    assert [(i.name, [str(p) for p in i.problems]) for i in invalid] == [
        ("b", ["service.domain: app.example.com is also requested by a"])
    ]
    invalid = check(files(("b", svc), ("a", svc)), Claims(provisioned=frozenset({"b"})))
    assert [i.name for i in invalid] == ["a"]


def test_a_domain_in_a_generated_service_file_belongs_to_its_request() -> None:
    claims = Claims(service_domains={"app.example.com": "owner"})
    assert problems("w", claims, service={"domain": "app.example.com"}) == [
        "service.domain: app.example.com already belongs to request owner"
    ]
    assert problems("owner", claims, service={"domain": "app.example.com"}) == []


def test_a_static_address_is_unique_across_requests_and_existing_guests() -> None:
    net = {"network": static("192.168.50.40/24")}
    invalid = check(files(("a", net), ("b", net)))
    assert [str(p) for p in invalid[0].problems] == ["network.address: 192.168.50.40 is also requested by a"]
    claims = Claims(foreign_ips={IPv4Address("192.168.50.40"): 250})
    assert problems("a", claims, **net) == ["network.address: 192.168.50.40 is already used by guest 250"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_file_content_is_either_valid_or_invalid_with_reasons_never_a_crash(blob: bytes) -> None:
    valid, invalid = validate([RequestFile("requests/x.yaml", "x", blob)], PROFILES, SITE)
    assert len(valid) + len(invalid) == 1
    assert all(i.problems for i in invalid)


@pytest.mark.parametrize("name", ["on", "off", "yes", "no", "y", "n"])
def test_names_yaml_1_1_reads_as_booleans_are_names(name: str) -> None:
    text = f"apiVersion: reconciler/v1\nkind: lxc\nname: {name}\nprofile: generic-service\nnode: pve1\n"
    text += "storage: local-lvm\nresources: {cores: 1, memory: 512, disk: 8}\nnetwork: {mode: dhcp, bridge: vmbr0}\n"
    valid, invalid = validate([RequestFile(f"requests/{name}.yaml", name, text.encode())], PROFILES, SITE)
    assert invalid == [] and valid[0].name == name and valid[0].container.hostname == name


def test_booleans_are_still_true_and_false() -> None:
    assert problems(start="yes") == ["start: Input should be a valid boolean"]
