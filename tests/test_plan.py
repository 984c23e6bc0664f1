"""The plan is a pure function: plain unit tests, plus a property over arbitrary clusters."""

from __future__ import annotations

from conftest import PROFILES, SITE, request_yaml, static
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.config import Range
from reconciler.desired.validate import Desired, RequestFile, validate
from reconciler.gateways.proxmox import GuestInfo
from reconciler.gateways.sqlite import Resource
from reconciler.marker import tags_for
from reconciler.observe import Observed
from reconciler.plan import Create, FindAddress, Start, create_params, plan

RANGE = Range(low=200, high=209)


def desired(name: str, **changes: object) -> Desired:
    valid, invalid = validate(
        [RequestFile(f"requests/{name}.yaml", name, request_yaml(name, **changes).encode())], PROFILES, SITE
    )
    assert not invalid, invalid
    return valid[0]


def guest(vmid: int, name: str | None, status: str = "running", node: str = "pve1", **kw: object) -> GuestInfo:
    fields: dict[str, object] = dict(
        vmid=vmid,
        node=node,
        type="lxc",
        name=name or f"ct{vmid}",
        status=status,
        tags=tuple(tags_for(name, False)) if name else (),
        lock=None,
        template=False,
        cores=1,
        memory_mb=512,
        disk_gb=8,
    )
    fields.update(kw)
    return GuestInfo(**fields)  # type: ignore[arg-type]


def test_a_missing_container_is_created_with_the_first_free_vmid_of_the_range() -> None:
    result = plan([desired("a")], Observed((guest(200, None), guest(201, "other"))), {}, RANGE)
    assert result.actions == [Create(desired("a"), 202)]


def test_a_stopped_container_is_started_and_a_running_one_is_left_alone() -> None:
    observed = Observed((guest(200, "a", "stopped"), guest(201, "b")))
    result = plan([desired("a"), desired("b", network=static("192.168.50.20/24"))], observed, {}, RANGE)
    assert result.actions == [Start(desired("a"), 200, "pve1")]
    assert result.verdicts["b"].phase == "Ready"
    assert result.verdicts["b"].address == "192.168.50.20"


def test_start_false_leaves_a_stopped_container_stopped() -> None:
    result = plan([desired("a", start=False)], Observed((guest(200, "a", "stopped"),)), {}, RANGE)
    assert result.actions == []
    assert result.verdicts["a"].phase == "Ready"


def test_a_running_dhcp_container_without_a_known_address_gets_it_looked_up() -> None:
    observed = Observed((guest(200, "a"),))
    assert plan([desired("a")], observed, {}, RANGE).actions == [FindAddress(desired("a"), 200, "pve1")]
    known = {"a": Resource("a", 200, "pve1", "created", "192.168.50.7", 1)}
    assert plan([desired("a")], observed, known, RANGE).verdicts["a"].address == "192.168.50.7"


def test_two_containers_marked_for_one_request_are_reported_not_touched() -> None:
    result = plan([desired("a")], Observed((guest(200, "a"), guest(201, "a"))), {}, RANGE)
    assert result.actions == []
    assert result.verdicts["a"].phase == "Failed"
    assert "200, 201" in result.verdicts["a"].message


def test_a_full_range_fails_the_request_instead_of_stepping_outside_it() -> None:
    full = Observed(tuple(guest(v, None) for v in range(200, 210)))
    result = plan([desired("a")], full, {}, RANGE)
    assert result.actions == []
    assert result.verdicts["a"].message == "no free VMID left in the approved range 200..209"


def test_drift_is_reported_but_never_acted_on() -> None:
    result = plan(
        [desired("a", resources={"cores": 2, "memory": 512, "disk": 8})],
        Observed((guest(200, "a", node="pve2"),)),
        {"a": Resource("a", 200, "pve2", "created", "x", 1)},
        RANGE,
    )
    assert result.actions == []
    assert result.verdicts["a"].message.endswith("node pve2 -> pve1, cores 1 -> 2")


def test_an_owned_guest_without_a_request_file_is_orphaned_and_left_alone() -> None:
    result = plan([], Observed((guest(200, "gone"),)), {}, RANGE, request_names=[])
    assert result.actions == []
    assert result.verdicts["gone"].phase == "Orphaned"


def test_create_params_carry_the_profile_features_and_the_ownership_tags() -> None:
    d = desired("m", profile="monitoring-node", network=static("192.168.50.30/24", vlan=10))
    params = create_params(d, 205)
    assert params["net0"] == "name=eth0,bridge=vmbr0,ip=192.168.50.30/24,gw=192.168.50.1,tag=10"
    assert params["tags"] == "monitoring;reconciler;reconciler.m"
    assert params["features"] == "nesting=1"
    assert "keyctl" not in str(params) and "password" not in params


names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), unique=True, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    wanted=names,
    taken=st.lists(st.integers(190, 215), unique=True, max_size=12),
    owned=names,
    statuses=st.lists(st.sampled_from(["running", "stopped", "unknown"]), min_size=8, max_size=8),
)
def test_plan_never_reuses_a_vmid_never_leaves_the_range_and_never_acts_on_a_foreign_guest(
    wanted: list[str], taken: list[int], owned: list[str], statuses: list[str]
) -> None:
    guests = [guest(v, None) for v in taken]
    free = (v for v in range(300, 400))
    guests += [guest(next(free), n, statuses[i]) for i, n in enumerate(owned)]
    result = plan([desired(n) for n in wanted], Observed(tuple(guests)), {}, RANGE, wanted)

    creates = [a for a in result.actions if isinstance(a, Create)]
    vmids = [a.vmid for a in creates]
    assert len(vmids) == len(set(vmids))
    assert all(v in RANGE and v not in taken for v in vmids)
    foreign = set(taken)
    assert not any(getattr(a, "vmid", None) in foreign for a in result.actions if not isinstance(a, Create))
    acted = {a.desired.name for a in result.actions}
    assert acted.isdisjoint(result.verdicts)
    assert acted | set(result.verdicts) >= set(wanted)
    assert {n for n in owned if n not in wanted} == {n for n, v in result.verdicts.items() if v.phase == "Orphaned"}
