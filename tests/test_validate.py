"""Request validation (pure): every rule of the spec, one reason per problem, nothing lost."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Any

import pytest
from conftest import PROFILES, SITE, request_yaml, static
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired.setup import STEPS_DIR, script, web_site
from reconciler.desired.validate import validate
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.owner import profile_of
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
        ({"apiVersion": "v2"}, "apiVersion: must be 'reconciler/v1'; got 'v2'"),
        ({"name": "other"}, "name: 'other' must equal the file name (w)"),
        (
            {"hostname": "Bad_Host"},
            "hostname: may use a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-'; got 'Bad_Host'",
        ),
        (
            {"profile": "kitchen-sink"},
            "profile: 'kitchen-sink' is not an approved profile (generic-service, monitoring-node, static-website, "
            "vm-generic, web-app)",
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
        (
            {"network": static("192.168.50.300/24")},
            "network.address: must be an IPv4 address with its prefix length, such as 192.168.50.10/24;"
            " got '192.168.50.300/24'",
        ),
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
        (
            {"service": {"domain": "not a domain"}},
            "service.domain: must be a DNS name such as blog.example.com (a-z, 0-9, '-', dots); got 'not a domain'",
        ),
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
            "service.port: must be between 1 and 65535; got 70000",
        ),
        (
            {"service": {"domain": "x.example.com", "health": "healthz"}},
            "service.health: must be a URL path such as /healthz: '/' first",
        ),
        ({"kind": "vm"}, "kind: profile generic-service supports lxc only"),
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
        ({"web_server": "caddy"}, "web_server: must be 'nginx' or 'apache'; got 'caddy'"),
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
    assert problems(start="yes") == ["start: must be true or false; got 'yes'"]


# Fields: what a request can put in a name, a domain or a text is checked for real, echoed short and safe.


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        (
            "bücher.example.com",
            "service.domain: 'bücher.example.com' is not ASCII: write an internationalised domain in its ASCII form,"
            " xn--bcher-kva.example.com",
        ),
        # A Cyrillic a (U+0430) in place of the Latin a: only the ASCII form shows the difference.
        ("blog.ex\u0430mple.com", "its ASCII form, blog.xn--exmple-4nf.com"),
        ("xn--zz.example.com", "service.domain: 'xn--zz' is not a valid internationalised (xn--) label"),
        ("blog.example.com\u200b", "service.domain: 'blog.example.com\\u200b' is not ASCII"),
    ],
)
def test_an_internationalised_domain_is_accepted_only_in_its_ascii_form(domain: str, expected: str) -> None:
    found = problems(service={"domain": domain})
    assert any(expected in p for p in found), found
    assert problems(service={"domain": "xn--bcher-kva.example.com"}) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"node": "x" * 60_000},
        {"storage": "s" * 60_000},
        {"profile": "p" * 60_000},
        {"network": {"mode": "dhcp", "bridge": "b" * 60_000}},
        {"k" * 60_000: 1},
    ],
)
def test_an_over_long_value_is_echoed_short(changes: dict[str, Any]) -> None:
    [found] = problems(**changes)
    assert len(found) < 300 and "…" in found, found[:300]


def test_a_file_reports_at_most_twenty_problems_then_how_many_more() -> None:
    found = problems(**{f"key{i:03}": i for i in range(500)})
    assert len(found) == 21
    assert found[:2] == ["key000: unknown key", "key001: unknown key"]
    assert found[-1] == "... and 480 more problems"


@pytest.mark.parametrize(
    ("text", "char"),
    [
        ("\x1b[2J\x1b[Hall clear", "U+001B"),  # a terminal escape: clears the screen of whoever reads the status
        ("price \u202e001$", "U+202E"),  # right-to-left override: reads as another text
        ("line\rover", "U+000D"),
        ("nul \x00 byte", "U+0000"),
        ("zero\u200bwidth", "U+200B"),
        ("paragraph\u2029break", "U+2029"),
    ],
)
def test_a_description_with_a_control_or_invisible_character_is_refused(text: str, char: str) -> None:
    position = text.index(chr(int(char[2:], 16))) + 1
    assert problems(description=text) == [
        f"description: holds the control or invisible character {char} at character {position}; only printable"
        " text, tabs and line breaks are allowed"
    ]


def test_a_description_keeps_its_line_breaks_tabs_and_letters() -> None:
    assert problems(description="Family blog\n\n\tbacked up nightly: ünïcödé, 日本語, emoji 🎉") == []


FAKE_NOTE = (
    "Managed by reconciler for request w (requests/w.yaml, profile web-app). Change the request file, not this guest."
)


@pytest.mark.parametrize("text", [FAKE_NOTE, f"intro\n\n{FAKE_NOTE}", f"{FAKE_NOTE}\n\n{FAKE_NOTE}\n"])
def test_a_description_cannot_pass_for_the_owner_note(text: str) -> None:
    valid, invalid = validate(
        [RequestFile("requests/w.yaml", "w", request_yaml("w", description=text).encode())], PROFILES, SITE
    )
    assert invalid == []
    description = valid[0].container.description
    assert description.startswith(text)
    assert profile_of(description) == "generic-service"
    assert profile_of(description + "\n") == "generic-service"  # as Proxmox gives it back
    assert profile_of(text) in (None, "web-app")  # alone, a note passes; after the real one, it never does


@pytest.mark.parametrize(
    "value",
    ["a.example.com\n", "a.example.com;", "/x\n", "/x; return 301", "a b", '"x"', "$host", "{x}"],
)
def test_a_web_server_config_takes_no_value_that_could_end_its_directive(value: str) -> None:
    with pytest.raises(ValueError, match="unsafe value for a web server configuration"):
        web_site("nginx", "w", "requests/w.yaml", value, 80, "/var/www/w", None)
    with pytest.raises(ValueError, match="unsafe value for a web server configuration"):
        web_site("apache", "w", "requests/w.yaml", "w.example.com", 80, "/var/www/w", value)


@pytest.mark.parametrize("server", ["nginx", "apache"])
def test_a_file_name_stays_in_the_comment_line_of_a_web_server_site(server: str) -> None:
    plain = web_site(server, "w", "requests/w.yaml", "w.example.com", 80, "/var/www/w", "/healthz")
    hostile = web_site(
        server, "w", "requests/w\nserver { listen 81; }\r\x85\u2028#\\", "w.example.com", 80, "/var/www/w", "/healthz"
    )
    assert len(hostile.splitlines()) == len(plain.splitlines())
    assert hostile.splitlines()[1:] == plain.splitlines()[1:]
    assert not hostile.splitlines()[0].rstrip().endswith("\\")  # Apache would join the next line to the comment


HOSTILE_TEXT = "$(reboot) `id` '\"; rm -rf / #\n${IFS}|&><*?~!"


def test_nothing_from_a_request_reaches_a_shell_but_as_one_quoted_argument() -> None:
    doc = request_yaml(
        "w",
        profile="static-website",
        description=HOSTILE_TEXT,
        service={"domain": "w.example.com", "expose": True, "port": 8080, "health": "/health%20z"},
        monitoring=True,
    )
    [d], invalid = validate([RequestFile("requests/w $(x).yaml", "w", doc.encode())], PROFILES, SITE)
    assert invalid == []
    shipped = {script(f"{p.stem}.sh") for p in STEPS_DIR.glob("*.sh") if p.name != "prelude.sh"}
    safe_arg = re.compile(r"[A-Za-z0-9+/=._%:-]+|/var/www/w")
    for step in d.setup.steps:
        assert step.script in shipped  # the script is a shipped one, whatever the request says
        for arg in step.args:
            assert safe_arg.fullmatch(arg), (step.name, arg)  # numbers, labels, paths, base64: never shell syntax


def _unquoted_parameters(line: str) -> list[str]:
    """Positional parameters ($1, "$@", ${2}) outside double quotes on one line of a step script."""
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line.split(" #")[0] if not line.lstrip().startswith("#") else "")
    outside = re.sub(r"'[^']*'", "''", outside)
    return re.findall(r"\$(?:[0-9@*]|\{[0-9@*][^}]*\})", outside)


def test_every_step_script_quotes_every_argument_it_is_given() -> None:
    found = {
        f"{path.name}:{number}": _unquoted_parameters(line)
        for path in sorted(STEPS_DIR.glob("*.sh"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _unquoted_parameters(line)
    }
    assert found == {}
    assert _unquoted_parameters('mkdir -p $1 "$2"') == ["$1"]  # the check itself sees one
