"""Crashes and trouble, with real parts: the daemon killed with SIGKILL at each step of a create and of a
destroy, a job database lost or locked, a marker removed by hand, a task that never ends, a VMID taken
between plan and create, and Proxmox refusing, failing, dropping or going offline.

Every daemon here is a real `reconciler run`; the fake Proxmox slows a task (time_scale 1 and ct_secs) so
that the kill lands while it runs, and the bare remote's pre-receive hook holds a push while the test kills.
Each wait is for something to show (a job log line, a lock, a status on the remote), never a fixed sleep.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import pytest
import yaml
from conftest import NODES, DaemonProcess, FakeCluster, OperatorClone, request_yaml, static

from reconciler.config import load_config
from reconciler.demo import TOKEN_ID
from reconciler.fake import TEMPLATE_FILE, TEMPLATE_STORAGE, DhcpFakePve, add_token, serving
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.gateways.sqlite import Job, JobStore
from reconciler.model.errors import ProxmoxError
from reconciler.runtime import Runtime, open_runtime

SLOW = 4.0  # seconds a slowed create or destroy task takes (time_scale 1): room for a kill and a restart


# --- what the test reads: the remote's status files, the job database, the fake's calls


def remote_status(operator: OperatorClone, name: str) -> dict[str, Any]:
    """The request's status file as the remote has it now ({} when there is none yet)."""
    operator.repo.git.fetch("-q", "origin")
    try:
        text = operator.repo.git.show(f"origin/main:status/{name}.yaml")
    except git.GitCommandError:
        return {}
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def phase_is(operator: OperatorClone, name: str, phase: str) -> Callable[[], bool]:
    return lambda: remote_status(operator, name).get("phase") == phase


def database(config_path: Path) -> Path:
    return load_config(config_path).state.database


@contextmanager
def reading(path: Path) -> Iterator[JobStore]:
    """The job database opened read-only, beside a daemon that may be writing it."""
    store = JobStore.open_readonly(path, busy_timeout=10)
    assert store is not None, f"no job database at {path}"
    try:
        yield store
    finally:
        store.close()


def jobs(path: Path) -> list[Job]:
    if not path.exists():
        return []
    with reading(path) as store:
        return store.jobs(limit=500)


def logged(path: Path, text: str) -> bool:
    """Whether any job's log in the database has a line containing text."""
    if not path.exists():
        return False
    with reading(path) as store:
        return any(text in line.message for job in store.jobs(limit=500) for line in store.logs(job.id))


def hostnames(cluster: FakeCluster) -> list[str]:
    return [str(c.config.get("hostname")) for c in cluster.containers()]


def calls(cluster: FakeCluster, method: str, suffix: str) -> int:
    return sum(1 for m, path, _ in cluster.pve.requests if m == method and path.endswith(suffix))


def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait for check() while no daemon runs (DaemonProcess.wait_for gives up once its process has ended)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.05)


def edit_config(config_path: Path, **sections: dict[str, Any]) -> None:
    """Merge values into sections of the config file (before the daemon's own block is added)."""
    doc = yaml.safe_load(config_path.read_text())
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


@contextmanager
def runtime_for(config_path: Path, env: dict[str, str]) -> Iterator[Runtime]:
    """An in-process runtime on the config file as it is now (after edit_config)."""
    runtime = open_runtime(load_config(config_path), env)
    try:
        yield runtime
    finally:
        runtime.close()


def settled(store: JobStore) -> None:
    """Nothing left half-done in the database: no job pending or running, no intent open."""
    assert [(j.id, j.type, j.status) for j in store.jobs(limit=500) if j.status in ("pending", "running")] == []
    assert store.intents() == []


# --- a push held in the remote's pre-receive hook


@dataclass
class PushGate:
    """While `block` exists, a push waits in the remote's pre-receive hook (20 s at most, then goes on)."""

    block: Path
    entered: Path  # made when a push starts waiting
    left: Path  # made when it stops waiting

    def close(self) -> None:
        self.block.touch()

    def open(self) -> None:
        self.block.unlink(missing_ok=True)


HOOK = """#!/bin/sh
cat >/dev/null
if [ -e '{block}' ]; then
    touch '{entered}'
    n=0
    while [ -e '{block}' ] && [ "$n" -lt 400 ]; do sleep 0.05; n=$((n + 1)); done
    touch '{left}'
fi
exit 0
"""


@pytest.fixture
def gate(remote: Path, tmp_path: Path) -> Iterator[PushGate]:
    where = tmp_path / "gate"
    where.mkdir()
    push_gate = PushGate(where / "block", where / "entered", where / "left")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(HOOK.format(block=push_gate.block, entered=push_gate.entered, left=push_gate.left))
    hook.chmod(0o755)
    yield push_gate
    push_gate.open()  # a push a killed daemon left in the hook finishes


# --- 1. SIGKILL at each step of a create, then a restart

RUNNING, PUSHING, ENDED = "task running", "status push under way", "job ended, status not pushed"


@pytest.mark.parametrize("moment", [RUNNING, PUSHING, ENDED])
def test_a_daemon_killed_during_a_create_converges_after_restart_to_one_ready_container(
    moment: str,
    daemon: DaemonProcess,
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    gate: PushGate,
) -> None:
    db = database(config_path)
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 0 if moment == ENDED else SLOW
    daemon.configure(recheck=0.2).start()
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.77/24")))
    operator.push()
    if moment != RUNNING:
        gate.close()  # the pass's status push will wait in the remote's hook
    assert daemon.push_hook()[0] == 202

    daemon.wait_for(lambda: logged(db, "create task UPID:pve1:"), what="the create call")
    if moment == RUNNING:
        daemon.wait_for(phase_is(operator, "slow", "Provisioning"), what="the pass's status push")
    else:
        daemon.wait_for(gate.entered.exists, what="the status push to wait in the hook")
    if moment == ENDED:
        # The job ended; the pass its end triggers (which writes Ready) waits behind this one, whose push is
        # held: a kill now lands after the job and before any status of its outcome is committed.
        daemon.wait_for(lambda: [j.status for j in jobs(db)] == ["succeeded"], what="the create job to end")
    else:
        assert [c.lock for c in cluster.containers()] == ["create"]  # the task still runs
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    if moment != RUNNING:
        gate.open()  # the push the daemon began lands or not, as on a real remote; either way it is over
        until(gate.left.exists, "the held push to leave the hook")

    daemon.start()
    daemon.wait_for(phase_is(operator, "slow", "Ready"), what="status/slow.yaml Ready on the remote")

    assert hostnames(cluster) == ["slow"]
    assert len(cluster.create_posts()) == 1
    status = remote_status(operator, "slow")
    assert (status["vmid"], status["node"], status["address"]) == (200, "pve1", "192.168.50.77")
    assert daemon.stop() == 0
    with reading(db) as store:
        settled(store)
        [create] = [j for j in store.jobs() if j.type == "create"]
        if moment == ENDED:
            assert create.status == "succeeded"
        else:
            assert create.status == "failed"
            assert "interrupted" in (create.error_message or "")
        assert [(h.key, h.node) for h in store.inventory()["slow"]] == [("200", "pve1")]


# --- 2. SIGKILL during a destroy, then a restart


def test_a_daemon_killed_during_a_destroy_finds_the_container_gone_after_restart(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster, config_path: Path
) -> None:
    db = database(config_path)
    daemon.configure(recheck=0.2).start()
    operator.write("requests/keep.yaml", request_yaml("keep", network=static("192.168.50.80/24")))
    operator.write("requests/gone.yaml", request_yaml("gone", network=static("192.168.50.81/24")))
    operator.push()
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(phase_is(operator, "keep", "Ready"), what="keep Ready")
    daemon.wait_for(phase_is(operator, "gone", "Ready"), what="gone Ready")
    [keep] = [c for c in cluster.containers() if c.config["hostname"] == "keep"]
    [gone] = [c.vmid for c in cluster.containers() if c.config["hostname"] == "gone"]

    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["destroy"] = SLOW
    operator.pull()
    # One of two owned guests: not a mass change.
    operator.write("requests/gone.yaml", request_yaml("gone", network=static("192.168.50.81/24"), state="absent"))
    operator.push("gone: state absent")
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(lambda: logged(db, "destroy task UPID:pve1:"), what="the destroy call")
    daemon.wait_for(
        lambda: (
            sorted((c.config["hostname"], c.lock) for c in cluster.containers())
            == [("gone", "destroyed"), ("keep", None)]
        ),
        what="the destroy task to hold the guest",
    )
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL

    daemon.start()
    daemon.wait_for(phase_is(operator, "gone", "Deleted"), what="status/gone.yaml Deleted on the remote")

    assert cluster.containers() == [keep]
    assert calls(cluster, "DELETE", f"/lxc/{gone}") == 1  # the destroy was not sent again
    assert remote_status(operator, "keep")["phase"] == "Ready"
    assert daemon.stop() == 0
    with reading(db) as store:
        settled(store)
        [destroy] = [j for j in store.jobs() if j.type == "destroy"]
        assert destroy.status == "failed" and "interrupted" in (destroy.error_message or "")
        assert "gone" not in store.inventory() and "gone" not in store.applied()


# --- 3. The job database lost while a create task runs


def test_a_job_database_lost_during_a_create_makes_no_second_container(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster, config_path: Path
) -> None:
    db = database(config_path)
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = SLOW
    daemon.configure(recheck=0.2).start()
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.78/24")))
    operator.push()
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(lambda: logged(db, "create task UPID:pve1:"), what="the create call")
    daemon.wait_for(phase_is(operator, "slow", "Provisioning"), what="the pass's status push")
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert not db.exists()

    daemon.start()  # the first pass runs before start returns, while the guest is still locked `create`
    if [c.lock for c in cluster.containers()] == ["create"]:  # then it was at that pass too
        status = remote_status(operator, "slow")
        assert status["phase"] == "Pending"
        assert "being created by a task the job database does not know of" in status["message"]
    daemon.wait_for(phase_is(operator, "slow", "Ready"), what="status/slow.yaml Ready on the remote")

    assert hostnames(cluster) == ["slow"]
    assert len(cluster.create_posts()) == 1
    assert remote_status(operator, "slow")["vmid"] == 200
    assert daemon.stop() == 0
    with reading(db) as store:
        settled(store)
        assert [j.type for j in store.jobs() if j.type == "create"] == []  # nothing was created again


def test_a_guest_being_created_by_a_task_the_database_does_not_know_holds_new_creates(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    # What a lost database leaves: a guest locked `create`, in the approved range, without tags.
    cluster.pve.add_ct(200, None, node="pve1", config={"lock": "create"}, defaults=False)
    operator.write("requests/slow.yaml", request_yaml("slow", network=static("192.168.50.79/24")))
    operator.push()

    status = runtime.reconciler.once().statuses["slow"]

    assert status.phase == "Pending"
    assert status.message == (
        "waiting: container 200 in the approved range is being created by a task the job database does not"
        " know of; new containers wait until its marker shows"
    )
    assert cluster.create_posts() == []


# --- 4. A marker removed by hand


def test_a_container_whose_marker_was_removed_by_hand_is_failed_and_not_made_again(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/lost.yaml", request_yaml("lost", network=static("192.168.50.82/24")))
    operator.push()
    assert runtime.reconciler.once().statuses["lost"].phase == "Ready"
    [ct] = cluster.containers()
    del ct.config["tags"]  # an operator cleared the tags in the web UI

    status = runtime.reconciler.once().statuses["lost"]

    assert status.phase == "Failed"
    assert status.message.startswith(
        f"container {ct.vmid} lost its marker (the tags reconciler and reconciler.lost); nothing is created meanwhile"
    )
    assert cluster.containers() == [ct] and len(cluster.create_posts()) == 1
    assert [h.key for h in runtime.store.inventory()["lost"]] == [str(ct.vmid)]
    operator.pull()
    assert operator.yaml("status/lost.yaml")["phase"] == "Failed"
    assert runtime.reconciler.once().statuses["lost"].phase == "Failed"
    assert len(cluster.create_posts()) == 1


# --- 5. A create task that never ends


def test_a_create_task_that_never_ends_fails_at_the_task_timeout_and_is_not_provisioning_for_ever(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    edit_config(config_path, proxmox={"task_timeout": 1})
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 100_000
    operator.write("requests/stuck.yaml", request_yaml("stuck", network=static("192.168.50.83/24")))
    operator.push()

    with runtime_for(config_path, env) as runtime:
        status = runtime.reconciler.once().statuses["stuck"]

        assert status.phase == "Failed"
        assert status.message == (
            "the create task of container 200 has run for more than 1 s (proxmox.task_timeout);"
            " see its task log in Proxmox"
        )
        [job] = runtime.store.jobs()
        assert (job.type, job.status) == ("create", "failed")
        assert re.fullmatch(r"task UPID:pve1:\S+ still running after 1 s", job.error_message or "")
        assert runtime.reconciler.once().statuses["stuck"].phase == "Failed"  # later runs say the same
        assert [c.lock for c in cluster.containers()] == ["create"] and len(cluster.create_posts()) == 1
    operator.pull()
    assert operator.yaml("status/stuck.yaml")["phase"] == "Failed"


# --- 6. Two creates racing for one VMID


def test_a_vmid_taken_between_plan_and_create_is_chosen_again_and_the_container_made_once(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/race.yaml", request_yaml("race", network=static("192.168.50.84/24")))
    operator.push()
    reconciler = runtime.reconciler
    decision = reconciler.decide(reconciler.read_source())
    [action] = decision.plan.actions
    assert (action.job_type, action.vmid) == ("create", 200)
    cluster.pve.add_ct(200, "elsewhere", node="pve2")  # another client's create, just after the plan looked

    started = runtime.runner.submit(decision.plan.actions, reconciler.tools)
    assert runtime.runner.wait_idle(30)

    job = runtime.store.job(started["race"])
    assert job is not None and job.status == "succeeded", job
    lines = [line.message for line in runtime.store.logs(job.id)]
    assert "CT 200 already exists on node 'pve2': choosing again, VMID 201" in lines
    assert [(c.vmid, c.config["hostname"]) for c in cluster.containers()] == [(200, "elsewhere"), (201, "race")]
    status = reconciler.once().statuses["race"]
    assert (status.phase, status.vmid) == ("Ready", 201)
    assert len(cluster.create_posts()) == 2  # the one refused, the one made
    assert runtime.store.intents() == []


# --- 7. Proxmox trouble: a clear status naming the cause, a retry after a backoff, no duplicate


@dataclass(frozen=True)
class Trouble:
    node: str
    begin: Callable[[FakeCluster], None]
    end: Callable[[FakeCluster], None]
    cause: str  # what the job's error and the request's status say
    breaks_passes: bool = False  # whether a whole pass fails too while it lasts


TROUBLES = {
    "offline node": Trouble(
        "pve2",
        lambda c: c.pve.set_node_offline("pve2"),
        lambda c: c.pve.set_node_offline("pve2", False),
        "create failed: node pve2 is offline or cut off from the API host (No route to host)",
    ),
    "task ends in error": Trouble(
        "pve1",
        lambda c: c.pve.fail("POST", "/nodes/pve1/lxc", error="found_lock_trying_remove_lock"),
        lambda c: c.pve.failures.clear(),
        "create failed: found lock 'backup' trying to remove",
    ),
    "5xx on the create call": Trouble(
        "pve1",
        lambda c: c.pve.fail(
            "POST", "/nodes/pve1/lxc", 500, "cfs-lock 'storage-local-lvm' error: got lock request timeout"
        ),
        lambda c: c.pve.failures.clear(),
        "create failed: cfs-lock 'storage-local-lvm' error: got lock request timeout",
    ),
    "dropped connection": Trouble(
        "pve1",
        lambda c: c.pve.flaky_network(drop_rate=1.0),
        lambda c: c.pve.flaky_network(),
        "the connection to the Proxmox API was dropped before an answer",
        breaks_passes=True,
    ),
    "revoked token": Trouble(
        "pve1",
        lambda c: c.pve.apitokens.pop(TOKEN_ID),
        lambda c: c.pve.apitokens.__setitem__(TOKEN_ID, c.secret),
        "the API token was refused (expired, revoked or a wrong secret): check PROXMOX_TOKEN_SECRET",
        breaks_passes=True,
    ),
}


@pytest.mark.parametrize("trouble", TROUBLES.values(), ids=TROUBLES.keys())
def test_proxmox_trouble_during_a_create_is_named_retried_after_a_backoff_and_makes_one_container(
    trouble: Trouble, operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/svc.yaml", request_yaml("svc", node=trouble.node, network=static("192.168.50.85/24")))
    operator.push()
    reconciler = runtime.reconciler
    decision = reconciler.decide(reconciler.read_source())
    trouble.begin(cluster)  # after the plan looked: the create call itself meets it

    started = runtime.runner.submit(decision.plan.actions, reconciler.tools)
    assert runtime.runner.wait_idle(30)

    job = runtime.store.job(started["svc"])
    assert job is not None and job.status == "failed"
    assert trouble.cause.removeprefix("create failed: ") in (job.error_message or "")
    if trouble.breaks_passes:
        with pytest.raises(ProxmoxError, match=re.escape(trouble.cause)):
            reconciler.cycle()  # the daemon says so on /readyz and tries again; nothing is changed
    trouble.end(cluster)
    posts = len(cluster.create_posts())
    report = reconciler.cycle()
    assert report.started == {}  # held back until its backoff ends
    assert runtime.runner.in_backoff() == 1
    status = report.statuses["svc"]
    assert status.phase == "Failed" and trouble.cause in status.message, status
    operator.pull()
    assert trouble.cause in operator.yaml("status/svc.yaml")["message"]
    assert len(cluster.create_posts()) == posts

    final = reconciler.once()  # a new run tries again at once

    assert final.statuses["svc"].phase == "Ready"
    assert hostnames(cluster) == ["svc"]
    assert runtime.store.intents() == []


def test_a_change_to_a_container_locked_by_a_backup_waits_and_is_made_once_the_lock_is_gone(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/svc.yaml", request_yaml("svc", network=static("192.168.50.86/24")))
    operator.push()
    reconciler = runtime.reconciler
    assert reconciler.once().statuses["svc"].phase == "Ready"
    [ct] = cluster.containers()
    operator.pull()
    operator.write(
        "requests/svc.yaml",
        request_yaml("svc", network=static("192.168.50.86/24"), resources={"cores": 2, "memory": 512, "disk": 8}),
    )
    operator.push("svc: 2 cores")
    decision = reconciler.decide(reconciler.read_source())
    [action] = decision.plan.actions
    assert action.job_type == "update"
    cluster.pve.snapshot_lock(ct.vmid, "backup")  # a backup starts just after the plan looked

    started = runtime.runner.submit(decision.plan.actions, reconciler.tools)
    assert runtime.runner.wait_idle(30)

    job = runtime.store.job(started["svc"])
    assert job is not None and job.status == "failed"
    assert (
        job.error_message
        == "container is locked (backup): a backup, snapshot or migration is running; tried again later"
    )
    report = reconciler.cycle()  # the backup still runs
    assert report.started == {}
    status = report.statuses["svc"]
    assert status.phase == "Provisioning"
    assert status.message.startswith(f"container {ct.vmid} is locked (backup)")
    assert "restart" not in status.message, status.message  # no restart happened: the job was refused
    assert ct.config["cores"] == 1

    cluster.pve.unlock(ct.vmid)
    final = reconciler.once()

    assert final.statuses["svc"].phase == "Ready"
    assert cluster.containers() == [ct] and int(ct.config["cores"]) == 2
    assert runtime.store.intents() == []


# --- 8. A task that ends with warnings


class WarningFakePve(DhcpFakePve):
    """A fake whose create tasks end as PVE's do when the worker logged a warning: `WARNINGS: 1`.

    At time_scale 0 a task has ended before the create call answers, so its record is rewritten before any
    client can see it, the way fakepve's own task runner writes it.
    """

    WARNING = "WARN: no ostype for this template, using 'unmanaged'"

    async def task(self, node: str, ttype: str, tid: Any, user: str, body: Any, **kwargs: Any) -> str:
        upid = str(await super().task(node, ttype, tid, user, body, **kwargs))
        record = self.tasks[upid]
        if ttype == "vzcreate" and record["exitstatus"] == "OK":
            assert record["status"] == "stopped", "set time_scale 0: the task must have ended here"
            record["exitstatus"] = "WARNINGS: 1"
            record["log"][-1:] = [self.WARNING, "TASK WARNINGS: 1"]
        return upid


class TestTaskWarnings:
    @pytest.fixture
    def cluster(self, tmp_path: Path) -> Iterator[FakeCluster]:
        """conftest's cluster, on the fake above."""
        pve = WarningFakePve(host="127.0.0.1", port=0)
        for node in NODES:
            pve.add_node(node)
        pve.store_file(TEMPLATE_STORAGE, TEMPLATE_FILE, 128 * 1024**2, content="vztmpl")
        secret = secrets.token_urlsafe(24)
        add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
        with serving(pve, tmp_path / "pki") as ca_file:
            yield FakeCluster(pve, ca_file, secret)

    def test_a_create_task_ending_with_warnings_succeeds_and_its_warnings_are_in_the_job_log(
        self, operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
    ) -> None:
        operator.write("requests/warned.yaml", request_yaml("warned", network=static("192.168.50.87/24")))
        operator.push()

        report = runtime.reconciler.once()

        assert report.statuses["warned"].phase == "Ready"
        [create] = [j for j in runtime.store.jobs() if j.type == "create"]
        assert create.status == "succeeded"
        lines = [(line.level, line.message) for line in runtime.store.logs(create.id)]
        assert ("info", "create task ended with WARNINGS: 1") in lines
        assert ("warning", f"task log: {WarningFakePve.WARNING}") in lines
        assert hostnames(cluster) == ["warned"]


# --- 9. The job database: unusable at start, or held by another process


def run_once_more(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "run", "--config", str(config_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("kind", ["parent is a file", "not a database"])
def test_a_job_database_that_cannot_be_used_stops_the_daemon_at_start_with_one_clear_line(
    kind: str, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    if kind == "parent is a file":
        parent = tmp_path / "state"
        parent.write_text("a file where the database's directory should be\n")
        path = parent / "jobs.sqlite"
        why = f"cannot write the job database: {parent} is a file, not a directory"
    else:
        path = tmp_path / "garbage.sqlite"
        path.write_bytes(b"this is not an SQLite database, just some bytes\n" * 100)
        why = "this file is not a usable SQLite database (file is not a database)"
    edit_config(config_path, state={"database": str(path)})

    done = run_once_more(config_path, env)

    assert done.returncode == 2, done
    assert "Traceback" not in done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"reconciler: {path}: {why}"), line


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_job_database_held_by_another_process_delays_a_create_and_loses_nothing(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster, config_path: Path
) -> None:
    db = database(config_path)
    edit_config(config_path, state={"busy_timeout": 0.5})
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = SLOW
    daemon.configure(recheck=0.2, backoff_base=0.5).start()
    operator.write("requests/held.yaml", request_yaml("held", network=static("192.168.50.88/24")))
    operator.push()
    assert daemon.push_hook()[0] == 202
    daemon.wait_for(lambda: logged(db, "create task UPID:pve1:"), what="the create call")

    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "holding\n"
            assert [c.lock for c in cluster.containers()] == ["create"]  # the job has written nothing since
            # The task ends in Proxmox while the job cannot write down that it did.
            daemon.wait_for(lambda: [c.status for c in cluster.containers()] == ["running"], what="the task")
            daemon.wait_for(
                lambda: "the job database is locked by another process" in daemon.log(),
                what="the daemon to say the database is locked",
            )
        finally:
            holder.stdin.close()
            assert holder.wait(10) == 0

    daemon.wait_for(phase_is(operator, "held", "Ready"), what="status/held.yaml Ready on the remote")
    assert hostnames(cluster) == ["held"] and len(cluster.create_posts()) == 1
    assert daemon.proc is not None and daemon.proc.poll() is None  # the daemon went on
    daemon.wait_for(lambda: [j.status for j in jobs(db) if j.type == "create"] == ["succeeded"], what="the job")
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0
    with reading(db) as store:
        settled(store)
