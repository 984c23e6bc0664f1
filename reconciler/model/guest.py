"""A guest's config as Proxmox returns it (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GuestConfig:
    """A container's config as GET /nodes/{node}/lxc/{vmid}/config returns it: every value as text, and the
    digest an update sends back so that a guest changed meanwhile is refused."""

    vmid: int
    node: str
    values: Mapping[str, str]
    digest: str

    def get(self, key: str) -> str | None:
        return self.values.get(key)
