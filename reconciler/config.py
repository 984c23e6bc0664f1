"""The daemon's configuration file: where Git and Proxmox are, and the site's approved values."""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from reconciler.logs import register_secret
from reconciler.model.errors import ConfigError
from reconciler.model.secret import Secret
from reconciler.model.vocab import Transport
from reconciler.parse import from_validation_error, load_yaml

DEFAULT_CONFIG = Path("/etc/reconciler/config.yaml")
TOKEN_SECRET_ENV = "PROXMOX_TOKEN_SECRET"
GIT_TOKEN_ENV = "RECONCILER_GIT_TOKEN"
# The DNS server's TSIG key (dns.rfc2136.key_secret_env's default): kept out of every child process.
TSIG_SECRET_ENV = "RECONCILER_TSIG_SECRET"

DNS_NAME = r"^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitConfig(Strict):
    remote: str = Field(min_length=1)
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    checkout: Path
    author: str = "reconciler <reconciler@localhost>"
    # Basic-auth user for https remotes with a token from RECONCILER_GIT_TOKEN; Gitea accepts any.
    username: str = "reconciler"
    ssh_key: Path | None = None
    # A remote that takes the connection and never answers would hold a pass, and a stop, for good.
    timeout: float = Field(default=60.0, gt=0, le=3600, description="s a fetch, push or ls-remote may take")

    @field_validator("remote")
    @classmethod
    def _no_inline_credentials(cls, value: str) -> str:
        # git writes the remote URL to .git/config as it is: a token there is on disk for good. The value is
        # never repeated in the message.
        if _has_credentials(value):
            raise ValueError(
                "holds credentials before '@' (a token or a password), which git would keep in .git/config:"
                f" remove them and set {GIT_TOKEN_ENV} in the environment (the user name goes in git.username)"
            )
        return value

    @field_validator("author")
    @classmethod
    def _author_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[^<>]+ <[^<>\s]+>", value):
            raise ValueError("must look like 'Name <email>'")
        return value

    @property
    def local_path(self) -> Path | None:
        """The remote's directory when it is a path on this machine (not ssh://, https:// or host:path)."""
        return Path(self.remote) if is_local_remote(self.remote) else None

    @property
    def author_name(self) -> str:
        return self.author.split(" <")[0]

    @property
    def author_email(self) -> str:
        return self.author.split(" <")[1].rstrip(">")


def _has_credentials(remote: str) -> bool:
    """Whether a remote URL carries a secret in its user part: any user part of an http(s) URL (`TOKEN@` is a
    token), a `user:password@` of any other scheme. `ssh://git@host/...` and `git@host:path` name a user only."""
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)@", remote)
    if found is None:
        return False
    scheme, userinfo = found.group(1).lower(), found.group(2)
    return scheme in ("http", "https") or ":" in userinfo


def is_local_remote(remote: str) -> bool:
    """A Git remote that names a directory here, as git reads it: no scheme, no `host:` before the first slash."""
    return "://" not in remote and ":" not in remote.split("/")[0]


def _inside_repo(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts or value.startswith("."):
        raise ValueError("must be a relative path inside the repository, without '..'")
    return str(path)


class PathsConfig(Strict):
    requests: str = "requests"
    status: str = "status"
    caddy: str = "caddy/services"
    # The site's approved values as the daemon enforces them (no secrets, no hosts), written for `validate`.
    site: str = "site.yaml"

    @field_validator("requests", "status", "caddy", "site")
    @classmethod
    def _inside_repo(cls, value: str) -> str:
        return _inside_repo(value)

    @model_validator(mode="after")
    def _distinct(self) -> PathsConfig:
        dirs = [PurePosixPath(p) for p in (self.requests, self.status, self.caddy, self.site)]
        for i, a in enumerate(dirs):
            for b in dirs[i + 1 :]:
                if a == b or a in b.parents or b in a.parents:
                    raise ValueError(f"{a} and {b} overlap; the reconciler writes only outside requests")
        return self


class ProxmoxConfig(Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=8006, ge=1, le=65535)
    token_id: str = Field(pattern=r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$")
    verify_ssl: StrictBool = True
    ca_file: Path | None = None
    timeout: float = Field(default=15.0, gt=0)
    task_timeout: float = Field(default=600.0, gt=0)
    address_timeout: float = Field(default=60.0, ge=0)
    # A VM's DHCP address comes from its QEMU guest agent, which answers only once the guest has booted.
    agent_timeout: float = Field(default=300.0, ge=0, description="seconds to wait for a VM's guest agent")
    parallel_per_node: int = Field(default=2, ge=1, le=16)
    # /cluster/resources reports power states from statistics that lag behind; after a job succeeds, the
    # state it made is trusted over a contrary report for this long.
    status_lag: float = Field(default=15.0, ge=0, description="seconds")
    shutdown_timeout: float = Field(default=60.0, ge=1, description="s a clean shutdown may take before a hard stop")
    # Drift shows only in a guest's config, one call per guest: each is read again after this long (and after
    # any job on it), so a pass over thousands of guests stays quick.
    config_refresh: float = Field(default=300.0, ge=0, description="seconds")
    # A DHCP lease can move (a container restarted by hand, a DHCP server that forgot it): the address of each
    # running DHCP container is read again after this long, and DNS, Caddy and scrape targets follow it.
    address_refresh: float = Field(default=60.0, ge=0, description="seconds")


class SshConfig(Strict):
    """How the reconciler reaches a node's `pct` over SSH: key only, host key checked against known_hosts."""

    user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]*$", max_length=32)
    sudo: StrictBool = Field(default=False, description="run `sudo -n pct` (for a user other than root)")
    port: int = Field(default=22, ge=1, le=65535)
    key: Path = Field(description="private key file; its passphrase must be empty")
    known_hosts: Path = Field(description="the nodes' host keys; an unknown or changed key is refused")
    hosts: dict[Name, Annotated[str, Field(pattern=r"^[A-Za-z0-9.:-]+$")]] = Field(
        default={}, description="node -> address; a node not listed is reached by its name"
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds")

    def address(self, node: str) -> str:
        return self.hosts.get(node, node)


class LocalConfig(Strict):
    pct: str = Field(default="pct", description="the pct command, looked up on the daemon's PATH")


class VmSshConfig(Strict):
    """How the reconciler reaches a VM for its setup: SSH as its cloud-init user, with this key only."""

    key: Path = Field(description="private key file (empty passphrase) whose public key the VM requests list")
    port: int = Field(default=22, ge=1, le=65535)
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds")


class ProvisionConfig(Strict):
    """Setup inside guests after create: how `pct` is reached, how a VM is, and how long a step may take."""

    transport: Transport = Transport.OFF
    ssh: SshConfig | None = None
    local: LocalConfig = LocalConfig()
    vm: VmSshConfig | None = Field(default=None, description="setup inside VMs over SSH; off when not set")
    step_timeout: float = Field(default=900.0, ge=1, description="seconds one step may take before it is killed")
    parallel_per_node: int = Field(default=2, ge=1, le=16, description="setups at once on one node")

    @model_validator(mode="after")
    def _ssh_needs_its_block(self) -> ProvisionConfig:
        if self.transport == Transport.SSH and self.ssh is None:
            raise ValueError("transport ssh needs an ssh block with at least key and known_hosts")
        return self


class BridgeConfig(Strict):
    cidr: IPv4Network
    gateway: IPv4Address | None = None

    @model_validator(mode="after")
    def _gateway_inside(self) -> BridgeConfig:
        if self.gateway is not None and self.gateway not in self.cidr:
            raise ValueError(f"gateway {self.gateway} is outside {self.cidr}")
        return self


class Range(Strict):
    """An inclusive [low, high] range, written as a two-item list."""

    low: int
    high: int

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError("must be [low, high]")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self

    def __contains__(self, value: int) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low}..{self.high}"


class Limits(Strict):
    cores: Range
    memory: Range
    disk: Range


class SiteConfig(Strict):
    nodes: list[Name] = Field(min_length=1)
    storages: list[Name] = Field(min_length=1)
    bridges: dict[Name, BridgeConfig] = Field(min_length=1)
    vlans: list[Annotated[int, Field(ge=1, le=4094)]] = []
    templates: dict[Name, Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+:vztmpl/[^/\s]+$")]] = Field(min_length=1)
    # VM profiles' templates: a cloud-init template VM on the cluster, by name -> its VMID.
    vm_templates: dict[Name, Annotated[int, Field(ge=100, le=999_999_999)]] = {}
    limits: Limits
    vmid_range: Range
    reserved_ips: list[IPv4Address] = []

    @field_validator("vmid_range")
    @classmethod
    def _vmids(cls, value: Range) -> Range:
        if value.low < 100 or value.high > 999_999_999:
            raise ValueError("Proxmox VMIDs lie in 100..999999999")
        return value


class StateConfig(Strict):
    database: Path
    busy_timeout: float = Field(default=30.0, gt=0, description="s to wait for a database another process holds")


class GuardConfig(Strict):
    """The mass-change guard: a pass may destroy, stop or orphan at most this share of the owned guests."""

    max_share: float = Field(default=0.5, ge=0, le=1)
    confirm_file: str = Field(
        default="reconciler-confirm.yaml", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*\.ya?ml$", description="in the repo"
    )


class HttpConfig(Strict):
    """The daemon's one HTTP listener: /webhook, /reconcile, /metrics, /healthz, /readyz."""

    listen: str = Field(default="127.0.0.1:9105", pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
    webhook_secret_env: str = Field(default="RECONCILER_WEBHOOK_SECRET", pattern=r"^[A-Z_][A-Z0-9_]*$")
    # The bearer token `reconciler reconcile` shows to POST /reconcile; unset, that endpoint is off.
    api_token_env: str = Field(default="RECONCILER_API_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$")
    max_body: int = Field(default=1024 * 1024, ge=1024, description="bytes; a larger webhook body gets 413")
    # Each connection is a thread: a bound keeps idle clients from using up the threads (and the processes
    # git needs to fork) the daemon has under a task limit.
    max_connections: int = Field(default=32, ge=2, le=1024, description="connections served at once")
    read_timeout: float = Field(default=10.0, gt=0, le=300, description="s a client has to send its whole request")

    @model_validator(mode="after")
    def _two_secrets(self) -> HttpConfig:
        if self.api_token_env == self.webhook_secret_env:
            raise ValueError(
                "api_token_env and webhook_secret_env must differ: a forge must not hold the operator's token"
            )
        return self

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class DaemonConfig(Strict):
    interval: float = Field(default=60.0, gt=0, description="seconds between polls, with jitter")
    jitter: float = Field(default=0.1, ge=0, le=0.5, description="share of the interval to vary it by")
    watch: StrictBool = Field(default=True, description="react to changes of a local remote, the config and profiles")
    recheck: float = Field(default=10.0, gt=0, description="s to the next look while a request is Provisioning")
    backoff_base: float = Field(default=30.0, gt=0, description="first retry delay of a failed request, s")
    backoff_max: float = Field(default=3600.0, gt=0, description="longest retry delay, s")
    stop_grace: float = Field(default=60.0, ge=0, description="s a running task may take after SIGTERM")
    ready_after: float | None = Field(default=None, gt=0, description="s since the last good cycle for /readyz")

    @property
    def stale_after(self) -> float:
        return self.ready_after or max(3 * self.interval, 300.0)


class Rfc2136Config(Strict):
    """An authoritative DNS server that takes dynamic updates (RFC 2136) signed with a TSIG key."""

    server: str = Field(pattern=r"^[A-Za-z0-9.:-]+$", description="address or name of the primary server")
    port: int = Field(default=53, ge=1, le=65535)
    key_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=253)
    key_algorithm: Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"] = (
        "hmac-sha256"
    )
    key_secret_env: str = Field(default=TSIG_SECRET_ENV, pattern=r"^[A-Z_][A-Z0-9_]*$")
    axfr: StrictBool = Field(default=True, description="find orphans and hand edits by a signed zone transfer")
    timeout: float = Field(default=5.0, gt=0, le=60, description="s one update or transfer may take")
    # A transfer shows records changed or left behind by others; one per zone at most this often.
    refresh: float = Field(default=300.0, ge=0, description="s between zone transfers")


class DnsConfig(Strict):
    """DNS records for every workload: an A for its hostname, a CNAME (or A) for its domain in an approved zone."""

    zone: Annotated[str, Field(pattern=DNS_NAME, max_length=253)] | list[Annotated[str, Field(pattern=DNS_NAME)]]
    ttl: int = Field(default=300, ge=0, le=2_147_483_647)
    domain_records: Literal["cname", "a"] = Field(default="cname", description="a CNAME to the hostname, or an A")
    # Written into each record's ownership TXT: two reconcilers sharing a zone each touch only their own.
    owner_id: str = Field(default="reconciler", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=63)
    rfc2136: Rfc2136Config | None = None
    hosts_file: str | None = Field(default=None, description="a hosts-format file in the repository")

    @field_validator("zone")
    @classmethod
    def _zones(cls, value: str | list[str]) -> str | list[str]:
        zones = [value] if isinstance(value, str) else value
        if not zones:
            raise ValueError("name at least one zone")
        if len({z.lower().rstrip(".") for z in zones}) != len(zones):
            raise ValueError("names a zone twice")
        return value

    @field_validator("hosts_file")
    @classmethod
    def _hosts_inside(cls, value: str | None) -> str | None:
        return None if value is None else _inside_repo(value)

    @property
    def zones(self) -> tuple[str, ...]:
        """The approved zones, absolute and lower case; hostname records go into the first."""
        zones = [self.zone] if isinstance(self.zone, str) else self.zone
        return tuple(z.lower().rstrip(".") + "." for z in zones)


class PrometheusConfig(Strict):
    """Scrape targets for every monitored workload, as file_sd JSON files in the repository."""

    targets: str | None = Field(default=None, description="folder of one <request>.json per monitored request")

    @field_validator("targets")
    @classmethod
    def _targets_inside(cls, value: str | None) -> str | None:
        return None if value is None else _inside_repo(value)


class Config(Strict):
    git: GitConfig
    paths: PathsConfig = PathsConfig()
    proxmox: ProxmoxConfig
    site: SiteConfig
    state: StateConfig
    http: HttpConfig = HttpConfig()
    daemon: DaemonConfig = DaemonConfig()
    provision: ProvisionConfig = ProvisionConfig()
    guard: GuardConfig = GuardConfig()
    dns: DnsConfig | None = None
    prometheus: PrometheusConfig = PrometheusConfig()
    # Where the profiles live; the ones shipped with the reconciler when omitted.
    profiles: Path | None = None

    @model_validator(mode="after")
    def _generated_apart(self) -> Config:
        p = self.paths
        taken = {"paths.requests": p.requests, "paths.status": p.status, "paths.caddy": p.caddy, "paths.site": p.site}
        more = {
            "dns.hosts_file": self.dns.hosts_file if self.dns else None,
            "prometheus.targets": self.prometheus.targets,
        }
        for key, value in more.items():
            if value is None:
                continue
            mine = PurePosixPath(value)
            for other, path in taken.items():
                theirs = PurePosixPath(path)
                if mine == theirs or mine in theirs.parents or theirs in mine.parents:
                    raise ValueError(f"{key} ({value}) and {other} ({path}) overlap: each generated file has a place")
            taken[key] = value
        return self


def _resolve(base: Path, raw: dict[str, object]) -> None:
    """Make relative file paths relative to the config file, so a config can travel with its files."""
    for section, key in (
        ("git", "checkout"),
        ("git", "ssh_key"),
        ("proxmox", "ca_file"),
        ("state", "database"),
        ("provision.ssh", "key"),
        ("provision.ssh", "known_hosts"),
    ):
        block: object = raw
        for part in section.split("."):
            block = block.get(part) if isinstance(block, dict) else None
        if isinstance(block, dict) and isinstance(block.get(key), str) and not Path(block[key]).is_absolute():
            block[key] = str(base / block[key])
    if isinstance(raw.get("profiles"), str) and not Path(str(raw["profiles"])).is_absolute():
        raw["profiles"] = str(base / str(raw["profiles"]))
    git = raw.get("git")
    if isinstance(git, dict) and isinstance(git.get("remote"), str):
        remote = git["remote"]
        if is_local_remote(remote) and not Path(remote).is_absolute():
            git["remote"] = str(base / remote)


def load_config(path: Path) -> Config:
    """Read and validate the config file; raises ConfigError with one line per problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    try:
        raw = load_yaml(text)
    except ValueError as exc:
        raise ConfigError(str(path), [str(exc)]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["must be a mapping of sections (git, proxmox, site, state)"])
    _resolve(path.resolve().parent, raw)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(str(path), [str(p) for p in from_validation_error(exc)]) from None


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The secret in environment variable name, None when unset or empty; registered with the log scrubber.

    Surrounding whitespace is dropped (an env file with Windows line ends leaves a CR at the end); a value that
    still holds a control character is refused, naming the variable and never showing the value.
    """
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        return None
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ConfigError(
            "environment", [f"{name} holds a control character (a CR from an env file with Windows line ends?)"]
        )
    register_secret(value)
    return Secret(value)


def token_secret(environ: Mapping[str, str] | None = None) -> Secret:
    """The Proxmox API token secret, from the environment only."""
    secret = read_secret(TOKEN_SECRET_ENV, environ)
    if secret is None:
        raise ConfigError("environment", [f"{TOKEN_SECRET_ENV} is not set (the Proxmox API token secret)"])
    return secret


def _access(mode: int, mask: int) -> str:
    """How mode opens a file beyond its owner, within mask: e.g. "readable by its group and others"."""
    open_bits = mode & mask
    how = [word for bits, word in ((0o044, "readable"), (0o022, "writable")) if open_bits & bits]
    who = [word for bits, word in ((0o070, "its group"), (0o007, "others")) if open_bits & bits]
    return f"{' and '.join(how) or 'usable'} by {' and '.join(who)}"


def refuse_open_files(path: Path, config: Config) -> None:
    """Refuse to start when the config file is open to others, or a private key to anyone but its owner.

    The config may be read through its group (the README installs it root:reconciler 0640); a key may not, as
    ssh itself refuses. Raises ConfigError naming each file and the chmod that fixes it.
    """
    files: list[tuple[Path, str, int, str]] = [(path, "the config file", 0o007, "o-rwx")]
    if config.provision.ssh is not None:
        files.append((config.provision.ssh.key, "the SSH key (provision.ssh.key)", 0o077, "600"))
    if config.git.ssh_key is not None:
        files.append((config.git.ssh_key, "the Git SSH key (git.ssh_key)", 0o077, "600"))
    problems = []
    for file, what, mask, fix in files:
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except OSError:
            continue  # a missing key is said by the step that needs it, with its own words
        if mode & mask:
            problems.append(f"{what} {file} is {_access(mode, mask)} (mode {mode:04o}): run chmod {fix} {file}")
    if problems:
        raise ConfigError(str(path), problems)
