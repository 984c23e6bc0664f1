"""The plan rule for a request's DNS records (pure): which to create, change or delete, and where they stand.

A request's records follow its container: they appear once it is Ready with a known address, follow that
address, and go with `state: absent`, `dns: false`, a dropped domain, or the request file itself (as its Caddy
route does). Until its container is Ready again, a request keeps the records it has. What the reconciler has
of a zone it knows from a signed zone transfer where the server allows one, else from its inventory of what it
wrote; a name someone else holds is never written, and the status says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from reconciler.config import DnsConfig
from reconciler.model.action import ChangeRecords, failed_records
from reconciler.model.desired import Desired
from reconciler.model.dns import Record, RecordChange, ZoneView, absolute, registry_name, zone_of
from reconciler.model.observed import Observed
from reconciler.model.standing import DnsPart, Standing
from reconciler.model.vocab import DnsState, GuestState, Phase, RecordOp, RecordType, ResourceKind


@dataclass(frozen=True)
class Seen:
    """The records the reconciler has, by request, and what else is known to stand in the zones."""

    have: Mapping[str, Mapping[str, Record]]  # request -> record name -> its record
    views: Mapping[str, ZoneView]  # zone -> what its last transfer showed (zones not transferred are absent)
    holders: Mapping[str, str] = field(default_factory=dict)  # record name -> the request that has it

    def holder(self, name: str) -> str | None:
        """The request that has record name `name`, if one does."""
        return self.holders.get(name)

    def foreign(self, name: str) -> str | None:
        """What a transfer showed at `name` that is not the reconciler's (None: nothing, or not known)."""
        view = next((v for zone, v in self.views.items() if zone_of(name, (zone,))), None)
        if view is None:
            return None
        found = [f"{rtype} {data}" for rtype, data in view.at(name)]
        found += [f"TXT {data} at {registry_name(name).rstrip('.')}" for rtype, data in view.at(registry_name(name))]
        return ", ".join(found) or None


def seen(observed: Observed, dns: DnsConfig) -> Seen:
    """What the reconciler has in DNS: from the zone transfers where there are some, else from its inventory."""
    views = {zone: view for zone, view in observed.zones.items() if zone in dns.zones}
    have: dict[str, dict[str, Record]] = {}
    ttls: dict[str, int] = {}
    for request, held in observed.held.items():
        for h in held:
            record = Record.from_held(h.key, h.address or "") if h.kind == ResourceKind.DNS else None
            if record is None:
                continue
            ttls[record.name] = record.ttl
            if record.zone not in views:  # a transferred zone says itself what is there
                have.setdefault(request, {})[record.name] = record
    for zone, view in views.items():
        for name, owner in view.owned(dns.owner_id).items():
            record = view.record(name, zone, ttls.get(absolute(name), dns.ttl))
            if record is not None:
                have.setdefault(owner.request, {})[record.name] = record
    holders = {name: request for request, records in sorted(have.items(), reverse=True) for name in records}
    return Seen(have, views, holders)


def wanted(d: Desired, address: str, dns: DnsConfig) -> tuple[dict[str, Record], str]:
    """The records of a request whose container is Ready at `address`, and a note on a domain given none."""
    zones = dns.zones
    host = absolute(f"{d.container.hostname}.{zones[0]}")
    out = {host: Record(host, RecordType.A, address, zones[0], dns.ttl)}
    note = ""
    if d.domain:
        domain = absolute(d.domain)
        zone = zone_of(domain, zones)
        if zone is None:
            note = f"{d.domain} lies outside the DNS zones ({', '.join(z.rstrip('.') for z in zones)}): no record"
        elif domain == zone:
            note = f"{d.domain} is the apex of its zone, which holds the zone's own records: no record"
        elif domain != host:
            if dns.domain_records == "cname":
                out[domain] = Record(domain, RecordType.CNAME, host, zone, dns.ttl)
            else:
                out[domain] = Record(domain, RecordType.A, address, zone, dns.ttl)
    return out, note


Wanted = tuple[dict[str, Record], str]  # record name -> record, and a note on a domain given none


def ready_records(d: Desired, standing: Standing, dns: DnsConfig) -> Wanted | None:
    """The records the request should have now: None until its container is Ready at a known address, and when
    it has none to have (dns: false, state: absent)."""
    if not d.dns or d.life.state == GuestState.ABSENT or standing.phase != Phase.READY or not standing.address:
        return None
    return wanted(d, standing.address, dns)


def with_kept_records(base: Standing, have: Mapping[str, Record]) -> Standing:
    """base with the records the request has, as they are (while its container has work to do)."""
    if not have:
        return base
    return replace(base, dns=DnsPart(DnsState.READY, tuple(str(r) for r in sorted(have.values()))))


def records_rule(
    d: Desired, base: Standing, known: Seen, ready: Wanted | None, claimed: dict[str, str]
) -> tuple[ChangeRecords | None, Standing]:
    """The update that gives the request the records it should have now, if any, and where it stands.

    base: its container's standing (nothing left to do there); ready: ready_records() of it. claimed: record
    name -> the request that takes it in this plan; filled in as requests are looked at in order, so two never
    race for one name.
    """
    have = dict(known.have.get(d.name, {}))
    note = ""
    if not d.dns or d.life.state == GuestState.ABSENT:
        want: dict[str, Record] = {}
    elif ready is not None:
        want, note = ready
    else:
        want = have  # not Ready (yet, or again): what it has stays until it is
    changes: list[RecordChange] = []
    refused: list[str] = []
    for name, record in sorted(want.items()):
        current = have.get(name)
        if current is not None:
            if not (current.same_data(record) and current.ttl == record.ttl):
                changes.append(RecordChange(RecordOp.CHANGE, record))
            claimed[name] = d.name
            continue
        holder = claimed.get(name) or known.holder(name)
        if holder is not None and holder != d.name:
            refused.append(f"{name.rstrip('.')} belongs to request {holder}; left as it is")
            continue
        foreign = known.foreign(name)
        if foreign is not None:
            refused.append(f"{name.rstrip('.')} holds records the reconciler does not own ({foreign}); left as it is")
            continue
        claimed[name] = d.name
        changes.append(RecordChange(RecordOp.CREATE, record))
    changes += [RecordChange(RecordOp.DELETE, r) for name, r in sorted(have.items()) if name not in want]
    records = tuple(r for name, r in sorted(want.items()) if claimed.get(name) == d.name)
    shown = tuple(str(r) for r in records)
    if refused:
        standing = failed_records(base, base.job, shown, "; ".join(refused))
    elif not want and not have:
        standing = base
    else:
        standing = replace(base, dns=DnsPart(DnsState.READY, shown, note))
    action = ChangeRecords(standing, tuple(changes), records, d.profile) if changes else None
    return action, standing


def orphan_records(known: Seen, keep: Iterable[str], bases: Mapping[str, Standing]) -> list[ChangeRecords]:
    """Deletions of the records of requests that are gone (their file removed): they go as their Caddy route does.

    keep: requests whose records stay (every request file, valid or not, and removals the guard holds back).
    bases: the standings there are for the gone requests (an orphaned container's).
    """
    kept_names = set(keep)
    out = []
    for request, records in sorted(known.have.items()):
        if request in kept_names or not records:
            continue
        base = bases.get(request) or Standing(request, f"{request} (removed)", Phase.DELETED, "request file removed")
        changes = tuple(RecordChange(RecordOp.DELETE, r) for _, r in sorted(records.items()))
        out.append(ChangeRecords(base, changes))
    return out
