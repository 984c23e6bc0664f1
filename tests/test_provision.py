"""Setup inside containers, end to end: real Git, the fake Proxmox VE, and real Debian roots (debootstrap) that a
`pct` stand-in enters with chroot, reached locally and through a real sshd with the node's forced command."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FakeCluster, OperatorClone, request_yaml, static, with_provision

from reconciler.desired.profile import builtin_profiles_dir
from reconciler.runtime import Runtime, open_runtime

WORKLOADS = {
    "blog": dict(
        profile="static-website",
        network=static("192.168.50.210/24"),
        service={"domain": "blog.example.com", "expose": True, "port": 80},
    ),
    "tools": dict(profile="generic-service", node="pve2", network=static("192.168.50.211/24")),
    "metrics": dict(profile="monitoring-node", node="pve3", network=static("192.168.50.212/24")),
    "app": dict(
        profile="web-app",
        network=static("192.168.50.213/24"),
        service={"domain": "app.example.com", "expose": True, "health": "/healthz"},
    ),
}


def in_container(containers: Any, vmid: int, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(containers.exec_argv(vmid, list(command)), capture_output=True, text=True, timeout=60)


def job_log(runtime: Runtime, job_id: int) -> list[str]:
    return [line.message for line in runtime.store.logs(job_id)]


def reconcile_once(config: Any, env: dict[str, str]) -> Any:
    """`reconciler once` with this config: every pass until nothing it started still runs."""
    runtime = open_runtime(config, env)
    try:
        return runtime.reconciler.once()
    finally:
        runtime.close()


def job_log_of(runtime: Runtime, job_id: int | None) -> list[str]:
    """The log of a job, read after the runtime closed."""
    from reconciler.gateways.sqlite import JobStore

    assert job_id is not None
    store = JobStore(Path(runtime.store.path))
    try:
        return [line.message for line in store.logs(job_id)]
    finally:
        store.close()


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest, chroot_pct: Path) -> dict[str, Any]:
    """A provision block for either transport; ssh goes through sshd and node/reconciler-pct."""
    if request.param == "local":
        return {"transport": "local", "local": {"pct": str(chroot_pct)}}
    return dict(request.getfixturevalue("chroot_sshd").provision())


@pytest.fixture
def provisioning(config_path: Path, env: dict[str, str], transport: dict[str, Any]) -> Iterator[Runtime]:
    runtime = open_runtime(with_provision(config_path, {**transport, "parallel_per_node": 2}), env)
    yield runtime
    runtime.close()


def test_each_profile_is_set_up_and_only_then_ready_and_a_second_run_changes_nothing(
    operator: OperatorClone, cluster: FakeCluster, provisioning: Runtime, containers: Any
) -> None:
    for name, fields in WORKLOADS.items():
        operator.write(f"requests/{name}.yaml", request_yaml(name, **fields))
    operator.push("four workloads")

    report = provisioning.reconciler.once()

    statuses = report.statuses
    for name in WORKLOADS:
        s = statuses[name]
        assert (s.phase, s.applied, s.healthy, s.setup) == ("Ready", True, True, "done"), (name, s)
    assert statuses["app"].message.endswith("; set up (7 steps, /healthz answers)")
    vmid = {name: statuses[name].vmid for name in WORKLOADS}
    assert all(isinstance(v, int) for v in vmid.values())

    # static-website: nginx serves the default page of the domain's site, and its configuration checks.
    root = containers.root(vmid["blog"])
    site = "/etc/nginx/sites-available/reconciler-blog.conf"
    assert (root / "etc/nginx/sites-enabled/reconciler-blog.conf").readlink() == Path(site)
    assert "server_name blog.example.com;" in (root / site.lstrip("/")).read_text()
    assert not (root / "etc/nginx/sites-enabled/default").exists()
    assert in_container(containers, vmid["blog"], "nginx", "-t").returncode == 0
    page = in_container(containers, vmid["blog"], "curl", "-fsS", "http://127.0.0.1/").stdout
    assert "<h1>blog.example.com</h1>" in page
    # monitoring-node: node exporter installed, enabled at boot, and answering.
    assert in_container(containers, vmid["metrics"], "systemctl", "is-enabled", "prometheus-node-exporter").stdout == (
        "enabled\n"
    )
    metrics = in_container(containers, vmid["metrics"], "curl", "-fsS", "http://127.0.0.1:9100/metrics").stdout
    assert "node_exporter_build_info" in metrics
    # generic-service: base utilities; web-app: its health path answers through nginx.
    assert in_container(containers, vmid["tools"], "git", "--version").returncode == 0
    assert in_container(containers, vmid["app"], "curl", "-fsS", "http://127.0.0.1:8080/healthz").stdout == "ok\n"

    # The job log tells the steps apart and keeps what they printed.
    log = job_log(provisioning, statuses["metrics"].job or 0)
    assert log[1] == "step 1/4 wait-network: wait for the container's network"
    assert any(line.startswith("step 4/4 enable-node-exporter") for line in log)
    assert any("Setting up prometheus-node-exporter" in line for line in log)
    operator.pull()
    assert operator.read("caddy/services/app.example.com.yaml") is not None
    assert operator.yaml("status/app.yaml")["healthy"] is True

    # Nothing changed: no job, no commit.
    again = provisioning.reconciler.once()
    assert (again.started, again.commit) == ({}, None)

    # The same steps run again in a set-up container change nothing and succeed.
    before = fingerprint(root)
    db = sqlite3.connect(provisioning.store.path)
    with db:
        db.execute("DELETE FROM setups WHERE request = 'blog'")
    db.close()
    rerun = provisioning.reconciler.once()
    assert set(rerun.started) == {"blog"}
    assert rerun.statuses["blog"].phase == "Ready"
    assert fingerprint(root) == before
    log = job_log(provisioning, rerun.started["blog"])
    assert "all 7 packages already installed" in log
    assert "/var/www/blog/index.html exists; left as it is" in log
    assert "nginx already running with this configuration" in log


def fingerprint(root: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file setup writes (the site, the page, nginx's configuration)."""
    out = {}
    for top in ("etc/nginx", "var/www"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                info = path.stat()
                out[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return out


def test_a_failing_step_fails_its_own_request_with_the_step_and_its_output_and_the_rest_are_set_up(
    operator: OperatorClone, config_path: Path, env: dict[str, str], chroot_pct: Path, containers: Any, tmp_path: Path
) -> None:
    # A profile of the operator's whose package set names a package Debian does not have.
    profiles = tmp_path / "profiles"
    shutil.copytree(builtin_profiles_dir(), profiles)
    sets = yaml.safe_load((profiles / "package-sets.yaml").read_text())
    (profiles / "package-sets.yaml").write_text(yaml.safe_dump({**sets, "typo": ["no-such-package-reconciler"]}))
    broken = yaml.safe_load((profiles / "generic-service.yaml").read_text())
    (profiles / "broken.yaml").write_text(yaml.safe_dump({**broken, "name": "broken", "package_sets": ["typo"]}))
    config_path.write_text(config_path.read_text() + f"profiles: {profiles}\n")
    config = with_provision(config_path, {"transport": "local", "local": {"pct": str(chroot_pct)}})
    operator.write("requests/fine.yaml", request_yaml("fine", network=static("192.168.50.220/24")))
    operator.write(
        "requests/missing.yaml", request_yaml("missing", profile="broken", network=static("192.168.50.222/24"))
    )
    operator.push()

    runtime = open_runtime(config, env)
    try:
        report = runtime.reconciler.once()
    finally:
        runtime.close()

    fine, missing = report.statuses["fine"], report.statuses["missing"]
    assert (fine.phase, fine.healthy) == ("Ready", True)
    assert (missing.phase, missing.applied, missing.healthy, missing.setup) == ("Failed", True, False, "failed")
    assert missing.message == (
        "setup step install-packages failed: exit status 100: E: Unable to locate package no-such-package-reconciler"
    )
    operator.pull()
    status = operator.yaml("status/missing.yaml")
    assert status["output"][-1] == "E: Unable to locate package no-such-package-reconciler"
    assert (status["applied"], status["healthy"], status["setup"]) == (True, False, "failed")
    log = job_log_of(runtime, missing.job)
    assert "step 3/3 install-packages: install typo (no-such-package-reconciler)" in log
    assert log[-1] == (
        "setup step install-packages failed: exit status 100: E: Unable to locate package no-such-package-reconciler"
    )


def test_a_step_that_hangs_is_killed_at_its_timeout_and_fails_its_request(
    operator: OperatorClone, config_path: Path, env: dict[str, str], chroot_pct: Path, containers: Any
) -> None:
    # The container's apt-get never ends, as with a mirror that accepts the connection and never answers.
    hung = containers.root(200) / "usr/local/sbin/apt-get"
    hung.write_text("#!/bin/sh\necho 'apt-get: waiting for a mirror that never answers'\nexec sleep 600\n")
    hung.chmod(0o755)
    provision = {"transport": "local", "local": {"pct": str(chroot_pct)}, "step_timeout": 10}
    operator.write("requests/hangs.yaml", request_yaml("hangs", network=static("192.168.50.221/24")))
    operator.push()
    report = reconcile_once(with_provision(config_path, provision), env)

    hangs = report.statuses["hangs"]
    assert hangs.phase == "Failed"
    assert (
        hangs.message == "setup step apt-update failed: took longer than provision.step_timeout (10 s); it was killed"
    )
    assert hangs.output == ("apt-get: waiting for a mirror that never answers",)
    left = subprocess.run(["ip", "netns", "pids", containers.netns(200)], capture_output=True, text=True).stdout
    assert left.split() == [], "the hung step still runs"


def test_docker_gets_keyctl_from_the_node_before_the_first_start_and_a_failing_engine_says_why(
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    env: dict[str, str],
    chroot_sshd: Any,
    containers: Any,
) -> None:
    operator.write(
        "requests/dock.yaml", request_yaml("dock", package_sets=["docker"], network=static("192.168.50.230/24"))
    )
    operator.push()
    report = reconcile_once(with_provision(config_path, chroot_sshd.provision()), env)

    [post] = cluster.create_posts()
    assert b"start=0" in post[2] and b"features=nesting%3D1" in post[2]  # the token sets nesting only
    calls = containers.calls()
    assert calls[0] == ["set", "200", "--features", "nesting=1,keyctl=1"]  # before anything ran inside
    assert containers.features(200) == "nesting=1,keyctl=1"
    [ct] = cluster.containers()
    assert ct.status == "running"
    assert in_container(containers, 200, "dpkg-query", "-W", "-f=${Status}", "docker.io").stdout == (
        "install ok installed"
    )
    # No Docker engine can run in the test's chroot: the status shows the engine's own words, not a guess.
    dock = report.statuses["dock"]
    assert dock.phase == "Failed"
    assert dock.message == (
        "setup step enable-docker failed: exit status 1: docker info: ERROR: Cannot connect to the Docker daemon at"
        " unix:///var/run/docker.sock. Is the docker daemon running?"
    )
    assert any("the Docker engine does not answer" in line for line in dock.output)


def test_docker_over_ssh_as_a_user_that_cannot_set_keyctl_fails_and_says_how_to_fix_it(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    operator.write(
        "requests/dock.yaml", request_yaml("dock", package_sets=["docker"], network=static("192.168.50.231/24"))
    )
    operator.push()
    provision = {
        "transport": "ssh",
        "ssh": {"user": "deploy", "key": str(tmp_path / "k"), "known_hosts": str(tmp_path / "kh")},
    }
    report = reconcile_once(with_provision(config_path, provision), env)
    dock = report.statuses["dock"]
    assert dock.phase == "Failed"
    assert dock.message == (
        "set container features failed: Docker needs the container features nesting=1,keyctl=1, which only root may"
        " set with pct: connect as root (provision.ssh.user: root) or allow `sudo -n pct` (provision.ssh.sudo: true)"
    )
    [ct] = cluster.containers()
    assert ct.status == "stopped"  # never started without the features Docker needs


def test_sigterm_stops_a_running_setup_which_is_recorded_as_interrupted(
    operator: OperatorClone, config_path: Path, chroot_pct: Path, containers: Any, daemon: Any
) -> None:
    hung = containers.root(200) / "usr/local/sbin/apt-get"
    hung.write_text("#!/bin/sh\necho 'apt-get: waiting'\nexec sleep 600\n")
    hung.chmod(0o755)
    config = with_provision(config_path, {"transport": "local", "local": {"pct": str(chroot_pct)}})
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.240/24")))
    operator.push()
    daemon.configure(stop_grace=1).start()

    def log_of_setup() -> list[str]:
        db = sqlite3.connect(config.state.database)
        try:
            rows = db.execute(
                "SELECT message FROM job_logs JOIN jobs ON jobs.id = job_logs.job_id WHERE jobs.type = 'provision'"
            ).fetchall()
        finally:
            db.close()
        return [r[0] for r in rows]

    daemon.wait_for(lambda: "apt-get: waiting" in log_of_setup(), timeout=60, what="the hung step")
    assert daemon.stop() == 0
    db = sqlite3.connect(config.state.database)
    try:
        status, error = db.execute("SELECT status, error_message FROM jobs WHERE type = 'provision'").fetchone()
    finally:
        db.close()
    assert (status, error) == ("failed", "interrupted: the reconciler stopped")
    left = subprocess.run(["ip", "netns", "pids", containers.netns(200)], capture_output=True, text=True).stdout
    assert left.split() == [], "the stopped step still runs"


def test_a_package_install_cut_short_earlier_is_mended_by_the_next_setup(
    operator: OperatorClone, config_path: Path, env: dict[str, str], chroot_pct: Path, containers: Any
) -> None:
    # What a step killed in the middle of dpkg leaves behind: a journal dpkg has not yet worked through.
    updates = containers.root(200) / "var/lib/dpkg/updates"
    (updates / "0000").write_text("")
    operator.write("requests/mended.yaml", request_yaml("mended", network=static("192.168.50.241/24")))
    operator.push()
    report = reconcile_once(with_provision(config_path, {"transport": "local", "local": {"pct": str(chroot_pct)}}), env)
    mended = report.statuses["mended"]
    assert (mended.phase, mended.healthy) == ("Ready", True), mended
    assert list(updates.iterdir()) == []


def test_apache_serves_the_site_of_a_request_that_chooses_it(
    operator: OperatorClone, config_path: Path, env: dict[str, str], chroot_pct: Path, containers: Any
) -> None:
    operator.write(
        "requests/site.yaml",
        request_yaml(
            "site",
            profile="web-app",
            web_server="apache",
            network=static("192.168.50.242/24"),
            service={"domain": "site.example.com", "port": 8081, "health": "/healthz"},
        ),
    )
    operator.push()
    report = reconcile_once(with_provision(config_path, {"transport": "local", "local": {"pct": str(chroot_pct)}}), env)
    site = report.statuses["site"]
    assert (site.phase, site.healthy) == ("Ready", True), site
    assert in_container(containers, 200, "apachectl", "configtest").returncode == 0
    assert "<h1>site.example.com</h1>" in in_container(containers, 200, "curl", "-fsS", "http://127.0.0.1:8081/").stdout
    assert not (containers.root(200) / "etc/apache2/sites-enabled/000-default.conf").exists()
