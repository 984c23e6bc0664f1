"""`reconciler run` as a real subprocess: webhook, watch, metrics, readiness, signals, the lock, no secrets."""

from __future__ import annotations

import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest
import yaml
from conftest import WEBHOOK_SECRET, DaemonProcess, FakeCluster, OperatorClone, request_yaml, static

from reconciler.config import load_config
from reconciler.daemon.loop import failing_part
from reconciler.desired.profile import builtin_profiles_dir
from reconciler.gateways.git import GitTimeout
from reconciler.model.errors import GitError, ProxmoxError, StateError


def test_a_signed_push_webhook_gets_a_new_request_ready_within_seconds(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure().start()  # hourly polls, no watch: only the webhook can start a cycle
    cycles = daemon.metric("reconciler_cycles_total", result="success")
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    pushed = time.monotonic()
    assert daemon.push_hook() == (202, "accepted: reconciling\n")

    def ready() -> bool:
        operator.repo.git.fetch("-q", "origin")
        try:
            return "phase: Ready" in operator.repo.git.show("origin/main:status/blog.yaml")
        except git.GitCommandError:
            return False

    daemon.wait_for(ready, timeout=10, what="status/blog.yaml Ready on the remote")
    assert time.monotonic() - pushed < 5
    assert [c.config["hostname"] for c in cluster.containers()] == ["blog"]
    assert daemon.metric("reconciler_triggers_total", reason="webhook") == 1
    assert daemon.metric("reconciler_triggers_total", reason="job") == 1  # create (its lease is read with its state)
    assert (daemon.metric("reconciler_cycles_total", result="success") or 0) >= (cycles or 0) + 2  # push, job end
    assert daemon.metric("reconciler_requests", phase="Ready") == 1
    assert daemon.metric("reconciler_jobs_total", type="create", result="succeeded") == 1
    assert daemon.metric("reconciler_jobs_total", type="validate", result="failed") == 1
    assert daemon.metric("reconciler_requests", phase="Invalid") == 1


def test_an_unauthenticated_or_oversized_webhook_never_starts_a_cycle(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure().start()
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.push()
    cycles = daemon.metric("reconciler_cycles_total", result="success")

    assert daemon.push_hook(secret="wrong")[0] == 401
    assert daemon.post("/webhook", b'{"ref": "refs/heads/main"}', {"X-Gitea-Event": "push"})[0] == 401
    assert daemon.post("/webhook", b"x" * (1024 * 1024 + 1), {"X-Gitea-Signature": "0" * 64})[0] == 413
    assert daemon.push_hook(branch="feature") == (202, "ignored: push to refs/heads/feature\n")

    # Each answer above came after the handler decided: a trigger fired then would already be counted.
    assert daemon.metric("reconciler_triggers_total", reason="webhook") == 0
    assert daemon.metric("reconciler_cycles_total", result="success") == cycles
    assert cluster.containers() == []
    assert daemon.metric("reconciler_webhook_requests_total", result="unauthorized") == 2
    assert daemon.metric("reconciler_webhook_requests_total", result="too_large") == 1


def test_metrics_parse_and_pass_promtool_and_health_endpoints_answer(daemon: DaemonProcess) -> None:
    daemon.configure().start()
    assert daemon.get("/healthz") == (200, "ok\n")
    status, text = daemon.get("/readyz")
    assert status == 200 and text.startswith("ready; last successful cycle")
    assert daemon.metric("reconciler_build_info") == 1
    assert daemon.metric("reconciler_revision_info") == 1
    assert (daemon.metric("reconciler_last_success_timestamp_seconds") or 0) > time.time() - 60
    assert daemon.metric("reconciler_proxmox_requests_total", method="GET", status="200") is not None
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus): exposition lint not run")
    _, exposition = daemon.get("/metrics")
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, check=False)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


def test_readyz_turns_503_when_proxmox_fails_and_recovers(daemon: DaemonProcess, cluster: FakeCluster) -> None:
    daemon.configure().start()
    cluster.pve.fail("GET", "/cluster/resources", 500, "cluster not ready - no quorum?")
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 503, what="readyz 503")
    assert daemon.get("/readyz")[1] == "proxmox list guests failed (HTTP 500)\n"  # never Proxmox's own words
    assert daemon.metric("reconciler_cycles_total", result="error") == 1
    cluster.pve.failures.clear()
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, what="readyz 200 again")


def test_a_push_to_a_local_remote_is_seen_without_a_webhook(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure(watch=True).start()
    operator.write("requests/watched.yaml", request_yaml("watched"))
    operator.push()
    daemon.wait_for(lambda: len(cluster.containers()) == 1, timeout=10, what="the watched push to be reconciled")


def test_sigterm_lets_a_running_create_finish_and_exits_0_with_nothing_half_written(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster, config_path: Path
) -> None:
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 2
    daemon.configure().start()
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.77/24")))
    operator.push()
    daemon.push_hook()
    daemon.wait_for(lambda: any(c.lock == "create" for c in cluster.containers()), what="the create task")

    assert daemon.stop(signal.SIGTERM) == 0

    [ct] = cluster.containers()
    assert ct.lock is None and ct.status == "running"
    daemon_dir = config_path.parent
    assert git.Repo(daemon_dir / "checkout").git.status("--porcelain") == ""
    db = sqlite3.connect(daemon_dir / "jobs.sqlite")
    assert db.execute("SELECT type, status FROM jobs").fetchall() == [("create", "succeeded")]
    operator.pull()
    assert operator.yaml("status/slow.yaml")["phase"] == "Ready"


def test_a_task_outlasting_the_stop_grace_is_recorded_interrupted_and_not_repeated_after_restart(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster, config_path: Path
) -> None:
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 4
    daemon.configure(stop_grace=0.2, recheck=0.5).start()
    operator.write("requests/slow.yaml", request_yaml("slow"))
    operator.push()
    daemon.push_hook()
    daemon.wait_for(lambda: any(c.lock == "create" for c in cluster.containers()), what="the create task")

    assert daemon.stop(signal.SIGTERM) == 0

    db = sqlite3.connect(config_path.parent / "jobs.sqlite")
    [(status, error)] = db.execute("SELECT status, error_message FROM jobs").fetchall()
    assert status == "failed" and error.startswith("interrupted: the reconciler stopped; task UPID:pve1:")
    assert git.Repo(config_path.parent / "checkout").git.status("--porcelain") == ""

    daemon.start()  # while the create still runs in Proxmox
    operator.pull()
    assert operator.yaml("status/slow.yaml")["phase"] in ("Provisioning", "Ready")
    daemon.wait_for(lambda: all(c.status == "running" for c in cluster.containers()), what="the container")
    assert len(cluster.create_posts()) == 1 and len(cluster.containers()) == 1


def test_a_second_daemon_on_the_same_checkout_exits_with_a_clear_message(
    daemon: DaemonProcess, config_path: Path
) -> None:
    daemon.configure().start()
    second = subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--config", str(config_path)],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2
    assert "another reconciler (pid " in second.stdout + second.stderr
    assert "is running on this checkout" in second.stdout + second.stderr


def status_on_remote(operator: OperatorClone, name: str) -> dict[str, object] | None:
    operator.repo.git.fetch("-q", "origin")
    try:
        return yaml.safe_load(operator.repo.git.show(f"origin/main:status/{name}.yaml"))  # type: ignore[no-any-return]
    except git.GitCommandError:
        return None


def test_sighup_reloads_the_config_and_a_broken_one_is_refused_while_reconciling_goes_on(
    daemon: DaemonProcess, config_path: Path, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure().start()
    text = config_path.read_text()
    config_path.write_text(text.replace("nodes: [pve1, pve2, pve3]", "nodes: [pve1]"))
    daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    daemon.wait_for(lambda: daemon.metric("reconciler_config_reloads_total", result="success") == 1, what="reload")
    # The reload took effect: pve2 is no longer an approved node.
    operator.write("requests/two.yaml", request_yaml("two", node="pve2"))
    operator.push()
    daemon.push_hook()
    daemon.wait_for(lambda: (status_on_remote(operator, "two") or {}).get("phase") == "Invalid", what="Invalid")
    assert (status_on_remote(operator, "two") or {}).get("problems") == ["node: 'pve2' is not an approved node (pve1)"]

    config_path.write_text("git: [\n")
    daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    daemon.wait_for(lambda: daemon.metric("reconciler_config_reloads_total", result="refused") == 1, what="refusal")
    assert daemon.metric("reconciler_config_last_reload_successful") == 0
    assert "reload refused" in daemon.log()
    # The daemon keeps reconciling on what it had.
    operator.pull()
    operator.write("requests/one.yaml", request_yaml("one", node="pve1"))
    operator.push()
    daemon.push_hook()
    daemon.wait_for(lambda: (status_on_remote(operator, "one") or {}).get("phase") == "Ready", what="Ready")
    config_path.write_text(text)
    assert load_config(config_path).site.nodes == ["pve1", "pve2", "pve3"]


def test_a_profile_saved_with_a_syntax_error_is_refused_and_the_daemon_goes_on(
    daemon: DaemonProcess, config_path: Path, operator: OperatorClone, cluster: FakeCluster, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(builtin_profiles_dir(), profiles)
    config_path.write_text(config_path.read_text() + f"profiles: {profiles}\n")
    daemon.configure(watch=True).start()
    (profiles / "web-app.yaml").write_text("name: web-app\ndescription: [unclosed\n")  # an editor saving
    daemon.wait_for(lambda: daemon.metric("reconciler_config_reloads_total", result="refused") == 1, what="refusal")
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "web-app.yaml: not valid YAML at line 3" in daemon.log()
    operator.write("requests/still.yaml", request_yaml("still"))
    operator.push()
    daemon.push_hook()
    daemon.wait_for(lambda: (status_on_remote(operator, "still") or {}).get("phase") == "Ready", what="Ready")


def test_the_daemons_own_push_to_a_local_remote_does_not_wake_it(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure(watch=True).start()
    operator.write("requests/watched.yaml", request_yaml("watched", network=static("192.168.50.70/24")))
    operator.push()
    daemon.wait_for(lambda: (status_on_remote(operator, "watched") or {}).get("phase") == "Ready", what="Ready")
    # Its status push moved the remote's ref too; the watcher saw it and knew it for the reconciler's own.
    daemon.wait_for(lambda: (daemon.metric("reconciler_own_pushes_seen_total") or 0) >= 1, what="own push seen")
    assert daemon.metric("reconciler_triggers_total", reason="watch") == 1  # the operator's push only


def test_no_secret_ever_reaches_the_log(daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster) -> None:
    daemon.configure().start()
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.write("requests/bad.yaml", request_yaml("bad", node="nope"))
    operator.push()
    cluster.pve.fail("POST", "/nodes/pve1/lxc", 500, "boom", times=1)
    daemon.push_hook()
    daemon.wait_for(lambda: '"job": "create"' in daemon.log(), what="a job")
    daemon.push_hook(secret="wrong")
    assert daemon.stop() == 0
    log = daemon.log()
    assert '"request": "blog"' in log and '"job_id": ' in log
    assert cluster.secret not in log and WEBHOOK_SECRET not in log


def test_it_tells_systemd_ready_pings_the_watchdog_and_says_stopping(daemon: DaemonProcess, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        daemon.env = {**daemon.env, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        daemon.configure().start()
        messages: list[str] = []
        while not any("WATCHDOG=1" in m for m in messages[1:]):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1\nSTATUS=started")
        assert daemon.stop() == 0
        while "STOPPING=1" not in messages:
            messages.append(sock.recv(4096).decode())


def test_the_lock_dies_with_a_killed_daemon(daemon: DaemonProcess) -> None:
    daemon.configure().start()
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    daemon.start()  # no stale lock to clear by hand
    assert daemon.stop() == 0


def test_requests_not_applied_and_unhealthy_are_counted_apart_for_alerts() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from reconciler.daemon.metrics import Metrics
    from reconciler.model.standing import Standing
    from reconciler.model.vocab import Phase

    metrics = Metrics()
    metrics.standings(
        {
            "up": Standing("up", "r/up.yaml", Phase.READY, "", applied=True, healthy=True),
            "creating": Standing("creating", "r/c.yaml", Phase.PROVISIONING, "", applied=False),
            "broken": Standing("broken", "r/b.yaml", Phase.FAILED, "", applied=True, healthy=False),
        }
    )
    values = {
        (s.name, s.labels.get("phase")): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert values[("reconciler_requests_unhealthy", None)] == 1
    assert values[("reconciler_requests_not_applied", None)] == 1
    assert values[("reconciler_requests", "Failed")] == 1
    assert values[("reconciler_requests", "Ready")] == 1


LEAKY = "Invalid header value b'PVEAPIToken=reconciler@pve!gitops=s3cr3t\\r' at https://user:pw@host/x.git"
PARTS: list[tuple[Exception, str]] = [
    (GitTimeout("fetch", 60), "git fetch timed out after 60 s"),
    (GitError("push", f"[remote rejected] {LEAKY}"), "git push refused by the remote"),
    (GitError("push", LEAKY, temporary=True), "git push failed"),
    (GitError("fetch", LEAKY, temporary=True), "git fetch failed"),
    (ProxmoxError("list guests", LEAKY, None, temporary=True), "proxmox not answering"),
    (ProxmoxError("list guests", LEAKY, None), "proxmox cannot be called (see the log)"),
    (ProxmoxError("list guests", LEAKY, 401), "proxmox refused the API token"),
    (ProxmoxError("create", LEAKY, 403), "proxmox refused create (the API token lacks a privilege)"),
    (ProxmoxError("list guests", LEAKY, 500, temporary=True), "proxmox list guests failed (HTTP 500)"),
    (StateError("/var/lib/x.sqlite", LEAKY, temporary=True), "job database locked by another process"),
    (ValueError(LEAKY), "internal error (see the log)"),
]


@pytest.mark.parametrize(("error", "part"), PARTS, ids=[p for _, p in PARTS])
def test_readyz_names_the_failing_part_in_fixed_words_never_the_errors_own_text(error: Exception, part: str) -> None:
    assert failing_part(error) == part


def test_a_missing_webhook_secret_is_a_warning_at_start_naming_the_variable(daemon: DaemonProcess) -> None:
    set_secret = daemon.env
    daemon.env = {k: v for k, v in set_secret.items() if k != "RECONCILER_WEBHOOK_SECRET"}
    daemon.configure().start()  # ready: start-up, where the warning belongs, is over
    warnings = [line for line in daemon.log().splitlines() if "webhook off: secret not set" in line]
    assert len(warnings) == 1 and '"variable": "RECONCILER_WEBHOOK_SECRET"' in warnings[0], daemon.log()[-2000:]
    assert '"level": "warning"' in warnings[0]
    assert daemon.push_hook()[0] == 503  # and the webhook stays off, as the warning says
    assert daemon.stop() == 0

    daemon.env = set_secret
    daemon.log_path.write_text("")
    daemon.start()
    assert "webhook off" not in daemon.log()
