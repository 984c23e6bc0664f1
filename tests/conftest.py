"""Shared fixtures: a fake Proxmox VE over HTTPS (permission checks on), a bare Git remote, an operator's clone."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
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
        """Commit everything and push; when the reconciler pushed meanwhile (a status, the site file), pull
        with rebase and push again, as an operator does."""
        self.repo.git.add("--all")
        self.repo.git.commit("-q", "-m", message)
        try:
            self.repo.git.push("-q", "origin", "HEAD:main")
        except git.GitCommandError as exc:
            if "fetch first" not in str(exc) and "non-fast-forward" not in str(exc):
                raise
            self.pull()
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


WEBHOOK_SECRET = "webhook-secret-for-tests-5f1c"
API_TOKEN = "api-token-7d41c0ffee"  # the daemon fixture's http.api_token_env value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """`reconciler run` as a real subprocess, with its HTTP endpoints on a free loopback port."""

    def __init__(self, config_path: Path, env: dict[str, str], log_path: Path) -> None:
        self.config_path = config_path
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, **daemon: Any) -> DaemonProcess:
        settings = {"interval": 3600, "watch": False, **daemon}
        text = self.config_path.read_text()
        text += f"http: {{listen: '127.0.0.1:{self.port}'}}\ndaemon: {json.dumps(settings)}\n"
        self.config_path.write_text(text)
        return self

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--config", str(self.config_path)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_for(lambda: self.get("/readyz")[0] == 200, what="the first cycle")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.url(path), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def push_hook(self, branch: str = "main", secret: str = WEBHOOK_SECRET) -> tuple[int, str]:
        """A Gitea push delivery, signed as Gitea signs it."""
        # Each push names its own commits, so no two deliveries carry the same body (a same one is a replay).
        body = json.dumps({"ref": f"refs/heads/{branch}", "after": secrets.token_hex(20)}).encode()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return self.post(
            "/webhook",
            body,
            {"X-Gitea-Event": "push", "X-Gitea-Signature": signature, "Content-Type": "application/json"},
        )

    def metric(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def wait_for(self, check: Any, timeout: float = 15.0, what: str = "it") -> float:
        """Seconds until check() is true; fails the test with the daemon's log when it never is."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if check():
                return time.monotonic() - began
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"waited {timeout} s for {what}; daemon log:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def daemon(config_path: Path, env: dict[str, str], tmp_path: Path) -> Iterator[DaemonProcess]:
    given = {"RECONCILER_WEBHOOK_SECRET": WEBHOOK_SECRET, "RECONCILER_API_TOKEN": API_TOKEN}
    process = DaemonProcess(config_path, {**env, **given}, tmp_path / "daemon.log")
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


# A node's SSH server: OpenSSH's sshd on loopback, the reconciler's key pinned to node/reconciler-pct as the
# README tells operators, and `pct` a stand-in the test chooses.

REPO = Path(__file__).resolve().parent.parent
FORCED_COMMAND = REPO / "node" / "reconciler-pct"


@dataclass
class NodeSshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    wrong_known_hosts: Path  # the same address with another host key
    log: Path

    def provision(self, **extra: Any) -> dict[str, Any]:
        """A config `provision` block that reaches every test node through this server."""
        ssh = {
            "user": self.user,
            "port": self.port,
            "key": str(self.key),
            "known_hosts": str(self.known_hosts),
            "hosts": {node: "127.0.0.1" for node in NODES},
            "connect_timeout": 5,
        }
        return {"transport": "ssh", "ssh": ssh, **extra}


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(root: Path, pct: Path) -> Iterator[NodeSshd]:
    """Run sshd -D on a free loopback port until the generator is closed; its forced command runs `pct`."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists() or subprocess.run(["which", "ssh"], capture_output=True).returncode != 0:
        pytest.skip("OpenSSH (Debian packages openssh-server, openssh-client) not installed: SSH transport not tested")
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    host_key = _keygen(root / "host_ed25519")
    client_key = _keygen(root / "id_ed25519")
    other_host_key = _keygen(root / "other_host_ed25519")
    (root / "authorized_keys").write_text(f'command="{FORCED_COMMAND}",restrict {client_key}\n')
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        textwrap.dedent(
            f"""
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {root / "host_ed25519"}
            PidFile none
            AuthorizedKeysFile {root / "authorized_keys"}
            StrictModes no
            UsePAM no
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            AllowUsers {user}
            SetEnv RECONCILER_PCT={pct}
            LogLevel VERBOSE
            """
        )
    )
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(host_key.split()[:2])}\n")
    wrong = root / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{port} {' '.join(other_host_key.split()[:2])}\n")
    log = root / "sshd.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield NodeSshd(port, user, root / "id_ed25519", known, wrong, log)
    finally:
        proc.terminate()
        proc.wait(10)


HOST_PCT = """#!{python}
# pct stand-in for transport tests: runs a container's command right here (no container) and records each call.
import json, os, sys
with open({calls!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:1] == ["exec"] and len(args) > 3 and args[2] == "--":
    os.execvp(args[3], args[3:])
if args[:1] == ["set"]:
    sys.exit(0)
sys.stderr.write("pct stand-in: unsupported: " + " ".join(args) + "\\n")
sys.exit(2)
"""


@dataclass
class HostPct:
    path: Path
    calls_file: Path

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]


@pytest.fixture
def host_pct(tmp_path: Path) -> HostPct:
    """A `pct` that runs what it is given on this machine, for tests of how commands reach a node."""
    path = tmp_path / "host-pct" / "pct"
    path.parent.mkdir()
    path.write_text(HOST_PCT.format(python=sys.executable, calls=str(tmp_path / "host-pct" / "calls.jsonl")))
    path.chmod(0o755)
    return HostPct(path, tmp_path / "host-pct" / "calls.jsonl")


@pytest.fixture
def host_sshd(tmp_path: Path, host_pct: HostPct) -> Iterator[NodeSshd]:
    """A node's sshd whose forced command runs the host `pct` stand-in."""
    yield from start_sshd(tmp_path / "sshd", host_pct.path)


# Containers for real setup steps: a Debian root built once with debootstrap (cached between runs), one overlay
# and network namespace per VMID, entered by a `pct` stand-in (tests/standin.py).

DEBIAN_CACHE = Path(os.environ.get("RECONCILER_TEST_CACHE", Path.home() / ".cache" / "reconciler-tests")) / "debian-12"


@pytest.fixture(scope="session")
def debian_root() -> Path:
    import standin

    reason = standin.missing()
    if reason is not None:
        pytest.skip(f"setup steps not run for real: {reason}")
    package_sets = yaml.safe_load((builtin_profiles_dir() / "package-sets.yaml").read_text())
    return standin.build_cache(DEBIAN_CACHE, package_sets)


@pytest.fixture
def containers(tmp_path: Path, debian_root: Path) -> Iterator[Any]:
    """The stand-in's containers for this test; everything they started or mounted is gone afterwards."""
    import standin

    stand_in = standin.PctStandIn(tmp_path / "pct-state", debian_root)
    try:
        yield stand_in
    finally:
        stand_in.cleanup()


@pytest.fixture
def chroot_pct(tmp_path: Path, containers: Any) -> Path:
    """The `pct` command that enters the test's containers."""
    import standin

    return Path(standin.install(tmp_path / "pct-bin", containers.state))


@pytest.fixture
def chroot_sshd(tmp_path: Path, chroot_pct: Path) -> Iterator[NodeSshd]:
    """A node's sshd whose forced command runs the containers' `pct`."""
    yield from start_sshd(tmp_path / "sshd", chroot_pct)


def with_provision(config_path: Path, provision: dict[str, Any]) -> Config:
    """Add a provision block to a test config file and load it."""
    config_path.write_text(config_path.read_text() + yaml.safe_dump({"provision": provision}))
    return load_config(config_path)
