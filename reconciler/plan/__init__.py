"""Plan: a pure function from desired and observed state to the actions that close the gap (no I/O).

`plan()` decides clashes once (plan.conflicts), then asks each kind's rule (plan.container) what to do for
each request, holds back work whose last failure is still in its backoff, and says where every request
stands: the invalid ones, the ones with work in flight, the ones in place, and the orphans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from reconciler.model.action import Action
from reconciler.model.desired import Desired, Invalid
from reconciler.model.observed import Observed
from reconciler.model.standing import Standing
from reconciler.model.vocab import JobType, Phase
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.plan.container import container_rule, orphan


@dataclass(frozen=True)
class Plan:
    """The actions to start, and where every request stands (for one with an action: what it will do)."""

    actions: list[Action] = field(default_factory=list)
    standings: dict[str, Standing] = field(default_factory=dict)


def _taken(observed: Observed) -> set[int]:
    taken = set(observed.by_vmid)
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
    message = f"{len(item.problems)} problem(s) in {item.path}; nothing was changed"
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


def plan(
    valid: Iterable[Desired],
    invalid: Iterable[Invalid],
    observed: Observed,
    vmids: range,
    *,
    service_domains: Mapping[str, str | None] | None = None,
    request_names: Iterable[str] = (),
    now: float = 0.0,
    setup_on: bool = False,
) -> Plan:
    """What to do for each valid request, and where every request (and orphaned guest) stands.

    request_names are all request files, valid or not: an owned guest whose request file is gone is Orphaned.
    now is the clock the attempts' retry times are read against. setup_on: whether setup in containers runs.
    """
    valid = list(valid)
    claims = Claims(service_domains or {}, frozenset(_busy(observed)), observed.foreign_ips)
    kept, refused = resolve_clashes(valid, claims)
    result = Plan()
    for item in sorted([*invalid, *refused], key=lambda i: i.name):
        result.standings[item.name] = invalid_standing(item, observed)
    free = _free(vmids, _taken(observed))
    for d in sorted(kept, key=lambda d: d.name):
        running = observed.in_flight.get(d.name)
        if running is not None:  # never started twice: the job's end brings the next look
            result.standings[d.name] = running.action.standing(job=running.job_id)
            continue
        step = container_rule(d, observed, free, vmids, setup_on)
        if isinstance(step, Standing):
            result.standings[d.name] = step
            continue
        attempt = observed.attempts.get(d.name)
        if attempt is not None and attempt.holds(step.job_type, d.revision, now):
            result.standings[d.name] = attempt.standing
            continue
        result.actions.append(step)
        result.standings[d.name] = step.standing()
    wanted = set(request_names) | {d.name for d in valid} | set(result.standings)
    for name, guests in sorted(observed.owned.items()):
        if name not in wanted:
            result.standings[name] = orphan(name, guests, observed)
    return result
