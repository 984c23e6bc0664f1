"""Profiles: the four shipped ones load; a profile cannot ask for what a token may not set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.model.errors import ConfigError


def test_the_four_profiles_of_the_spec_and_a_vm_profile_ship() -> None:
    profiles = load_profiles(builtin_profiles_dir(), {"debian-12"})
    assert sorted(profiles) == ["generic-service", "monitoring-node", "static-website", "vm-generic", "web-app"]
    vm = profiles["vm-generic"]
    assert (vm.supported_kind, vm.template, vm.agent) == ("vm", "debian-12-ci", True)
    assert not profiles["generic-service"].allow_public_exposure
    assert profiles["monitoring-node"].monitoring and not profiles["monitoring-node"].allow_domain
    assert profiles["static-website"].default_web_server == "nginx"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "profiles"
    shutil.copytree(builtin_profiles_dir(), target)
    return target


def test_a_feature_only_root_may_set_is_refused(copy: Path) -> None:
    path = copy / "generic-service.yaml"
    path.write_text(path.read_text().replace("features: {nesting: true}", "features: {nesting: true, keyctl: true}"))
    with pytest.raises(ConfigError, match=r"generic-service\.yaml: features\.keyctl: unknown key"):
        load_profiles(copy)


def test_package_sets_and_templates_must_be_known(copy: Path) -> None:
    path = copy / "web-app.yaml"
    path.write_text(path.read_text().replace("package_sets: [base]", "package_sets: [base, left-pad]"))
    with pytest.raises(ConfigError) as caught:
        load_profiles(copy, {"debian-13"})
    assert "web-app.yaml: package sets not in package-sets.yaml: left-pad" in caught.value.problems
    assert "static-website.yaml: template: 'debian-12' is not in site.templates" in caught.value.problems
