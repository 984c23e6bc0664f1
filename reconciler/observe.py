"""Observed state: what Proxmox runs now (one call), what the inventory holds, and the reconciler's own work.

The work in flight is taken before Proxmox is asked, so a job that ends in between shows its guest: a
request is never seen as both idle and without its container.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface

from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.model.observed import Observed, Running
from reconciler.model.retry import Attempt
from reconciler.model.vocab import GuestStatus


def observe(
    pve: Proxmox,
    store: JobStore,
    in_flight: Mapping[str, Running] | None = None,
    attempts: Mapping[str, Attempt] | None = None,
    settling: frozenset[str] = frozenset(),
) -> Observed:
    """Every guest of the cluster from one /cluster/resources call, with the inventory and the jobs."""
    return Observed(
        guests=tuple(pve.guests()),
        held=store.inventory(),
        in_flight=dict(in_flight or {}),
        attempts=dict(attempts or {}),
        settling=settling,
        last_jobs=store.last_jobs(),
        setups=store.setups(),
    )


_IP = re.compile(r"(?:^|,)ip=([0-9.]+/\d+)")


def foreign_addresses(pve: Proxmox, observed: Observed) -> dict[IPv4Address, int]:
    """Static IPv4 addresses configured on guests the reconciler does not own -> vmid.

    One call per foreign guest, so it is made only in cycles that create a container with a static address.
    """
    found: dict[IPv4Address, int] = {}
    for guest in observed.foreign:
        if guest.status == GuestStatus.UNKNOWN:  # its node is offline; its config cannot be read
            continue
        config = pve.guest_config(guest.node, guest.type, guest.vmid)
        prefix = "net" if guest.type == "lxc" else "ipconfig"
        for key, value in config.items():
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                for cidr in _IP.findall(str(value)):
                    found[IPv4Interface(cidr).ip] = guest.vmid
    return found
