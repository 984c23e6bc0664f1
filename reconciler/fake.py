"""A fake Proxmox VE for the demo and the tests: fakepve (AGPL, the `demo` extra) plus a DHCP server.

fakepve never reports an IPv4 address for `ip=dhcp`; this fake hands out leases from a pool the way a
DHCP server on the bridge would, so the reconciler's address lookup runs against the real API shape.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    from fakepve import FakePve
    from fakepve.certs import make_cert
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the fake Proxmox needs the demo extra: pip install 'reconciler[demo]'") from exc

TEMPLATE_STORAGE = "local"
TEMPLATE_FILE = "debian-12-standard_12.7-1_amd64.tar.zst"
TEMPLATE = f"{TEMPLATE_STORAGE}:vztmpl/{TEMPLATE_FILE}"


class DhcpFakePve(FakePve):  # type: ignore[misc]
    """FakePve whose running `ip=dhcp` containers get a lease after lease_delay real seconds (None: never)."""

    def __init__(self, *args: Any, pool: str = "192.168.50.0/24", first: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_delay: float | None = 0.0
        self.leases: dict[int, str] = {}
        self._pool = ipaddress.IPv4Network(pool)
        self._next = first

    def _lease(self, vmid: int) -> str | None:
        ct = self.ct(vmid)
        if ct is None or self.lease_delay is None or ct.started_at is None:
            return None
        if time.time() - ct.started_at < self.lease_delay:
            return None
        if vmid not in self.leases:
            self.leases[vmid] = str(self._pool.network_address + self._next)
            self._next += 1
        return self.leases[vmid]

    async def _lxc_interfaces(self, user: str, v: dict[str, Any]) -> Any:
        out = await super()._lxc_interfaces(user, v)
        ct = self.ct(int(v["vmid"]))
        for item in out or []:
            if item["name"] == "lo" or item.get("inet") or ct is None:
                continue
            if "ip=dhcp" in str(ct.config.get("net0", "")) and (lease := self._lease(ct.vmid)):
                prefix = str(self._pool.prefixlen)
                item["inet"] = f"{lease}/{prefix}"
                item["ip-addresses"].append({"ip-address-type": "inet", "ip-address": lease, "prefix": prefix})
        return out


def new_fake(nodes: tuple[str, ...] = ("pve1",)) -> DhcpFakePve:
    """A fake cluster on 127.0.0.1 (a free port) with the nodes and the Debian 12 template registered."""
    pve = DhcpFakePve(host="127.0.0.1", port=0)
    for node in nodes:
        pve.add_node(node)
    pve.store_file(TEMPLATE_STORAGE, TEMPLATE_FILE, 128 * 1024**2, content="vztmpl")
    return pve


def add_token(pve: DhcpFakePve, token_id: str, secret: str, privileges: tuple[str, ...]) -> None:
    """Create an API token holding exactly these privileges on / (this turns permission checks on)."""
    pve.apitokens[token_id] = secret
    pve.grant(token_id, "/", *privileges)


@contextmanager
def serving(pve: DhcpFakePve, certdir: Path) -> Iterator[str]:
    """Serve the fake over HTTPS on its own event loop thread; yields the CA file to verify it with."""
    certdir.mkdir(parents=True, exist_ok=True)
    certfile, keyfile, _ = make_cert(str(certdir), hosts=(pve.host,))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fakepve", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(pve.start(certfile, keyfile), loop).result(30)
        yield str(certfile)
    finally:
        asyncio.run_coroutine_threadsafe(pve.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
