"""One reconcile cycle against real parts: a bare Git remote, the operator's clone, the fake Proxmox VE."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from conftest import FakeCluster, OperatorClone, request_yaml, static

from reconciler.model.errors import ProxmoxError
from reconciler.model.vocab import ResourceKind, ResourceState
from reconciler.runtime import Runtime

BLOG = dict(
    profile="static-website",
    network=static("192.168.50.210/24", gateway="192.168.50.1", vlan=20),
    service={"domain": "blog.example.com", "expose": True, "visibility": "public", "port": 80},
)


def job_type(runtime: Runtime, job_id: int) -> str:
    job = runtime.store.job(job_id)
    assert job is not None
    return job.type


def create_body(cluster: FakeCluster) -> dict[str, str]:
    posts = cluster.create_posts()
    assert len(posts) == 1
    return {k: v[0] for k, v in parse_qs(posts[0][2].decode()).items()}


def test_a_pushed_request_becomes_exactly_one_container_and_a_second_run_changes_nothing(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/blog.yaml", request_yaml("blog", **BLOG))
    pushed = operator.push("add blog")

    report = runtime.reconciler.once()

    assert report.statuses["blog"].phase == "Ready"
    [ct] = cluster.containers()
    assert (ct.vmid, ct.node, ct.status) == (200, "pve1", "running")
    body = create_body(cluster)
    assert body == {
        "vmid": "200",
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "hostname": "blog",
        "description": body["description"],
        "storage": "local-lvm",
        "rootfs": "local-lvm:8",
        "cores": "1",
        "memory": "512",
        "net0": "name=eth0,bridge=vmbr0,ip=192.168.50.210/24,gw=192.168.50.1,tag=20",
        "swap": "512",
        "unprivileged": "1",
        "onboot": "1",
        "start": "1",
        "tags": "reconciler;reconciler.blog",
        "features": "nesting=1",
    }
    assert body["description"].startswith("test workload blog\n\nManaged by reconciler for request blog")
    assert ct.config["rootfs"].endswith("size=8G")

    operator.pull()
    assert operator.read("caddy/services/blog.example.com.yaml").splitlines()[1:] == [
        "name: blog.example.com",
        "type: proxy",
        "domain: blog.example.com",
        "headers: true",
        "auth: false",
        "backend: 192.168.50.210:80",
    ]
    status = operator.yaml("status/blog.yaml")
    assert status["phase"] == "Ready"
    assert status["revision"] == pushed
    assert (status["vmid"], status["node"], status["address"]) == (200, "pve1", "192.168.50.210")
    assert status["service"] == "caddy/services/blog.example.com.yaml"
    job = runtime.store.job(status["job"])
    assert job is not None and job.status == "succeeded" and job.request == "blog"

    commits_before = operator.log()
    calls_before = len(cluster.pve.requests)
    second = runtime.reconciler.once()
    assert second.commit is None and second.started == {}
    operator.pull()
    assert operator.log() == commits_before
    assert len(cluster.containers()) == 1
    assert len(cluster.pve.requests) - calls_before == 1  # only /cluster/resources


def test_an_invalid_request_is_reported_and_the_valid_ones_beside_it_are_provisioned(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write(
        "requests/bad.yaml",
        request_yaml("bad", node="pve9", resources={"cores": 64, "memory": 512, "disk": 8}, colour="blue"),
    )
    operator.write("requests/broken.yaml", "name: [unclosed\n")
    operator.write("requests/vm.yaml", request_yaml("vm", kind="vm"))
    operator.push()

    report = runtime.reconciler.once()

    assert [c.config["hostname"] for c in cluster.containers()] == ["good"]
    assert report.statuses["good"].phase == "Ready"
    operator.pull()
    bad = operator.yaml("status/bad.yaml")
    assert bad["phase"] == "Invalid"
    assert bad["problems"] == ["colour: unknown key"]  # the shape is checked first
    broken = operator.yaml("status/broken.yaml")
    assert broken["phase"] == "Invalid" and "not valid YAML at line 2" in broken["problems"][0]
    vm = operator.yaml("status/vm.yaml")
    assert vm["problems"] == [
        "cloud_init: required for kind vm: at least user (and ssh_keys to log in)",
        "kind: profile generic-service supports lxc only",
    ]
    job = runtime.store.job(bad["job"])
    assert job is not None and job.type == "validate" and job.status == "failed"
    assert [line.message for line in runtime.store.logs(job.id)] == ["requests/bad.yaml: colour: unknown key"]

    operator.write(
        "requests/bad.yaml", request_yaml("bad", node="pve9", resources={"cores": 64, "memory": 512, "disk": 8})
    )
    operator.push("drop colour")
    runtime.reconciler.once()
    operator.pull()
    assert operator.yaml("status/bad.yaml")["problems"] == [
        "node: 'pve9' is not an approved node (pve1, pve2, pve3)",
        "resources.cores: 64 is outside the approved range 1..8",
    ]
    # An unchanged invalid file does not add a job each cycle.
    jobs = len(runtime.store.jobs(request="bad"))
    assert runtime.reconciler.once().commit is None
    assert len(runtime.store.jobs(request="bad")) == jobs


def test_a_failing_create_fails_that_request_with_proxmoxs_message_and_the_cycle_goes_on(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/alpha.yaml", request_yaml("alpha", node="pve2"))
    operator.write("requests/beta.yaml", request_yaml("beta", node="pve1"))
    operator.push()
    cluster.pve.fail("POST", "/nodes/pve2/lxc", 500, "storage 'local-lvm' is full", times=1)

    report = runtime.reconciler.once()

    assert report.statuses["beta"].phase == "Ready"
    alpha = report.statuses["alpha"]
    assert alpha.phase == "Failed"
    assert alpha.message == "create failed: storage 'local-lvm' is full"
    assert report.failing == ["alpha"]
    log = [line.message for line in runtime.store.logs(alpha.job or 0)]
    assert log[-1] == "create failed: storage 'local-lvm' is full"

    # The fault is gone: the next cycle creates it, once.
    assert runtime.reconciler.once().statuses["alpha"].phase == "Ready"
    assert sorted(c.config["hostname"] for c in cluster.containers()) == ["alpha", "beta"]


def test_a_task_that_ends_in_error_reports_the_task_exit_status(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cluster.pve.storages["local"]["volumes"].clear()  # the template is gone from the node
    cluster.pve.store_file("local", "other.tar.zst", 1, content="vztmpl")
    operator.write("requests/gone.yaml", request_yaml("gone"))
    operator.push()

    status = runtime.reconciler.once().statuses["gone"]

    assert status.phase == "Failed"
    assert status.message.startswith("create failed: unable to create CT 200 - volume 'local:vztmpl/debian-12")
    assert cluster.containers() == []


def test_a_dhcp_container_gets_its_address_from_the_container_not_the_request(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write(
        "requests/app.yaml",
        request_yaml(
            "app", profile="web-app", service={"domain": "app.home.example.com", "expose": True, "health": "/ok"}
        ),
    )
    operator.push()

    status = runtime.reconciler.once().statuses["app"]

    assert status.phase == "Ready"
    assert status.address == cluster.pve.leases[200]
    operator.pull()
    caddy = operator.yaml("caddy/services/app.home.example.com.yaml")
    assert caddy["backend"] == f"{cluster.pve.leases[200]}:8080"
    assert caddy["health"] == "/ok"


def test_a_dhcp_lease_that_does_not_come_leaves_the_request_provisioning_until_it_does(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cluster.pve.lease_delay = None  # no DHCP server answers
    operator.write("requests/app.yaml", request_yaml("app"))
    operator.push()

    first = runtime.reconciler.once().statuses["app"]
    assert first.phase == "Provisioning"
    assert first.message == "container 200 running on pve1; waiting for a DHCP address"

    cluster.pve.lease_delay = 0.0
    second = runtime.reconciler.once()
    assert [job_type(runtime, j) for j in second.started.values()] == ["find-address"]
    assert second.statuses["app"].phase == "Ready"
    assert len(cluster.containers()) == 1


def test_a_stopped_container_is_started_and_foreign_guests_are_never_touched(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    foreign = cluster.pve.add_ct(
        250, "handmade", node="pve1", status="stopped", config={"net0": "name=eth0,bridge=vmbr0,ip=192.168.50.50/24"}
    )
    operator.write("requests/svc.yaml", request_yaml("svc"))
    operator.push()
    runtime.reconciler.once()
    [ours] = [c for c in cluster.containers() if c.vmid != 250]
    ours.status = "stopped"

    report = runtime.reconciler.once()

    assert [job_type(runtime, j) for j in report.started.values()] == ["start"]
    assert runtime.store.logs(report.started["svc"])[0].message == f"start svc: lxc {ours.vmid} on pve1"
    assert ours.status == "running"
    assert foreign.status == "stopped"
    touched = {path for method, path, _ in cluster.pve.requests if method != "GET"}
    assert not any("/250" in path for path in touched)


def test_a_static_address_used_by_a_foreign_guest_is_refused(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cluster.pve.add_ct(250, "handmade", node="pve2", config={"net0": "name=eth0,bridge=vmbr0,ip=192.168.50.60/24"})
    operator.write("requests/clash.yaml", request_yaml("clash", network=static("192.168.50.60/24")))
    operator.write("requests/fine.yaml", request_yaml("fine", network=static("192.168.50.61/24")))
    operator.push()

    report = runtime.reconciler.once()

    assert report.statuses["clash"].problems == ("network.address: 192.168.50.60 is already used by guest 250",)
    assert report.statuses["fine"].phase == "Ready"


def test_a_domain_of_a_hand_written_service_file_is_refused_and_the_file_left_alone(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    handmade = "name: wiki.example.com\ntype: proxy\ndomain: wiki.example.com\nbackend: 192.168.50.9:80\n"
    operator.write("caddy/services/wiki.example.com.yaml", handmade)
    operator.write(
        "requests/wiki.yaml",
        request_yaml("wiki", profile="web-app", service={"domain": "wiki.example.com", "expose": True}),
    )
    operator.push()

    status = runtime.reconciler.once().statuses["wiki"]

    assert status.problems == ("service.domain: wiki.example.com is already defined by a hand-written service file",)
    operator.pull()
    assert operator.read("caddy/services/wiki.example.com.yaml") == handmade
    assert cluster.containers() == []


def test_a_crash_during_create_is_recognised_after_restart_and_not_repeated(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/slow.yaml", request_yaml("slow"))
    operator.push()
    # What a daemon killed mid-create leaves behind: its intent in SQLite, a locked guest without tags.
    cluster.pve.add_ct(200, None, node="pve1", config={"lock": "create"}, defaults=False)
    runtime.store.hold("slow", ResourceKind.LXC, "200", "pve1", ResourceState.CREATING, None)

    report = runtime.reconciler.once()

    assert report.started == {}
    assert report.statuses["slow"].phase == "Provisioning"
    assert len(cluster.containers()) == 1 and cluster.create_posts() == []


def test_removing_a_request_keeps_its_container_and_drops_its_route(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/blog.yaml", request_yaml("blog", **BLOG))
    operator.write("requests/other.yaml", request_yaml("other"))  # 1 of 2: not a mass change
    operator.push()
    runtime.reconciler.once()
    operator.pull()
    operator.remove("requests/blog.yaml")
    operator.push("remove blog")

    report = runtime.reconciler.once()

    assert report.statuses["blog"].phase == "Orphaned"
    assert [c.status for c in cluster.containers()] == ["running", "running"]
    operator.pull()
    assert operator.read("caddy/services/blog.example.com.yaml") is None
    assert "left as it is" in operator.yaml("status/blog.yaml")["message"]


def test_the_operator_pushing_during_a_cycle_loses_nothing(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, remote: Path, tmp_path: Path
) -> None:
    operator.write("requests/one.yaml", request_yaml("one"))
    operator.push()
    source = runtime.reconciler.read_source()
    decision = runtime.reconciler.decide(source)
    # Meanwhile a second clone pushes.
    other = OperatorClone(remote, tmp_path / "laptop")
    other.write("notes.txt", "from the laptop\n")
    laptop = other.push("laptop edit")

    started = runtime.reconciler.runner.submit(decision.plan.actions, runtime.reconciler.tools)
    statuses = runtime.reconciler.statuses(source, decision, started, {})
    files = runtime.reconciler.generated_files(source, decision, statuses)
    runtime.reconciler.checkout.publish(files, "reconciler: test")
    assert runtime.runner.wait_idle(30)

    operator.pull()
    assert operator.read("notes.txt") == "from the laptop\n"
    assert operator.yaml("status/one.yaml")["phase"] == "Provisioning"
    history = [c.hexsha for c in operator.repo.iter_commits("origin/main")]
    assert laptop in history  # never rewritten, never force-pushed
    assert history.index(laptop) == 1


@pytest.mark.parametrize("count", [3])
def test_containers_on_different_nodes_get_distinct_vmids(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, count: int
) -> None:
    for i in range(count * 3):
        operator.write(f"requests/w{i}.yaml", request_yaml(f"w{i}", node=f"pve{i % 3 + 1}"))
    operator.push()

    report = runtime.reconciler.once()

    assert set(report.phases) == {"Ready"}
    vmids = [c.vmid for c in cluster.containers()]
    assert sorted(vmids) == list(range(200, 200 + count * 3))
    assert {c.node for c in cluster.containers()} == {"pve1", "pve2", "pve3"}


def test_a_flaky_network_never_leads_to_a_duplicate_and_everything_gets_ready(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    for i in range(6):
        operator.write(f"requests/f{i}.yaml", request_yaml(f"f{i}", node=f"pve{i % 3 + 1}"))
    operator.push()
    cluster.pve.flaky_network(drop_rate=0.25, seed=7)

    errors = 0
    for _ in range(40):
        try:
            report = runtime.reconciler.once()
        except ProxmoxError:
            errors += 1  # the cycle as a whole could not observe: nothing was changed
            continue
        if set(report.phases) == {"Ready"} and not report.started:
            break
    cluster.pve.flaky_network()

    failed_jobs = [j for j in runtime.store.jobs(limit=500) if j.status == "failed"]
    assert errors + len(failed_jobs) > 0  # the network really was flaky
    names = sorted(c.config["hostname"] for c in cluster.containers())
    assert names == [f"f{i}" for i in range(6)]
    assert all(c.status == "running" for c in cluster.containers())
    operator.pull()
    assert {operator.yaml(f"status/f{i}.yaml")["phase"] for i in range(6)} == {"Ready"}


def test_creates_run_in_parallel_across_nodes_but_at_most_parallel_per_node_on_one(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    assert runtime.reconciler.config.proxmox.parallel_per_node == 2
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 0.4
    for i in range(4):
        operator.write(f"requests/a{i}.yaml", request_yaml(f"a{i}", node="pve1"))
    for i in range(2):
        operator.write(f"requests/b{i}.yaml", request_yaml(f"b{i}", node="pve2"))
    operator.push()
    peaks = {"pve1": 0, "all": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            running = [
                t for t in list(cluster.pve.tasks.values()) if t["type"] == "vzcreate" and t["status"] == "running"
            ]
            peaks["pve1"] = max(peaks["pve1"], sum(t["node"] == "pve1" for t in running))
            peaks["all"] = max(peaks["all"], len(running))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        report = runtime.reconciler.once()
    finally:
        done.set()
        sampler.join()

    assert set(report.phases) == {"Ready"}
    assert peaks == {"pve1": 2, "all": 4}
