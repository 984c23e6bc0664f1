"""Proxmox's value formats, read and written the way Proxmox normalises them (pure).

A fresh create must compare equal to what it asked for, so every comparison goes through these: tags
lower-cased, de-duplicated and sorted; property strings such as `net0` and `features` key by key; sizes in GB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
_UNITS = {"": 1 / 1024**3, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}


def split_props(text: str | None) -> dict[str, str]:
    """`a=1,b=2` -> {a: 1, b: 2}; a bare first item (a volume) is kept under the key ''."""
    out: dict[str, str] = {}
    for item in str(text or "").split(","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if eq:
            out[key.strip()] = value.strip()
        else:
            out[""] = key.strip()
    return out


def join_props(props: Mapping[str, str], first: str | None = None) -> str:
    """The inverse of split_props, keys sorted (first, when given, leads as Proxmox writes `name=`)."""
    keys = sorted(k for k in props if k and k != first)
    lead = [props[""]] if "" in props else []
    if first is not None and first in props:
        lead.append(f"{first}={props[first]}")
    return ",".join([*lead, *(f"{k}={props[k]}" for k in keys)])


def split_tags(text: str | None) -> tuple[str, ...]:
    """Tags as Proxmox separates them (`;`, `,` or spaces), in their order."""
    return tuple(t for t in re.split(r"[;, ]+", str(text or "")) if t)


def normal_tags(tags: Iterable[str]) -> str:
    """Tags as Proxmox stores them: lower-cased, de-duplicated, sorted, `;`-joined."""
    return ";".join(sorted({t.lower() for t in tags if t}))


def flag(value: object) -> str:
    """A Proxmox boolean as `1` or `0` (absent is 0)."""
    return "1" if str(value or "0").strip().lower() in ("1", "yes", "on", "true") else "0"


def size_gb(size: str | None) -> int | None:
    """A volume size such as `8G` or `512M` in whole GB (rounded down), or None when there is none."""
    found = _SIZE.match(str(size or "").strip())
    if not found:
        return None
    return int(float(found.group(1)) * _UNITS[found.group(2)])


NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3")  # a VM's net0 names its model, with its MAC


def nic_model(props: Mapping[str, str]) -> str | None:
    """The NIC model key of a VM's split net0 (`virtio=BC:24:...` -> virtio), or None."""
    return next((k for k in NIC_MODELS if k in props), None)


def nic_mac(net0: str | None) -> str | None:
    """The MAC of a VM's net0, lower-cased as the guest agent reports MACs; None when it has none."""
    props = split_props(net0)
    model = nic_model(props)
    return props[model].lower() if model and props[model] else None
