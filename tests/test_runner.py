"""The job runner and the passes around it: a pass never waits for its jobs, and no request gets two at once."""

from __future__ import annotations

import time
from collections.abc import Callable

from conftest import FakeCluster, OperatorClone, request_yaml, static

from reconciler.runtime import Runtime


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


def test_a_pass_returns_while_its_create_runs_and_says_provisioning_then_the_next_pass_says_ready(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 3
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.80/24")))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    first = runtime.reconciler.cycle()

    # The pass is over, the create task is not: what the operator sees meanwhile.
    assert runtime.runner.busy
    wait_until(lambda: [c.lock for c in cluster.containers()] == ["create"], "the create task in Proxmox")
    operator.pull()
    assert operator.yaml("status/slow.yaml")["phase"] == "Provisioning"
    assert operator.yaml("status/slow.yaml")["message"] == "creating container 200 on pve1"
    assert operator.yaml("status/slow.yaml")["job"] == first.started["slow"]
    assert operator.yaml("status/bad.yaml")["phase"] == "Invalid"

    # A second pass while it runs starts nothing more.
    again = runtime.reconciler.cycle()
    assert again.started == {} and len(cluster.create_posts()) == 1

    assert runtime.runner.wait_idle(30)
    assert runtime.reconciler.cycle().statuses["slow"].phase == "Ready"
    assert len(cluster.create_posts()) == 1


def test_once_without_follow_makes_one_pass_and_waits_only_for_its_jobs(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/app.yaml", request_yaml("app"))  # DHCP: create, then a follow-up address job
    operator.push()

    report = runtime.reconciler.once(follow=False)

    assert report.passes == 1 and list(report.started) == ["app"]
    assert not runtime.runner.busy
    assert [c.status for c in cluster.containers()] == ["running"]
    assert report.statuses["app"].phase == "Provisioning"  # the address job is the next pass's to start
    assert runtime.reconciler.once().statuses["app"].phase == "Ready"


def test_a_failed_create_is_held_back_in_its_backoff_and_tried_again_when_the_file_changes(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/alpha.yaml", request_yaml("alpha"))
    operator.push()
    cluster.pve.fail("POST", "/nodes/pve1/lxc", 500, "storage 'local-lvm' is full", times=1)

    assert runtime.reconciler.once().statuses["alpha"].phase == "Failed"
    held = runtime.reconciler.cycle()  # same file, within the backoff: nothing is tried
    assert held.started == {} and held.statuses["alpha"].message == "create failed: storage 'local-lvm' is full"
    assert runtime.runner.in_backoff() == 1

    operator.pull()
    operator.write("requests/alpha.yaml", request_yaml("alpha", description="try again"))
    operator.push("edit alpha")
    assert runtime.reconciler.once().statuses["alpha"].phase == "Ready"
    assert len(cluster.containers()) == 1


def test_a_queued_start_checks_the_marker_again_and_never_touches_a_guest_that_lost_it(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/svc.yaml", request_yaml("svc", network=static("192.168.50.81/24")))
    operator.push()
    runtime.reconciler.once()
    [ct] = cluster.containers()
    ct.status = "stopped"
    decision = runtime.reconciler.decide(runtime.reconciler.read_source())
    assert [a.describe() for a in decision.plan.actions] == ["start svc: lxc 200 on pve1"]
    # Meanwhile the container is replaced by hand: same VMID, no marker.
    ct.config["tags"] = "handmade"

    started = runtime.runner.submit(decision.plan.actions, runtime.reconciler.tools)
    assert runtime.runner.wait_idle(30)

    assert ct.status == "stopped"
    job = runtime.store.job(started["svc"])
    assert job is not None and job.status == "failed"
    assert job.error_message == "container 200 on pve1 no longer carries the marker of request svc"
