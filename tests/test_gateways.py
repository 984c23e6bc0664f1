"""The gateways against real parts: git on disk, the fake Proxmox over HTTPS, SQLite on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeCluster

from reconciler.config import ProxmoxConfig
from reconciler.demo import TOKEN_ID
from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.model.errors import ProxmoxError


def pve_for(cluster: FakeCluster, **changes: object) -> Proxmox:
    config = ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID, ca_file=cluster.ca_file, **changes)  # type: ignore[arg-type]
    return Proxmox(config, cluster.secret)


def test_a_wrong_token_and_an_unverifiable_certificate_are_told_apart(cluster: FakeCluster) -> None:
    wrong = Proxmox(
        ProxmoxConfig(host="127.0.0.1", port=cluster.port, token_id=TOKEN_ID, ca_file=cluster.ca_file), "not-the-secret"
    )
    with pytest.raises(ProxmoxError, match="authentication failure"):
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
    [guest] = pve.guests()
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
