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
VM_TEMPLATE = 9000  # the cloud-init template VM, site.vm_templates' debian-12-ci
VM_TEMPLATE_NAME = "debian-12-ci"


class DhcpFakePve(FakePve):  # type: ignore[misc]
    """FakePve whose running `ip=dhcp` containers get a lease after lease_delay real seconds (None: never)."""

    def __init__(self, *args: Any, pool: str = "192.168.50.0/24", first: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_delay: float | None = 0.0
        self.leases: dict[int, str] = {}
        # Whether a started VM with agent=1 plays a booted guest: its agent answers with a lease on net0's MAC.
        # Tests leave it off and switch each VM's agent on themselves (pve.vm(id).agent), or make it hang.
        self.boot_agents = False
        # Cleared, clones hold before they finish (a long copy); set again, they finish.
        self.clone_gate = threading.Event()
        self.clone_gate.set()
        self._pool = ipaddress.IPv4Network(pool)
        self._next = first

    def _lease(self, vmid: int) -> str | None:
        ct = self.ct(vmid) or self.vm(vmid)
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

    def _config_priv(self, key: str) -> str:
        # As qemu-server's check_vm_modify_config_perm: the cloud-init keys need VM.Config.Cloudinit and
        # ipconfigN VM.Config.Network (fakepve asks VM.Config.HWType for them).
        if key in ("cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys"):
            return "VM.Config.Cloudinit"
        if key.startswith("ipconfig"):
            return "VM.Config.Network"
        return str(super()._config_priv(key))

    async def ceph_io(self, vm: Any, keys: Any = None) -> Any:
        # The clone task's copy calls this before it unlocks the new VM: where a test holds a clone.
        while vm.lock == "clone" and not self.clone_gate.is_set():
            await asyncio.sleep(0.02)
        return await super().ceph_io(vm, keys)

    async def _agent_call(self, match: Any, values: dict[str, Any]) -> Any:
        vm = self.vm(int(values["vmid"]))
        booted = vm is not None and vm.status == "running" and str(vm.config.get("agent", "0")).startswith("1")
        if self.boot_agents and booted and vm.agent is None and (lease := self._lease(vm.vmid)):
            vm.agent = {"interfaces": guest_interfaces(str(vm.config.get("net0", "")), lease)}
        return await super()._agent_call(match, values)


def guest_interfaces(net0: str, address: str, prefix: int = 24) -> list[dict[str, Any]]:
    """What a booted guest's agent reports: lo, and eth0 with net0's MAC and this address."""
    mac = next((v for k, v in (p.split("=", 1) for p in net0.split(",") if "=" in p) if ":" in v), "")
    return [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}],
        },
        {
            "name": "eth0",
            "hardware-address": mac.lower(),
            "ip-addresses": [
                {"ip-address": address, "ip-address-type": "ipv4", "prefix": prefix},
                {"ip-address": "fe80::be24:11ff:fe00:1", "ip-address-type": "ipv6", "prefix": 64},
            ],
        },
    ]


def add_vm_template(pve: DhcpFakePve, node: str = "pve1", agent: bool = True, vmid: int = VM_TEMPLATE) -> Any:
    """A cloud-init template VM as an operator prepares one (README): a 2 GB base disk on local-lvm, a
    cloud-init drive, a virtio NIC on vmbr0, and the guest agent enabled."""
    disk = f"base-{vmid}-disk-0"
    pve.storages["local-lvm"].setdefault("volumes", {})[disk] = {
        "content": "images",
        "format": "raw",
        "size": 2 * 1024**3,
        "vmid": vmid,
    }
    config = {
        "cores": 1,
        "memory": 2048,
        "scsihw": "virtio-scsi-single",
        "scsi0": f"local-lvm:{disk},size=2G",
        "ide2": f"local-lvm:vm-{vmid}-cloudinit,media=cdrom",
        "boot": "order=scsi0",
        "net0": "virtio=BC:24:11:90:00:01,bridge=vmbr0",
        "serial0": "socket",
        "vga": "serial0",
        "ostype": "l26",
        "agent": "1" if agent else "0",
        "template": 1,
    }
    return pve.add_vm(vmid, VM_TEMPLATE_NAME, node=node, template=True, config=config)


def new_fake(nodes: tuple[str, ...] = ("pve1",)) -> DhcpFakePve:
    """A fake cluster on 127.0.0.1 (a free port) with the nodes and the Debian 12 template registered."""
    pve = DhcpFakePve(host="127.0.0.1", port=0)
    for node in nodes:
        pve.add_node(node)
    pve.store_file(TEMPLATE_STORAGE, TEMPLATE_FILE, 128 * 1024**2, content="vztmpl")
    add_vm_template(pve, nodes[0])
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
