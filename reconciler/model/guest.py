"""A guest's config as Proxmox returns it (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GuestConfig:
    """A guest's config as GET /nodes/{node}/{lxc|qemu}/{vmid}/config returns it (a VM's with its pending
    changes applied): every value as text, and the digest an update sends back so that a guest changed
    meanwhile is refused."""

    vmid: int
    node: str
    values: Mapping[str, str]
    digest: str
    pending: tuple[str, ...] = ()  # a VM's keys changed but not yet in effect: they wait for its next boot

    def get(self, key: str) -> str | None:
        return self.values.get(key)
