"""The mass-change guard as an operator meets it: a pass that would destroy, stop or orphan too many owned
guests does none of it and says why, until the revision of requests/ is confirmed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_plan import guest
from test_plan_compare import fresh_config, request
from test_plan_lifecycle import run, situation

from reconciler.model.action import DestroyContainer, StopContainer
from reconciler.model.desired import Desired
from reconciler.model.standing import Standing
from reconciler.model.vocab import GuestState, Phase
from reconciler.plan import Plan
from reconciler.plan.guard import Guard

REVISION = "9c1d2e7"
CONFIRM = "reconciler-confirm.yaml"


def pass_over(
    absent: int, stopped: int, removed: int, kept: int, guard: Guard, previous: dict[str, Standing] | None = None
) -> Plan:
    """One pass over owned, running containers: `absent` requests say state: absent, `stopped` say state:
    stopped, `removed` have lost their request file, and `kept` stay as they are."""
    requests: list[Desired] = []
    guests = []
    configs = []
    applied = []
    vmid = 200
    for prefix, count, state in (
        ("absent", absent, GuestState.ABSENT),
        ("stopped", stopped, GuestState.STOPPED),
        ("removed", removed, None),
        ("kept", kept, GuestState.PRESENT),
    ):
        for i in range(count):
            name = f"{prefix}{i}"
            d = request(name, state=state) if state is not None else None
            made = d or request(name)  # as the request is: the stop or destroy is then its only step
            guests.append(guest(vmid, name))
            configs.append(fresh_config(made, vmid))
            applied.append(made)
            if d is not None:
                requests.append(d)
            vmid += 1
    wanted, observed = situation(requests, guests, configs, applied=applied, bystanders=False)
    return run(wanted, observed, guard=guard, previous=previous or {})


def destructive(result: Plan) -> list[str]:
    return sorted(a.name for a in result.actions if isinstance(a, DestroyContainer | StopContainer))


def test_more_than_half_of_the_owned_guests_going_is_held_and_every_affected_status_says_why() -> None:
    result = pass_over(absent=2, stopped=1, removed=1, kept=3, guard=Guard(revision=REVISION, confirm_file=CONFIRM))
    assert result.held is not None
    assert destructive(result) == []
    assert (result.held.destroy, result.held.stop, result.held.orphans) == (2, 1, frozenset({"removed0"}))
    for name in ("absent0", "absent1", "stopped0", "removed0"):
        standing = result.standings[name]
        assert standing.phase != Phase.ORPHANED
        assert "mass-change guard" in standing.message, name
        assert REVISION in standing.message and CONFIRM in standing.message, name
        assert "destroy 2, stop 1 and orphan 1 of 7" in standing.message
    for name in ("kept0", "kept1", "kept2"):
        assert result.standings[name].phase == Phase.READY


def test_an_orphan_held_back_keeps_the_status_it_had_with_the_reason() -> None:
    before = Standing("removed0", "requests/removed0.yaml", Phase.READY, "container 202 running on pve1", "r1", 202)
    result = pass_over(2, 0, 1, 1, Guard(revision=REVISION), previous={"removed0": before})
    standing = result.standings["removed0"]
    assert (standing.phase, standing.request, standing.vmid) == (Phase.READY, "requests/removed0.yaml", 202)
    assert "mass-change guard" in standing.message


def test_exactly_half_of_the_owned_guests_going_proceeds() -> None:
    result = pass_over(absent=1, stopped=1, removed=0, kept=2, guard=Guard(revision=REVISION))
    assert result.held is None
    assert destructive(result) == ["absent0", "stopped0"]
    orphaning = pass_over(absent=1, stopped=0, removed=1, kept=2, guard=Guard(revision=REVISION))
    assert orphaning.held is None
    assert orphaning.standings["removed0"].phase == Phase.ORPHANED


def test_every_owned_guest_going_is_held_even_with_max_share_one() -> None:
    result = pass_over(absent=1, stopped=1, removed=1, kept=0, guard=Guard(max_share=1.0, revision=REVISION))
    assert result.held is not None
    assert destructive(result) == []
    assert "every one" in result.standings["absent0"].message


def test_a_confirm_naming_the_current_revision_lets_the_pass_through() -> None:
    result = pass_over(2, 1, 1, 0, Guard(revision=REVISION, confirmed=REVISION))
    assert result.held is None
    assert destructive(result) == ["absent0", "absent1", "stopped0"]
    assert result.standings["removed0"].phase == Phase.ORPHANED


def test_a_confirm_naming_an_older_revision_does_not() -> None:
    result = pass_over(2, 1, 1, 0, Guard(revision=REVISION, confirmed="5b0f3aa"))
    assert result.held is not None
    assert destructive(result) == []
    assert result.standings["removed0"].phase != Phase.ORPHANED


def test_an_orphan_reported_by_an_earlier_pass_is_not_counted_again() -> None:
    # Both removals were confirmed and reported; a later, unrelated push must not hold them again.
    previous = {
        f"removed{i}": Standing(f"removed{i}", f"removed{i} (removed)", Phase.ORPHANED, "left as it is", None, 200 + i)
        for i in range(2)
    }
    result = pass_over(0, 0, 2, 0, Guard(revision=REVISION, confirmed="an-older-one"), previous=previous)
    assert result.held is None
    assert {result.standings[n].phase for n in previous} == {Phase.ORPHANED}


@settings(max_examples=200, deadline=None)
@given(
    absent=st.integers(0, 4),
    stopped=st.integers(0, 4),
    removed=st.integers(0, 4),
    kept=st.integers(0, 4),
    share=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
)
def test_destroys_stops_and_orphans_go_ahead_only_within_the_share_and_never_all_at_once(
    absent: int, stopped: int, removed: int, kept: int, share: float
) -> None:
    result = pass_over(absent, stopped, removed, kept, Guard(max_share=share, revision=REVISION))
    owned = absent + stopped + removed + kept
    affected = absent + stopped + removed
    too_many = affected > 0 and (affected > share * owned or affected == owned)
    orphans = {n for n, s in result.standings.items() if s.phase == Phase.ORPHANED}
    if too_many:
        assert result.held is not None and destructive(result) == [] and orphans == set()
    else:
        assert result.held is None
        assert len(destructive(result)) == absent + stopped and len(orphans) == removed
