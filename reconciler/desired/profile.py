"""Profiles (`profiles/*.yaml`): the few vetted shapes a workload may take."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from reconciler.desired.setup import NODE_EXPORTER_SET, WEB_SERVERS
from reconciler.model.errors import ConfigError
from reconciler.parse import from_validation_error, load_yaml

PACKAGE_SETS_FILE = "package-sets.yaml"
NODE_EXPORTER = "node"  # the exporter monitoring installs, and its port
NODE_EXPORTER_PORT = 9100
# The only things a profile may ask to run after create; requests can name none of them. Node exporter and
# Docker are enabled whenever monitoring is on or the docker set is chosen, listed or not.
PostCreateAction = Literal[
    "install-packages",
    "prepare-docroot",
    "write-web-server-config",
    "enable-node-exporter",
    "enable-docker",
]


class Features(BaseModel):
    """Proxmox container features. Only nesting: an API token may set no other (keyctl, fuse are root@pam's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    nesting: StrictBool = False


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
    description: str
    supported_kind: Literal["lxc", "vm"]
    template: str = Field(description="a key of site.templates (lxc) or of site.vm_templates (vm)")
    # vm: whether the template runs the QEMU guest agent. Without it a DHCP VM's address cannot be read, and
    # nothing waits for an agent that will never answer.
    agent: StrictBool = False
    package_sets: list[str] = Field(default=[], description="sets of package-sets.yaml always installed")
    optional_package_sets: list[str] = Field(default=[], description="sets a request may add by naming them")
    default_web_server: Literal["nginx", "apache", "none"] = "none"
    default_port: int | None = Field(default=None, ge=1, le=65535)
    allow_domain: StrictBool = False
    allow_public_exposure: StrictBool = False
    monitoring: StrictBool = False
    # Scrape targets a request may add by name beside node exporter's (its own /metrics, say): name -> port.
    exporters: dict[Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")], int] = {}
    post_create_actions: list[PostCreateAction] = []
    features: Features = Features()
    unprivileged: Literal[True] = True
    # Set name -> packages, for every set the profile can use; filled in from package-sets.yaml, never read
    # from the profile file.
    packages: dict[str, list[str]] = Field(default={}, exclude=True)

    @property
    def web_servers(self) -> tuple[str, ...]:
        """The web servers a request may choose: none, or both with the profile's default first."""
        if self.default_web_server == "none":
            return ()
        return tuple(dict.fromkeys([self.default_web_server, *WEB_SERVERS]))

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.allow_public_exposure and not self.allow_domain:
            raise ValueError("allow_public_exposure needs allow_domain")
        if NODE_EXPORTER in self.exporters:
            raise ValueError(f"exporters: {NODE_EXPORTER} is node exporter's, which monitoring brings on port 9100")
        if any(not 1 <= port <= 65535 for port in self.exporters.values()):
            raise ValueError("exporters: ports lie in 1..65535")
        if self.supported_kind == "vm" and self.features.nesting:
            raise ValueError("features: are container features; a VM profile has none")
        if self.supported_kind == "lxc" and self.agent:
            raise ValueError("agent: is for VM profiles (supported_kind: vm)")
        return self


def builtin_profiles_dir() -> Path:
    """The profiles shipped with the reconciler (repository root in a checkout, package data when installed)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_data" / "profiles"
    return packaged if packaged.is_dir() else here.parent / "profiles"


def load_profiles(directory: Path, templates: set[str] | None = None) -> dict[str, Profile]:
    """Read every profile in directory; raises ConfigError naming each bad file and field.

    templates, when given, are the site's: a container profile's template must be one. A VM profile's template
    missing from site.vm_templates refuses only the requests that use it: a site without VMs needs none."""
    problems: list[str] = []
    sets_path = directory / PACKAGE_SETS_FILE
    try:
        package_sets = load_yaml(sets_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(sets_path), [str(exc)]) from None
    if not isinstance(package_sets, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in package_sets.values()
    ):
        raise ConfigError(str(sets_path), ["must map each set name to a list of package names"])
    profiles: dict[str, Profile] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == PACKAGE_SETS_FILE:
            continue
        try:
            raw = load_yaml(path.read_text(encoding="utf-8"))
            if isinstance(raw, dict) and "packages" in raw:
                raise ValueError(f"packages: name sets of {PACKAGE_SETS_FILE} in package_sets instead")
            profile = Profile.model_validate(raw)
        except OSError as exc:
            problems.append(f"{path.name}: cannot read: {exc.strerror}")
            continue
        except ValueError as exc:  # ValidationError is a ValueError too
            found = from_validation_error(exc) if isinstance(exc, ValidationError) else [str(exc)]
            problems += [f"{path.name}: {p}" for p in found]
            continue
        if profile.name != path.stem:
            problems.append(f"{path.name}: name: must equal the file name ({path.stem})")
        # A web server's set is named after it; monitoring brings node exporter to any profile.
        usable = [*profile.package_sets, *profile.optional_package_sets, *profile.web_servers, NODE_EXPORTER_SET]
        unknown = [s for s in dict.fromkeys(usable) if s not in package_sets]
        if unknown:
            problems.append(f"{path.name}: package sets not in {PACKAGE_SETS_FILE}: {', '.join(unknown)}")
        profile = profile.model_copy(update={"packages": {s: package_sets[s] for s in usable if s in package_sets}})
        if profile.supported_kind == "lxc" and templates is not None and profile.template not in templates:
            problems.append(f"{path.name}: template: {profile.template!r} is not in site.templates")
        profiles[profile.name] = profile
    if not profiles and not problems:
        problems.append("no profiles found")
    if problems:
        raise ConfigError(str(directory), problems)
    return profiles
