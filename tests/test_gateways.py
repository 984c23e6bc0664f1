"""The gateways against real parts: git on disk, the fake Proxmox over HTTPS, SQLite on disk."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import FakeCluster

from reconciler.config import ProxmoxConfig
from reconciler.demo import TOKEN_ID
from reconciler.fake import TEMPLATE
from reconciler.gateways.proxmox import BAD_HEADER, ConfigChanged, Locked, Proxmox, VmidTaken
from reconciler.gateways.proxmox_body import ParamValue
from reconciler.gateways.sqlite import JobStore
from reconciler.model.errors import ProxmoxError
from reconciler.model.vocab import GuestStatus


def pve_for(cluster: FakeCluster, **changes: object) -> Proxmox:
    config = ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID, ca_file=cluster.ca_file, **changes)  # type: ignore[arg-type]
    return Proxmox(config, cluster.secret)


def test_a_wrong_token_and_an_unverifiable_certificate_are_told_apart(cluster: FakeCluster) -> None:
    wrong = Proxmox(
        ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID, ca_file=cluster.ca_file), "not-the-secret"
    )
    with pytest.raises(ProxmoxError, match="API token was refused"):
        wrong.guests()
    untrusted = Proxmox(ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID), cluster.secret)
    with pytest.raises(ProxmoxError, match="TLS verification"):
        untrusted.guests()


def test_a_task_still_running_at_the_timeout_is_an_error_not_a_silent_none(cluster: FakeCluster) -> None:
    cluster.pve.time_scale = 1.0
    cluster.pve.ct_secs["create"] = 30
    pve = pve_for(cluster)
    upid = pve.create_lxc(
        "pve1",
        {"vmid": 200, "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "rootfs": "local-lvm:2"},
    )
    with pytest.raises(ProxmoxError, match=r"still running after 0\.3 s"):
        pve.wait_task("pve1", upid, 0.3, "create")
    # Meanwhile the guest shows, locked, without tags: how a restart recognises an interrupted create.
    [guest] = [g for g in pve.guests() if g.type == "lxc"]  # beside the template VM
    assert (guest.vmid, guest.lock, guest.tags) == (200, "create", ())


def test_a_refused_parameter_carries_proxmoxs_field_error(cluster: FakeCluster) -> None:
    with pytest.raises(ProxmoxError) as caught:
        pve_for(cluster).create_lxc("pve1", {"vmid": 200, "ostemplate": "local:vztmpl/x.tar.zst", "cores": "many"})
    assert caught.value.status == 400
    assert "cores: type check ('integer') failed - got 'many'" in caught.value.reason


def test_a_feature_a_token_may_not_set_is_refused_by_proxmox(cluster: FakeCluster) -> None:
    with pytest.raises(ProxmoxError, match="only allowed for root@pam"):
        pve_for(cluster).create_lxc(
            "pve1",
            {
                "vmid": 200,
                "rootfs": "local-lvm:2",
                "features": "keyctl=1",
                "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            },
        )


def test_interrupted_jobs_are_marked_failed_after_a_restart(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create_job("create", "blog", "static-website", {"vmid": 200})
    store.start_job(job)
    store.close()
    again = JobStore(tmp_path / "jobs.sqlite")
    assert again.interrupt_running("reconciler restarted") == 1
    record = again.job(job)
    assert record is not None and record.status == "failed" and record.error_message == "reconciler restarted"


# The lifecycle calls, each against the fake with exactly the README's role (the `cluster` fixture).

VMID = 300


def running_ct(cluster: FakeCluster, node: str = "pve1", vmid: int = VMID) -> Proxmox:
    """A started container made through the API as the create job makes one; returns the client."""
    pve = pve_for(cluster)
    upid = pve.create_lxc(
        node,
        {
            "vmid": vmid,
            "ostemplate": TEMPLATE,
            "hostname": "web",
            "storage": "local-lvm",
            "rootfs": "local-lvm:8",
            "cores": 1,
            "memory": 512,
            "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
            "unprivileged": 1,
            "start": 1,
            "tags": "owned",
        },
    )
    pve.wait_task(node, upid, 5, "create")
    return pve


def status(pve: Proxmox, node: str, vmid: int = VMID) -> GuestStatus:
    return pve.container_state(node, vmid)[0]


def test_an_update_with_the_digest_read_changes_a_running_container_live(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    before = pve.container_config("pve1", VMID)
    assert before.digest and "digest" not in before.values
    assert before.get("cores") == "1" and before.get("rootfs") == "local-lvm:vm-300-disk-0,size=8G"
    params: dict[str, str | int] = {"cores": 2, "memory": 1024, "description": "a web server", "tags": "owned;web"}
    pve.update_config("pve1", VMID, params, (), before.digest)
    after = pve.container_config("pve1", VMID)
    assert {k: after.get(k) for k in params} == {k: str(v) for k, v in params.items()}
    assert status(pve, "pve1") == GuestStatus.RUNNING
    # A delete travels as a comma list beside the values.
    pve.update_config("pve1", VMID, {"onboot": 1}, ("description", "swap"), after.digest)
    again = pve.container_config("pve1", VMID)
    assert (again.get("onboot"), again.get("description"), again.get("swap")) == ("1", None, None)


def test_an_update_with_a_stale_digest_is_refused_and_changes_nothing(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    stale = pve.container_config("pve1", VMID)
    pve.update_config("pve1", VMID, {"description": "edited by hand"}, (), stale.digest)
    current = pve.container_config("pve1", VMID)
    with pytest.raises(ConfigChanged) as caught:
        pve.update_config("pve1", VMID, {"cores": 4}, (), stale.digest)
    assert caught.value.temporary
    assert caught.value.reason == "the container's config changed since it was read; it is read again and planned again"
    assert pve.container_config("pve1", VMID) == current


def test_resize_grows_the_root_disk_and_a_smaller_size_is_refused(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    digest = pve.container_config("pve1", VMID).digest
    pve.wait_task("pve1", pve.resize("pve1", VMID, "rootfs", 12, digest), 5, "resize")
    assert pve.container_config("pve1", VMID).get("rootfs") == "local-lvm:vm-300-disk-0,size=12G"
    with pytest.raises(ConfigChanged):
        pve.resize("pve1", VMID, "rootfs", 16, digest)
    with pytest.raises(ProxmoxError) as caught:
        pve.resize("pve1", VMID, "rootfs", 4, None)
    assert caught.value.reason == "unable to shrink disk size" and not caught.value.temporary
    assert pve.container_config("pve1", VMID).get("rootfs") == "local-lvm:vm-300-disk-0,size=12G"


def test_migrate_in_restart_mode_moves_a_running_container_and_it_runs_there(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    pve.wait_task("pve1", pve.migrate("pve1", VMID, "pve2", restart=True), 5, "migrate")
    [guest] = [g for g in pve.guests() if g.type == "lxc"]  # beside the template VM
    assert (guest.node, guest.status) == ("pve2", GuestStatus.RUNNING)
    assert status(pve, "pve2") == GuestStatus.RUNNING


def test_shutdown_and_stop_stop_the_container(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    # A container that ignores the clean shutdown is stopped hard at the timeout (forceStop).
    cluster.pve.ct(VMID).shutdown_secs = 600
    pve.wait_task("pve1", pve.shutdown("pve1", VMID, 1), 5, "shutdown")
    assert status(pve, "pve1") == GuestStatus.STOPPED
    pve.wait_task("pve1", pve.start("pve1", VMID), 5, "start")
    pve.wait_task("pve1", pve.stop("pve1", VMID), 5, "stop")
    assert status(pve, "pve1") == GuestStatus.STOPPED


def test_destroy_is_refused_for_a_protected_container_and_removes_an_unprotected_one(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    pve.wait_task("pve1", pve.stop("pve1", VMID), 5, "stop")
    pve.update_config("pve1", VMID, {"protection": 1}, (), pve.container_config("pve1", VMID).digest)
    with pytest.raises(ProxmoxError) as caught:
        pve.destroy("pve1", VMID)
    assert caught.value.reason == "can't remove CT 300 - protection mode enabled" and not caught.value.temporary
    assert [g.vmid for g in pve.guests() if g.type == "lxc"] == [VMID]
    pve.update_config("pve1", VMID, {}, ("protection",), pve.container_config("pve1", VMID).digest)
    # Proxmox refuses to destroy an HA resource without purge=1 (HA is set on the model: the role may not).
    cluster.pve.ct(VMID).ha_state = "stopped"
    pve.wait_task("pve1", pve.destroy("pve1", VMID), 5, "destroy")
    assert [g for g in pve.guests() if g.type == "lxc"] == []


def test_wait_unlocked_waits_out_a_backup_lock(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    cluster.pve.snapshot_lock(VMID, "backup")
    assert pve.container_lock("pve1", VMID) == "backup"
    release = threading.Timer(0.2, cluster.pve.unlock, (VMID,))
    release.start()
    try:
        pve.wait_unlocked("pve1", VMID, 5, "update")
    finally:
        release.cancel()
    assert pve.container_lock("pve1", VMID) is None


def test_wait_unlocked_names_the_lock_at_its_timeout_and_stops_when_aborted(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    cluster.pve.snapshot_lock(VMID, "backup")
    with pytest.raises(ProxmoxError, match=r"^update: container 300 still locked \(backup\) after 0\.2 s$") as late:
        pve.wait_unlocked("pve1", VMID, 0.2, "update")
    assert late.value.temporary
    with pytest.raises(ProxmoxError, match=r"^update: shutting down; container 300 still locked \(backup\)$"):
        pve.wait_unlocked("pve1", VMID, 5, "update", abort=lambda: "shutting down")


def test_a_change_during_a_backup_is_refused_as_locked(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    config = pve.container_config("pve1", VMID)
    cluster.pve.snapshot_lock(VMID, "backup")
    with pytest.raises(Locked) as caught:
        pve.update_config("pve1", VMID, {"cores": 2}, (), config.digest)
    assert (caught.value.what, caught.value.temporary) == ("backup", True)
    assert caught.value.reason == (
        "container is locked (backup): a backup, snapshot or migration is running; tried again later"
    )


def test_a_vmid_taken_meanwhile_keeps_proxmoxs_text(cluster: FakeCluster) -> None:
    running_ct(cluster, "pve2")
    with pytest.raises(VmidTaken) as caught:
        running_ct(cluster, "pve1")
    assert caught.value.reason == "CT 300 already exists on node 'pve2'" and caught.value.temporary


def test_a_task_ending_with_warnings_succeeds_and_carries_them(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    upid = pve.stop("pve1", VMID)
    # fakepve ends a task with OK or an error only; this task's record is made to read as PVE shows one that
    # logged a warning (exit status "WARNINGS: 1", a "WARN:" line), so the parsing runs over the real API.
    task = cluster.pve.tasks[upid]
    task["exitstatus"] = "WARNINGS: 1"
    task["log"][-1:-1] = ["WARN: unable to detect OS distribution"]
    result = pve.wait_task("pve1", upid, 5, "stop")
    assert (result.exitstatus, result.warnings) == ("WARNINGS: 1", ("WARN: unable to detect OS distribution",))


def test_a_deleted_token_is_refused_with_what_to_check(cluster: FakeCluster) -> None:
    pve = running_ct(cluster)
    del cluster.pve.apitokens[TOKEN_ID]
    with pytest.raises(ProxmoxError) as caught:
        pve.container_config("pve1", VMID)
    assert (caught.value.status, caught.value.temporary) == (401, False)
    assert caught.value.reason == (
        "the API token was refused (expired, revoked or a wrong secret): "
        "check PROXMOX_TOKEN_SECRET, proxmox.token_id in the config, and the token in Proxmox"
    )


def test_an_offline_node_and_a_dropped_connection_are_told_apart(cluster: FakeCluster) -> None:
    pve = running_ct(cluster, "pve2")
    config = pve.container_config("pve2", VMID)
    cluster.pve.set_node_offline("pve2")
    with pytest.raises(ProxmoxError) as offline:
        pve.update_config("pve2", VMID, {"cores": 2}, (), config.digest)
    assert offline.value.reason == "node pve2 is offline or cut off from the API host (No route to host)"
    assert (offline.value.status, offline.value.temporary) == (595, True)
    cluster.pve.set_node_offline("pve2", False)
    cluster.pve.flaky_network(drop_rate=1.0)
    where = f"at 127.0.0.1:{cluster.port}"
    with pytest.raises(ProxmoxError) as dropped:
        pve.update_config("pve2", VMID, {"cores": 2}, (), config.digest)
    assert dropped.value.reason == (
        f"the connection to the Proxmox API was dropped before an answer {where}; "
        "the change may or may not have been made"
    )
    assert dropped.value.temporary
    with pytest.raises(ProxmoxError) as read:
        pve.container_config("pve2", VMID)
    assert read.value.reason == f"the connection to the Proxmox API was dropped before an answer {where}"
    cluster.pve.flaky_network()
    assert pve.container_config("pve2", VMID).get("cores") == "1"


def test_a_secret_no_header_may_carry_is_refused_in_fixed_words_never_quoting_the_header(cluster: FakeCluster) -> None:
    # An env file with Windows line ends: the library's error would quote the whole Authorization header.
    broken = Proxmox(
        ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID, ca_file=cluster.ca_file),
        cluster.secret + "\r",
    )
    with pytest.raises(ProxmoxError) as caught:
        broken.guests()
    assert caught.value.reason == BAD_HEADER
    assert cluster.secret not in str(caught.value) and "PVEAPIToken" not in str(caught.value)
    assert not caught.value.temporary  # waiting will not mend the secret


def test_a_refusal_names_the_privilege_the_token_lacks_and_the_path(cluster: FakeCluster) -> None:
    body: dict[str, ParamValue] = {"vmid": 200, "ostemplate": TEMPLATE, "rootfs": "local-lvm:2"}
    cluster.pve.acl[TOKEN_ID] = [("/", {"VM.Audit"})]
    with pytest.raises(ProxmoxError) as caught:
        pve_for(cluster).create_lxc("pve1", body)
    assert caught.value.status == 403 and not caught.value.temporary
    # PVE's refusal of the create itself names nothing: the gateway knows what a create needs.
    lacks = "the API token lacks VM.Allocate on /vms/200 (see the README's Reconciler role)"
    assert caught.value.reason == f"Proxmox refused: {lacks}"

    cluster.pve.acl[TOKEN_ID] = [("/", {"VM.Audit", "VM.Allocate"})]
    with pytest.raises(ProxmoxError) as caught:
        pve_for(cluster).create_lxc("pve1", body)
    assert caught.value.reason == (
        "Proxmox refused: the API token lacks Datastore.AllocateSpace or Datastore.Audit on /storage/local"
        " (see the README's Reconciler role)"
    )
