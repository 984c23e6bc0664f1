"""Setup steps (pure): what each profile runs, in order, and request values only ever as data."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import pytest
from conftest import PROFILES, SITE, request_yaml

from reconciler.desired.setup import STEPS_DIR, script
from reconciler.desired.validate import validate
from reconciler.model.desired import Desired, RequestFile
from reconciler.model.vocab import StepName as S


def desired(name: str = "w", **changes: Any) -> Desired:
    file = RequestFile(f"requests/{name}.yaml", name, request_yaml(name, **changes).encode())
    valid, invalid = validate([file], PROFILES, SITE)
    assert invalid == [], invalid
    return valid[0]


def names(d: Desired) -> list[S]:
    return [s.name for s in d.setup.steps]


def args(d: Desired, step: S) -> tuple[str, ...]:
    return next(s.args for s in d.setup.steps if s.name == step)


def test_each_profile_runs_its_steps_in_order() -> None:
    base = [S.WAIT_NETWORK, S.APT_UPDATE, S.INSTALL_PACKAGES]
    assert names(desired(profile="generic-service")) == base
    assert names(desired(profile="monitoring-node")) == [*base, S.ENABLE_NODE_EXPORTER]
    assert names(desired(profile="static-website")) == [*base, S.PREPARE_DOCROOT, S.WRITE_WEB_SERVER_CONFIG]
    web_app = desired(profile="web-app", service={"domain": "app.example.com", "health": "/healthz"})
    assert names(web_app) == [
        *base,
        S.PREPARE_DOCROOT,
        S.WRITE_WEB_SERVER_CONFIG,
        S.ENABLE_NODE_EXPORTER,
        S.CHECK_HEALTH,
    ]
    assert args(web_app, S.CHECK_HEALTH) == ("8080", "/healthz", "60")


def test_packages_come_only_from_the_profiles_sets() -> None:
    assert args(desired(profile="static-website"), S.INSTALL_PACKAGES) == (
        "ca-certificates",
        "curl",
        "git",
        "htop",
        "less",
        "vim-tiny",
        "nginx",
    )
    assert args(desired(profile="static-website", web_server="apache"), S.INSTALL_PACKAGES)[-1] == "apache2"
    docker = desired(package_sets=["docker"])
    assert args(docker, S.INSTALL_PACKAGES)[-1] == "docker.io"
    assert names(docker)[-1] == S.ENABLE_DOCKER
    assert docker.setup.node_features == ("nesting=1", "keyctl=1")
    assert desired().setup.node_features == ()


def test_monitoring_on_means_node_exporter_installed_and_the_tag_set() -> None:
    for d in (desired(monitoring=True), desired(package_sets=["node-exporter"])):
        assert d.monitoring
        assert "prometheus-node-exporter" in args(d, S.INSTALL_PACKAGES)
        assert S.ENABLE_NODE_EXPORTER in names(d)
    assert S.ENABLE_NODE_EXPORTER not in names(desired(profile="web-app", monitoring=False))


HOSTILE = "$(reboot) `id` '; rm -rf / #\n<script>alert(1)</script>"


def test_request_values_never_reach_a_script_only_arguments_and_escaped_files() -> None:
    plain = desired("site", profile="static-website", service={"domain": "site.example.com"})
    hostile = desired("site", profile="static-website", description=HOSTILE, service={"domain": "site.example.com"})
    # The scripts are the shipped ones, whatever the request says; only the arguments differ.
    assert [s.script for s in plain.setup.steps] == [s.script for s in hostile.setup.steps]
    page = base64.b64decode(args(hostile, S.PREPARE_DOCROOT)[1]).decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "$(reboot) `id` &#x27;; rm -rf / #" in page  # only text on a page
    # In arguments it travels base64-encoded, as one word each: no shell on the way reads it.
    assert not any("reboot" in a for step in hostile.setup.steps for a in step.args)


def test_the_site_serves_the_domain_on_the_port_with_the_health_path() -> None:
    d = desired("app", profile="web-app", service={"domain": "app.example.com", "port": 8081, "health": "/up"})
    site = base64.b64decode(args(d, S.WRITE_WEB_SERVER_CONFIG)[1]).decode()
    assert "listen 8081 default_server;" in site
    assert "server_name app.example.com;" in site
    assert "root /var/www/app;" in site
    assert "location = /up {" in site


def test_the_digest_changes_with_what_setup_would_do_and_only_then() -> None:
    one = desired(profile="static-website", service={"domain": "a.example.com"})
    assert one.setup.digest == desired(profile="static-website", service={"domain": "a.example.com"}).setup.digest
    assert (
        one.setup.digest
        == desired(
            profile="static-website",
            service={"domain": "a.example.com"},
            resources={"cores": 2, "memory": 512, "disk": 8},
        ).setup.digest
    )
    assert one.setup.digest != desired(profile="static-website", service={"domain": "b.example.com"}).setup.digest
    assert desired().setup.digest != desired(package_sets=["docker"]).setup.digest


@pytest.mark.parametrize("body", sorted(p.name for p in STEPS_DIR.glob("*.sh") if p.name != "prelude.sh"))
def test_every_shipped_script_is_valid_posix_shell(body: str) -> None:
    result = subprocess.run(["sh", "-n"], input=script(body), text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("health", ["/~status", "/a%20b", "/x/y-z_1.html"])
def test_every_health_path_the_request_format_allows_is_carried(health: str) -> None:
    d = desired(profile="web-app", service={"domain": "app.example.com", "health": health})
    assert args(d, S.CHECK_HEALTH)[1] == health
