"""What the daemon benchmarks share: a fake cluster, a bare remote, an operator's clone and a started daemon."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import API_TOKEN, WEBHOOK_SECRET, DaemonProcess, OperatorClone, request_yaml, static

from reconciler.config import TOKEN_SECRET_ENV
from reconciler.demo import AUTHOR, TOKEN_ID, write_config
from reconciler.fake import DhcpFakePve, add_token, new_fake, serving
from reconciler.gateways.git import seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES

NODES = ("pve1", "pve2", "pve3")
__all__ = ["NODES", "DaemonProcess", "Env", "OperatorClone", "environment", "request_yaml", "static"]


@dataclass
class Env:
    pve: DhcpFakePve
    operator: OperatorClone
    daemon: DaemonProcess
    database: Path
    rejected: int = 0  # operator pushes refused because the daemon had pushed since the operator's pull


@contextmanager
def environment(
    root: Path, setup: Callable[[DhcpFakePve], None], address_timeout: float = 10, **daemon_settings: object
) -> Iterator[Env]:
    """A fake cluster, a bare remote, an operator's clone and a started daemon; all torn down after."""
    pve = new_fake(NODES)
    setup(pve)
    secret = secrets.token_urlsafe(24)
    add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
    remote = root / "infra.git"
    seed_bare_repo(remote, {"README.md": b"infra\n"}, AUTHOR)
    operator = OperatorClone(remote, root / "operator")
    with serving(pve, root / "pki") as ca_file:
        config = write_config(root / "daemon", remote, pve.port, ca_file, address_timeout=address_timeout)
        env = {
            **os.environ,
            TOKEN_SECRET_ENV: secret,
            "RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "RECONCILER_API_TOKEN": API_TOKEN,
        }
        daemon = DaemonProcess(config, env, root / "daemon.log")
        # A short stop grace so that stopping does not wait out a lease wait; it changes no measurement.
        daemon.configure(**{"interval": 3600, "watch": False, "stop_grace": 1, **daemon_settings})
        try:
            daemon.start()
            yield Env(pve, operator, daemon, config.parent / "jobs.sqlite")
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                try:
                    daemon.stop(timeout=30)
                except Exception:
                    daemon.proc.kill()
                    daemon.proc.wait(10)
            operator.repo.close()
