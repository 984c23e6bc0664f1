"""What a request takes that another may want too (its VMID, name, domain, address), for the clash rule.

A valid request's claim comes from its resolved form. An invalid file still says what it wants: each field
that is valid on its own is read, so a clash is reported beside the file's other problems, all at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Annotated, Any

from pydantic import StrictBool, TypeAdapter, ValidationError

from reconciler.desired.request import DNS_LABEL, Domain
from reconciler.model.desired import Desired, Invalid, RequestFile
from reconciler.parse import Between, load_yaml

_VMID: TypeAdapter[int] = TypeAdapter(Annotated[int, Between(100, 999999999)])
_DOMAIN: TypeAdapter[str] = TypeAdapter(Domain)
_ADDRESS: TypeAdapter[IPv4Interface] = TypeAdapter(IPv4Interface)
_BOOL: TypeAdapter[bool] = TypeAdapter(StrictBool)


@dataclass(frozen=True)
class Claim:
    """One request's claims; None where it makes none (or its file does not say one that can be read)."""

    name: str
    hostname: str | None = None
    vmid: int | None = None
    adopt: bool = False
    domain: str | None = None
    address: IPv4Address | None = None


def claim_of(d: Desired) -> Claim:
    """A valid request's claims."""
    return Claim(d.name, d.container.hostname, d.life.vmid, d.life.adopt, d.domain, d.static_ip)


def invalid_claims(files: Iterable[RequestFile], invalid: Iterable[Invalid]) -> list[tuple[Invalid, Claim]]:
    """Each invalid request that was read (not one refused unread) with what its file still claims."""
    by_path = {f.path: f for f in files}
    return [(item, readable_claim(by_path[item.path])) for item in invalid if item.path in by_path]


def readable_claim(file: RequestFile) -> Claim:
    """What an invalid request file still claims: every field that is valid on its own (cached, as parsing is)."""
    return _readable(file.name, file.text)


@functools.lru_cache(maxsize=1024)
def _readable(name: str, text: bytes) -> Claim:
    try:
        doc = load_yaml(text)
    except ValueError:
        return Claim(name)
    if not isinstance(doc, dict):
        return Claim(name)
    network, service = doc.get("network"), doc.get("service")
    hostname = doc.get("hostname", name)
    address = network.get("address") if isinstance(network, dict) and network.get("mode") != "dhcp" else None
    found = _value(_ADDRESS, address)
    return Claim(
        name,
        hostname=hostname if isinstance(hostname, str) and _is_label(hostname) else None,
        vmid=_value(_VMID, doc.get("vmid")),
        adopt=_value(_BOOL, doc.get("adopt")) or False,
        domain=_value(_DOMAIN, service.get("domain")) if isinstance(service, dict) else None,
        address=found.ip if found is not None else None,
    )


def _value(adapter: TypeAdapter[Any], value: object) -> Any:
    if value is None:
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _is_label(value: str) -> bool:
    return re.fullmatch(DNS_LABEL, value) is not None
