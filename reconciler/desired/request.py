"""The request file format, `requests/<name>.yaml`: one workload per file (published in schemas/)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface
from typing import Annotated, Any, Literal

import idna
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from reconciler.desired.profile import Profile
from reconciler.parse import Between, quoted

API_VERSION = "reconciler/v1"
# RFC 1123 label: what Proxmox accepts as a hostname and what makes a safe file stem and tag.
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DOMAIN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"

Label = Annotated[str, Field(pattern=DNS_LABEL)]
Tag = Annotated[str, Field(pattern=r"^[a-z0-9_][a-z0-9_+.-]{0,63}$")]
# Free text may hold tabs and line breaks, nothing else that is invisible or moves the cursor: no escape
# sequences for a terminal, no right-to-left override that makes a reviewer read another text.
_TEXT_ALLOWED = {"\t", "\n"}
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _ascii_domain(value: object) -> object:
    """An internationalised domain is refused with the ASCII (xn--) form to write instead: only that form is
    unambiguous to a reviewer, where a Cyrillic a (U+0430) looks like a Latin one."""
    if not isinstance(value, str) or value.isascii():
        return value
    try:
        ascii_form = idna.encode(value, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValueError(f"{quoted(value)} is not a valid domain name (it holds characters no domain can)") from None
    raise ValueError(f"{quoted(value)} is not ASCII: write an internationalised domain in its ASCII form, {ascii_form}")


def _valid_a_labels(value: str) -> str:
    """Labels in the ASCII form of an internationalised name (xn--) must decode: Caddy and DNS refuse them else."""
    for label in value.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(f"{quoted(label)} is not a valid internationalised (xn--) label") from None
    return value


def _plain_text(value: str) -> str:
    """Free text without control or invisible formatting characters; tabs and line breaks stay."""
    for position, char in enumerate(value, 1):
        if char not in _TEXT_ALLOWED and unicodedata.category(char) in _INVISIBLE:
            raise ValueError(
                f"holds the control or invisible character U+{ord(char):04X} at character {position};"
                " only printable text, tabs and line breaks are allowed"
            )
    return value


Domain = Annotated[
    Annotated[str, StringConstraints(pattern=DOMAIN, max_length=253)],
    BeforeValidator(_ascii_domain),
    AfterValidator(_valid_a_labels),
]
Text = Annotated[Annotated[str, StringConstraints(max_length=1024)], AfterValidator(_plain_text)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(Strict):
    cores: int = Field(description="CPU cores")
    memory: int = Field(description="RAM in MB")
    disk: int = Field(description="root disk in GB; it can grow in place, never shrink")
    swap: Annotated[int, Between(0, 1048576)] | None = Field(
        default=None, description="swap in MB, containers only (default 512); a VM's swap lives on its disk"
    )


class Network(Strict):
    mode: Literal["dhcp", "static"]
    address: IPv4Interface | None = Field(default=None, description="CIDR, static mode only")
    gateway: IPv4Address | None = Field(default=None, description="defaults to the bridge's gateway")
    bridge: str
    vlan: Annotated[int, Between(1, 4094)] | None = None

    @model_validator(mode="after")
    def _address_matches_mode(self) -> Network:
        if self.mode == "static" and self.address is None:
            raise ValueError("address is required when mode is static")
        if self.mode == "dhcp" and (self.address is not None or self.gateway is not None):
            raise ValueError("address and gateway are for mode static; DHCP assigns them")
        return self


class Service(Strict):
    domain: Domain | None = None
    expose: StrictBool = Field(default=False, description="write the Caddy service YAML")
    visibility: Literal["public", "internal"] = "internal"
    port: Annotated[int, Between(1, 65535)] | None = Field(default=None, description="defaults from the profile")
    health: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/%-]*$", max_length=200)] | None = None

    @model_validator(mode="after")
    def _expose_needs_domain(self) -> Service:
        if self.expose and self.domain is None:
            raise ValueError("expose: true needs a domain")
        return self


# Prometheus's label names; the ones the reconciler sets itself and the `__` prefix Prometheus keeps are refused.
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
RESERVED_LABELS = frozenset(
    {"pve_id", "pve_node", "pve_vmid", "pve_type", "pve_name", "pve_tags", "managed_by", "exporter", "request"}
)


def label_problem(name: str) -> str | None:
    """Why a request may not set a scrape target label of this name, in plain words; None when it may."""
    if not re.fullmatch(LABEL_NAME, name):
        return f"label {quoted(name)}: may use a-z, A-Z, 0-9 and '_', not starting with a digit (Prometheus's rule)"
    if name.startswith("__"):
        return f"label {quoted(name)}: names starting with '__' are Prometheus's own"
    if name in RESERVED_LABELS:
        return f"label {quoted(name)}: the reconciler sets it itself ({', '.join(sorted(RESERVED_LABELS))})"
    return None


def _label_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if (problem := label_problem(name)) is not None:
            raise ValueError(problem)
    return value


LabelValue = Annotated[str, StringConstraints(max_length=256), AfterValidator(_plain_text)]


class Monitoring(Strict):
    enabled: StrictBool = Field(default=True, description="install node exporter and write its scrape target")
    exporters: list[Label] = Field(
        default=[], description="more scrape targets, by name, from the profile's exporters (name: port)"
    )
    labels: Annotated[dict[str, LabelValue], AfterValidator(_label_names)] = Field(
        default={}, max_length=32, description="labels of your own on the scrape targets"
    )


# The OpenSSH public key types cloud-init writes into authorized_keys.
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def public_key_problem(value: str) -> str | None:
    """Why value is not one OpenSSH public key line (`type base64 [comment]`), in plain words; None when it is."""
    if "PRIVATE KEY" in value:
        return "is a private key: give the public key (the one line of the .pub file), and never commit a private one"
    if "\n" in value or "\r" in value:
        return "holds a line break: give one public key per item"
    parts = value.split(None, 2)
    if not parts or parts[0] not in SSH_KEY_TYPES:
        return f"is not an OpenSSH public key: it must start with its type ({', '.join(SSH_KEY_TYPES)})"
    if len(parts) < 2:
        return f"holds the type {parts[0]} but not the key after it"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key after its type is not base64"
    # The key's data begins with its own type, length-prefixed: a key pasted under the wrong type is caught.
    size = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + size or blob[4 : 4 + size] != parts[0].encode():
        return f"the key's data is not a {parts[0]} key (cut short, or another key's type)"
    return None


def _public_key(value: str) -> str:
    if (problem := public_key_problem(value)) is not None:
        raise ValueError(problem)
    return value.strip()


PublicKey = Annotated[
    Annotated[str, StringConstraints(max_length=16384)], AfterValidator(_plain_text), AfterValidator(_public_key)
]


class CloudInit(Strict):
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = Field(
        description="the user cloud-init creates, with the keys below and sudo"
    )
    ssh_keys: list[PublicKey] = Field(default=[], max_length=32, description="OpenSSH public keys, one per item")
    nameserver: IPv4Address | None = Field(default=None, description="default: the node's resolver settings")
    search_domain: Domain | None = Field(default=None, description="default: the node's resolver settings")


class Clone(Strict):
    full: StrictBool = Field(
        default=True, description="false: a linked clone (on the template's storage), where the template allows it"
    )


class Request(Strict):
    """One workload: what the operator wants Proxmox to run."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["lxc", "vm"]
    name: Label
    profile: str
    hostname: Label | None = Field(default=None, description="defaults to name")
    description: Text = ""
    node: str
    storage: str
    resources: Resources
    start: StrictBool = True
    network: Network
    service: Service | None = None
    monitoring: StrictBool | Monitoring | None = Field(
        default=None,
        description="profile default when omitted; true (or a mapping) installs and enables node exporter and writes"
        " its scrape target",
    )
    package_sets: list[Label] = Field(
        default=[], description="optional package sets the profile offers, by name (never package names)"
    )
    web_server: Literal["nginx", "apache"] | None = Field(
        default=None, description="for profiles with a web server; the profile's default when omitted"
    )
    tags: list[Tag] = Field(default=[], description="Proxmox tags of your own, beside the reconciler's")
    state: Literal["present", "stopped", "absent"] = Field(
        default="present",
        description="present: exists (running unless start: false); stopped: shut down; absent: destroyed",
    )
    drift: Literal["correct", "report"] = Field(
        default="correct", description="what to do with a field changed by hand in Proxmox: put it back, or report it"
    )
    protected: StrictBool = Field(default=False, description="Proxmox's protection flag: blocks destruction")
    vmid: Annotated[int, Between(100, 999999999)] | None = Field(
        default=None, description="the guest's VMID; chosen from the approved range when omitted"
    )
    adopt: StrictBool = Field(
        default=False, description="take the existing guest `vmid` under management; differences are only reported"
    )
    migrate: StrictBool = Field(
        default=False, description="a change of node migrates the container (restart mode) instead of being refused"
    )
    dns: StrictBool = Field(default=True, description="DNS records for the hostname and domain; false opts out")
    cloud_init: CloudInit | None = Field(default=None, description="kind vm: what cloud-init sets up (required)")
    clone: Clone | None = Field(default=None, description="kind vm: how it is cloned from its template")

    @model_validator(mode="after")
    def _adopt_needs_vmid(self) -> Request:
        if self.adopt and self.vmid is None:
            raise ValueError("adopt: true needs the vmid of the guest to adopt")
        return self

    @property
    def host(self) -> str:
        return self.hostname or self.name

    @property
    def monitor(self) -> Monitoring | None:
        """The monitoring the request asks for: None when it leaves it to its profile."""
        if isinstance(self.monitoring, bool):
            return Monitoring(enabled=self.monitoring)
        return self.monitoring


def json_schema(profiles: Mapping[str, Profile]) -> str:
    """The JSON Schema of a request file for these profiles (the shipped ones: schemas/request.schema.json).

    Per profile, it knows the optional package sets a request may name and whether it may choose a web server.
    """
    schema = Request.model_json_schema()
    schema["properties"]["profile"]["enum"] = sorted(profiles)
    rules: list[dict[str, Any]] = []
    for name, profile in sorted(profiles.items()):
        offered = profile.optional_package_sets
        then: dict[str, Any] = {
            "package_sets": {"items": {"enum": offered}} if offered else {"maxItems": 0},
            "web_server": {"enum": list(profile.web_servers)} if profile.web_servers else {"not": {}},
        }
        rules.append({"if": {"properties": {"profile": {"const": name}}}, "then": {"properties": then}})
    schema["allOf"] = rules
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://reconciler.invalid/schemas/request.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
