"""`reconciler demo`: one real cycle against a throw-away Git remote and an in-process fake Proxmox VE."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from reconciler.config import TOKEN_SECRET_ENV, GitConfig, load_config
from reconciler.gateways.git import Checkout, seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.report.steps import setup_lines
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
    here = Path(__file__).resolve().parent
    packaged = here / "_data" / "examples" / "requests"
    return packaged if packaged.is_dir() else here.parent / "examples" / "requests"


def _show(out: TextIO, title: str, files: dict[str, bytes]) -> None:
    for path, text in sorted(files.items()):
        out.write(f"\n--- {title}: {path}\n{text.decode()}")


def run_demo(out: TextIO, keep: bool = False) -> int:
    """Seed a bare repo with examples/requests, serve a fake PVE, run one cycle, print what was pushed."""
    from reconciler.fake import add_token, new_fake, serving  # the demo extra, imported only here

    root = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    secret = secrets.token_urlsafe(24)
    try:
        remote = root / "infra.git"
        examples = {f"requests/{p.name}": p.read_bytes() for p in sorted(examples_dir().glob("*.yaml"))}
        seed_bare_repo(remote, examples, AUTHOR)
        out.write(f"Seeded {remote} with {len(examples)} requests: {', '.join(sorted(examples))}\n")
        pve = new_fake(("pve1", "pve2", "pve3"))
        add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
        with serving(pve, root / "pki") as ca_file:
            out.write(f"Fake Proxmox VE at {pve.url}, token {TOKEN_ID} with the documented role only\n")
            config = load_config(write_config(root, remote, pve.port, ca_file))
            runtime = open_runtime(config, {**os.environ, TOKEN_SECRET_ENV: secret})
            try:
                report = runtime.reconciler.once()
                again = runtime.reconciler.once()
            finally:
                runtime.close()
            out.write(
                f"\nRun 1: {len(report.started)} jobs in {report.passes} passes, last pushed commit"
                f" {report.commit or 'none'}\n"
            )
            for ct in sorted(pve.cts, key=lambda c: c.vmid):
                out.write(
                    f"  container {ct.vmid} on {ct.node}: {ct.config.get('hostname')} {ct.status},"
                    f" tags {ct.config.get('tags')}, net0 {ct.config.get('net0')}\n"
                )
            out.write(f"Run 2: {len(again.started)} jobs, commit {again.commit or 'none (nothing changed)'}\n")
            for d in report.decision.valid:
                out.write(f"  {d.name} ({d.profile}):\n")
                for line in setup_lines(d.setup, config.provision.transport):
                    out.write(f"{line}\n")
        pushed = _read_remote(remote, root / "view-checkout")
        _show(out, "pushed", pushed)
        if keep:
            out.write(f"\nJobs and their logs: reconciler jobs --config {root / 'config.yaml'}\n")
        return 1 if report.failing else 0
    finally:
        if keep:
            out.write(f"Kept {root}\n")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _read_remote(remote: Path, where: Path) -> dict[str, bytes]:
    """The generated files as the remote has them, through a fresh clone."""
    checkout = Checkout(GitConfig(remote=str(remote), checkout=where))
    checkout.sync()
    files = {**checkout.read_dir("status"), **checkout.read_dir("caddy/services")}
    checkout.repo.close()
    return files
