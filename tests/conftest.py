"""Shared fixtures: a fake Proxmox VE over HTTPS (permission checks on), a bare Git remote, an operator's clone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.txtbase
import git
import pytest
import yaml

from reconciler.config import TOKEN_SECRET_ENV, Config, SiteConfig, load_config
from reconciler.demo import AUTHOR, TOKEN_ID, write_config
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.fake import DhcpFakePve, add_token, new_fake, serving
from reconciler.gateways.dns import DnsServer
from reconciler.gateways.git import seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.model.dns import heritage
from reconciler.model.secret import Secret
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
        for attempt in range(5):
            try:
                self.repo.git.push("-q", "origin", "HEAD:main")
                break
            except git.GitCommandError as exc:
                # The reconciler pushed first, or at the same instant (then the remote's ref is locked by it).
                raced = ("fetch first", "non-fast-forward", "failed to update ref", "cannot lock ref")
                if attempt == 4 or not any(word in str(exc) for word in raced):
                    raise
                self.pull()
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


def keygen(path: Path) -> str:
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
    host_key = keygen(root / "host_ed25519")
    client_key = keygen(root / "id_ed25519")
    other_host_key = keygen(root / "other_host_ed25519")
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

GUEST_VM_PACKAGES = ("openssh-server", "sudo")
DEBIAN_CACHE = Path(os.environ.get("RECONCILER_TEST_CACHE", Path.home() / ".cache" / "reconciler-tests")) / "debian-12"


@pytest.fixture(scope="session")
def debian_root() -> Path:
    import standin

    reason = standin.missing()
    if reason is not None:
        pytest.skip(f"setup steps not run for real: {reason}")
    package_sets = yaml.safe_load((builtin_profiles_dir() / "package-sets.yaml").read_text())
    # What a cloud image brings that a container template may not: a VM's SSH server, and sudo for its user.
    package_sets["guest-vm"] = list(GUEST_VM_PACKAGES)
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


# A VM's first boot, played in a stand-in container (a Debian root in a network namespace of its own): cloud-init's
# user with the operator's key and passwordless sudo, and OpenSSH's sshd with the host keys its install made.


@dataclass
class BootedGuest:
    address: str  # on the namespace's eth0, reached from this host through its veth
    root: Path
    host_keys: dict[str, str]  # path inside the guest -> the public key file's text, as the guest agent reads it
    log: Path  # sshd's own log


def boot_guest(containers: Any, vmid: int, user: str, public_key: str, log: Path) -> Iterator[BootedGuest]:
    """Make VMID's stand-in root a booted cloud image: install sshd and sudo, add the user, and run sshd -D -e in the
    guest's namespace until the generator is closed."""
    root = containers.root(vmid)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    # No PAM in a chroot; a user without a password is not "locked" for sshd once its hash is '*'.
    (root / "etc/ssh/sshd_config.d/guest.conf").write_text("UsePAM no\nPasswordAuthentication no\nLogLevel VERBOSE\n")

    def inside(*command: str) -> None:
        subprocess.run(containers.exec_argv(vmid, list(command)), check=True, capture_output=True, timeout=600)

    # The install starts no sshd (this test runs its own, in the foreground with its log); then the container's own.
    policy = root / "usr/sbin/policy-rc.d"
    kept = policy.read_bytes()
    policy.write_text("#!/bin/sh\nexit 101\n")
    try:
        inside("apt-get", "install", "-q", "-y", "--no-install-recommends", *GUEST_VM_PACKAGES)
    finally:
        policy.write_bytes(kept)
    inside("useradd", "-m", "-s", "/bin/bash", user)
    inside("usermod", "-p", "*", user)
    (root / "etc/sudoers.d/90-cloud-init-users").write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    (root / "etc/sudoers.d/90-cloud-init-users").chmod(0o440)
    inside("install", "-d", "-m", "700", "-o", user, "-g", user, f"/home/{user}/.ssh")
    (root / f"home/{user}/.ssh/authorized_keys").write_text(public_key + "\n")
    inside("chown", f"{user}:{user}", f"/home/{user}/.ssh/authorized_keys")
    (root / "run/sshd").mkdir(exist_ok=True)
    address = json.loads((containers.state / "ct" / str(vmid) / "net.json").read_text())["ip"]
    keys = {f"/etc/ssh/{p.name}": p.read_text() for p in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub"))}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            containers.exec_argv(vmid, ["/usr/sbin/sshd", "-D", "-e"]), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((address, 22), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the guest's sshd did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield BootedGuest(address, root, keys, log)
    finally:
        end(proc)


def with_provision(config_path: Path, provision: dict[str, Any]) -> Config:
    """Add a provision block to a test config file and load it."""
    config_path.write_text(config_path.read_text() + yaml.safe_dump({"provision": provision}))
    return load_config(config_path)


def end(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a server the tests started: SIGTERM, then SIGKILL when it does not go within timeout."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# A real DNS server: BIND's named, unprivileged-style in the foreground on a free loopback port, with a TSIG key.

NAMED = Path("/usr/sbin/named")
ZONE = "lab.example."
CLOSED = "closed.example."  # takes updates with the key, never a transfer
FROZEN = "frozen.example."  # takes no update, whatever the key
OTHER_TXT = heritage("reconciler", "other")

NAMED_CONF = """\
options {{
    directory "{root}";
    pid-file none;
    session-keyfile "{root}/session.key";
    managed-keys-directory "{root}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
// No rndc channel: it would listen on 127.0.0.1:953 and clash with a second server.
controls {{ }};
key "reconciler" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "lab.example" {{
    type primary;
    file "{root}/lab.example.zone";
    allow-update {{ key reconciler; }};
    allow-transfer {{ key reconciler; }};
}};
zone "closed.example" {{
    type primary;
    file "{root}/closed.example.zone";
    allow-update {{ key reconciler; }};
    allow-transfer {{ none; }};
}};
zone "frozen.example" {{
    type primary;
    file "{root}/frozen.example.zone";
    allow-update {{ none; }};
    allow-transfer {{ key reconciler; }};
}};
"""

ZONE_FILE = """\
$TTL 300
@       IN SOA ns.{zone} hostmaster.{zone} 1 3600 600 86400 300
@       IN NS  ns.{zone}
ns      IN A   127.0.0.1
; someone else's record, with no ownership TXT
taken   IN A   192.0.2.99
; a record the reconciler wrote for another request
shared  IN A   192.0.2.60
_reconciler.shared IN TXT "{other}"
"""


@dataclass
class Bind:
    port: int
    secret: str  # the key's base64, as named.conf and $RECONCILER_TSIG_SECRET hold it
    log: Path

    def server(self, secret: str | None = None) -> DnsServer:
        """The gateway for this server, with its key unless given another secret."""
        return DnsServer("127.0.0.1", self.port, "reconciler", "hmac-sha256", Secret(secret or self.secret))

    def ask(self, name: str, rtype: str) -> list[str]:
        """The server's answer for name and type, asked without the gateway: addresses, targets, TXT texts."""
        response = dns.query.tcp(dns.message.make_query(name, rtype), "127.0.0.1", timeout=5, port=self.port)
        assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), dns.rcode.to_text(response.rcode())
        out = []
        for rrset in response.answer:
            if rrset.rdtype != dns.rdatatype.from_text(rtype):
                continue
            for rdata in rrset:
                if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
                    out.append(b"".join(rdata.strings).decode())
                else:
                    out.append(rdata.to_text())
        return sorted(out)

    def ttl(self, name: str, rtype: str) -> int:
        response = dns.query.tcp(dns.message.make_query(name, rtype), "127.0.0.1", timeout=5, port=self.port)
        return int(response.answer[0].ttl)


def free_dual_port() -> int:
    """A loopback port free for both TCP and UDP (a DNS server listens on both)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def start_named(root: Path) -> Iterator[Bind]:
    """Run named -g with the two zones on a free loopback port until the generator is closed."""
    if not NAMED.exists():
        pytest.skip("BIND (Debian package bind9) not installed: RFC 2136 updates and zone transfers not tested")
    root.mkdir(parents=True, exist_ok=True)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_dual_port()
    (root / "named.conf").write_text(NAMED_CONF.format(root=root, port=port, secret=secret))
    for zone in (ZONE, CLOSED, FROZEN):
        (root / f"{zone}zone").write_text(ZONE_FILE.format(zone=zone, other=OTHER_TXT))
    log = root / "named.log"
    with open(log, "ab") as out:
        # -g: foreground, log to stderr; -4: the conf listens on IPv4 loopback only.
        proc = subprocess.Popen(
            [str(NAMED), "-g", "-4", "-c", str(root / "named.conf")], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        query = dns.message.make_query(ZONE, "SOA")
        while True:
            try:
                # Both transports: updates and transfers use TCP, a resolver asks over UDP first.
                udp = dns.query.udp(query, "127.0.0.1", timeout=0.2, port=port)
                tcp = dns.query.tcp(query, "127.0.0.1", timeout=1, port=port)
                if udp.answer and tcp.answer:
                    break
            except (OSError, dns.exception.DNSException):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"named did not answer on port {port}:\n{log.read_text()}")
            time.sleep(0.05)
        yield Bind(port, secret, log)
    finally:
        end(proc)


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    yield from start_named(tmp_path / "bind")


# A real Prometheus from Debian, reading file_sd target files, on a free loopback port.
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

PROMETHEUS_YML = """\
global:
  scrape_interval: 1h  # the test reads discovery, not samples
scrape_configs:
  - job_name: reconciler
    file_sd_configs:
      - files: ['{targets}/*.json']
"""


@dataclass
class Prometheus:
    port: int
    targets_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def active_targets(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/targets?state=active"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["activeTargets"])

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Poll until check() holds; discovery batches its updates every 5 s, so the deadline is generous."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"waited {timeout} s for {what}; Prometheus log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)


def start_prometheus(root: Path) -> Iterator[Prometheus]:
    """Prometheus with one file_sd job reading root/targets/*.json, on a free loopback port."""
    if not (Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()):
        pytest.skip("Prometheus (Debian package prometheus) not installed: target files not read by Prometheus")
    targets_dir = root / "targets"
    targets_dir.mkdir(parents=True)
    config = root / "prometheus.yml"
    config.write_text(PROMETHEUS_YML.format(targets=targets_dir))
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = root / "prometheus.log"
    with open(log, "ab") as out:
        # The Debian package's default console paths (/etc/prometheus/consoles...) are only read when /consoles
        # is asked for, so no flag for them is needed.
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(port, targets_dir, log, proc)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                    return int(response.status) == 200
            except (urllib.error.URLError, OSError):
                return False

        server.wait_for(ready, "Prometheus to be ready")
        yield server
    finally:
        end(proc)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    yield from start_prometheus(tmp_path / "prometheus")


# A real dnsmasq serving a folder of hosts files (--hostsdir), on a free loopback port.
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@dataclass
class Dnsmasq:
    port: int
    hostsdir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def ask(self, name: str, rtype: str = "A", timeout: float = 2) -> tuple[str, list[str]]:
        """The rcode and the addresses dnsmasq answers for name."""
        response = dns.query.udp(dns.message.make_query(name, rtype), "127.0.0.1", timeout=timeout, port=self.port)
        return dns.rcode.to_text(response.rcode()), sorted(r.to_text() for rrset in response.answer for r in rrset)

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (OSError, dns.exception.DNSException):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"waited {timeout} s for {what}; dnsmasq log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)


def start_dnsmasq(root: Path, zone: str = "lab.test") -> Iterator[Dnsmasq]:
    """dnsmasq serving only the hosts files in root/hosts (re-read on change, by inotify) for zone."""
    if not Path(DNSMASQ).exists():
        pytest.skip("dnsmasq (Debian package dnsmasq-base) not installed: the hosts file not read by a resolver")
    hostsdir = root / "hosts"
    hostsdir.mkdir(parents=True)
    port = free_dual_port()
    log = root / "dnsmasq.log"
    with open(log, "ab") as out:
        # --no-daemon: foreground, no pid file and no change of user (as root it would become nobody, who cannot
        # read pytest's private tmp directory); --local: names of the zone it does not know are NXDOMAIN, not
        # forwarded (there is no upstream) or REFUSED.
        proc = subprocess.Popen(
            [
                DNSMASQ,
                "--no-daemon",
                "--conf-file=/dev/null",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                f"--hostsdir={hostsdir}",
                f"--local=/{zone}/",
                "--log-facility=-",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Dnsmasq(port, hostsdir, log, proc)
    try:
        server.wait_for(lambda: server.ask(f"ready.{zone}", timeout=0.2)[0] == "NXDOMAIN", "dnsmasq to answer")
        yield server
    finally:
        end(proc)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    yield from start_dnsmasq(tmp_path / "dnsmasq")
