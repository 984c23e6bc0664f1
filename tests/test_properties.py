"""Properties over any input: the request parser never raises and says why in short single lines, every generated
file reads back to exactly what was rendered, and the plan creates only within the approved values and touches
only the guests the reconciler owns (or the one an operator asks to adopt)."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Any

from conftest import PROFILES, SITE, request_yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_plan_compare import fresh_config

from reconciler.desired.request import DNS_LABEL, DOMAIN
from reconciler.desired.validate import MAX_PROBLEMS, validate
from reconciler.model.action import AdoptContainer, CreateContainer, MigrateContainer
from reconciler.model.desired import Desired, RequestFile
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Guest, Observed
from reconciler.model.owner import description_for, tags_for
from reconciler.model.standing import DnsPart, Drift, Refusal, Standing
from reconciler.model.vocab import DnsState, GuestStatus, Phase, SetupState
from reconciler.parse import load_yaml
from reconciler.plan import plan
from reconciler.plan.guard import Guard
from reconciler.report import caddy, status

# Strings an attacker or an unlucky operator would try: line breaks of every kind, YAML and shell syntax, quotes,
# terminal escapes, look-alikes, invisible characters and long runs.
NASTY = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "a\nb: c",
        "x\r\ny",
        "\u2028",
        "\x85",
        "--- !!python/object:os.system",
        "*alias",
        "&anchor x",
        "{a: 1}",
        "[1, 2]",
        "- item",
        "#comment",
        "'quoted'",
        '"double"',
        "$(reboot)",
        "`id`",
        "; rm -rf /",
        "\x1b[2J",
        "\u202eevil",
        "blog.ex\u0430mple.com",
        "\u200b",
        "\x00",
        "yes",
        "on",
        "null",
        "~",
        "0x1F",
        "1e3",
        "12:30:00",
        "2024-01-01",
        ".inf",
        "x" * 300,
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=40), st.builds(lambda a, b: a + b, NASTY, st.text(max_size=10)))
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "name",
        "profile",
        "hostname",
        "description",
        "node",
        "storage",
        "resources",
        "start",
        "network",
        "service",
        "monitoring",
        "package_sets",
        "web_server",
        "tags",
        "state",
        "drift",
        "protected",
        "vmid",
        "adopt",
        "migrate",
        "colour",
    ]
)
SERVICE = st.fixed_dictionaries({}, optional={"domain": TEXT, "expose": PLAIN, "health": TEXT, "port": PLAIN})
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(KEYS, st.one_of(PLAIN, TEXT), max_size=4),
    service=st.none() | SERVICE,
    tags=st.none() | st.lists(TEXT, max_size=3),
)
def test_any_request_is_valid_or_refused_with_short_single_line_reasons(
    changes: dict[str, Any], service: dict[str, Any] | None, tags: list[str] | None
) -> None:
    if service is not None:
        changes["service"] = service
    if tags is not None:
        changes["tags"] = tags
    text = request_yaml("w", **{k: v for k, v in changes.items() if v is not None})
    valid, invalid = validate([RequestFile("requests/w.yaml", "w", text.encode())], PROFILES, SITE)
    assert len(valid) + len(invalid) == 1
    event("valid" if valid else "invalid")
    for item in invalid:
        assert 0 < len(item.problems) <= MAX_PROBLEMS + 1
        for problem in map(str, item.problems):
            assert len(problem) < 500 and problem.isprintable(), problem[:500]
    for d in valid:
        assert re.fullmatch(DNS_LABEL, d.container.hostname)
        assert d.domain is None or (d.domain.isascii() and re.fullmatch(DOMAIN, d.domain))
        assert not _INVISIBLE.search(d.container.description.replace("\n", "").replace("\t", ""))
        assert all(t.isascii() and t.isprintable() and t not in ("reconciler", "monitoring") for t in d.container.tags)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_read_or_refused_with_a_value_error_never_another(blob: bytes) -> None:
    try:
        load_yaml(blob)
    except ValueError as exc:
        assert str(exc)


OPTIONAL_TEXT = st.none() | TEXT
STANDINGS = st.builds(
    Standing,
    name=TEXT,
    request=TEXT,
    phase=st.sampled_from(Phase),
    message=TEXT,
    revision=OPTIONAL_TEXT,
    vmid=st.none() | st.integers(),
    node=OPTIONAL_TEXT,
    address=OPTIONAL_TEXT,
    service=OPTIONAL_TEXT,
    job=st.none() | st.integers(min_value=0),
    problems=st.lists(TEXT, max_size=4).map(tuple),
    applied=st.none() | st.booleans(),
    healthy=st.none() | st.booleans(),
    setup=st.none() | st.sampled_from(SetupState),
    output=st.lists(TEXT, max_size=4).map(tuple),
    drift=st.lists(st.builds(Drift, TEXT, TEXT, TEXT), max_size=3).map(tuple),
    refused=st.lists(st.builds(Refusal, TEXT, TEXT, TEXT), max_size=3).map(tuple),
    flapping=st.booleans(),
    dns=st.none()
    | st.builds(DnsPart, st.sampled_from(DnsState), st.lists(TEXT, max_size=3).map(tuple), st.just("") | TEXT),
)
LISTS = ("problems", "output", "drift", "refused")


@settings(max_examples=300, deadline=None)
@given(STANDINGS)
def test_a_status_file_reads_back_as_exactly_the_standing_it_was_rendered_from(standing: Standing) -> None:
    text = status.render(standing)
    header, body = text.split("\n", 1)
    assert header.startswith("# Written by reconciler for ") and body.startswith("apiVersion: reconciler/v1\n")
    assert status.parse(text.encode()) == standing
    doc = load_yaml(text)
    assert isinstance(doc, dict)
    expected = {"apiVersion", "kind", *Standing.__dataclass_fields__}
    expected -= {key for key in LISTS if not getattr(standing, key)}
    expected -= set() if standing.flapping else {"flapping"}
    expected -= set() if standing.dns else {"dns"}
    assert set(doc) == expected  # no value added a key or dropped one


LABELS = st.from_regex(DNS_LABEL, fullmatch=True)
DOMAINS = st.from_regex(DOMAIN, fullmatch=True).filter(lambda d: len(d) <= 253)
HEALTH = st.from_regex(r"/[A-Za-z0-9._~/%-]{0,20}", fullmatch=True)
ADDRESSES = st.ip_addresses(v=4).map(str)
PORTS = st.integers(min_value=1, max_value=65535)
CADDY_KEYS = ["name", "type", "domain", "headers", "auth", "backend", "health"]


def _service(domain: str, address: str, port: int, health: str | None) -> dict[str, object]:
    doc: dict[str, object] = {
        "name": domain,
        "type": "proxy",
        "domain": domain,
        "headers": True,
        "auth": False,
        "backend": f"{address}:{port}",
    }
    if health:
        doc["health"] = health
    return doc


@settings(max_examples=300, deadline=None)
@given(LABELS, TEXT, DOMAINS, ADDRESSES, PORTS, st.none() | HEALTH)
def test_a_service_file_reads_back_as_exactly_what_was_rendered_and_names_its_request(
    name: str, path: str, domain: str, address: str, port: int, health: str | None
) -> None:
    text = caddy.render(name, path, domain, address, port, health)
    assert load_yaml(text) == _service(domain, address, port, health)
    assert list(load_yaml(text)) == [k for k in CADDY_KEYS if k != "health" or health]  # type: ignore[arg-type]
    lines = text.splitlines()
    assert lines[0].startswith(f"# Generated by reconciler for request {name} (")
    assert len(lines) == 1 + len(_service(domain, address, port, health))  # one line per key
    assert caddy.owner(text.encode()) == name


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT, TEXT, TEXT, PORTS, st.none() | TEXT)
def test_no_value_can_add_a_key_a_line_or_a_document_to_a_service_file(
    name: str, path: str, domain: str, address: str, port: int, health: str | None
) -> None:
    text = caddy.render(name, path, domain, address, port, health)
    assert load_yaml(text) == _service(domain, address, port, health)
    assert [line for line in text.splitlines() if line.startswith("#")] == [text.splitlines()[0]]


# The plan: requests within and outside the approved values, beside guests owned, foreign and half-marked.

VMIDS = range(SITE.vmid_range.low, SITE.vmid_range.high + 1)
NAMES = ("a", "b", "c")
FAKE_NOTE = description_for("a", "requests/a.yaml", "", "web-app")
TAGS = {
    "a": tuple(tags_for("a", False)),
    "b": tuple(tags_for("b", True)),
    "ghost": tuple(tags_for("ghost", False)),  # owned, its request gone: orphaned, never touched
    "foreign": (),
    "name only": ("reconciler.a",),  # no owner tag: not ours
    "two names": ("reconciler", "reconciler.a", "reconciler.b"),  # not one owner: not ours
    "look-alike": ("reconciler", "reconciler.\u0430"),  # another request's name in Cyrillic
}
OWNERS = {"a": "a", "b": "b", "ghost": "ghost"}  # who owns a guest of each kind above, said independently


def mostly(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """A good value six times in seven, so that whole requests pass and guests are found as asked; a bad one else."""
    return st.sampled_from(good * (6 * len(bad)) + bad)


REQUESTS = st.fixed_dictionaries(
    {
        "node": mostly(["pve1", "pve1", "pve2"], ["pve9"]),
        "storage": mostly(["local-lvm"], ["nfs"]),
        "resources": st.fixed_dictionaries(
            {
                "cores": mostly([1, 8], [0, 9]),
                "memory": mostly([512], [128, 20000]),
                "disk": mostly([8], [1, 300]),
            }
        ),
        "network": st.one_of(
            st.fixed_dictionaries(
                {"mode": st.just("dhcp"), "bridge": mostly(["vmbr0"], ["vmbr9"])},
                optional={"vlan": mostly([10], [30])},
            ),
            st.fixed_dictionaries(
                {
                    "mode": st.just("static"),
                    "bridge": mostly(["vmbr0"], ["vmbr9"]),
                    "address": mostly(["192.168.50.20/24", "192.168.50.21/24"], ["10.0.0.5/24", "192.168.50.1/24"]),
                }
            ),
        ),
        "profile": mostly(["generic-service"], ["web-app"]),
        "description": mostly([""], [FAKE_NOTE]),
        "state": mostly(["present"], ["stopped", "absent"]),
        "migrate": st.booleans(),
        "adopt": mostly([False], [True]),
        "vmid": mostly([None], [150, 150, 200, 201, 205, 205, 299, 300]),  # None: no key (request_yaml drops it)
        "hostname": mostly([None], ["ct150", "ct201", "shared"]),
    },
)


def guests(owners: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "vmid": st.sampled_from([150, 200, 201, 202, 205, 299, 300]),
            "owner": owners,
            "type": mostly(["lxc"], ["qemu"]),
            "status": mostly([GuestStatus.RUNNING, GuestStatus.STOPPED], [GuestStatus.UNKNOWN]),
            "node": mostly(["pve1"], ["pve2", "pve3"]),
            "lock": mostly([None], ["create", "backup"]),
            "name": st.sampled_from(["", "shared", "a"]),
            "storage": mostly(["local-lvm"], ["nfs"]),
            "disk": mostly([8], [4, 16]),
            "description": mostly([""], [FAKE_NOTE, description_for("b", "requests/b.yaml", "", "web-app")]),
            "config": mostly([True], [False]),
            "fresh": st.booleans(),  # the config a create of its request leaves: nothing to change
        }
    )


# Mostly one guest for each of requests a and b (so that their rules start, change, stop and destroy), then others
# of every kind: foreign, orphaned, half-marked, a second guest marked for one request.
CLUSTERS = st.builds(
    lambda a, b, others: a + b + others,
    st.lists(guests(st.just("a")), max_size=1),
    st.lists(guests(st.just("b")), max_size=1),
    st.lists(guests(mostly(["foreign", "name only", "two names", "look-alike"], ["a", "b", "ghost"])), max_size=3),
).map(lambda found: list({g["vmid"]: g for g in found}.values()))


def _cluster(guests: list[dict[str, Any]], valid: dict[str, Desired]) -> Observed:
    listed, configs = [], {}
    for g in guests:
        name = g["name"] or f"ct{g['vmid']}"
        tags = TAGS[g["owner"]]
        listed.append(
            Guest(g["vmid"], g["node"], g["type"], name, g["status"], tags, g["lock"], False, 1, 512, g["disk"])
        )
        if g["config"] and g["fresh"] and g["owner"] in valid:
            configs[g["vmid"]] = fresh_config(valid[g["owner"]], g["vmid"])
        elif g["config"]:
            values = {
                "hostname": name,
                "rootfs": f"{g['storage']}:vm-{g['vmid']}-disk-0,size={g['disk']}G",
                "description": g["description"],
                "cores": "1",
                "memory": "512",
                "tags": ";".join(tags),
                "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
            }
            configs[g["vmid"]] = GuestConfig(g["vmid"], g["node"], values, f"digest-{g['vmid']}")
    return Observed(tuple(listed), configs=configs)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(REQUESTS, min_size=1, max_size=len(NAMES)), CLUSTERS, st.booleans())
def test_the_plan_creates_only_within_the_approved_values_and_touches_only_its_own_guests(
    requests: list[dict[str, Any]], guests: list[dict[str, Any]], setup_on: bool
) -> None:
    files = [
        RequestFile(f"requests/{name}.yaml", name, request_yaml(name, **changes).encode())
        for name, changes in zip(NAMES, requests, strict=False)
    ]
    valid, invalid = validate(files, PROFILES, SITE)
    observed = _cluster(guests, {d.name: d for d in valid})
    # The mass-change guard confirmed: every action the rules want is checked, none is held back.
    confirmed = Guard(revision="r", confirmed="r")
    names = [f.name for f in files]
    result = plan(valid, invalid, observed, VMIDS, request_names=names, setup_on=setup_on, guard=confirmed)

    refused = {i.name for i in invalid} | {n for n, s in result.standings.items() if s.phase == Phase.INVALID}
    for action in result.actions:
        event(type(action).__name__)
        assert action.name not in refused, action
        c = action.desired.container
        if isinstance(action, CreateContainer):
            # (Two creates sharing a VMID: see test_a_vmid_one_request_names_is_never_given_to_another.)
            assert action.vmid in VMIDS and action.vmid not in observed.by_vmid
            assert action.node == c.node and c.node in SITE.nodes
            assert c.storage in SITE.storages
            assert c.cores in SITE.limits.cores and c.memory in SITE.limits.memory and c.disk in SITE.limits.disk
            assert c.network.bridge in SITE.bridges and (c.network.vlan is None or c.network.vlan in SITE.vlans)
            bridge = SITE.bridges[c.network.bridge]
            assert c.network.address is None or c.network.address.network == bridge.cidr
            assert c.template in SITE.templates.values()
            continue
        guest = observed.by_vmid[action.vmid]  # every other action names a guest that exists
        owner = next(OWNERS.get(g["owner"]) for g in guests if g["vmid"] == action.vmid)
        if isinstance(action, AdoptContainer):
            # The operator's explicit ask: adopt: true with this very VMID, of a guest nobody owns.
            assert action.desired.life.adopt and action.desired.life.vmid == action.vmid and owner is None
            assert guest.type == "lxc"
        else:
            assert owner == action.name, (action, guest)
        if isinstance(action, MigrateContainer):
            assert action.target in SITE.nodes
    assert len({a.name for a in result.actions}) == len(result.actions)  # one action per request and pass
    static = [a.desired.static_ip for a in result.actions if isinstance(a, CreateContainer)]
    static_ips = [ip for ip in static if ip is not None]
    assert len(set(static_ips)) == len(static_ips)
    assert all(ip != IPv4Address("192.168.50.1") for ip in static_ips)


def test_a_vmid_one_request_names_is_never_given_to_another() -> None:
    files = [
        RequestFile("requests/a.yaml", "a", request_yaml("a").encode()),
        RequestFile("requests/b.yaml", "b", request_yaml("b", vmid=VMIDS.start).encode()),
    ]
    valid, invalid = validate(files, PROFILES, SITE)
    result = plan(valid, invalid, Observed(()), VMIDS, request_names=["a", "b"])
    vmids = sorted(a.vmid for a in result.actions if isinstance(a, CreateContainer))
    assert vmids == [VMIDS.start, VMIDS.start + 1]
