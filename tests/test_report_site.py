"""The site file (report.site): what the daemon publishes for `validate`, read back as it was written."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from conftest import PROFILES, SITE
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import BridgeConfig, Limits, Range, SiteConfig, load_config
from reconciler.demo import write_config
from reconciler.parse import load_yaml
from reconciler.report import site

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@st.composite
def ranges(draw: st.DrawFn, low: int = 0, high: int = 1_000_000) -> Range:
    a, b = sorted(draw(st.integers(low, high)) for _ in range(2))
    return Range(low=a, high=b)


@st.composite
def sites(draw: st.DrawFn) -> SiteConfig:
    bridges = {}
    for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
        network = IPv4Network((draw(st.integers(0, 2**32 - 1)), draw(st.integers(8, 30))), strict=False)
        gateway = network.network_address + 1 if draw(st.booleans()) else None
        bridges[name] = BridgeConfig(cidr=network, gateway=gateway)
    return SiteConfig(
        nodes=draw(st.lists(NAMES, min_size=1, max_size=4, unique=True)),
        storages=draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)),
        bridges=bridges,
        vlans=draw(st.lists(st.integers(1, 4094), max_size=4)),
        templates={n: f"local:vztmpl/{n}.tar.zst" for n in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))},
        limits=Limits(cores=draw(ranges()), memory=draw(ranges()), disk=draw(ranges())),
        vmid_range=draw(ranges(100, 999_999_999)),
        reserved_ips=[IPv4Address(n) for n in draw(st.lists(st.integers(0, 2**32 - 1), max_size=4))],
    )


@given(sites(), st.sets(st.sampled_from(sorted(PROFILES))))
def test_a_site_file_reads_back_as_the_values_and_profiles_it_was_written_from(
    values: SiteConfig, names: set[str]
) -> None:
    profiles = {n: PROFILES[n] for n in names}
    text = site.render(values, profiles)
    read = site.parse(text)
    assert read.site == values
    assert dict(read.profiles) == profiles
    assert all(read.profiles[n].packages == profiles[n].packages for n in names)
    assert site.is_generated(text.encode()) and site.render(read.site, read.profiles) == text


def test_the_site_file_says_who_writes_it_and_holds_nothing_of_the_proxmox_or_git_blocks(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, tmp_path / "infra.git", 48006, str(tmp_path / "ca.pem")))
    text = site.render(config.site, PROFILES)
    assert text.startswith("# Written by reconciler from its config") and "edits here are overwritten" in text
    doc = load_yaml(text)
    assert isinstance(doc, dict)
    assert list(doc) == ["apiVersion", "kind", *SiteConfig.model_fields, "profiles"]
    assert doc["vmid_range"] == [config.site.vmid_range.low, config.site.vmid_range.high]
    for value in (config.proxmox.host, config.proxmox.token_id, "48006", str(tmp_path), config.git.author_email):
        assert value not in text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("- a list\n", "must be a mapping"),
        ("apiVersion: reconciler/v1\nkind: Status\n", "is not a site file"),
        ("apiVersion: reconciler/v1\nkind: Site\nnodes: []\n", "nodes"),
        ("apiVersion: reconciler/v1\nkind: Site\nprofiles: [x]\n", "profiles: must map"),
    ],
)
def test_a_file_that_is_no_site_file_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        site.parse(text)


def test_a_profile_under_another_name_is_refused() -> None:
    text = site.render(SITE, {"other": PROFILES["web-app"]})
    with pytest.raises(ValueError, match=r"profiles\.other: holds profile web-app"):
        site.parse(text)
