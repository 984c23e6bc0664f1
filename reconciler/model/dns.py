"""DNS records a request owns, the ownership registry beside them, and what a zone transfer showed (pure).

Ownership follows ExternalDNS's TXT registry with a heritage of our own, so neither adopts the other's records:
beside each record name N the reconciler keeps a TXT at `_reconciler.N` that names it, its owner id (one
reconciler per zone may share a server with another) and the request. A CNAME can have no other data at its own
name, so the TXT lives one label below it rather than at N itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.model.vocab import RecordOp, RecordType

REGISTRY_LABEL = "_reconciler"
HERITAGE = "heritage=reconciler"


def absolute(name: str) -> str:
    """A DNS name in the one form records are compared in: lower case, with the root's trailing dot."""
    return name.lower().rstrip(".") + "."


def registry_name(name: str) -> str:
    """Where the ownership TXT of record name `name` lives."""
    return f"{REGISTRY_LABEL}.{absolute(name)}"


def heritage(owner: str, request: str) -> str:
    """The ownership TXT's text for a request's record."""
    return f"{HERITAGE},reconciler/owner={owner},reconciler/request={request}"


@dataclass(frozen=True, order=True)
class Owner:
    """Who a TXT says owns a record: the reconciler's owner id and the request."""

    owner: str
    request: str


def parse_heritage(text: str) -> Owner | None:
    """The owner a registry TXT names, or None for any other text (ExternalDNS's heritage included)."""
    parts = text.split(",")
    if not parts or parts[0] != HERITAGE:
        return None
    fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    owner, request = fields.get("reconciler/owner"), fields.get("reconciler/request")
    if not owner or not request:
        return None
    return Owner(owner, request)


@dataclass(frozen=True, order=True)
class Record:
    """One record the reconciler writes: an A to an address, or a CNAME to another name; names are absolute."""

    name: str
    type: RecordType
    value: str  # an IPv4 address, or an absolute name for a CNAME
    zone: str  # the zone the name lies in, absolute
    ttl: int = 300

    def __str__(self) -> str:
        return f"{self.name.rstrip('.')} {self.type} {self.value.rstrip('.')}"

    def same_data(self, other: Record) -> bool:
        """Whether two records say the same (the TTL aside)."""
        return (self.name, self.type, self.value) == (other.name, other.type, other.value)

    def held(self) -> str:
        """The inventory's form of the record's data (its key is the name)."""
        return f"{self.zone} {self.type} {self.value} {self.ttl}"

    @classmethod
    def from_held(cls, name: str, text: str) -> Record | None:
        """A record from the inventory (see held()), or None when the row is not one."""
        parts = text.split(" ")
        if len(parts) != 4 or parts[1] not in RecordType.__members__.values() or not parts[3].isdigit():
            return None
        return cls(name, RecordType(parts[1]), parts[2], parts[0], int(parts[3]))


@dataclass(frozen=True, order=True)
class RecordChange:
    """One atomic, signed update of one record name: the record to create or change to, or the one to delete."""

    op: RecordOp
    record: Record

    def __str__(self) -> str:
        return f"{self.op} {self.record}"


@dataclass(frozen=True)
class ZoneView:
    """One zone as a transfer showed it: name -> its (type, data) pairs, every type (others' records too).

    Data is in presentation form: an address, an absolute lower-case name, a TXT's text without its quotes.
    """

    zone: str
    names: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def at(self, name: str) -> tuple[tuple[str, str], ...]:
        return self.names.get(absolute(name), ())

    def owner(self, name: str) -> Owner | None:
        """Who the registry TXT beside `name` says owns it (the first heritage found), if any."""
        for rtype, data in self.at(registry_name(name)):
            if rtype == "TXT" and (found := parse_heritage(data)) is not None:
                return found
        return None

    def record(self, name: str, zone: str, ttl: int) -> Record | None:
        """The A or CNAME at `name` in the form the reconciler writes (the first A of several), if any."""
        for rtype, data in self.at(name):
            if rtype in (RecordType.A, RecordType.CNAME):
                return Record(absolute(name), RecordType(rtype), data, zone, ttl)
        return None

    def owned(self, owner: str) -> dict[str, Owner]:
        """Record name -> owner, for every registry TXT of this owner id in the zone."""
        prefix = f"{REGISTRY_LABEL}."
        out = {}
        for name in self.names:
            if name.startswith(prefix):
                found = self.owner(name[len(prefix) :])
                if found is not None and found.owner == owner:
                    out[name[len(prefix) :]] = found
        return out


def in_zone(name: str, zone: str) -> bool:
    """Whether `name` lies in `zone` (at or below its apex)."""
    name, zone = absolute(name), absolute(zone)
    return name == zone or name.endswith("." + zone)


def zone_of(name: str, zones: tuple[str, ...]) -> str | None:
    """The most specific of the zones that `name` lies in, if any."""
    found = [z for z in zones if in_zone(name, z)]
    return max(found, key=len) if found else None
