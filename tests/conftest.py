"""Shared fixtures: a fake Proxmox VE over HTTPS (permission checks on), a bare Git remote, an operator's clone."""

from __future__ import annotations

import os
import secrets
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import pytest
import yaml

from reconciler.config import TOKEN_SECRET_ENV, Config, SiteConfig, load_config
from reconciler.demo import AUTHOR, TOKEN_ID, write_config
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.fake import DhcpFakePve, add_token, new_fake, serving
from reconciler.gateways.git import seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.runtime import Runtime, open_runtime

NODES = ("pve1", "pve2", "pve3")


def _site() -> SiteConfig:
    """The demo's site values (nodes pve1..pve3, vmbr0 on 192.168.50.0/24), for the pure tests."""
    with tempfile.TemporaryDirectory() as root:
        return load_config(write_config(Path(root), Path(root) / "r.git", 8006, f"{root}/ca.pem")).site


SITE = _site()
PROFILES = load_profiles(builtin_profiles_dir())


@dataclass
class FakeCluster:
    pve: DhcpFakePve
    ca_file: str
    secret: str

    @property
    def port(self) -> int:
        return int(self.pve.port)

    def containers(self) -> list[Any]:
        return sorted(self.pve.cts, key=lambda c: c.vmid)

    def create_posts(self) -> list[tuple[str, str, bytes]]:
        return [r for r in self.pve.requests if r[0] == "POST" and r[1].endswith("/lxc")]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    """A fake three-node cluster; the reconciler's token holds exactly the README's role."""
    pve = new_fake(NODES)
    secret = secrets.token_urlsafe(24)
    add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
    with serving(pve, tmp_path / "pki") as ca_file:
        yield FakeCluster(pve, ca_file, secret)


class OperatorClone:
    """The operator's own clone of the infra repo: writes requests and pushes, as a person would."""

    def __init__(self, remote: Path, path: Path) -> None:
        self.repo = git.Repo.clone_from(str(remote), path)
        self.path = path
        with self.repo.config_writer() as cfg:
            cfg.set_value("user", "name", "operator")
            cfg.set_value("user", "email", "operator@example.com")

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def remove(self, relative: str) -> None:
        self.repo.index.remove([relative], working_tree=True)

    def push(self, message: str = "operator change") -> str:
        self.repo.git.add("--all")
        self.repo.git.commit("-q", "-m", message)
        self.repo.git.push("-q", "origin", "HEAD:main")
        return str(self.repo.head.commit.hexsha)

    def pull(self) -> None:
        self.repo.git.pull("-q", "--rebase", "origin", "main")

    def read(self, relative: str) -> str | None:
        target = self.path / relative
        return target.read_text(encoding="utf-8") if target.exists() else None

    def yaml(self, relative: str) -> Any:
        text = self.read(relative)
        return yaml.safe_load(text) if text is not None else None

    def log(self) -> list[str]:
        return [c.message.strip() for c in self.repo.iter_commits("origin/main")]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with a README only: the operator's infra repo."""
    path = tmp_path / "infra.git"
    seed_bare_repo(path, {"README.md": b"infra\n"}, AUTHOR)
    return path


@pytest.fixture
def operator(remote: Path, tmp_path: Path) -> OperatorClone:
    return OperatorClone(remote, tmp_path / "operator")


@pytest.fixture
def config_path(tmp_path: Path, remote: Path, cluster: FakeCluster) -> Path:
    return write_config(tmp_path / "daemon", remote, cluster.port, cluster.ca_file, address_timeout=2)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def env(cluster: FakeCluster) -> dict[str, str]:
    """The daemon's environment: the token secret comes from here only."""
    return {**os.environ, TOKEN_SECRET_ENV: cluster.secret}


@pytest.fixture
def runtime(config: Config, env: dict[str, str]) -> Iterator[Runtime]:
    rt = open_runtime(config, env)
    yield rt
    rt.close()


def request_yaml(name: str, /, **changes: Any) -> str:
    """A valid request file for the test site; keyword arguments replace top-level keys (None drops one)."""
    doc: dict[str, Any] = yaml.safe_load(
        textwrap.dedent(
            f"""
            apiVersion: reconciler/v1
            kind: lxc
            name: {name}
            profile: generic-service
            description: test workload {name}
            node: pve1
            storage: local-lvm
            resources: {{cores: 1, memory: 512, disk: 8}}
            start: true
            network: {{mode: dhcp, bridge: vmbr0}}
            """
        )
    )
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def static(address: str, **extra: Any) -> dict[str, Any]:
    return {"mode": "static", "address": address, "bridge": "vmbr0", **extra}
