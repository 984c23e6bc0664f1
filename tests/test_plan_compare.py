"""compare(): a request against its container's config as Proxmox holds it, sorted as an operator reads it:
edits (changed in Git, applied), drift (changed by hand), growth, moves, and refusals naming field, asked and kept.

The configs here are what Proxmox leaves after a create: the create body with Proxmox's own normal form put
on it by hand in this file (not by the code under test), as `pct config` shows it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from test_plan import desired, guest

from reconciler.gateways.proxmox_body import create_container
from reconciler.model.desired import Desired, Lifecycle
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Applied
from reconciler.model.owner import description_for
from reconciler.model.standing import Drift
from reconciler.model.vocab import DriftMode, GuestState
from reconciler.plan.compare import Comparison, compare, wanted

PROFILE = "generic-service"
MAC = "BC:24:11:5E:0A:17"
NOT_CONFIG = ("vmid", "ostemplate", "storage", "start")  # create parameters Proxmox does not keep in the config


def request(
    name: str,
    *,
    cores: int = 1,
    memory: int = 512,
    swap: int = 512,
    disk: int = 8,
    node: str = "pve1",
    storage: str = "local-lvm",
    start: bool = True,
    nesting: bool = False,
    protected: bool = False,
    tags: tuple[str, ...] = (),
    address: str | None = None,
    monitoring: bool = False,
    text: str = "",
    profile: str = PROFILE,
    state: GuestState = GuestState.PRESENT,
    drift: DriftMode = DriftMode.CORRECT,
    adopt: bool = False,
    vmid: int | None = None,
    migrate: bool = False,
) -> Desired:
    """A resolved request, its description carrying the note validation writes (with the profile)."""
    base = desired(name, address, start, cores)
    container = replace(
        base.container,
        node=node,
        storage=storage,
        memory=memory,
        swap=swap,
        disk=disk,
        nesting=nesting,
        protected=protected,
        tags=tags,
        description=description_for(name, base.path, text, profile),
    )
    return replace(
        base,
        profile=profile,
        container=container,
        monitoring=monitoring,
        life=Lifecycle(state, drift, adopt, vmid, migrate),
    )


def _props(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(","))


def fresh_config(d: Desired, vmid: int, digest: str | None = None, **changed: str | None) -> GuestConfig:
    """The config a fresh create of `d` leaves, normalised as Proxmox does; changed: keys set (None: removed)."""
    values = {k: str(v) for k, v in create_container(d, vmid).items() if k not in NOT_CONFIG}
    net = _props(values["net0"])
    net.update(hwaddr=MAC, type="veth")
    values["net0"] = ",".join(f"{k}={net[k]}" for k in ["name", *sorted(k for k in net if k != "name")])
    if "features" in values:
        features = _props(values["features"])
        values["features"] = ",".join(f"{k}={features[k]}" for k in sorted(features))
    values["tags"] = ";".join(sorted({t.lower() for t in re.split(r"[;, ]+", values["tags"]) if t}))
    values["rootfs"] = f"{d.container.storage}:vm-{vmid}-disk-0,size={d.container.disk}G"
    values.update(arch="amd64", ostype="debian")
    for key, value in changed.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return GuestConfig(vmid, d.container.node, values, digest or f"digest-{vmid}")


def static(d: Desired, gateway: str | None = None, vlan: int | None = None) -> Desired:
    network = replace(d.container.network, gateway=IPv4Address(gateway) if gateway else None, vlan=vlan)
    return replace(d, container=replace(d.container, network=network))


FRESH = {
    "dhcp": request("a"),
    "static address with gateway and vlan": static(request("a", address="192.168.50.20/24"), "192.168.50.1", 30),
    "nesting, protected, monitoring and the operator's own tags": request(
        "a", nesting=True, protected=True, monitoring=True, tags=("Web", "backup", "web")
    ),
    "start: false": request("a", start=False),
    "state: stopped": request("a", state=GuestState.STOPPED),
    "a description of several lines": request("a", text="Family blog\n\nbacked up nightly\n"),
    "bigger, without swap": request("a", cores=4, memory=4096, swap=0, disk=32),
}


@pytest.mark.parametrize("case", sorted(FRESH))
def test_a_container_as_a_fresh_create_leaves_it_shows_no_edit_drift_or_refusal(case: str) -> None:
    d = FRESH[case]
    config = fresh_config(d, 200)
    assert compare(d, guest(200, "a"), config, None) == Comparison()
    # And as the create job records it: what it wrote is what the request wants.
    assert compare(d, guest(200, "a"), config, Applied(200, wanted(d))) == Comparison()


def test_tags_that_differ_only_in_case_order_separators_or_duplicates_are_the_same_tags() -> None:
    d = request("a", tags=("web", "backup"))
    shuffled = fresh_config(d, 200, tags="Web,reconciler.a reconciler;BACKUP;web;Backup")
    assert compare(d, guest(200, "a"), shuffled, None) == Comparison()
    # A tag really missing is a difference.
    missing = fresh_config(d, 200, tags="reconciler;reconciler.a;web")
    assert compare(d, guest(200, "a"), missing, None).drift == (
        Drift("tags", "backup;reconciler;reconciler.a;web", "reconciler;reconciler.a;web"),
    )


def test_a_net0_that_differs_only_in_proxmoxs_own_keys_and_the_operators_firewall_is_the_same() -> None:
    d = request("a")
    for net0 in (
        "name=eth0,bridge=vmbr0,firewall=1,hwaddr=AA:BB:CC:DD:EE:FF,ip=dhcp,type=veth",
        "bridge=vmbr0,ip=dhcp,name=eth0",
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,mtu=1450,type=veth",
    ):
        assert compare(d, guest(200, "a"), fresh_config(d, 200, net0=net0), None) == Comparison(), net0
    other_bridge = fresh_config(d, 200, net0=f"name=eth0,bridge=vmbr1,hwaddr={MAC},ip=dhcp,type=veth")
    assert compare(d, guest(200, "a"), other_bridge, None).drift == (
        Drift("net0", "name=eth0,bridge=vmbr0,ip=dhcp", "name=eth0,bridge=vmbr1,ip=dhcp"),
    )


def test_a_difference_is_an_edit_when_proxmox_still_holds_what_was_last_applied() -> None:
    before, after = request("a", cores=1), request("a", cores=2)
    found = compare(after, guest(200, "a"), fresh_config(before, 200), Applied(200, wanted(before)))
    assert found == Comparison(edits=(Drift("cores", "2", "1"),))


def test_a_difference_is_drift_when_proxmox_holds_something_the_reconciler_never_wrote() -> None:
    d = request("a", cores=2)
    by_hand = fresh_config(d, 200, cores="4")
    assert compare(d, guest(200, "a"), by_hand, Applied(200, wanted(d))) == Comparison(
        drift=(Drift("cores", "2", "4"),)
    )
    # Without a record of what was applied, or with the record of an earlier container, it is drift too.
    assert compare(d, guest(200, "a"), by_hand, None).drift == (Drift("cores", "2", "4"),)
    earlier = Applied(199, {**wanted(d), "cores": "4"})
    assert compare(d, guest(200, "a"), by_hand, earlier) == Comparison(drift=(Drift("cores", "2", "4"),))


def test_a_field_changed_by_hand_and_then_changed_in_git_is_an_edit() -> None:
    # Memory was set to 1024 by hand; the operator now asks 2048 in the request: the request changed, so the
    # new value is an edit to apply, not drift to leave (which drift: report would do for ever).
    before, after = request("a", memory=512), request("a", memory=2048)
    by_hand = fresh_config(before, 200, memory="1024")
    found = compare(after, guest(200, "a"), by_hand, Applied(200, wanted(before)))
    assert found == Comparison(edits=(Drift("memory", "2048", "1024"),))


def _refused(found: Comparison) -> list[tuple[str, str, str]]:
    """Each refusal as field, asked, and the first word of what is kept."""
    return [(r.field, r.asked, r.kept.split(" ")[0]) for r in found.refused]


def test_a_smaller_disk_is_refused_naming_the_field_the_size_asked_and_the_size_kept() -> None:
    found = compare(request("a", disk=4), guest(200, "a"), fresh_config(request("a", disk=8), 200), None)
    assert _refused(found) == [("resources.disk", "4 GB", "8")]
    assert found.refused[0].kept.startswith("8 GB") and "cannot shrink" in found.refused[0].kept
    assert found.grow_to is None


def test_another_storage_is_refused() -> None:
    found = compare(request("a"), guest(200, "a"), fresh_config(request("a", storage="tank"), 200), None)
    assert _refused(found) == [("storage", "local-lvm", "tank")]


def test_another_profile_than_the_container_was_made_with_is_refused() -> None:
    made = request("a", profile="docker-host")
    found = compare(request("a"), guest(200, "a"), fresh_config(made, 200), None)
    assert _refused(found) == [("profile", PROFILE, "docker-host")]
    assert "new request" in found.refused[0].kept


def test_another_node_without_migrate_is_refused_and_with_migrate_is_a_move() -> None:
    d = request("a", node="pve1")
    elsewhere = guest(200, "a", node="pve2")
    config = fresh_config(request("a", node="pve2"), 200)
    found = compare(d, elsewhere, config, None)
    assert _refused(found) == [("node", "pve1", "pve2")]
    assert "migrate: true" in found.refused[0].kept
    assert found.move_to is None
    moved = compare(replace(d, life=Lifecycle(migrate=True)), elsewhere, config, None)
    assert moved == Comparison(move_to="pve1")


def test_a_bigger_disk_is_grown_and_a_size_in_megabytes_is_read_as_gigabytes() -> None:
    assert compare(request("a", disk=16), guest(200, "a"), fresh_config(request("a"), 200), None) == Comparison(
        grow_to=16
    )
    in_mb = fresh_config(request("a"), 200, rootfs="local-lvm:vm-200-disk-0,size=8192M")
    assert compare(request("a"), guest(200, "a"), in_mb, None) == Comparison()


def test_every_difference_is_listed_for_adoption_with_refusals_and_growth() -> None:
    d = request("a", cores=2, disk=16)
    config = fresh_config(request("a", storage="tank"), 200)
    everything = compare(d, guest(200, "a"), config, None).everything
    assert everything == (
        Drift("cores", "2", "1"),
        Drift("disk", "16G", "smaller"),
        Drift("storage", "local-lvm", "tank (a container cannot change storage in place)"),
    )
