"""The site file (`site.yaml` at the repository root): the site's approved values and the profiles, as the daemon
enforces them, published so that `reconciler validate` checks a request offline by the same rules.

It holds only what the request checks read (config.site and the profiles); never the proxmox or git blocks, no
host, port, token or path on the daemon's machine. The profiles belong in it: a request names one, and the
daemon's may be its own (config.profiles) or those shipped with another version than the one CI runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from reconciler.config import Limits, Range, SiteConfig
from reconciler.desired.profile import Profile
from reconciler.parse import dump_yaml, from_validation_error, load_yaml

MARK = b"# Written by reconciler from its config"
HEADER = (
    "# Written by reconciler from its config: the site's approved values and profiles, for `reconciler validate`.\n"
    "# Change them in the daemon's config; edits here are overwritten.\n"
)
API_VERSION = "reconciler/v1"
KIND = "Site"


@dataclass(frozen=True)
class SiteValues:
    """What the site file holds: the approved values and the profiles by name."""

    site: SiteConfig
    profiles: Mapping[str, Profile]


def render(site: SiteConfig, profiles: Mapping[str, Profile]) -> str:
    """The site file's text; a pure function of its inputs, so a pass that changes nothing commits nothing."""
    values = site.model_dump(mode="json")
    # Ranges as the config writes them: [low, high].
    values["vmid_range"] = _pair(site.vmid_range)
    values["limits"] = {key: _pair(getattr(site.limits, key)) for key in Limits.model_fields}
    doc: dict[str, object] = {"apiVersion": API_VERSION, "kind": KIND, **values}
    # Fresh lists: a list shared by two profiles would be written once with an anchor and an alias.
    doc["profiles"] = {
        name: {**p.model_dump(mode="json"), "packages": {k: list(v) for k, v in p.packages.items()}}
        for name, p in sorted(profiles.items())
    }
    return HEADER + dump_yaml(doc)


def _pair(value: Range) -> list[int]:
    return [value.low, value.high]


def parse(text: str | bytes) -> SiteValues:
    """The values of a site file; raises ValueError with one line per problem."""
    doc = load_yaml(text)
    if not isinstance(doc, dict):
        raise ValueError("must be a mapping of the site's values (nodes, storages, bridges, ...)")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ValueError(f"is not a site file (apiVersion {API_VERSION}, kind {KIND})")
    values = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "profiles")}
    raw_profiles = doc.get("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise ValueError("profiles: must map each profile's name to its definition")
    problems: list[str] = []
    site = None
    try:
        site = SiteConfig.model_validate(values)
    except ValidationError as exc:
        problems += [str(p) for p in from_validation_error(exc)]
    profiles: dict[str, Profile] = {}
    for name, raw in raw_profiles.items():
        try:
            profiles[str(name)] = Profile.model_validate(raw)
        except ValidationError as exc:
            problems += [
                f"profiles.{name}.{p}" if p.field else f"profiles.{name}: {p.reason}"
                for p in from_validation_error(exc)
            ]
            continue
        if profiles[str(name)].name != name:
            problems.append(f"profiles.{name}: holds profile {profiles[str(name)].name}")
    if problems or site is None:
        raise ValueError("; ".join(problems))
    return SiteValues(site, profiles)


def is_generated(text: bytes) -> bool:
    """Whether the reconciler wrote this file (a hand-written one is never overwritten)."""
    return text.startswith(MARK)
