"""Prometheus scrape targets, one file_sd JSON file per monitored request (`prometheus/targets/<name>.json`).

[
  {
    "labels": {
      "exporter": "node",
      "managed_by": "reconciler",
      "pve_id": "lxc/201",
      ...
      "request": "blog",
      "team": "web"
    },
    "targets": [
      "192.168.50.201:9100"
    ]
  }
]

JSON has no comments, so the mark of a generated file is a label: every group carries managed_by="reconciler"
(and the request it was written for), which also lets a query select the reconciler's targets. The pve_*
labels hold the values prometheus-pve-exporter's pve_guest_info gives the same guest, so the two join on them.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from reconciler.desired.request import label_problem

MANAGED_BY = "reconciler"
# A target file is a few KiB; reading past this to decide whether a file is the reconciler's is never needed.
_MAX_READ = 1024 * 1024


@dataclass(frozen=True)
class Target:
    """What one request's target file says: where its exporters listen and which guest they run in."""

    request: str
    address: str  # IPv4, as the guest's interface holds it
    exporters: tuple[tuple[str, int], ...]  # (name, port), node exporter first
    vmid: int
    node: str
    name: str  # the guest's hostname, Proxmox's "name"
    type: str = "lxc"
    tags: tuple[str, ...] = ()  # in the order Proxmox lists them
    # Left out of the hash (a mapping has none) but not of equality, so a Target is a cache key all the same.
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # A read-only copy: a cached render must not change when the caller's dict does.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


@functools.lru_cache(maxsize=8192)
def render(target: Target) -> str:
    """The target file's text: one group per exporter; the same target always gives the same bytes.

    A label the request may not set is left out rather than written: a `__` label would change how Prometheus
    scrapes (__scheme__, __metrics_path__, __param_*), and validation has refused the request already.
    """
    if not target.exporters:
        raise ValueError(f"request {target.request}: no exporter to write a target for")
    address = ipaddress.IPv4Address(target.address)  # raises ValueError: a target is host:port, nothing else
    for exporter, port in target.exporters:
        if not 0 < port < 65536:
            raise ValueError(f"request {target.request}: exporter {exporter} has no valid port ({port})")
    own = {k: v for k, v in target.labels.items() if label_problem(k) is None}
    groups = []
    for exporter, port in target.exporters:
        labels = {
            **own,
            "pve_id": f"{target.type}/{target.vmid}",
            "pve_node": target.node,
            "pve_vmid": str(target.vmid),
            "pve_type": target.type,
            "pve_name": target.name,
            # pve_guest_info's tags label is Proxmox's own string: the tags joined with ';'.
            "pve_tags": ";".join(target.tags),
            "managed_by": MANAGED_BY,
            "exporter": exporter,
            "request": target.request,
        }
        groups.append({"targets": [f"{address}:{port}"], "labels": labels})
    # ASCII only (others as \u escapes): no value can make the file something else than UTF-8 JSON.
    return json.dumps(groups, indent=2, sort_keys=True) + "\n"


def _groups(text: bytes) -> list[dict[str, object]] | None:
    """The groups of a file_sd file, or None when it is not one."""
    if len(text) > _MAX_READ:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        return None
    if not isinstance(doc, list) or not doc or not all(isinstance(g, dict) for g in doc):
        return None
    return doc


def _labels(group: dict[str, object]) -> dict[str, object]:
    labels = group.get("labels")
    return labels if isinstance(labels, dict) else {}


def is_generated(text: bytes) -> bool:
    """Whether the reconciler wrote this file: a file_sd list whose every group has managed_by="reconciler"."""
    groups = _groups(text)
    return groups is not None and all(_labels(g).get("managed_by") == MANAGED_BY for g in groups)


def owner(text: bytes) -> str | None:
    """The request a target file was generated for, or None for a file the reconciler did not write."""
    groups = _groups(text)
    if groups is None or any(_labels(g).get("managed_by") != MANAGED_BY for g in groups):
        return None
    requests = {_labels(g).get("request") for g in groups}
    request = requests.pop()
    return request if not requests and isinstance(request, str) else None
