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

from reconciler.gateways.dns import DnsError, DnsServer
from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.model.dns import ZoneView
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


@dataclass
class AddressCache:
    """The eth0 address of each running DHCP container, read again after `refresh` seconds, after a job on it,
    or when it was seen stopped since: a lease that moved is noticed, and DNS, Caddy and targets follow."""

    refresh: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[int, tuple[str | None, GuestStatus, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def addresses(self, pve: Proxmox, guests: Collection[Guest], fresh: Collection[int]) -> dict[int, str]:
        """vmid -> address for these (running DHCP) guests; fresh: vmids to read again whatever their age."""
        now = self.clock()
        with self._lock:
            due = [
                g
                for g in guests
                if (cached := self._seen.get(g.vmid)) is None
                or g.vmid in fresh
                or cached[1] != g.status
                or now - cached[2] >= self.refresh
            ]
        if due:
            with ThreadPoolExecutor(min(READERS, len(due))) as pool:
                read = list(pool.map(lambda g: (g, _address(pve, g)), due))
            with self._lock:
                for guest, (ok, address) in read:
                    if ok:
                        self._seen[guest.vmid] = (address, guest.status, now)
        with self._lock:
            wanted = {g.vmid: g for g in guests}
            for vmid in [v for v in self._seen if v not in wanted]:
                del self._seen[vmid]
            return {vmid: entry[0] for vmid, entry in self._seen.items() if entry[0] is not None}


@dataclass
class ZoneCache:
    """Signed zone transfers of the approved zones: each again after `refresh` seconds, or once a DNS job has
    written to the server since (`written()`), so a view is never older than what the reconciler itself did. A
    zone whose transfer failed is left out (plan falls back to the inventory) and tried again at its next
    refresh; the failure is said once until it changes."""

    refresh: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[ZoneView | None, float, int]] = field(default_factory=dict)
    _said: dict[str, str] = field(default_factory=dict)
    _writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def written(self) -> None:
        """A DNS job sent updates: every view is read again at the next pass (called from job threads)."""
        with self._lock:
            self._writes += 1

    def views(self, server: DnsServer, zones: Collection[str]) -> dict[str, ZoneView]:
        """zone -> its view, for the zones whose transfer succeeded."""
        now = self.clock()
        with self._lock:
            writes = self._writes
        for zone in zones:
            cached = self._seen.get(zone)
            if cached is not None and cached[2] == writes and now - cached[1] < self.refresh:
                continue
            try:
                view: ZoneView | None = server.transfer(zone)
                self._said.pop(zone, None)
            except DnsError as exc:
                view = None
                if self._said.get(zone) != exc.reason:
                    log.warning("zone transfer failed", zone=zone, reason=exc.reason)
                    self._said[zone] = exc.reason
            self._seen[zone] = (view, now, writes)
        return {zone: entry[0] for zone, entry in self._seen.items() if zone in zones and entry[0] is not None}


def _address(pve: Proxmox, guest: Guest) -> tuple[bool, str | None]:
    """Whether the interfaces could be read, and eth0's first IPv4 address."""
    try:
        interfaces = pve.interfaces(guest.node, guest.vmid)
    except ProxmoxError as exc:  # the address known before stands this pass
        log.warning("interfaces unreadable", vmid=guest.vmid, node=guest.node, reason=exc.reason)
        return False, None
    return True, next((i.ipv4[0] for i in interfaces if i.name == "eth0" and i.ipv4), None)


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
        return pve.container_config(guest.node, guest.vmid, guest.type)
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
    addresses: AddressCache | None = None,
) -> Observed:
    """Every guest of the cluster from one /cluster/resources call, with the inventory, the jobs, the configs
    of the guests the reconciler owns or is asked to adopt, and the addresses of its running DHCP containers
    (each from its cache where fresh enough)."""
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
    owned = [g for found in base.owned.values() for g in found]
    owned += [g for g in guests if g.vmid in adopting and g not in owned]
    fresh = {r.action.vmid for r in base.in_flight.values()}
    fresh.update(g.vmid for name in settling for g in base.owned.get(name, []))
    configs = (cache or ConfigCache(refresh=0)).configs(pve, owned, fresh)
    dhcp = [  # a VM's address comes from its guest agent, in a job: an agent may take seconds to answer
        g
        for g in owned
        if g.type == "lxc"
        and g.status == GuestStatus.RUNNING
        and (c := configs.get(g.vmid)) is not None
        and _DHCP.search(c.get("net0") or "")
    ]
    found = (addresses or AddressCache(refresh=0)).addresses(pve, dhcp, fresh)
    return replace(base, configs=configs, addresses=found)


_DHCP = re.compile(r"(?:^|,)ip=dhcp(?:,|$)")


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
