"""A container's life after its create, through real passes: edits in place, refusals, migration, drift,
power state, deletion, foreign guests, the mass-change guard and adoption.

Every pass reads each owned guest's config again (proxmox.config_refresh: 0), so a change made by hand in the
fake Proxmox shows on the very next pass, as it would after the refresh interval on a real cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FakeCluster, OperatorClone, request_yaml, static

from reconciler.config import Config, load_config
from reconciler.cycle import CycleReport
from reconciler.gateways.sqlite import Job
from reconciler.runtime import Runtime

BLOG: dict[str, Any] = dict(
    profile="static-website",
    network=static("192.168.50.210/24", gateway="192.168.50.1", vlan=20),
    service={"domain": "blog.example.com", "expose": True, "visibility": "public", "port": 80},
)
SECOND_STORAGE = "local-zfs"


@pytest.fixture
def config(config_path: Path) -> Config:
    """The demo site, with every owned guest's config read on every pass and a second approved storage."""
    doc = yaml.safe_load(config_path.read_text())
    doc["proxmox"]["config_refresh"] = 0
    doc["site"]["storages"] = ["local-lvm", SECOND_STORAGE]
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(config_path)


# --- what an operator looks at


def status_of(operator: OperatorClone, name: str) -> Any:
    operator.pull()
    return operator.yaml(f"status/{name}.yaml")


def log_of(runtime: Runtime, job_id: int | None) -> list[str]:
    assert job_id is not None
    return [line.message for line in runtime.store.logs(job_id)]


def job_types(runtime: Runtime, report: CycleReport) -> dict[str, str]:
    out = {}
    for name, job_id in report.started.items():
        job = runtime.store.job(job_id)
        assert job is not None
        out[name] = job.type
    return out


def jobs_after(runtime: Runtime, name: str, job_id: int) -> list[Job]:
    """The request's jobs begun after job `job_id` (0: all), oldest first."""
    return sorted((j for j in runtime.store.jobs(limit=500, request=name) if j.id > job_id), key=lambda j: j.id)


def last_job(runtime: Runtime) -> int:
    return max((j.id for j in runtime.store.jobs(limit=1)), default=0)


def changing_calls(cluster: FakeCluster, since: int = 0) -> list[tuple[str, str]]:
    """The calls after `since` that could change something in Proxmox."""
    return [(method, path) for method, path, _ in cluster.pve.requests[since:] if method != "GET"]


def the_container(cluster: FakeCluster, hostname: str) -> Any:
    [ct] = [c for c in cluster.containers() if c.config.get("hostname") == hostname]
    return ct


def push(operator: OperatorClone, name: str, message: str | None = None, **fields: Any) -> str:
    """Write a request file (on top of what the reconciler pushed) and push it; the commit."""
    operator.pull()
    operator.write(f"requests/{name}.yaml", request_yaml(name, **fields))
    return operator.push(message or f"{name}: {', '.join(fields) or 'added'}")


def created(operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, name: str, **fields: Any) -> Any:
    """Push a request, run a pass to its end, and return its container (running and Ready)."""
    push(operator, name, **fields)
    report = runtime.reconciler.once()
    assert report.statuses[name].phase == "Ready", report.statuses[name]
    return the_container(cluster, str(fields.get("hostname") or name))


def hwaddr(ct: Any) -> str:
    props = dict(item.split("=", 1) for item in str(ct.config["net0"]).split(","))
    return props["hwaddr"]


# --- a fresh container and edits


SHAPES: dict[str, dict[str, Any]] = {
    "plain": {},
    "static with gateway and vlan, exposed": BLOG,
    "dhcp on a vlan, own tags": {"tags": ["web", "team-a"], "network": {"mode": "dhcp", "bridge": "vmbr0", "vlan": 10}},
    "not started": {"start": False},
    "protected, no swap, monitored": {
        "protected": True,
        "monitoring": True,
        "resources": {"cores": 2, "memory": 1024, "disk": 8, "swap": 0},
    },
    "a long description": {
        "description": "Wiki for team A.\n\nOwner: Jürgen <j@example.com>; 100% internal.\n  indented: yes\n"
    },
    "no description": {"description": None, "hostname": "svc-host"},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_fresh_create_shows_no_drift_and_the_next_pass_does_nothing(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, shape: str
) -> None:
    push(operator, "svc", **SHAPES[shape])
    first = runtime.reconciler.once()
    assert first.statuses["svc"].phase == "Ready", first.statuses["svc"]
    [ct] = cluster.containers()
    commits, calls = operator.log(), len(cluster.pve.requests)

    again = runtime.reconciler.once()

    assert again.started == {} and again.commit is None
    reads = [p for m, p, _ in cluster.pve.requests[calls:] if m == "GET" and p.endswith(f"/lxc/{ct.vmid}/config")]
    assert len(reads) == 1  # compared with what Proxmox holds now, not with a cached copy
    assert operator.log() == commits
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready"
    assert "drift" not in status and "refused" not in status
    assert [c.vmid for c in cluster.containers()] == [ct.vmid]


def test_edits_are_applied_in_place_to_the_running_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    mac = hwaddr(ct)
    vmid = ct.vmid

    pushed = push(
        operator,
        "svc",
        "resize and rename svc",
        hostname="svc2",
        description="the renamed service",
        resources={"cores": 2, "memory": 1024, "swap": 256, "disk": 8},
        tags=["web"],
        network={"mode": "dhcp", "bridge": "vmbr0", "vlan": 10},
    )
    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"svc": "update"}
    [ct] = cluster.containers()
    assert (ct.vmid, ct.node, ct.status) == (vmid, "pve1", "running")
    assert len(cluster.create_posts()) == 1
    config = ct.config
    assert (str(config["cores"]), str(config["memory"]), str(config["swap"])) == ("2", "1024", "256")
    assert config["hostname"] == "svc2"
    assert str(config["description"]).startswith("the renamed service\n\nManaged by reconciler for request svc")
    assert config["tags"] == "reconciler;reconciler.svc;web"
    assert "tag=10" in str(config["net0"]) and "ip=dhcp" in str(config["net0"])
    assert hwaddr(ct) == mac
    log = log_of(runtime, report.started["svc"])
    assert "cores: 1 -> 2" in log
    assert "memory: 512 -> 1024" in log
    assert "swap: 512 -> 256" in log
    assert "hostname: svc -> svc2" in log
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready" and status["revision"] == pushed
    assert "drift" not in status

    assert runtime.reconciler.once().started == {}  # what was written reads back as asked


def test_a_new_static_address_is_applied_in_place_and_the_route_follows(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "blog", **BLOG)
    mac = hwaddr(ct)
    moved = {**BLOG, "network": static("192.168.50.211/24", gateway="192.168.50.1", vlan=20)}

    push(operator, "blog", **moved)
    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"blog": "update"}
    [after] = cluster.containers()
    assert after.vmid == ct.vmid and after.status == "running"
    assert "ip=192.168.50.211/24" in str(after.config["net0"]) and hwaddr(after) == mac
    status = status_of(operator, "blog")
    assert (status["phase"], status["address"]) == ("Ready", "192.168.50.211")
    assert operator.yaml("caddy/services/blog.example.com.yaml")["backend"] == "192.168.50.211:80"


def test_a_larger_disk_grows_the_root_filesystem(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    assert str(ct.config["rootfs"]).endswith("size=8G")

    push(operator, "svc", resources={"cores": 1, "memory": 512, "disk": 12})
    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"svc": "update"}
    assert "resize rootfs -> 12 GB" in log_of(runtime, report.started["svc"])
    [after] = cluster.containers()
    assert after.vmid == ct.vmid and after.status == "running"
    assert str(after.config["rootfs"]).startswith("local-lvm:") and str(after.config["rootfs"]).endswith("size=12G")
    assert status_of(operator, "svc")["phase"] == "Ready"
    assert runtime.reconciler.once().started == {}


REFUSALS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "disk shrink": (
        {"resources": {"cores": 1, "memory": 512, "disk": 4}},
        {"field": "resources.disk", "asked": "4 GB", "kept": "8 GB (a disk cannot shrink)"},
    ),
    "storage": (
        {"storage": SECOND_STORAGE},
        {"field": "storage", "asked": SECOND_STORAGE, "kept": "local-lvm (a container cannot change storage in place)"},
    ),
    "profile": (
        {"profile": "static-website"},
        {
            "field": "profile",
            "asked": "static-website",
            "kept": "generic-service (another profile means another template: make a new request)",
        },
    ),
    "node without migrate": (
        {"node": "pve2"},
        {"field": "node", "asked": "pve2", "kept": "pve1 (set migrate: true to move it)"},
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_change_that_cannot_be_made_in_place_is_refused_and_nothing_changes(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, case: str
) -> None:
    cluster.pve.storages[SECOND_STORAGE] = {  # the site's second storage, on the cluster too
        "type": "zfspool",
        "pool": "rpool/data",
        "active": 1,
        "content": "images,rootdir",
        "files": set(),
    }
    ct = created(operator, cluster, runtime, "svc")
    before = (ct.vmid, ct.node, ct.status, dict(ct.config))
    calls = len(cluster.pve.requests)
    fields, refusal = REFUSALS[case]

    push(operator, "svc", case, **fields)
    report = runtime.reconciler.once()

    assert report.started == {}
    status = status_of(operator, "svc")
    assert status["phase"] == "Failed"
    assert status["refused"] == [refusal]
    assert "nothing was changed" in status["message"]
    [after] = cluster.containers()
    assert (after.vmid, after.node, after.status, dict(after.config)) == before
    assert changing_calls(cluster, calls) == []


def test_a_node_change_with_migrate_moves_the_running_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    vmid, mac, before = ct.vmid, hwaddr(ct), last_job(runtime)

    push(operator, "svc", node="pve2", migrate=True, resources={"cores": 2, "memory": 512, "disk": 8})
    runtime.reconciler.once()

    migrate, update = jobs_after(runtime, "svc", before)
    assert (migrate.type, migrate.status, update.type, update.status) == ("migrate", "succeeded", "update", "succeeded")
    assert log_of(runtime, update.id)[0] == f"update svc: lxc {vmid} on pve2: cores: 1 -> 2"
    [after] = cluster.containers()
    assert (after.vmid, after.node, after.status) == (vmid, "pve2", "running")
    assert str(after.config["cores"]) == "2"
    assert hwaddr(after) == mac
    status = status_of(operator, "svc")
    assert (status["phase"], status["node"], status["vmid"]) == ("Ready", "pve2", vmid)
    assert "refused" not in status
    assert runtime.reconciler.once().started == {}


# --- the digest: a guest changed between plan and apply is never overwritten


EDITS_READ_WITH_A_DIGEST = {
    # the edit: (its resources, the plan's line for it, what the next pass does)
    "config": ({"cores": 2, "memory": 512, "disk": 8}, "cores: 1 -> 2", ["cores: 4 -> 2"]),
    "disk": (
        {"cores": 1, "memory": 512, "disk": 12},
        "resize rootfs -> 12 GB",
        ["cores: 4 -> 1", "resize rootfs -> 12 GB"],
    ),
}


@pytest.mark.parametrize("edit", list(EDITS_READ_WITH_A_DIGEST))
def test_a_config_changed_after_the_plan_read_it_is_refused_and_planned_again(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, edit: str
) -> None:
    resources, line, next_lines = EDITS_READ_WITH_A_DIGEST[edit]
    ct = created(operator, cluster, runtime, "svc")
    push(operator, "svc", resources=resources)
    reconciler = runtime.reconciler
    decision = reconciler.decide(reconciler.read_source())
    [action] = decision.plan.actions
    assert action.describe() == f"update svc: lxc {ct.vmid} on pve1: {line}"

    ct.config["cores"] = 4  # someone else writes the config between the plan's read and the update
    started = runtime.runner.submit(decision.plan.actions, reconciler.tools)
    assert runtime.runner.wait_idle(30)

    job = runtime.store.job(started["svc"])
    assert job is not None and job.status == "failed"
    assert "changed since it was read" in (job.error_message or "")
    assert "changed since it was read" in log_of(runtime, job.id)[-1]
    assert ct.config["cores"] == 4

    report = reconciler.once()  # reads what is there now, and plans from it

    assert job_types(runtime, report) == {"svc": "update"}
    log = log_of(runtime, report.started["svc"])
    assert [text for text in log if text in next_lines] == next_lines
    assert str(ct.config["cores"]) == str(resources["cores"])
    assert str(ct.config["rootfs"]).endswith(f"size={resources['disk']}G")
    assert status_of(operator, "svc")["phase"] == "Ready"


# --- drift


def test_a_field_changed_by_hand_is_reported_and_put_back(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    ct.config["memory"] = 1024

    first = runtime.reconciler.once(follow=False)

    assert job_types(runtime, first) == {"svc": "update"}
    status = status_of(operator, "svc")
    assert status["drift"] == [{"field": "memory", "desired": "512", "observed": "1024"}]
    assert str(ct.config["memory"]) == "512"
    log = log_of(runtime, first.started["svc"])
    assert "memory: 1024 -> 512" in log and "put back what was changed by hand: memory" in log

    runtime.reconciler.once()
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready" and "drift" not in status
    assert runtime.reconciler.once().started == {}


HAND_CHANGES: dict[str, str] = {
    # config key (as the status's drift names it) -> the value set by hand (formatted with the config)
    "net0": "{net0},tag=20",
    "tags": "reconciler;reconciler.svc;mine",
    "hostname": "renamed",
    "description": "edited in the web UI",
    "cores": "3",
}


@pytest.mark.parametrize("field", list(HAND_CHANGES))
def test_each_owned_field_changed_by_hand_is_put_back(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, field: str
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    mac, before = hwaddr(ct), dict(ct.config)
    ct.config[field] = HAND_CHANGES[field].format(**ct.config)

    first = runtime.reconciler.once(follow=False)

    assert job_types(runtime, first) == {"svc": "update"}
    [drift] = status_of(operator, "svc")["drift"]
    assert drift["field"] == field
    assert f"put back what was changed by hand: {field}" in log_of(runtime, first.started["svc"])
    assert dict(ct.config) == before
    assert hwaddr(ct) == mac
    runtime.reconciler.once()
    assert "drift" not in status_of(operator, "svc")


def test_with_drift_report_an_edit_in_git_is_still_applied(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc", drift="report")
    ct.config["memory"] = 1024  # by hand: reported, kept

    push(operator, "svc", drift="report", resources={"cores": 2, "memory": 512, "disk": 8})
    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"svc": "update"}
    assert (str(ct.config["cores"]), str(ct.config["memory"])) == ("2", "1024")
    assert status_of(operator, "svc")["drift"] == [{"field": "memory", "desired": "512", "observed": "1024"}]

    # The operator now asks a value of their own for the field changed by hand: that is an edit in Git too.
    push(operator, "svc", drift="report", resources={"cores": 2, "memory": 2048, "disk": 8})
    runtime.reconciler.once()

    assert str(ct.config["memory"]) == "2048"
    assert "drift" not in status_of(operator, "svc")


def test_with_drift_report_a_hand_change_is_reported_and_kept(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc", drift="report")
    ct.config["memory"] = 1024

    report = runtime.reconciler.once()

    assert report.started == {}
    assert str(ct.config["memory"]) == "1024"
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready"
    assert status["drift"] == [{"field": "memory", "desired": "512", "observed": "1024"}]
    assert "not corrected (drift: report)" in status["message"]
    assert runtime.reconciler.once().commit is None  # said once, not again each pass


def test_drift_that_keeps_coming_back_is_called_flapping_and_no_longer_corrected(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    for _ in range(3):
        ct.config["memory"] = 1024  # a person or a script that keeps setting it
        report = runtime.reconciler.once()
        assert job_types(runtime, report) == {"svc": "update"}
        assert str(ct.config["memory"]) == "512"

    ct.config["memory"] = 1024
    report = runtime.reconciler.once()

    assert report.started == {}
    assert str(ct.config["memory"]) == "1024"
    status = status_of(operator, "svc")
    assert status["flapping"] is True
    assert status["drift"] == [{"field": "memory", "desired": "512", "observed": "1024"}]
    assert "flapping" in status["message"]


# --- power state


def test_a_container_stopped_by_hand_is_started_again(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    ct.status = "stopped"

    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"svc": "start"}
    assert ct.status == "running"
    assert status_of(operator, "svc")["phase"] == "Ready"


def test_start_false_does_not_stop_a_running_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")

    push(operator, "svc", start=False)
    report = runtime.reconciler.once()

    assert "stop" not in job_types(runtime, report).values()
    assert ct.status == "running"
    assert str(ct.config["onboot"]) == "0"  # it no longer starts with its node
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready" and "refused" not in status

    ct.status = "stopped"  # stopped by hand: start: false leaves it so
    assert runtime.reconciler.once().started == {}
    assert ct.status == "stopped"


def test_state_stopped_shuts_the_container_down_and_keeps_it(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    other = created(operator, cluster, runtime, "other")  # 1 of 2 owned guests: not a mass change
    before = last_job(runtime)

    push(operator, "svc", state="stopped")
    runtime.reconciler.once()

    assert [j.type for j in jobs_after(runtime, "svc", before)] == ["update", "stop"]  # onboot 0, then shut down
    assert ct in cluster.containers() and ct.status == "stopped"
    assert str(ct.config["onboot"]) == "0"
    assert other.status == "running"
    status = status_of(operator, "svc")
    assert status["phase"] == "Ready" and "(state: stopped)" in status["message"]
    assert runtime.reconciler.once().started == {}
    assert ct.status == "stopped"

    before = last_job(runtime)
    push(operator, "svc", state="present")
    runtime.reconciler.once()
    assert [j.type for j in jobs_after(runtime, "svc", before)] == ["update", "start"]  # onboot 1, then started
    assert ct in cluster.containers() and ct.status == "running" and str(ct.config["onboot"]) == "1"


# --- deletion and protection


def test_removing_a_request_file_leaves_its_container_and_reports_it_orphaned(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    created(operator, cluster, runtime, "other")  # 1 of 2 owned guests: not a mass change
    before = dict(ct.config)
    calls = len(cluster.pve.requests)

    operator.pull()
    operator.remove("requests/svc.yaml")
    operator.push("remove svc")
    runtime.reconciler.once()

    assert ct in cluster.containers() and ct.status == "running"
    assert dict(ct.config) == before
    assert changing_calls(cluster, calls) == []
    status = status_of(operator, "svc")
    assert status["phase"] == "Orphaned"
    assert "left as it is" in status["message"]

    push(operator, "svc", "restore svc")  # the file back: the same container is its own again
    runtime.reconciler.once()
    assert status_of(operator, "svc")["phase"] == "Ready"
    assert ct in cluster.containers() and len(cluster.create_posts()) == 2


def test_state_absent_destroys_the_container_and_its_route_and_then_the_status_goes_with_the_file(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    blog = created(operator, cluster, runtime, "blog", **BLOG)
    other = created(operator, cluster, runtime, "other")  # 1 of 2 owned guests: not a mass change
    operator.pull()
    assert operator.read("caddy/services/blog.example.com.yaml") is not None

    push(operator, "blog", state="absent", **BLOG)
    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"blog": "destroy"}
    assert cluster.containers() == [other]
    assert blog.vmid not in [c.vmid for c in cluster.containers()]
    operator.pull()
    assert operator.read("caddy/services/blog.example.com.yaml") is None
    status = status_of(operator, "blog")
    assert status["phase"] == "Deleted"

    operator.remove("requests/blog.yaml")
    operator.push("blog is gone")
    runtime.reconciler.once()
    operator.pull()
    assert operator.read("status/blog.yaml") is None
    assert status_of(operator, "other")["phase"] == "Ready"
    assert cluster.containers() == [other]


def test_protected_sets_proxmoxs_flag_and_state_absent_then_leaves_the_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    ct = created(operator, cluster, runtime, "svc")
    created(operator, cluster, runtime, "other")  # 1 of 2 owned guests: not a mass change
    assert "protection" not in ct.config

    push(operator, "svc", protected=True)
    runtime.reconciler.once()
    assert str(ct.config["protection"]) == "1"

    push(operator, "svc", protected=True, state="absent")
    report = runtime.reconciler.once()

    assert "svc" not in report.started
    assert ct in cluster.containers() and ct.status == "running"
    status = status_of(operator, "svc")
    assert status["phase"] == "Failed"
    assert "protected" in status["message"]
    assert status["refused"] == [{"field": "state", "asked": "absent", "kept": "present (protected: true)"}]

    # protected: false clears the flag, and the destroy follows.
    push(operator, "svc", state="absent")
    runtime.reconciler.once()
    assert ct not in cluster.containers()
    assert status_of(operator, "svc")["phase"] == "Deleted"


# --- guests the reconciler does not own


def test_a_foreign_guest_is_never_touched_and_a_request_naming_it_is_invalid(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    foreign = cluster.pve.add_ct(
        250,
        "handmade",
        node="pve1",
        status="running",
        config={"cores": 2, "net0": "name=eth0,bridge=vmbr0,ip=192.168.50.50/24"},
    )
    # Half a marker is no marker: a guest needs both tags to be a request's.
    copied = cluster.pve.add_ct(251, "copy", node="pve2", status="running", config={"tags": "reconciler.fine"})
    before, copied_before = dict(foreign.config), dict(copied.config)
    push(operator, "byvmid", vmid=250, state="absent")
    push(operator, "byname", hostname="handmade", state="stopped")
    push(operator, "handmade", resources={"cores": 1, "memory": 256, "disk": 4})
    push(operator, "fine")

    report = runtime.reconciler.once()

    assert report.statuses["fine"].phase == "Ready"
    assert the_container(cluster, "fine").vmid not in (250, 251)
    byvmid = status_of(operator, "byvmid")
    assert byvmid["phase"] == "Invalid"
    assert byvmid["problems"] == [
        "vmid: 250 is taken by a guest the reconciler does not own; adopt: true takes it over"
    ]
    for name in ("byname", "handmade"):
        status = status_of(operator, name)
        assert status["phase"] == "Invalid"
        assert status["problems"] == ["hostname: handmade is the name of guest 250, which the reconciler does not own"]
    assert foreign.status == "running" and foreign.node == "pve1"
    assert dict(foreign.config) == before
    assert (copied.status, dict(copied.config)) == ("running", copied_before)
    assert not [path for _, path in changing_calls(cluster) if "/250" in path or "/251" in path]

    # All requests gone: the foreign guest is no orphan of anyone.
    for name in ("byvmid", "byname", "handmade"):
        operator.remove(f"requests/{name}.yaml")
    operator.push("drop the bad requests")
    runtime.reconciler.once()
    assert foreign.status == "running" and dict(foreign.config) == before
    assert (copied.status, dict(copied.config)) == ("running", copied_before)
    assert not [path for _, path in changing_calls(cluster) if "/250" in path or "/251" in path]
    operator.pull()
    assert operator.read("status/handmade.yaml") is None


# --- the mass-change guard


def three_owned(operator: OperatorClone, cluster: FakeCluster, runtime: Runtime) -> list[Any]:
    for name in ("a", "b", "c"):
        operator.write(f"requests/{name}.yaml", request_yaml(name))
    operator.push("three services")
    report = runtime.reconciler.once()
    assert set(report.phases) == {"Ready"}
    return cluster.containers()


def test_the_mass_change_guard_holds_destroys_until_the_revision_is_confirmed(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cts = three_owned(operator, cluster, runtime)
    calls = len(cluster.pve.requests)
    push(operator, "a", state="absent")
    revision = push(operator, "b", state="absent")

    report = runtime.reconciler.once()

    assert report.started == {}
    assert cluster.containers() == cts and {c.status for c in cts} == {"running"}
    assert changing_calls(cluster, calls) == []
    for name in ("a", "b"):
        message = status_of(operator, name)["message"]
        assert "mass-change guard" in message
        assert f"confirm: {revision}" in message
        assert "reconciler-confirm.yaml" in message
    assert status_of(operator, "c")["phase"] == "Ready"

    operator.pull()
    operator.write("reconciler-confirm.yaml", f"confirm: {revision}\n")
    operator.push("yes, destroy a and b")
    report = runtime.reconciler.once()

    assert sorted(job_types(runtime, report).values()) == ["destroy", "destroy"]
    assert [c.config["hostname"] for c in cluster.containers()] == ["c"]
    assert status_of(operator, "a")["phase"] == "Deleted"
    assert status_of(operator, "b")["phase"] == "Deleted"

    # A confirmation is for its revision only: the next mass change is held again.
    later = push(operator, "c", state="stopped")
    runtime.reconciler.once()
    assert [c.status for c in cluster.containers()] == ["running"]
    assert f"confirm: {later}" in status_of(operator, "c")["message"]


def test_the_mass_change_guard_holds_orphaning_every_owned_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    cts = three_owned(operator, cluster, runtime)
    operator.pull()
    for name in ("a", "b", "c"):
        operator.remove(f"requests/{name}.yaml")
    revision = operator.push("a bad merge empties requests/")

    runtime.reconciler.once()

    assert cluster.containers() == cts and {c.status for c in cts} == {"running"}
    for name in ("a", "b", "c"):
        status = status_of(operator, name)
        assert status["phase"] == "Ready"  # what it said before, with the reason
        assert "mass-change guard" in status["message"] and revision in status["message"]

    operator.pull()
    operator.write("reconciler-confirm.yaml", f"confirm: {revision}\n")
    operator.push("confirm")
    runtime.reconciler.once()
    assert {status_of(operator, n)["phase"] for n in ("a", "b", "c")} == {"Orphaned"}
    assert cluster.containers() == cts and {c.status for c in cts} == {"running"}


# --- adoption


@pytest.mark.parametrize("vmid", [250, 150], ids=["inside the approved range", "outside it"])
def test_adoption_writes_only_the_marker_reports_every_difference_and_applies_them_once_adopt_is_removed(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, vmid: int
) -> None:
    legacy = cluster.pve.add_ct(
        vmid,
        "legacy",
        node="pve1",
        status="running",
        config={
            "cores": 2,
            "memory": 1024,
            "description": "made by hand in 2019",
            "tags": "keep",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth",
        },
    )
    by_hand = dict(legacy.config)
    fields: dict[str, Any] = dict(vmid=vmid, description="the legacy wiki")
    push(operator, "legacy", adopt=True, **fields)

    report = runtime.reconciler.once()

    assert job_types(runtime, report) == {"legacy": "adopt"}
    assert legacy.config["tags"] == "keep;reconciler;reconciler.legacy"
    assert {k: v for k, v in legacy.config.items() if k != "tags"} == {k: v for k, v in by_hand.items() if k != "tags"}
    assert legacy.status == "running"
    status = status_of(operator, "legacy")
    assert status["phase"] == "Ready" and status["vmid"] == vmid
    drift = {d["field"]: (d["desired"], d["observed"]) for d in status["drift"]}
    assert drift["cores"] == ("1", "2")
    assert drift["memory"] == ("512", "1024")
    assert drift["description"][1] == "made by hand in 2019"
    assert drift["tags"] == ("reconciler;reconciler.legacy", "keep;reconciler;reconciler.legacy")
    assert "remove adopt: true" in status["message"]
    assert runtime.reconciler.once().started == {}  # adopted once; the differences wait

    before = last_job(runtime)
    push(operator, "legacy", "apply the request to legacy", **fields)
    runtime.reconciler.once()

    status = status_of(operator, "legacy")
    assert (status["phase"], status.get("problems")) == ("Ready", None), status
    [update] = jobs_after(runtime, "legacy", before)  # its lease is read with its state: no wait for it
    assert (update.type, update.status) == ("update", "succeeded")
    log = log_of(runtime, update.id)
    assert "cores: 2 -> 1" in log and "memory: 1024 -> 512" in log
    assert "put back what was changed by hand" not in " ".join(log)  # edits now, not drift
    assert (str(legacy.config["cores"]), str(legacy.config["memory"])) == ("1", "512")
    assert str(legacy.config["description"]).startswith("the legacy wiki")
    assert legacy.config["tags"] == "reconciler;reconciler.legacy"
    assert hwaddr(legacy) == "BC:24:11:00:00:01"
    assert "drift" not in status_of(operator, "legacy")
    assert [c.vmid for c in cluster.containers()] == [vmid]
