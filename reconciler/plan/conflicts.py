"""Clashes: two requests wanting one domain or address, or one that something else already has (pure).

One rule, used by every command: a request that already has its container keeps what it has; otherwise a valid
request wins over a file with errors, then the alphabetically first name wins; the other is refused and told who
has it. A file with errors takes part with what it still says (desired.claims), so its clash is said at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from reconciler.desired.claims import Claim, claim_of
from reconciler.model.desired import Desired, Invalid
from reconciler.model.problem import Problem


@dataclass(frozen=True)
class Claims:
    """What already exists outside the request files and may clash with them."""

    # domain -> the request whose generated service file has it, or None for a hand-written file
    service_domains: Mapping[str, str | None] = field(default_factory=dict)
    # requests that already have a container: they keep their domain and address on a clash
    provisioned: frozenset[str] = frozenset()
    # addresses configured on guests the reconciler does not own -> vmid
    foreign_ips: Mapping[IPv4Address, int] = field(default_factory=dict)
    # names of guests the reconciler does not own -> vmid; and every guest's vmid -> its owner (None: not ours)
    foreign_names: Mapping[str, int] = field(default_factory=dict)
    vmids: Mapping[int, str | None] = field(default_factory=dict)
    # the approved VMID range: a request may name a VMID outside it only to adopt a guest (or keep one adopted)
    vmid_range: range | None = None


def _guest_problems(c: Claim, claims: Claims) -> list[Problem]:
    """A guest the reconciler does not own (or another request owns) is never taken by a request's VMID or
    name; only adopt: true may name a guest nobody owns."""
    problems = []
    vmid = c.vmid
    allowed = claims.vmid_range
    outside = vmid is not None and allowed is not None and vmid not in allowed
    if outside and allowed is not None and not c.adopt and claims.vmids.get(vmid or 0) != c.name:
        problems.append(Problem("vmid", f"{vmid} is outside the approved range {allowed.start}..{allowed.stop - 1}"))
    if vmid is not None and vmid in claims.vmids:
        owner = claims.vmids[vmid]
        if owner is None and not c.adopt:
            problems.append(
                Problem("vmid", f"{vmid} is taken by a guest the reconciler does not own; adopt: true takes it over")
            )
        elif owner is not None and owner != c.name:
            problems.append(Problem("vmid", f"{vmid} belongs to request {owner}"))
    taken = claims.foreign_names.get(c.hostname) if c.hostname is not None else None
    if taken is not None and c.name not in claims.provisioned and not (c.adopt and vmid == taken):
        problems.append(
            Problem("hostname", f"{c.hostname} is the name of guest {taken}, which the reconciler does not own")
        )
    return problems


def _losers(
    claimants: dict[str, list[Claim]], provisioned: frozenset[str], broken: set[str]
) -> dict[str, tuple[str, str]]:
    """Loser -> (key, winner) for each contested key."""
    losers: dict[str, tuple[str, str]] = {}
    for key, group in claimants.items():
        if len(group) < 2:
            continue
        # The one with a container keeps it; then a valid file before one with errors (which is never acted on,
        # so it holds nothing back); then the alphabetically first.
        ordered = sorted(group, key=lambda c: (c.name not in provisioned, c.name in broken, c.name))
        for loser in ordered[1:]:
            losers[loser.name] = (key, ordered[0].name)
    return losers


def resolve_clashes(
    valid: Iterable[Desired], claims: Claims, invalid: Iterable[tuple[Invalid, Claim]] = ()
) -> tuple[list[Desired], list[Invalid]]:
    """The requests that keep their domain and address, and the ones refused for a clash.

    invalid: requests refused already (field errors), with what their files still claim (desired.claims). They
    take part, so that a clash is said beside their other problems; each one that has a clash is returned among
    the refused with its own problems and the clash's. A valid request loses to one of them only when that one
    has a container and it has none.
    """
    valid = list(valid)
    invalid = list(invalid)
    broken = {c.name for _, c in invalid}
    extra: dict[str, list[Problem]] = {}
    by_domain: dict[str, list[Claim]] = {}
    by_ip: dict[str, list[Claim]] = {}
    by_vmid: dict[str, list[Claim]] = {}
    for c in [*(claim_of(d) for d in valid), *(c for _, c in invalid)]:
        found = _guest_problems(c, claims)
        if found:
            extra.setdefault(c.name, []).extend(found)
        if c.vmid is not None:
            by_vmid.setdefault(str(c.vmid), []).append(c)
        if c.domain:
            owner = claims.service_domains.get(c.domain, c.name)
            if owner is None:
                extra.setdefault(c.name, []).append(
                    Problem("service.domain", f"{c.domain} is already defined by a hand-written service file")
                )
            elif owner != c.name:
                extra.setdefault(c.name, []).append(
                    Problem("service.domain", f"{c.domain} already belongs to request {owner}")
                )
            else:
                by_domain.setdefault(c.domain, []).append(c)
        if c.address is not None:
            vmid = claims.foreign_ips.get(c.address)
            if vmid is not None and c.name not in claims.provisioned:
                extra.setdefault(c.name, []).append(
                    Problem("network.address", f"{c.address} is already used by guest {vmid}")
                )
            by_ip.setdefault(str(c.address), []).append(c)
    for loser, (domain, winner) in _losers(by_domain, claims.provisioned, broken).items():
        extra.setdefault(loser, []).append(Problem("service.domain", f"{domain} is also requested by {winner}"))
    for loser, (ip, winner) in _losers(by_ip, claims.provisioned, broken).items():
        extra.setdefault(loser, []).append(Problem("network.address", f"{ip} is also requested by {winner}"))
    for loser, (number, winner) in _losers(by_vmid, claims.provisioned, broken).items():
        extra.setdefault(loser, []).append(Problem("vmid", f"{number} is also requested by {winner}"))
    kept = [d for d in valid if d.name not in extra]
    refused = [Invalid(d.name, d.path, d.revision, tuple(sorted(set(extra[d.name])))) for d in valid if d.name in extra]
    refused += [
        replace(item, problems=(*item.problems, *sorted(set(extra[c.name])))) for item, c in invalid if c.name in extra
    ]
    return kept, refused
