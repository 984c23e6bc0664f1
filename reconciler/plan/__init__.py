"""Plan: a pure function from desired and observed state to the actions that close the gap (no I/O).

`plan()` decides clashes once (plan.conflicts), then asks each kind's rule (plan.container) what to do for
each request, holds back work whose last failure is still in its backoff, and says where every request
stands: the invalid ones, the ones with work in flight, the ones in place, and the orphans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from reconciler.config import DnsConfig
from reconciler.desired.claims import Claim
from reconciler.model.action import Action, ChangeRecords, CloneVm, failed_records
from reconciler.model.desired import Desired, Invalid
from reconciler.model.dns import Record
from reconciler.model.observed import Observed
from reconciler.model.owner import owner_of
from reconciler.model.retry import Attempt
from reconciler.model.standing import Standing
from reconciler.model.vocab import GUEST_KINDS, JobType, Phase
from reconciler.parse import counted
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.plan.container import container_rule, drift_of, examine, orphan, unclaimed_creates
from reconciler.plan.dns import Seen, Wanted, orphan_records, ready_records, records_rule, seen, with_kept_records
from reconciler.plan.guard import Guard, Held, apply_guard


@dataclass(frozen=True)
class Plan:
    """The actions to start, and where every request stands (for one with an action: what it will do)."""

    actions: list[Action] = field(default_factory=list)
    standings: dict[str, Standing] = field(default_factory=dict)
    held: Held | None = None  # what the mass-change guard held back, if it did
    # Request -> the DNS records it should have now (its container Ready at a known address), for every provider.
    records: dict[str, tuple[Record, ...]] = field(default_factory=dict)


def _taken(observed: Observed, valid: Iterable[Desired]) -> set[int]:
    """VMIDs never given to a request without one."""
    taken = set(observed.by_vmid)
    # Named by a request that passed validation (an adopt's guest may be unlisted, its node offline): given to
    # another too, Proxmox refuses one of the two creates. That includes one refused later for a clash (its
    # hostname, say): the VMID is still its own once the clash is fixed. An invalid file names none we can trust.
    taken.update(d.life.vmid for d in valid if d.life.vmid is not None)
    taken.update(r.action.vmid for r in observed.in_flight.values())
    taken.update(h.vmid for held in observed.held.values() for h in held if h.kind in GUEST_KINDS)
    return taken


def _free(vmids: range, taken: set[int]) -> Iterator[int]:
    return (v for v in vmids if v not in taken)


def _busy(observed: Observed) -> set[str]:
    """Requests that have, or are getting, a container: they keep their domain and address on a clash."""
    held = {n for n, found in observed.held.items() if observed.container(n) is not None}
    return set(observed.owned) | held | set(observed.in_flight)


def _cloning(clone: CloneVm) -> str:
    """The storage a clone writes to, which it locks while it copies."""
    return clone.desired.container.storage


def needs_foreign_addresses(valid: Iterable[Desired], observed: Observed, now: float) -> bool:
    """Whether a new container with a static address is about to be made (then foreign addresses are read)."""
    busy = _busy(observed)

    def held_back(d: Desired) -> bool:
        attempt = observed.attempts.get(d.name)
        made_by = JobType.CLONE if d.vm is not None else JobType.CREATE
        return attempt is not None and attempt.holds(made_by, d.revision, now)

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


def _records(
    d: Desired,
    base: Standing,
    known: Seen,
    ready: Wanted | None,
    names: dict[str, str],
    attempt: Attempt | None,
    now: float,
) -> tuple[ChangeRecords | None, Standing]:
    """The request's DNS update to start, if any, and where it stands; a failed one waits out its backoff."""
    records, standing = records_rule(d, base, known, ready, names)
    if records is None:
        return None, standing
    if attempt is not None and attempt.holds(JobType.DNS, d.revision, now):
        failure = attempt.standing.dns.message if attempt.standing.dns else attempt.standing.message
        shown = standing.dns.records if standing.dns else ()
        return None, failed_records(base, attempt.standing.job, shown, failure)
    return records, records.standing()


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
    vm_setup_on: bool = False,
    guard: Guard | None = None,
    previous: Mapping[str, Standing] | None = None,
    task_timeout: float = 600.0,
    dns: DnsConfig | None = None,
    dns_writes: bool = False,
) -> Plan:
    """What to do for each valid request, and where every request (and orphaned guest) stands.

    claimed: the invalid requests with what their files still claim (desired.claims): they take part in the
    clash rule, so a clash stands beside their other problems, and a valid request that loses to one of them (it
    has a container) is refused.
    request_names are all request files, valid or not: an owned guest whose request file is gone is Orphaned.
    now is the clock the attempts' retry times are read against. setup_on: whether setup in containers runs;
    vm_setup_on: whether it runs in VMs.
    guard: the mass-change guard (Guard() when None); previous: the statuses before this pass.
    dns: the DNS config, when records are made; dns_writes: whether they are written to a server (RFC 2136), so
    that records_rule plans updates (a hosts file alone needs only plan.records).
    """
    valid = list(valid)
    kept, refused = resolve_clashes(valid, claims_of(observed, service_domains or {}, vmids), claimed)
    result = Plan()
    # An invalid request with a clash comes back among the refused, with every problem: that one stands.
    for item in sorted([*invalid, *refused], key=lambda i: (i.name, i in refused)):
        result.standings[item.name] = invalid_standing(item, observed)
    free = _free(vmids, _taken(observed, valid))
    unclaimed = unclaimed_creates(observed, vmids)
    known = seen(observed, dns) if dns is not None and dns_writes else None
    names: dict[str, str] = {}  # record name -> the request that takes it in this plan
    cloning = {_cloning(r.action) for r in observed.in_flight.values() if isinstance(r.action, CloneVm)}
    for d in sorted(kept, key=lambda d: d.name):
        examined = examine(d, observed)  # once: the rule and the status's drift both read it
        drift, flapping = drift_of(d, examined)
        running = observed.in_flight.get(d.name)
        have = known.have.get(d.name, {}) if known is not None else {}
        attempt = observed.attempts.get(d.name)
        ready: Wanted | None = None  # the records it should have, once its container is Ready
        if running is not None:  # never started twice: the job's end brings the next look
            standing = running.action.standing(job=running.job_id)
            if not isinstance(running.action, ChangeRecords):
                standing = with_kept_records(standing, have)
        else:
            step = container_rule(
                d,
                observed,
                free,
                vmids,
                vm_setup_on if d.vm is not None else setup_on,
                unclaimed=unclaimed,
                task_timeout=task_timeout,
                examined=examined,
            )
            if isinstance(step, Standing):
                standing = step
                ready = ready_records(d, step, dns) if dns is not None else None
                if known is not None:
                    records, standing = _records(d, step, known, ready, names, attempt, now)
                    if records is not None:
                        result.actions.append(records)
            elif attempt is not None and attempt.holds(step.job_type, d.revision, now):
                standing = with_kept_records(attempt.standing, have)
            elif isinstance(step, CloneVm) and _cloning(step) in cloning:
                standing = Standing(
                    d.name,
                    d.path,
                    Phase.PENDING,
                    f"waiting: another VM is being cloned onto storage {_cloning(step)}, and clones onto one storage"
                    " run one at a time (Proxmox's storage lock)",
                    d.revision,
                )
            else:
                if isinstance(step, CloneVm):
                    cloning.add(_cloning(step))
                result.actions.append(step)
                standing = with_kept_records(step.standing(), have)
        if drift and not standing.drift:  # drift is said in every phase, so it never blinks in and out
            standing = replace(standing, drift=drift, flapping=flapping)
        result.standings[d.name] = standing
        if ready is None and dns is not None:
            ready = ready_records(d, standing, dns)  # records_rule keeps the container's phase and address
        if ready is not None:
            result.records[d.name] = tuple(sorted(ready[0].values()))
    wanted_names = set(request_names) | {d.name for d in valid} | set(result.standings)
    for name, guests in sorted(observed.owned.items()):
        if name not in wanted_names:
            result.standings[name] = orphan(name, guests, observed)
    held = apply_guard(guard or Guard(), result.actions, result.standings, dict(previous or {}), len(observed.owned))
    if known is not None:
        stay = wanted_names | (held.orphans if held is not None else frozenset())
        for records in orphan_records(known, stay, result.standings):
            running = observed.in_flight.get(records.name)
            attempt = observed.attempts.get(records.name)
            if running is None and not (attempt is not None and attempt.holds(JobType.DNS, None, now)):
                result.actions.append(records)
    return replace(result, held=held)
