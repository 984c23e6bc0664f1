"""The plan is a pure function: plain unit tests, plus a property over arbitrary clusters."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Interface

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.model.action import CreateContainer, FindAddress, Provision, StartContainer
from reconciler.model.desired import ContainerSpec, Desired, Network
from reconciler.model.observed import Guest, Held, Observed, Running
from reconciler.model.owner import tags_for
from reconciler.model.retry import RetryPolicy
from reconciler.model.setup import Setup, SetupRecord, Step
from reconciler.model.standing import Standing
from reconciler.model.vocab import (
    GuestStatus,
    JobType,
    NetworkMode,
    Phase,
    ResourceKind,
    ResourceState,
    SetupState,
    StepName,
)
from reconciler.plan import plan

RANGE = range(200, 210)


def desired(name: str, address: str | None = None, start: bool = True, cores: int = 1) -> Desired:
    """Desired state built directly: no YAML, so any name a strategy draws is a name, never a boolean."""
    network = (
        Network(NetworkMode.STATIC, "vmbr0", IPv4Interface(address)) if address else Network(NetworkMode.DHCP, "vmbr0")
    )
    container = ContainerSpec(
        node="pve1",
        hostname=name,
        description="",
        template="local:vztmpl/debian.tar.zst",
        storage="local-lvm",
        cores=cores,
        memory=512,
        disk=8,
        network=network,
        start=start,
    )
    return Desired(name, f"requests/{name}.yaml", "r1", "generic-service", container)


def guest(vmid: int, name: str | None, status: str = "running", node: str = "pve1", **kw: object) -> Guest:
    fields: dict[str, object] = dict(
        vmid=vmid,
        node=node,
        type="lxc",
        name=name or f"ct{vmid}",
        status=GuestStatus(status),
        tags=tuple(tags_for(name, False)) if name else (),
        lock=None,
        template=False,
        cores=1,
        memory_mb=512,
        disk_gb=8,
    )
    fields.update(kw)
    return Guest(**fields)  # type: ignore[arg-type]


def held(name: str, vmid: int, address: str | None = None, state: ResourceState = ResourceState.CREATED) -> Held:
    return Held(name, ResourceKind.LXC, str(vmid), "pve1", state, address, 1)


def test_a_missing_container_is_created_with_the_first_free_vmid_of_the_range() -> None:
    result = plan([desired("a")], [], Observed((guest(200, None), guest(201, "other"))), RANGE)
    assert result.actions == [CreateContainer(desired("a"), 202, "pve1")]
    assert result.standings["a"].phase == Phase.PROVISIONING
    assert result.standings["a"].message == "creating container 202 on pve1"


def test_a_stopped_container_is_started_and_a_running_one_is_left_alone() -> None:
    observed = Observed((guest(200, "a", "stopped"), guest(201, "b")))
    result = plan([desired("a"), desired("b", "192.168.50.20/24")], [], observed, RANGE)
    assert result.actions == [StartContainer(desired("a"), 200, "pve1")]
    assert result.standings["b"].phase == Phase.READY
    assert result.standings["b"].address == "192.168.50.20"


def test_start_false_leaves_a_stopped_container_stopped() -> None:
    result = plan([desired("a", start=False)], [], Observed((guest(200, "a", "stopped"),)), RANGE)
    assert result.actions == []
    assert result.standings["a"].phase == Phase.READY


def test_a_running_dhcp_container_without_a_known_address_gets_it_looked_up() -> None:
    assert plan([desired("a")], [], Observed((guest(200, "a"),)), RANGE).actions == [
        FindAddress(desired("a"), 200, "pve1")
    ]
    known = Observed((guest(200, "a"),), held={"a": (held("a", 200, "192.168.50.7"),)})
    assert plan([desired("a")], [], known, RANGE).standings["a"].address == "192.168.50.7"


def test_two_containers_marked_for_one_request_are_reported_not_touched() -> None:
    result = plan([desired("a")], [], Observed((guest(200, "a"), guest(201, "a"))), RANGE)
    assert result.actions == []
    assert result.standings["a"].phase == Phase.FAILED
    assert "200, 201" in result.standings["a"].message


def test_a_full_range_fails_the_request_instead_of_stepping_outside_it() -> None:
    full = Observed(tuple(guest(v, None) for v in RANGE))
    result = plan([desired("a")], [], full, RANGE)
    assert result.actions == []
    assert result.standings["a"].message == "no free VMID left in the approved range 200..209"


def test_an_owned_guest_without_a_request_file_is_orphaned_and_left_alone() -> None:
    observed = Observed((guest(200, "gone"), guest(201, "kept")), held={"kept": (held("kept", 201, "x"),)})
    result = plan([desired("kept")], [], observed, RANGE, request_names=["kept"])
    assert result.actions == []
    assert result.standings["gone"].phase == Phase.ORPHANED


def test_a_request_with_a_job_in_flight_is_never_given_a_second_one_and_its_vmid_stays_taken() -> None:
    running = Running(7, CreateContainer(desired("a"), 200, "pve1"))
    result = plan([desired("a"), desired("b")], [], Observed((), in_flight={"a": running}), RANGE)
    assert result.actions == [CreateContainer(desired("b"), 201, "pve1")]
    assert result.standings["a"] == Standing(
        "a",
        "requests/a.yaml",
        Phase.PROVISIONING,
        "creating container 200 on pve1",
        "r1",
        200,
        "pve1",
        job=7,
        applied=False,
    )


def test_a_failed_attempt_holds_the_same_work_back_until_its_retry_time_or_a_new_revision() -> None:
    failed = Standing("a", "requests/a.yaml", Phase.FAILED, "create failed: storage full", "r1", job=3)
    attempt = RetryPolicy(30, 3600).next(None, JobType.CREATE, "r1", failed, True, now=100.0)
    observed = Observed((), attempts={"a": attempt})
    held_back = plan([desired("a")], [], observed, RANGE, now=129.0)
    assert held_back.actions == [] and held_back.standings["a"] == failed
    assert len(plan([desired("a")], [], observed, RANGE, now=130.0).actions) == 1
    changed = Desired(**{**desired("a").__dict__, "revision": "r2"})
    assert len(plan([changed], [], observed, RANGE, now=101.0).actions) == 1


def test_retry_waits_double_up_to_the_cap_and_a_permanent_failure_waits_the_cap() -> None:
    policy = RetryPolicy(30, 100)
    standing = Standing("a", "requests/a.yaml", Phase.FAILED, "x")
    attempt = None
    waits = []
    for _ in range(4):
        attempt = policy.next(attempt, JobType.START, "r1", standing, True, now=0.0)
        waits.append(attempt.retry_at)
    assert waits == [30, 60, 100, 100]
    assert policy.next(attempt, JobType.START, "r2", standing, True, now=0.0).failures == 1  # a new file starts anew
    assert policy.next(None, JobType.START, "r1", standing, False, now=0.0).retry_at == 100


def test_a_create_left_running_by_an_earlier_process_is_recognised_not_repeated() -> None:
    locked = guest(200, None, "stopped", lock="create")
    observed = Observed((locked,), held={"a": (held("a", 200, state=ResourceState.CREATING),)})
    result = plan([desired("a")], [], observed, RANGE)
    assert result.actions == []
    assert result.standings["a"].message == "create task of container 200 still running"


names = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), unique=True, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    wanted=names,
    vmids=st.lists(st.integers(190, 215), unique=True, max_size=20),
    owners=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "on", "yes", "x1"])), max_size=20),
    statuses=st.lists(st.sampled_from(["running", "stopped", "unknown"]), min_size=20, max_size=20),
)
def test_plan_never_reuses_a_vmid_never_leaves_the_range_and_never_acts_on_a_foreign_guest(
    wanted: list[str], vmids: list[int], owners: list[str | None], statuses: list[str]
) -> None:
    # Owned and foreign guests draw their VMIDs from one pool, inside and around the approved range.
    guests = [guest(v, owners[i] if i < len(owners) else None, statuses[i]) for i, v in enumerate(vmids)]
    foreign = {g.vmid for g in guests if not g.tags}
    result = plan([desired(n) for n in wanted], [], Observed(tuple(guests)), RANGE, request_names=wanted)

    creates = [a.vmid for a in result.actions if isinstance(a, CreateContainer)]
    assert len(creates) == len(set(creates))
    assert all(v in RANGE and v not in vmids for v in creates)
    assert not any(a.vmid in foreign for a in result.actions)
    assert {a.name for a in result.actions} <= set(wanted) <= set(result.standings)
    owned = {g.tags[-1].removeprefix("reconciler.") for g in guests if g.tags}
    orphaned = {n for n, s in result.standings.items() if s.phase == Phase.ORPHANED}
    if result.held is None:
        assert {n for n in owned if n not in wanted} == orphaned
    else:  # the mass-change guard held the removals back: nothing is declared orphaned
        assert orphaned == set() and result.held.orphans == {n for n in owned if n not in wanted}


def test_just_after_its_job_a_lagging_report_of_the_guest_is_not_acted_on() -> None:
    # /cluster/resources still says stopped (or unknown) a moment after the create task started the guest.
    for status in ("stopped", "unknown"):
        observed = Observed((guest(200, "a", status),), settling=frozenset({"a"}))
        result = plan([desired("a")], [], observed, RANGE)
        assert result.actions == []
        assert result.standings["a"].phase == Phase.PROVISIONING
        assert result.standings["a"].message == "waiting for Proxmox to report the state of container 200"
    later = plan([desired("a")], [], Observed((guest(200, "a", "stopped"),)), RANGE)
    assert later.actions == [StartContainer(desired("a"), 200, "pve1")]


SETUP = Setup((Step(StepName.APT_UPDATE, "refresh", "apt-get update"),))


def setup_view(standing: Standing) -> tuple[object, ...]:
    """What an operator alerts on: phase, applied, healthy and the setup state."""
    return (standing.phase, standing.applied, standing.healthy, standing.setup)


def with_setup(name: str, address: str = "192.168.50.20/24", setup: Setup = SETUP) -> Desired:
    return replace(desired(name, address), setup=setup)


def test_a_running_container_with_its_address_is_set_up_when_setup_is_on() -> None:
    d = with_setup("a")
    observed = Observed((guest(200, "a"),))
    assert plan([d], [], observed, RANGE, setup_on=True).actions == [Provision(d, 200, "pve1")]
    standing = plan([d], [], observed, RANGE, setup_on=True).standings["a"]
    assert setup_view(standing) == (Phase.PROVISIONING, True, None, SetupState.RUNNING)


def test_setup_off_leaves_the_container_created_only_and_says_so() -> None:
    result = plan([with_setup("a")], [], Observed((guest(200, "a"),)), RANGE)
    assert result.actions == []
    standing = result.standings["a"]
    assert setup_view(standing) == (Phase.READY, True, None, SetupState.OFF)
    assert standing.message.endswith("setup is off (provision.transport: off), 1 steps not run")


def test_the_same_steps_are_not_run_again_in_the_same_container() -> None:
    d = with_setup("a")
    done = Observed((guest(200, "a"),), setups={"a": SetupRecord(200, d.setup.digest, 9)})
    result = plan([d], [], done, RANGE, setup_on=True)
    assert result.actions == []
    standing = result.standings["a"]
    assert (standing.phase, standing.applied, standing.healthy, standing.setup, standing.job) == (
        Phase.READY,
        True,
        True,
        SetupState.DONE,
        9,
    )


def test_changed_steps_or_another_container_run_setup_again() -> None:
    d = with_setup("a")
    other_steps = Observed((guest(200, "a"),), setups={"a": SetupRecord(200, "0" * 16, 9)})
    other_container = Observed((guest(201, "a"),), setups={"a": SetupRecord(200, d.setup.digest, 9)})
    assert plan([d], [], other_steps, RANGE, setup_on=True).actions == [Provision(d, 200, "pve1")]
    assert plan([d], [], other_container, RANGE, setup_on=True).actions == [Provision(d, 201, "pve1")]


def test_setup_waits_for_a_stopped_container_and_for_a_dhcp_address() -> None:
    stopped = replace(with_setup("a"), container=replace(with_setup("a").container, start=False))
    result = plan([stopped], [], Observed((guest(200, "a", "stopped"),)), RANGE, setup_on=True)
    assert result.actions == []
    assert result.standings["a"].setup == SetupState.WAITING
    dhcp = replace(desired("b"), setup=SETUP)
    assert plan([dhcp], [], Observed((guest(201, "b"),)), RANGE, setup_on=True).actions == [
        FindAddress(dhcp, 201, "pve1")
    ]
    found = Observed((guest(201, "b"),), held={"b": (held("b", 201, "192.168.50.7"),)})
    assert plan([dhcp], [], found, RANGE, setup_on=True).actions == [
        Provision(dhcp, 201, "pve1", found_address="192.168.50.7")
    ]


def test_a_failed_setup_is_held_back_until_its_backoff_ends() -> None:
    d = with_setup("a")
    failed = Provision(d, 200, "pve1").standing(5, failure="setup step apt-update failed: exit status 100: E: x")
    attempt = RetryPolicy(30, 3600).next(None, JobType.PROVISION, "r1", failed, True, now=0.0)
    observed = Observed((guest(200, "a"),), attempts={"a": attempt})
    held_back = plan([d], [], observed, RANGE, setup_on=True, now=10.0)
    assert held_back.actions == []
    standing = held_back.standings["a"]
    assert setup_view(standing) == (Phase.FAILED, True, False, SetupState.FAILED)
    assert plan([d], [], observed, RANGE, setup_on=True, now=31.0).actions == [Provision(d, 200, "pve1")]
