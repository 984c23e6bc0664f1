"""The demo's sandbox: a throw-away bare Git remote, an in-process fake Proxmox VE and a config joining them.

The story `reconciler demo` tells around it lives in reconciler/cli/demo.py, which calls the other commands.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.config import TOKEN_SECRET_ENV, Config, GitConfig, load_config
from reconciler.cycle import CycleReport
from reconciler.gateways.git import Checkout, seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.gateways.sqlite import JobStore
from reconciler.model.vocab import JobType
from reconciler.runtime import open_runtime

TOKEN_ID = "reconciler@pve!gitops"
AUTHOR = "operator <operator@example.com>"

CONFIG = """\
git:
  remote: {remote}
  branch: main
  checkout: {root}/checkout
  author: reconciler <reconciler@localhost>
paths: {{requests: requests, status: status, caddy: caddy/services}}
proxmox:
  host: 127.0.0.1
  port: {port}
  token_id: "{token_id}"
  verify_ssl: true
  ca_file: {ca_file}
  address_timeout: {address_timeout}
  status_lag: 0           # the fake reports power states as they are, without Proxmox's lag
site:
  nodes: [pve1, pve2, pve3]
  storages: [local-lvm]
  bridges:
    vmbr0: {{cidr: 192.168.50.0/24, gateway: 192.168.50.1}}
  vlans: [10, 20]
  templates: {{debian-12: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}}
  vm_templates: {{debian-12-ci: 9000}}
  limits: {{cores: [1, 8], memory: [256, 16384], disk: [2, 200]}}
  vmid_range: [{vmid_low}, {vmid_high}]
  reserved_ips: [192.168.50.1]
state:
  database: {root}/jobs.sqlite
"""


def write_config(
    root: Path,
    remote: Path,
    port: int,
    ca_file: str,
    address_timeout: float = 10,
    vmid_range: tuple[int, int] = (200, 299),
) -> Path:
    """A config for the fake cluster (nodes pve1..pve3, bridge vmbr0 on 192.168.50.0/24) under root."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    # Owner-only, as the daemon demands of a config file (others may not read it).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(
            CONFIG.format(
                remote=remote,
                root=root,
                port=port,
                token_id=TOKEN_ID,
                ca_file=ca_file,
                address_timeout=address_timeout,
                vmid_low=vmid_range[0],
                vmid_high=vmid_range[1],
            )
        )
    return path


def examples_dir() -> Path:
    """The example requests: packaged with the wheel, or examples/requests in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "_data" / "examples" / "requests"
    return packaged if packaged.is_dir() else here.parent / "examples" / "requests"


# Deliberately Invalid: the demo shows how a request is refused, in plain words, before anything is created.
INVALID_NAME = "wiki"
INVALID_REQUEST = """\
# Deliberately invalid: pve4 is no node of the demo's site, and 32768 MB is above its memory limit.
apiVersion: reconciler/v1
kind: lxc
name: wiki
profile: web-app
description: A wiki, asked for on a node the site does not have
node: pve4
storage: local-lvm
resources: {cores: 2, memory: 32768, disk: 8}
network: {mode: dhcp, bridge: vmbr0}
"""


def demo_requests() -> dict[str, bytes]:
    """The request files the demo commits: the examples, and one Invalid request."""
    files = {f"requests/{p.name}": p.read_bytes() for p in sorted(examples_dir().glob("*.yaml"))}
    files[f"requests/{INVALID_NAME}.yaml"] = INVALID_REQUEST.encode()
    return dict(sorted(files.items()))


@dataclass(frozen=True)
class Sandbox:
    """Where the demo runs: root holds the config, the bare remote, a working tree of what was committed (work)
    and the job database; pve is the fake Proxmox VE, serving while the sandbox is open."""

    root: Path
    remote: Path
    work: Path
    config_path: Path
    config: Config
    secret: str
    pve: Any

    def environ(self) -> dict[str, str]:
        """The process environment with the fake's token secret, as the daemon's would hold the real one."""
        return {**os.environ, TOKEN_SECRET_ENV: self.secret}


@contextmanager
def sandbox(files: Mapping[str, bytes], keep: bool = False) -> Iterator[Sandbox]:
    """A bare remote seeded with files, a fake Proxmox VE (nodes pve1..pve3) whose token holds the documented
    role only, and a config for both; the temporary directory is removed at the end unless keep."""
    from reconciler.fake import add_token, new_fake, serving  # the demo extra, imported only here

    root = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    try:
        work = root / "work"
        for relative, data in files.items():
            (work / relative).parent.mkdir(parents=True, exist_ok=True)
            (work / relative).write_bytes(data)
        remote = root / "infra.git"
        seed_bare_repo(remote, files, AUTHOR)
        secret = secrets.token_urlsafe(24)
        pve = new_fake(("pve1", "pve2", "pve3"))
        add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
        with serving(pve, root / "pki") as ca_file:
            config_path = write_config(root, remote, pve.port, ca_file)
            yield Sandbox(root, remote, work, config_path, load_config(config_path), secret, pve)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def run_cycle(box: Sandbox) -> CycleReport:
    """What `reconciler once` does: passes until nothing started is still running, statuses pushed after each."""
    runtime = open_runtime(box.config, box.environ())
    try:
        return runtime.reconciler.once()
    finally:
        runtime.close()


def create_job(box: Sandbox, request: str) -> int | None:
    """The id of the job that created request's container, if one did."""
    store = JobStore(box.config.state.database)
    try:
        return next((j.id for j in store.jobs(request=request) if j.type == JobType.CREATE), None)
    finally:
        store.close()


def pushed_files(box: Sandbox) -> list[str]:
    """The status and Caddy files at the remote's head, read through a fresh clone."""
    checkout = Checkout(GitConfig(remote=str(box.remote), checkout=box.root / "view-checkout"))
    try:
        checkout.sync()
        return sorted({**checkout.read_dir(box.config.paths.status), **checkout.read_dir(box.config.paths.caddy)})
    finally:
        checkout.repo.close()
        shutil.rmtree(box.root / "view-checkout", ignore_errors=True)
