"""The plan's lifecycle rules as an operator checks them: which action a pass starts (or none), and what the
request's status says: phase, message, drift, refusals, flapping."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_plan import RANGE, guest, held
from test_plan_compare import PROFILE, fresh_config, request

from reconciler.model.action import (
    AdoptContainer,
    CreateContainer,
    DestroyContainer,
    MigrateContainer,
    StartContainer,
    StopContainer,
    UpdateContainer,
)
from reconciler.model.desired import Desired
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Applied, Guest, Held, Intent, Observed, Running
from reconciler.model.owner import owner_of
from reconciler.model.standing import Drift, Standing
from reconciler.model.vocab import DriftMode, GuestState, Phase, ResourceKind, ResourceState
from reconciler.plan import Plan, plan
from reconciler.plan.compare import wanted
from reconciler.plan.guard import Guard

BYSTANDERS = ("x1", "x2")  # requests in place beside the one under test: its stop or destroy is not every guest


def address(vmid: int) -> str:
    return f"192.168.50.{vmid - 100}"


def situation(
    requests: Iterable[Desired],
    guests: Iterable[Guest],
    configs: Iterable[GuestConfig] = (),
    *,
    applied: Iterable[Desired] = (),
    bystanders: bool = True,
    **more: Any,
) -> tuple[list[Desired], Observed]:
    """The requests and the cluster: every owned guest held with its address (no address lookups), the values
    of `applied` recorded as last written to their guests, and two bystander requests in place."""
    wanted_now, cluster = list(requests), list(guests)
    read = {c.vmid: c for c in configs}
    written = list(applied)
    if bystanders:
        for i, name in enumerate(BYSTANDERS):
            d = request(name)
            wanted_now.append(d)
            cluster.append(guest(208 + i, name))
            read[208 + i] = fresh_config(d, 208 + i)
            written.append(d)
    holding: dict[str, tuple[Held, ...]] = {}
    for g in cluster:
        owner = owner_of(g.tags)
        if owner is not None:
            holding[owner] = (held(owner, g.vmid, address(g.vmid)),)
    records = {d.name: Applied(holding[d.name][0].vmid, wanted(d)) for d in written if d.name in holding}
    fields: dict[str, Any] = {"held": holding, "configs": read, "applied": records, **more}
    return wanted_now, Observed(tuple(cluster), **fields)


def run(requests: list[Desired], observed: Observed, **kw: Any) -> Plan:
    return plan(requests, [], observed, RANGE, request_names=[d.name for d in requests], **kw)


# Changes in place: edits and drift


def test_an_edited_request_gives_one_update_with_its_changes_and_the_digest_read() -> None:
    before, after = request("a"), request("a", cores=2, memory=1024)
    config = fresh_config(before, 200, digest="3f9a0c")
    result = run(*situation([after], [guest(200, "a")], [config], applied=[before]))
    assert result.actions == [
        UpdateContainer(
            after,
            200,
            "pve1",
            seen=config,
            changes=(Drift("cores", "2", "1"), Drift("memory", "1024", "512")),
        )
    ]
    [update] = result.actions
    assert isinstance(update, UpdateContainer) and update.seen is not None and update.seen.digest == "3f9a0c"
    assert update.corrects == ()
    standing = result.standings["a"]
    assert standing.phase == Phase.PROVISIONING and standing.drift == ()


def test_drift_with_drift_correct_is_put_back_and_listed_in_the_status() -> None:
    d = request("a")
    by_hand = fresh_config(d, 200, cores="4", onboot="0")
    result = run(*situation([d], [guest(200, "a")], [by_hand], applied=[d]))
    drift = (Drift("cores", "1", "4"), Drift("onboot", "1", "0"))
    assert result.actions == [
        UpdateContainer(d, 200, "pve1", seen=by_hand, changes=drift, corrects=("cores", "onboot"))
    ]
    assert result.standings["a"].drift == drift
    assert result.standings["a"].flapping is False


def test_drift_with_drift_report_is_listed_and_left_as_it_is() -> None:
    d = request("a", drift=DriftMode.REPORT)
    by_hand = fresh_config(d, 200, memory="2048")
    result = run(*situation([d], [guest(200, "a")], [by_hand], applied=[d]))
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.READY
    assert standing.drift == (Drift("memory", "512", "2048"),)
    assert "drift: report" in standing.message
    # An edit made in Git meanwhile is applied; the drift is still only reported.
    edited = request("a", drift=DriftMode.REPORT, cores=2)
    result = run(*situation([edited], [guest(200, "a")], [by_hand], applied=[d]))
    assert result.actions == [UpdateContainer(edited, 200, "pve1", seen=by_hand, changes=(Drift("cores", "2", "1"),))]
    assert result.standings["a"].drift == (Drift("memory", "512", "2048"),)


def test_with_drift_report_a_field_changed_by_hand_and_then_in_git_gets_the_value_asked_in_git() -> None:
    before = request("a", drift=DriftMode.REPORT)
    by_hand = fresh_config(before, 200, memory="1024")
    after = request("a", drift=DriftMode.REPORT, memory=2048)
    result = run(*situation([after], [guest(200, "a")], [by_hand], applied=[before]))
    assert result.actions == [
        UpdateContainer(after, 200, "pve1", seen=by_hand, changes=(Drift("memory", "2048", "1024"),))
    ]
    assert result.standings["a"].drift == ()


def test_drift_that_keeps_coming_back_is_flapping_and_no_longer_corrected() -> None:
    d = request("a")
    by_hand = fresh_config(d, 200, cores="4")
    requests, observed = situation([d], [guest(200, "a")], [by_hand], applied=[d], corrections={"a": 3})
    result = run(requests, observed)
    assert result.actions == []
    standing = result.standings["a"]
    assert (standing.phase, standing.flapping, standing.drift) == (Phase.READY, True, (Drift("cores", "1", "4"),))
    assert "flapping" in standing.message
    # Two corrections within the hour are not yet flapping: the third is made.
    again = run(*situation([d], [guest(200, "a")], [by_hand], applied=[d], corrections={"a": 2}))
    assert [type(a) for a in again.actions] == [UpdateContainer]
    assert again.standings["a"].flapping is False


def test_a_refused_change_fails_the_request_and_nothing_at_all_is_done() -> None:
    # The disk asked is smaller; the request also has an edit to make, and its container is stopped.
    before, after = request("a", disk=8), request("a", disk=4, cores=2)
    result = run(*situation([after], [guest(200, "a", "stopped")], [fresh_config(before, 200)], applied=[before]))
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.FAILED
    assert [(r.field, r.asked) for r in standing.refused] == [("resources.disk", "4 GB")]
    assert "resources.disk: asked 4 GB, kept 8 GB" in standing.message
    assert "nothing was changed" in standing.message


def test_a_node_change_with_migrate_moves_the_container_and_without_it_is_refused() -> None:
    d = request("a", node="pve2", migrate=True)
    config = fresh_config(request("a"), 200)
    result = run(*situation([d], [guest(200, "a")], [config], applied=[request("a")]))
    assert result.actions == [MigrateContainer(d, 200, "pve1", target="pve2", running=True)]
    stay = request("a", node="pve2")
    refused = run(*situation([stay], [guest(200, "a")], [config], applied=[request("a")]))
    assert refused.actions == []
    assert refused.standings["a"].phase == Phase.FAILED
    assert [(r.field, r.asked) for r in refused.standings["a"].refused] == [("node", "pve2")]


# Power: state stopped, start false


def test_state_stopped_stops_a_running_container() -> None:
    d = request("a", state=GuestState.STOPPED)
    result = run(*situation([d], [guest(200, "a")], [fresh_config(d, 200)], applied=[d]))
    assert result.actions == [StopContainer(d, 200, "pve1")]
    assert result.held is None


def test_start_false_alone_never_stops_a_running_container() -> None:
    d = request("a", start=False)
    result = run(*situation([d], [guest(200, "a")], [fresh_config(d, 200)], applied=[d]))
    assert result.actions == []
    assert result.standings["a"].phase == Phase.READY
    # Nor without its config read.
    result = run(*situation([d], [guest(200, "a")]))
    assert not any(isinstance(a, StopContainer) for a in result.actions)


def test_a_stopped_container_that_should_run_is_started() -> None:
    d = request("a")
    result = run(*situation([d], [guest(200, "a", "stopped")], [fresh_config(d, 200)], applied=[d]))
    assert result.actions == [StartContainer(d, 200, "pve1")]
    # state: stopped keeps it stopped and says so.
    stopped = request("a", state=GuestState.STOPPED)
    kept = run(*situation([stopped], [guest(200, "a", "stopped")], [fresh_config(stopped, 200)], applied=[stopped]))
    assert kept.actions == []
    assert kept.standings["a"].phase == Phase.READY and "state: stopped" in kept.standings["a"].message


# Destruction: state absent, protection


def test_state_absent_destroys_the_container() -> None:
    d = request("a", state=GuestState.ABSENT)
    result = run(*situation([d], [guest(200, "a")], [fresh_config(request("a"), 200)], applied=[request("a")]))
    assert result.actions == [DestroyContainer(d, 200, "pve1")]
    assert result.standings["a"].phase == Phase.PROVISIONING


def test_protected_true_refuses_to_destroy_and_says_protected() -> None:
    d = request("a", state=GuestState.ABSENT, protected=True)
    result = run(*situation([d], [guest(200, "a")], [fresh_config(d, 200)], applied=[d]))
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.FAILED
    assert "protected" in standing.message
    assert [r.field for r in standing.refused] == ["state"]


def test_proxmoxs_protection_flag_is_cleared_first_when_the_request_says_protected_false() -> None:
    d = request("a", state=GuestState.ABSENT, protected=False)
    flagged = fresh_config(request("a", protected=True), 200)
    assert flagged.values["protection"] == "1"
    result = run(*situation([d], [guest(200, "a")], [flagged], applied=[request("a", protected=True)]))
    [update] = result.actions
    assert isinstance(update, UpdateContainer)
    assert update.changes == (Drift("protection", "0", "1"),)
    assert not any(isinstance(a, DestroyContainer) for a in result.actions)


def test_state_absent_without_a_container_is_deleted_and_creates_nothing() -> None:
    d = request("a", state=GuestState.ABSENT)
    result = run(*situation([d], []))
    assert result.actions == []
    assert result.standings["a"].phase == Phase.DELETED


# Adoption and guests the reconciler does not own


def legacy(vmid: int = 150) -> Guest:
    """A guest made by hand: no marker, named legacy."""
    return replace(guest(vmid, None), name="legacy")


def test_adopt_with_vmid_writes_the_marker_on_the_foreign_guest_named() -> None:
    d = request("legacy", adopt=True, vmid=150)
    config = fresh_config(request("legacy", cores=2), 150, tags="Team-A", description="made by hand")
    result = run(*situation([d], [legacy()], [config]))
    assert result.actions == [AdoptContainer(d, 150, "pve1", seen=config)]


def test_an_adopted_guest_gets_no_action_and_every_difference_is_listed_until_adopt_is_removed() -> None:
    d = request("legacy", adopt=True, vmid=150)
    config = fresh_config(
        request("legacy", cores=2, memory=1024, disk=4, storage="tank"), 150, description="made by hand"
    )
    result = run(*situation([d], [guest(150, "legacy")], [config]))
    assert result.actions == []
    standing = result.standings["legacy"]
    assert standing.phase == Phase.READY
    assert {x.field for x in standing.drift} == {"cores", "memory", "description", "disk", "storage"}
    assert "5 difference(s)" in standing.message and "remove adopt: true" in standing.message
    assert standing.applied is False


def test_adopting_a_guest_another_request_owns_fails_and_touches_nothing() -> None:
    d = request("a", adopt=True, vmid=208)  # the bystander x1's container
    result = run(*situation([d], []))
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase.failing
    assert "vmid: 208 belongs to request x1" in standing.problems


def test_a_request_whose_vmid_or_hostname_is_a_foreign_guests_is_invalid() -> None:
    by_vmid = request("a", vmid=205)  # in the approved range, so that the guest is the only reason
    by_name = replace(request("b"), container=replace(request("b").container, hostname="legacy"))
    result = run(*situation([by_vmid, by_name], [legacy(205)]))
    assert result.actions == []
    assert result.standings["a"].phase == Phase.INVALID
    assert result.standings["a"].problems == (
        "vmid: 205 is taken by a guest the reconciler does not own; adopt: true takes it over",
    )
    assert result.standings["b"].phase == Phase.INVALID
    assert result.standings["b"].problems == (
        "hostname: legacy is the name of guest 205, which the reconciler does not own",
    )


def test_a_vmid_outside_the_approved_range_is_invalid_unless_it_adopts_or_already_is_its_own() -> None:
    outside = request("a", vmid=150)
    result = run(*situation([outside], []))
    assert result.actions == []
    assert result.standings["a"].problems == ("vmid: 150 is outside the approved range 200..209",)
    adopted = request("legacy", vmid=150)  # adopt: true removed after adoption: the guest is its own
    kept = run(*situation([adopted], [guest(150, "legacy")], [fresh_config(adopted, 150)], applied=[adopted]))
    assert kept.standings["legacy"].phase == Phase.READY
    assert kept.actions == []


def test_adopt_naming_the_foreign_guest_is_not_refused_for_its_vmid_or_hostname() -> None:
    d = request("legacy", adopt=True, vmid=150)
    result = run(*situation([d], [legacy()], [fresh_config(request("legacy"), 150, tags="")]))
    assert result.standings["legacy"].phase != Phase.INVALID
    assert [type(a) for a in result.actions] == [AdoptContainer]


def test_a_vmid_a_request_names_is_never_given_to_a_request_without_one() -> None:
    # "a" is planned first and the range's first VMID looks free, but "b" names it: one create would fail.
    named = request("b", vmid=RANGE.start)
    result = run(*situation([request("a"), named], []))
    assert {a.name: a.vmid for a in result.actions if isinstance(a, CreateContainer)} == {
        "a": RANGE.start + 1,
        "b": RANGE.start,
    }


@pytest.mark.parametrize("listed", [True, False], ids=["guest-listed", "guest-unlisted"])
def test_the_vmid_an_adopt_request_names_is_never_given_to_a_request_without_one(listed: bool) -> None:
    # Unlisted: its node is offline, say; the guest is still there, and its VMID is not free.
    d = request("legacy", adopt=True, vmid=RANGE.start)
    guests = [legacy(RANGE.start)] if listed else []
    configs = [fresh_config(request("legacy"), RANGE.start, tags="")] if listed else []
    result = run(*situation([request("a"), d], guests, configs))
    creates = [a.vmid for a in result.actions if isinstance(a, CreateContainer)]
    assert creates == [RANGE.start + 1]
    assert [type(a) for a in result.actions if a.name == "legacy"] == ([AdoptContainer] if listed else [])


def test_the_vmid_a_refused_request_names_stays_free_for_it() -> None:
    # "b" is refused for its hostname; once that is fixed its VMID must still be free, not another's.
    named = replace(request("b", vmid=RANGE.start), container=replace(request("b").container, hostname="legacy"))
    result = run(*situation([request("a"), named], [legacy()]))
    assert result.standings["b"].phase == Phase.INVALID
    assert [a.vmid for a in result.actions if isinstance(a, CreateContainer)] == [RANGE.start + 1]


# Restarts: lost markers, creates nobody knows of, creates that never end


def test_a_container_that_lost_its_marker_fails_the_request_and_nothing_is_created() -> None:
    d = request("a")
    unmarked = replace(guest(200, None), name="a")
    requests, observed = situation([d], [unmarked])
    observed = replace(observed, held={**observed.held, "a": (held("a", 200, address(200)),)})
    result = run(requests, observed)
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.FAILED
    assert "lost its marker" in standing.message and "vmid: 200" in standing.message


@pytest.mark.parametrize("lock", ["backup", "migrate", "snapshot"])
def test_a_container_that_lost_its_marker_while_locked_is_not_replaced_by_a_second_one(lock: str) -> None:
    # The tags were removed by hand, and the nightly backup (or a migration, a snapshot) holds the guest now.
    d = request("a")
    unmarked = replace(guest(200, None, lock=lock), name="a")
    requests, observed = situation([d], [unmarked])
    observed = replace(observed, held={**observed.held, "a": (held("a", 200, address(200)),)})
    result = run(requests, observed)
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.FAILED
    assert "lost its marker" in standing.message


def test_a_create_nobody_here_knows_of_in_the_range_holds_back_every_create() -> None:
    locked = guest(205, None, "stopped", lock="create")
    result = run(*situation([request("a"), request("b")], [locked]))
    assert result.actions == []
    for name in ("a", "b"):
        assert result.standings[name].phase == Phase.PENDING
        assert "container 205" in result.standings[name].message
    # Outside the approved range it is someone else's business.
    outside = guest(150, None, "stopped", lock="create")
    assert [type(a) for a in run(*situation([request("a")], [outside])).actions] == [CreateContainer]


def _interrupted_create(age: float) -> Plan:
    began = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    intent = Intent(1, "a", 205, "pve1", "create", 4, began.isoformat(timespec="milliseconds"))
    requests, observed = situation([request("a")], [guest(205, None, "stopped", lock="create")])
    observed = replace(
        observed,
        held={**observed.held, "a": (held("a", 205, state=ResourceState.CREATING),)},
        intents=(intent,),
        at=began.timestamp() + age,
    )
    return run(requests, observed, task_timeout=600.0)


def test_a_create_begun_before_a_restart_that_runs_past_the_task_timeout_fails_naming_it() -> None:
    young = _interrupted_create(age=300)
    assert young.actions == []
    assert young.standings["a"].phase == Phase.PROVISIONING
    old = _interrupted_create(age=601)
    assert old.actions == []
    standing = old.standings["a"]
    assert standing.phase == Phase.FAILED
    assert "600 s" in standing.message and "task_timeout" in standing.message and "205" in standing.message


def test_a_locked_guest_with_an_update_to_do_gets_no_action_and_the_status_says_locked() -> None:
    before, after = request("a"), request("a", cores=2)
    result = run(*situation([after], [guest(200, "a", lock="backup")], [fresh_config(before, 200)], applied=[before]))
    assert result.actions == []
    standing = result.standings["a"]
    assert standing.phase == Phase.PROVISIONING
    assert "locked (backup)" in standing.message and "update" in standing.message


def test_drift_stays_in_the_status_while_a_job_is_in_flight() -> None:
    d = request("a")
    by_hand = fresh_config(d, 200, cores="4")
    running = {"a": Running(9, UpdateContainer(d, 200, "pve1", seen=by_hand, changes=(Drift("cores", "1", "4"),)))}
    result = run(*situation([d], [guest(200, "a")], [by_hand], applied=[d], in_flight=running))
    assert result.actions == []
    standing = result.standings["a"]
    assert (standing.phase, standing.job) == (Phase.PROVISIONING, 9)
    assert standing.drift == (Drift("cores", "1", "4"),)


def test_drift_stays_in_the_status_while_a_failed_correction_waits_for_its_retry() -> None:
    from reconciler.model.retry import RetryPolicy

    d = request("a")
    by_hand = fresh_config(d, 200, cores="4")
    failed = Standing("a", d.path, Phase.FAILED, "update failed: config changed meanwhile", d.revision, 200, "pve1")
    attempt = RetryPolicy(30, 3600).next(None, UpdateContainer.job_type, d.revision, failed, True, now=0.0)
    result = run(*situation([d], [guest(200, "a")], [by_hand], applied=[d], attempts={"a": attempt}), now=10.0)
    assert result.actions == []
    assert result.standings["a"].phase == Phase.FAILED
    assert result.standings["a"].drift == (Drift("cores", "1", "4"),)


# The property the issue asks for: the plan never touches what is not its own, and never destroys or stops
# what a request does not ask to be destroyed or stopped.

NODES = ("pve1", "pve2", "pve3")
VMIDS = st.integers(195, 215)  # inside and around the approved range 200..209


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Desired], Observed, Guard, bool]:
    """Requests of every kind, and a cluster of guests owned by them, by removed requests, or by nobody; the
    requests' VMIDs, hostnames and nodes are drawn mostly from the guests, so that they meet."""
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), unique=True, max_size=6))
    owners = [*names, "gone", "old1"]  # owned by a request, by a request whose file is gone, or by nobody
    guests: list[Guest] = []
    configs: dict[int, GuestConfig] = {}
    for vmid in draw(st.lists(VMIDS, unique=True, max_size=12)):
        owner = draw(st.none() | st.sampled_from(owners))
        g = guest(
            vmid,
            owner,
            draw(st.sampled_from(["running", "running", "stopped", "unknown"])),
            node=draw(st.sampled_from(NODES)),
            lock=draw(st.sampled_from([None, None, None, None, "create", "backup"])),
            type=draw(st.sampled_from(["lxc", "lxc", "lxc", "qemu"])),
        )
        if owner is None:
            g = replace(g, name=draw(st.sampled_from([f"ct{vmid}", "legacy", *names])))
        guests.append(g)
        if draw(st.integers(0, 3)) > 0:
            made = request(
                owner or g.name,
                cores=draw(st.integers(1, 2)),
                disk=draw(st.sampled_from([4, 8, 8, 16])),
                storage=draw(st.sampled_from(["local-lvm", "local-lvm", "tank"])),
                protected=draw(st.booleans()),
                node=g.node,
                profile=draw(st.sampled_from([PROFILE, PROFILE, "docker-host"])),
            )
            configs[vmid] = fresh_config(made, vmid, tags=";".join(g.tags))
    vmids = [g.vmid for g in guests]
    some_vmid = st.sampled_from(vmids) | VMIDS if vmids else VMIDS
    requests = []
    holding: dict[str, tuple[Held, ...]] = {}
    running: dict[str, Running] = {}
    applied: dict[str, Applied] = {}
    for name in names:
        mine = [g for g in guests if owner_of(g.tags) == name]
        adopt = draw(st.integers(0, 3)) == 0
        asked = draw(some_vmid) if adopt else draw(st.none() | st.none() | some_vmid)
        d = request(
            name,
            state=draw(st.sampled_from(GuestState)),
            protected=draw(st.booleans()),
            adopt=adopt,
            vmid=asked,
            drift=draw(st.sampled_from(DriftMode)),
            migrate=draw(st.booleans()),
            node=draw(st.sampled_from([mine[0].node] * 3 + list(NODES) if mine else NODES)),
            start=draw(st.booleans()),
            cores=draw(st.integers(1, 2)),
            disk=draw(st.sampled_from([4, 8, 8, 16])),
        )
        hostname = draw(st.sampled_from([name, name, name, "legacy"]))  # sometimes a foreign guest's name
        d = replace(d, container=replace(d.container, hostname=hostname))
        requests.append(d)
        if draw(st.integers(0, 3)) > 0:
            kept = draw(st.sampled_from([g.vmid for g in mine]) if mine else some_vmid)
            state = draw(st.sampled_from(ResourceState))
            holding[name] = (Held(name, ResourceKind.LXC, str(kept), "pve1", state, address(kept), 1),)
        if draw(st.integers(0, 5)) == 0:
            running[name] = Running(1, StartContainer(d, draw(some_vmid), d.container.node))
        if draw(st.booleans()):
            applied[name] = Applied(mine[0].vmid if mine else draw(VMIDS), wanted(d))
    corrections = {d.name: draw(st.integers(0, 4)) for d in requests}
    guard = Guard(
        max_share=draw(st.sampled_from([0.5, 1.0])), revision="r1", confirmed=draw(st.sampled_from([None, "r1"]))
    )
    observed = Observed(
        tuple(guests), held=holding, in_flight=running, configs=configs, applied=applied, corrections=corrections
    )
    return requests, observed, guard, draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_the_plan_never_touches_a_guest_it_does_not_own_and_never_destroys_or_stops_unasked(
    case: tuple[list[Desired], Observed, Guard, bool],
) -> None:
    requests, observed, guard, setup_on = case
    result = plan(
        requests,
        [],
        observed,
        RANGE,
        request_names=[d.name for d in requests],
        guard=guard,
        setup_on=setup_on,
    )
    by_name = {d.name: d for d in requests}
    for action in result.actions:
        event(type(action).__name__)
        d = by_name[action.name]
        target = observed.by_vmid.get(action.vmid)
        if target is not None:
            owner = owner_of(target.tags)
            if owner is None:
                assert isinstance(action, AdoptContainer) and d.life.adopt and d.life.vmid == action.vmid, action
            else:
                assert owner == action.name, action  # a request acts on its own guest, never another's
        if isinstance(action, DestroyContainer):
            assert d.life.state == GuestState.ABSENT, action
            assert not d.container.protected, action
        if isinstance(action, StopContainer):
            assert d.life.state in (GuestState.STOPPED, GuestState.ABSENT), action


def test_another_vmid_for_an_existing_container_is_refused() -> None:
    requests, observed = situation([request("a", vmid=205)], [guest(200, "a")], [fresh_config(request("a"), 200)])
    result = run(requests, observed)
    assert [a.name for a in result.actions] == []
    standing = result.standings["a"]
    assert standing.phase == Phase.FAILED
    assert [(r.field, r.asked) for r in standing.refused] == [("vmid", "205")]


def test_a_vm_carrying_a_requests_marker_is_never_treated_as_its_container() -> None:
    absent = request("a", state=GuestState.ABSENT)
    requests, observed = situation([absent], [guest(200, "a", type="qemu")])
    result = run(requests, observed)
    assert [a.name for a in result.actions] == []
    assert result.standings["a"].phase == Phase.FAILED
    assert "is a VM" in result.standings["a"].message


def test_clearing_protection_before_a_destroy_counts_for_the_mass_change_guard() -> None:
    # Two of three owned containers asked absent with protected: false while Proxmox still protects them.
    gone = [request(n, state=GuestState.ABSENT) for n in ("a", "b")]
    flagged = [
        replace(
            fresh_config(request(n), 200 + i), values={**fresh_config(request(n), 200 + i).values, "protection": "1"}
        )
        for i, n in enumerate(("a", "b"))
    ]
    requests, observed = situation(gone, [guest(200, "a"), guest(201, "b")], flagged, bystanders=False)
    requests.append(request("c"))
    observed = replace(observed, guests=(*observed.guests, guest(202, "c")))
    result = run(requests, observed)
    assert result.held is not None and result.held.destroy == 2
    assert {a.name for a in result.actions} == {"c"}  # only the bystander's own work
