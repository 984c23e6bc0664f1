"""Observed state: what Proxmox runs now (one call), what the inventory holds, and the reconciler's own work.

The work in flight is taken before Proxmox is asked, so a job that ends in between shows its guest: a
request is never seen as both idle and without its container.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface

import structlog

from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.model.errors import ProxmoxError
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Guest, Observed, Running
from reconciler.model.retry import Attempt
from reconciler.model.vocab import GuestStatus

log = structlog.get_logger("reconciler.observe")
READERS = 8  # config reads at once: a first pass over thousands of guests takes seconds, not minutes
FLAP_WINDOW = 3600.0  # seconds of drift corrections counted (plan.container.FLAP_LIMIT of them: flapping)


@dataclass
class ConfigCache:
    """Guests' configs, each read again after `refresh` seconds, after a job on it, or when the guest list
    shows it changed (another node, size, tags); a pass reads only those."""

    refresh: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[int, tuple[GuestConfig, Guest, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configs(self, pve: Proxmox, guests: Collection[Guest], fresh: Collection[int]) -> dict[int, GuestConfig]:
        """The config of each guest; fresh: vmids to read again whatever their age."""
        now = self.clock()
        with self._lock:
            due = [
                g
                for g in guests
                if g.status != GuestStatus.UNKNOWN
                and g.lock != "create"  # a config being created says nothing yet
                and (
                    (cached := self._seen.get(g.vmid)) is None
                    or g.vmid in fresh
                    or now - cached[2] >= self.refresh
                    or _moved(cached[1], g)
                )
            ]
        if due:
            with ThreadPoolExecutor(min(READERS, len(due))) as pool:
                read = list(pool.map(lambda g: (g, _read(pve, g)), due))
            with self._lock:
                for guest, config in read:
                    if config is not None:
                        self._seen[guest.vmid] = (config, guest, now)
        with self._lock:
            wanted = {g.vmid for g in guests}
            for vmid in [v for v in self._seen if v not in wanted]:
                del self._seen[vmid]  # gone, or no longer ours: never compared again
            return {vmid: entry[0] for vmid, entry in self._seen.items()}


def _moved(before: Guest, now: Guest) -> bool:
    """Whether /cluster/resources shows a change a config read must catch at once."""
    return (before.node, before.tags, before.cores, before.memory_mb, before.disk_gb, before.name) != (
        now.node,
        now.tags,
        now.cores,
        now.memory_mb,
        now.disk_gb,
        now.name,
    )


def _read(pve: Proxmox, guest: Guest) -> GuestConfig | None:
    try:
        return pve.container_config(guest.node, guest.vmid)
    except ProxmoxError as exc:  # this guest's drift is not known this pass; the others still are
        log.warning("config unreadable", vmid=guest.vmid, node=guest.node, reason=exc.reason)
        return None


def observe(
    pve: Proxmox,
    store: JobStore,
    in_flight: Mapping[str, Running] | None = None,
    attempts: Mapping[str, Attempt] | None = None,
    settling: frozenset[str] = frozenset(),
    cache: ConfigCache | None = None,
    adopting: Collection[int] = (),
) -> Observed:
    """Every guest of the cluster from one /cluster/resources call, with the inventory, the jobs, and the
    configs of the guests the reconciler owns or is asked to adopt (from the cache where fresh enough)."""
    guests = tuple(pve.guests())
    base = Observed(
        guests=guests,
        held=store.inventory(),
        in_flight=dict(in_flight or {}),
        attempts=dict(attempts or {}),
        settling=settling,
        last_jobs=store.last_jobs(),
        setups=store.setups(),
        applied=store.applied(),
        corrections=store.corrections(time.time() - FLAP_WINDOW),
        intents=tuple(store.intents()),
        at=time.time(),
    )
    owned = [g for found in base.owned.values() for g in found if g.type == "lxc"]
    owned += [g for g in guests if g.vmid in adopting and g.type == "lxc" and g not in owned]
    fresh = {r.action.vmid for r in base.in_flight.values()}
    fresh.update(g.vmid for name in settling for g in base.owned.get(name, []))
    configs = (cache or ConfigCache(refresh=0)).configs(pve, owned, fresh)
    return replace(base, configs=configs)


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
