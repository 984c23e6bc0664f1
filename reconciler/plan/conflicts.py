"""Clashes: two requests wanting one domain or address, or one that something else already has (pure).

One rule, used by every command: a request that already has its container keeps what it has; otherwise the
alphabetically first name wins; the other is refused and told who has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

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


def _guest_problems(d: Desired, claims: Claims) -> list[Problem]:
    """A guest the reconciler does not own (or another request owns) is never taken by a request's VMID or
    name; only adopt: true may name a guest nobody owns."""
    problems = []
    vmid = d.life.vmid
    allowed = claims.vmid_range
    outside = vmid is not None and allowed is not None and vmid not in allowed
    if outside and allowed is not None and not d.life.adopt and claims.vmids.get(vmid or 0) != d.name:
        problems.append(Problem("vmid", f"{vmid} is outside the approved range {allowed.start}..{allowed.stop - 1}"))
    if vmid is not None and vmid in claims.vmids:
        owner = claims.vmids[vmid]
        if owner is None and not d.life.adopt:
            problems.append(
                Problem("vmid", f"{vmid} is taken by a guest the reconciler does not own; adopt: true takes it over")
            )
        elif owner is not None and owner != d.name:
            problems.append(Problem("vmid", f"{vmid} belongs to request {owner}"))
    taken = claims.foreign_names.get(d.container.hostname)
    if taken is not None and d.name not in claims.provisioned and not (d.life.adopt and vmid == taken):
        problems.append(
            Problem(
                "hostname", f"{d.container.hostname} is the name of guest {taken}, which the reconciler does not own"
            )
        )
    return problems


def _losers(claimants: dict[str, list[Desired]], provisioned: frozenset[str]) -> dict[str, tuple[str, str]]:
    """Loser -> (key, winner) for each contested key."""
    losers: dict[str, tuple[str, str]] = {}
    for key, group in claimants.items():
        if len(group) < 2:
            continue
        ordered = sorted(group, key=lambda d: (d.name not in provisioned, d.name))
        for loser in ordered[1:]:
            losers[loser.name] = (key, ordered[0].name)
    return losers


def resolve_clashes(valid: Iterable[Desired], claims: Claims) -> tuple[list[Desired], list[Invalid]]:
    """The requests that keep their domain and address, and the ones refused for a clash."""
    valid = list(valid)
    extra: dict[str, list[Problem]] = {}
    by_domain: dict[str, list[Desired]] = {}
    by_ip: dict[str, list[Desired]] = {}
    by_vmid: dict[str, list[Desired]] = {}
    for d in valid:
        found = _guest_problems(d, claims)
        if found:
            extra.setdefault(d.name, []).extend(found)
        if d.life.vmid is not None:
            by_vmid.setdefault(str(d.life.vmid), []).append(d)
        if d.domain:
            owner = claims.service_domains.get(d.domain, d.name)
            if owner is None:
                extra.setdefault(d.name, []).append(
                    Problem("service.domain", f"{d.domain} is already defined by a hand-written service file")
                )
            elif owner != d.name:
                extra.setdefault(d.name, []).append(
                    Problem("service.domain", f"{d.domain} already belongs to request {owner}")
                )
            else:
                by_domain.setdefault(d.domain, []).append(d)
        if d.static_ip is not None:
            vmid = claims.foreign_ips.get(d.static_ip)
            if vmid is not None and d.name not in claims.provisioned:
                extra.setdefault(d.name, []).append(
                    Problem("network.address", f"{d.static_ip} is already used by guest {vmid}")
                )
            by_ip.setdefault(str(d.static_ip), []).append(d)
    for loser, (domain, winner) in _losers(by_domain, claims.provisioned).items():
        extra.setdefault(loser, []).append(Problem("service.domain", f"{domain} is also requested by {winner}"))
    for loser, (ip, winner) in _losers(by_ip, claims.provisioned).items():
        extra.setdefault(loser, []).append(Problem("network.address", f"{ip} is also requested by {winner}"))
    for loser, (number, winner) in _losers(by_vmid, claims.provisioned).items():
        extra.setdefault(loser, []).append(Problem("vmid", f"{number} is also requested by {winner}"))
    kept = [d for d in valid if d.name not in extra]
    refused = [Invalid(d.name, d.path, d.revision, tuple(sorted(set(extra[d.name])))) for d in valid if d.name in extra]
    return kept, refused
