"""What a request owns of its container's config, compared with what Proxmox holds (pure).

Both sides go through the same normal form (model.props), so a fresh create compares equal. A difference is
an edit when Proxmox still holds the value the reconciler last wrote (the request changed), and drift when
it does not (someone changed the guest by hand).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from reconciler.model.desired import Desired
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Applied, Guest
from reconciler.model.owner import profile_of, tags_for
from reconciler.model.props import flag, normal_tags, size_gb, split_props
from reconciler.model.standing import Drift, Refusal
from reconciler.model.vocab import GuestState

# Changed in place with PUT .../config; disk grows with PUT .../resize.
CONFIG_FIELDS = (
    "hostname",
    "cores",
    "memory",
    "swap",
    "description",
    "tags",
    "onboot",
    "protection",
    "net0",
    "features.nesting",
)
NET_KEYS = ("name", "bridge", "ip", "gw", "tag")  # what a request says of its network device; the rest is left
# A VM's: its addresses are cloud-init's (ipconfig0), its net0 keeps the model and MAC the clone got.
VM_FIELDS = (
    "name",
    "cores",
    "memory",
    "description",
    "tags",
    "onboot",
    "protection",
    "net0",
    "agent",
    "ipconfig0",
    "ciuser",
    "sshkeys",
    "nameserver",
    "searchdomain",
)
VM_NET_KEYS = ("bridge", "tag")
_DISK_KEY = re.compile(r"^(?:scsi|virtio|sata|ide)\d+$")


def _net_normal(props: Mapping[str, str]) -> str:
    return ",".join(f"{k}={props[k]}" for k in NET_KEYS if k in props)


def fields_of(d: Desired) -> tuple[str, ...]:
    """The config fields the request owns, for its kind of guest."""
    return VM_FIELDS if d.vm is not None else CONFIG_FIELDS


def ipconfig0(d: Desired) -> str:
    """A VM's cloud-init network settings as Proxmox writes them: `ip=dhcp`, or `ip=CIDR[,gw=GW]`."""
    net = d.container.network
    if net.address is None:
        return "ip=dhcp"
    return f"ip={net.address}" + (f",gw={net.gateway}" if net.gateway is not None else "")


def _shared_wanted(d: Desired) -> dict[str, str]:
    """The owned fields a container and a VM share, as the request wants them."""
    c = d.container
    return {
        "cores": str(c.cores),
        "memory": str(c.memory),
        "description": c.description.rstrip(),
        "tags": normal_tags([*tags_for(d.name, d.monitoring), *c.tags]),
        "onboot": "1" if c.start and d.life.state == GuestState.PRESENT else "0",
        "protection": "1" if c.protected else "0",
    }


def _shared_seen(v: Mapping[str, str]) -> dict[str, str]:
    """The owned fields a container and a VM share, as Proxmox holds them (cores' default differs: the caller's)."""
    return {
        "memory": v.get("memory", "512"),
        "description": (v.get("description") or "").rstrip(),
        "tags": normal_tags(v.get("tags", "").replace(",", ";").replace(" ", ";").split(";")),
        "onboot": flag(v.get("onboot")),
        "protection": flag(v.get("protection")),
    }


def _vm_wanted(d: Desired) -> dict[str, str]:
    c, vm = d.container, d.vm
    assert vm is not None
    ci = vm.cloud_init
    net = {"bridge": c.network.bridge} | ({"tag": str(c.network.vlan)} if c.network.vlan is not None else {})
    return {
        "name": c.hostname,
        **_shared_wanted(d),
        "net0": ",".join(f"{k}={net[k]}" for k in VM_NET_KEYS if k in net),
        "agent": "1" if vm.agent else "0",
        "ipconfig0": ipconfig0(d),
        "ciuser": ci.user,
        "sshkeys": "\n".join(ci.ssh_keys),
        "nameserver": ci.nameserver or "",
        "searchdomain": ci.search_domain or "",
    }


def _vm_seen(config: GuestConfig) -> dict[str, str]:
    v = config.values
    net = split_props(v.get("net0"))
    agent = split_props(v.get("agent"))
    ip = split_props(v.get("ipconfig0"))
    return {
        "name": v.get("name", ""),
        **_shared_seen(v),
        "cores": v.get("cores", "1"),
        "net0": ",".join(f"{k}={net[k]}" for k in VM_NET_KEYS if k in net),
        "agent": flag(agent.get("enabled", agent.get(""))),
        "ipconfig0": ",".join(f"{k}={ip[k]}" for k in ("ip", "gw") if k in ip),
        "ciuser": v.get("ciuser", ""),
        # Proxmox keeps the keys URL-encoded, as they were sent.
        "sshkeys": "\n".join(line.strip() for line in unquote(v.get("sshkeys", "")).splitlines() if line.strip()),
        "nameserver": v.get("nameserver", ""),
        "searchdomain": v.get("searchdomain", ""),
    }


def boot_disk(config: GuestConfig) -> str | None:
    """A VM's boot disk (the first disk of its boot order, else its first disk): the one a request sizes."""
    v = config.values
    order = [k for k in split_props(v.get("boot")).get("order", "").split(";") if k]
    for key in [*order, *sorted(v)]:
        value = v.get(key, "")
        if _DISK_KEY.match(key) and value and "media=cdrom" not in value and "cloudinit" not in value:
            return key
    return None


def wanted(d: Desired) -> dict[str, str]:
    """The owned config fields as the request wants them, in normal form."""
    if d.vm is not None:
        return _vm_wanted(d)
    c = d.container
    return {
        "hostname": c.hostname,
        **_shared_wanted(d),
        "swap": str(c.swap),
        "net0": _net_normal(c.network.owned_props()),
        "features.nesting": "1" if c.nesting else "0",
    }


def seen(config: GuestConfig, vm: bool = False) -> dict[str, str]:
    """The owned config fields as Proxmox holds them, in normal form (its defaults where a key is absent)."""
    if vm:
        return _vm_seen(config)
    v = config.values
    net = split_props(v.get("net0"))
    return {
        "hostname": v.get("hostname", ""),
        **_shared_seen(v),
        "cores": v.get("cores", ""),
        "swap": v.get("swap", "512"),
        "net0": _net_normal(net),
        "features.nesting": flag(split_props(v.get("features")).get("nesting")),
    }


def disk_key(config: GuestConfig, vm: bool = False) -> str | None:
    """The disk a request's `resources.disk` sizes: a container's rootfs, a VM's boot disk."""
    return boot_disk(config) if vm else "rootfs"


def disk_gb(config: GuestConfig, vm: bool = False) -> int | None:
    key = disk_key(config, vm)
    return size_gb(split_props(config.values.get(key)).get("size")) if key else None


def storage_of(config: GuestConfig, vm: bool = False) -> str | None:
    key = disk_key(config, vm)
    volume = split_props(config.values.get(key) if key else None).get("", "")
    return volume.split(":", 1)[0] if ":" in volume else None


GROWN = "disk.grown"  # the applied record's note of the size a VM's disk was last grown to (GB)


@dataclass(frozen=True)
class Comparison:
    """Every way a request's container differs from it, sorted into what happens to each."""

    edits: tuple[Drift, ...] = ()  # changed in Git: applied
    drift: tuple[Drift, ...] = ()  # changed by hand: reported, and corrected unless drift: report
    grow_to: int | None = None  # a larger disk the request asks (GB)
    move_to: str | None = None  # another node, with migrate: true
    refused: tuple[Refusal, ...] = ()  # what cannot change in place, or needs a flag the request lacks

    @property
    def everything(self) -> tuple[Drift, ...]:
        """Each difference as (field, desired, observed): what adoption reports."""
        out = list(self.edits) + list(self.drift)
        out += [Drift(r.field, r.asked, r.kept) for r in self.refused]
        if self.grow_to is not None:
            out.append(Drift("disk", f"{self.grow_to}G", "smaller"))
        return tuple(sorted(out))


def compare(d: Desired, guest: Guest, config: GuestConfig, applied: Applied | None) -> Comparison:
    """How the container differs from the request; applied tells an edit from drift."""
    c, vm = d.container, d.vm is not None
    want, have = wanted(d), seen(config, vm)
    last = applied.fields if applied is not None and applied.vmid == guest.vmid else {}
    edits: list[Drift] = []
    drift: list[Drift] = []
    for name in fields_of(d):
        if want[name] == have[name]:
            continue
        item = Drift(name, want[name], have[name])
        # An edit: Proxmox still holds what was last written, or the request now asks something else than
        # what was last written (then it is applied even over a hand change, whatever `drift` says).
        asked_anew = name in last and last[name] != want[name]
        (edits if last.get(name) == have[name] or asked_anew else drift).append(item)
    refused: list[Refusal] = []
    grow_to = None
    size = disk_gb(config, vm)
    grown = last.get(GROWN, "")
    if size is not None and vm and grown.isdigit():
        # The size a VM's disk was grown to is trusted over a reported size that has not followed yet.
        size = max(size, int(grown))
    if size is not None and c.disk > size:
        grow_to = c.disk
    elif size is not None and c.disk < size:
        refused.append(Refusal("resources.disk", f"{c.disk} GB", f"{size} GB (a disk cannot shrink)"))
    storage = storage_of(config, vm)
    linked = d.vm is not None and not d.vm.full_clone  # a linked clone lives on its template's storage
    if storage is not None and storage != c.storage and not linked:
        refused.append(Refusal("storage", c.storage, f"{storage} (a {d.kind.word} cannot change storage in place)"))
    made_with = profile_of(config.values.get("description"))
    if made_with is not None and made_with != d.profile:
        refused.append(
            Refusal("profile", d.profile, f"{made_with} (another profile means another template: make a new request)")
        )
    if d.life.vmid is not None and d.life.vmid != guest.vmid:
        refused.append(Refusal("vmid", str(d.life.vmid), f"{guest.vmid} (a guest's VMID cannot change)"))
    move_to = None
    if guest.node and guest.node != c.node:
        if vm:
            refused.append(Refusal("node", c.node, f"{guest.node} (a VM is not moved between nodes)"))
        elif d.life.migrate:
            move_to = c.node
        else:
            refused.append(Refusal("node", c.node, f"{guest.node} (set migrate: true to move it)"))
    return Comparison(tuple(edits), tuple(drift), grow_to, move_to, tuple(refused))
