"""Plan: a pure function from desired and observed state to the actions that close the gap (no I/O).

`plan()` decides clashes once (plan.conflicts), then asks each kind's rule (plan.container) what to do for
each request, holds back work whose last failure is still in its backoff, and says where every request
stands: the invalid ones, the ones with work in flight, the ones in place, and the orphans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from reconciler.desired.claims import Claim
from reconciler.model.action import Action
from reconciler.model.desired import Desired, Invalid
from reconciler.model.observed import Observed
from reconciler.model.owner import owner_of
from reconciler.model.standing import Standing
from reconciler.model.vocab import JobType, Phase
from reconciler.parse import counted
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.plan.container import container_rule, drift_of, examine, orphan, unclaimed_creates
from reconciler.plan.guard import Guard, Held, apply_guard


@dataclass(frozen=True)
class Plan:
    """The actions to start, and where every request stands (for one with an action: what it will do)."""

    actions: list[Action] = field(default_factory=list)
    standings: dict[str, Standing] = field(default_factory=dict)
    held: Held | None = None  # what the mass-change guard held back, if it did


def _taken(observed: Observed, valid: Iterable[Desired]) -> set[int]:
    """VMIDs never given to a request without one."""
    taken = set(observed.by_vmid)
    # Named by a request that passed validation (an adopt's guest may be unlisted, its node offline): given to
    # another too, Proxmox refuses one of the two creates. That includes one refused later for a clash (its
    # hostname, say): the VMID is still its own once the clash is fixed. An invalid file names none we can trust.
    taken.update(d.life.vmid for d in valid if d.life.vmid is not None)
    taken.update(r.action.vmid for r in observed.in_flight.values())
    taken.update(h.vmid for held in observed.held.values() for h in held)
    return taken


def _free(vmids: range, taken: set[int]) -> Iterator[int]:
    return (v for v in vmids if v not in taken)


def _busy(observed: Observed) -> set[str]:
    """Requests that have, or are getting, a container: they keep their domain and address on a clash."""
    return set(observed.owned) | set(observed.held) | set(observed.in_flight)


def needs_foreign_addresses(valid: Iterable[Desired], observed: Observed, now: float) -> bool:
    """Whether a new container with a static address is about to be made (then foreign addresses are read)."""
    busy = _busy(observed)

    def held_back(d: Desired) -> bool:
        attempt = observed.attempts.get(d.name)
        return attempt is not None and attempt.holds(JobType.CREATE, d.revision, now)

    return any(d.static_ip is not None and d.name not in busy and not held_back(d) for d in valid)


def invalid_standing(item: Invalid, observed: Observed) -> Standing:
    guests = observed.owned.get(item.name, [])
    message = f"{counted(len(item.problems), 'problem')} in {item.path}; nothing was changed"
    if guests:
        message += f"; container {guests[0].vmid} is left as it is"
    return Standing(
        item.name,
        item.path,
        Phase.INVALID,
        message,
        item.revision,
        guests[0].vmid if guests else None,
        guests[0].node if guests else None,
        problems=tuple(str(p) for p in item.problems),
    )


def claims_of(observed: Observed, service_domains: Mapping[str, str | None], vmids: range) -> Claims:
    """What exists outside the request files that a request may clash with."""
    return Claims(
        service_domains,
        frozenset(_busy(observed)),
        observed.foreign_ips,
        {g.name: g.vmid for g in observed.foreign if g.name},
        {g.vmid: owner_of(g.tags) for g in observed.guests},
        vmids,
    )


def plan(
    valid: Iterable[Desired],
    invalid: Iterable[Invalid],
    observed: Observed,
    vmids: range,
    *,
    service_domains: Mapping[str, str | None] | None = None,
    claimed: Iterable[tuple[Invalid, Claim]] = (),
    request_names: Iterable[str] = (),
    now: float = 0.0,
    setup_on: bool = False,
    guard: Guard | None = None,
    previous: Mapping[str, Standing] | None = None,
    task_timeout: float = 600.0,
) -> Plan:
    """What to do for each valid request, and where every request (and orphaned guest) stands.

    claimed: the invalid requests with what their files still claim (desired.claims): they take part in the
    clash rule, so a clash stands beside their other problems, and a valid request that loses to one of them (it
    has a container) is refused.
    request_names are all request files, valid or not: an owned guest whose request file is gone is Orphaned.
    now is the clock the attempts' retry times are read against. setup_on: whether setup in containers runs.
    guard: the mass-change guard (Guard() when None); previous: the statuses before this pass.
    """
    valid = list(valid)
    kept, refused = resolve_clashes(valid, claims_of(observed, service_domains or {}, vmids), claimed)
    result = Plan()
    # An invalid request with a clash comes back among the refused, with every problem: that one stands.
    for item in sorted([*invalid, *refused], key=lambda i: (i.name, i in refused)):
        result.standings[item.name] = invalid_standing(item, observed)
    free = _free(vmids, _taken(observed, valid))
    unclaimed = unclaimed_creates(observed, vmids)
    for d in sorted(kept, key=lambda d: d.name):
        examined = examine(d, observed)  # once: the rule and the status's drift both read it
        drift, flapping = drift_of(d, examined)
        running = observed.in_flight.get(d.name)
        if running is not None:  # never started twice: the job's end brings the next look
            standing = running.action.standing(job=running.job_id)
        else:
            step = container_rule(
                d, observed, free, vmids, setup_on, unclaimed=unclaimed, task_timeout=task_timeout, examined=examined
            )
            attempt = observed.attempts.get(d.name)
            if isinstance(step, Standing):
                standing = step
            elif attempt is not None and attempt.holds(step.job_type, d.revision, now):
                standing = attempt.standing
            else:
                result.actions.append(step)
                standing = step.standing()
        if drift and not standing.drift:  # drift is said in every phase, so it never blinks in and out
            standing = replace(standing, drift=drift, flapping=flapping)
        result.standings[d.name] = standing
    wanted = set(request_names) | {d.name for d in valid} | set(result.standings)
    for name, guests in sorted(observed.owned.items()):
        if name not in wanted:
            result.standings[name] = orphan(name, guests, observed)
    held = apply_guard(guard or Guard(), result.actions, result.standings, dict(previous or {}), len(observed.owned))
    return replace(result, held=held)
