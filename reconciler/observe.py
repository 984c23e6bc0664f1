"""Observed state: what Proxmox runs now, read in one call, with the reconciler's own guests picked out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Interface

from reconciler.gateways.proxmox import GuestInfo, Proxmox
from reconciler.marker import owner_of


@dataclass(frozen=True)
class Observed:
    """The cluster's guests at one moment."""

    guests: tuple[GuestInfo, ...]

    @cached_property
    def owned(self) -> dict[str, list[GuestInfo]]:
        """Request name -> the guests marked as created for it (more than one is an error to report)."""
        out: dict[str, list[GuestInfo]] = {}
        for guest in self.guests:
            name = owner_of(guest.tags)
            if name is not None:
                out.setdefault(name, []).append(guest)
        return out

    @cached_property
    def by_vmid(self) -> dict[int, GuestInfo]:
        return {g.vmid: g for g in self.guests}

    @cached_property
    def foreign(self) -> list[GuestInfo]:
        """Guests the reconciler does not own and must never touch."""
        return [g for g in self.guests if owner_of(g.tags) is None]


def observe(pve: Proxmox) -> Observed:
    """Every guest of the cluster, from one /cluster/resources call."""
    return Observed(tuple(pve.guests()))


_IP = re.compile(r"(?:^|,)ip=([0-9.]+/\d+)")


def foreign_addresses(pve: Proxmox, observed: Observed) -> dict[IPv4Address, int]:
    """Static IPv4 addresses configured on guests the reconciler does not own -> vmid.

    One call per foreign guest, so it is made only in cycles that create a container with a static address.
    """
    found: dict[IPv4Address, int] = {}
    for guest in observed.foreign:
        if guest.status == "unknown":  # its node is offline; its config cannot be read
            continue
        config = pve.guest_config(guest.node, guest.type, guest.vmid)
        prefix = "net" if guest.type == "lxc" else "ipconfig"
        for key, value in config.items():
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                for cidr in _IP.findall(str(value)):
                    found[IPv4Interface(cidr).ip] = guest.vmid
    return found
