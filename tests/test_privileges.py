"""Least privilege: the README's role is enough for everything the reconciler does, and each privilege in it is
needed by something it does.

The fake Proxmox checks permissions per path as PVE does; the `cluster` fixture's token holds exactly
REQUIRED_PRIVILEGES (the README's `pveum role add` line, tests/test_readme.py) on `/`. A case here takes one
privilege away, has the reconciler do the one thing that needs it, and reads the status file the operator sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FakeCluster, OperatorClone, request_yaml
from test_vms import VM_PRIVILEGES

from reconciler.config import Config, load_config
from reconciler.demo import TOKEN_ID
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.runtime import Runtime

FOREIGN = 250  # a container made by hand, for adoption


@pytest.fixture
def config(config_path: Path) -> Config:
    """The demo site, with every owned guest's config read on every pass (so a pass sees what the last did)."""
    doc = yaml.safe_load(config_path.read_text())
    doc["proxmox"]["config_refresh"] = 0
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(config_path)


def push(operator: OperatorClone, name: str, **fields: Any) -> None:
    operator.pull()
    operator.write(f"requests/{name}.yaml", request_yaml(name, **fields))
    operator.push(f"{name}: {', '.join(fields) or 'added'}")


def status_of(operator: OperatorClone, name: str) -> Any:
    operator.pull()
    return operator.yaml(f"status/{name}.yaml")


def grant_only(cluster: FakeCluster, privileges: set[str]) -> None:
    """The token's privileges on / from now on (the fake reads its ACL on every call)."""
    cluster.pve.acl[TOKEN_ID] = [("/", set(privileges))]


def hostnames(cluster: FakeCluster) -> list[str]:
    return sorted(str(c.config.get("hostname")) for c in cluster.containers())


def add_foreign(cluster: FakeCluster) -> Any:
    return cluster.pve.add_ct(
        FOREIGN,
        "legacy",
        node="pve1",
        status="running",
        config={"cores": 1, "memory": 512, "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp"},
    )


def test_everything_the_reconciler_does_goes_through_with_exactly_the_readme_role(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    assert cluster.pve.acl == {TOKEN_ID: [("/", set(REQUIRED_PRIVILEGES))]}
    add_foreign(cluster)
    push(operator, "keep")  # a bystander: the mass-change guard lets one of two go
    push(operator, "svc", start=False)
    push(operator, "legacy", vmid=FOREIGN, adopt=True)
    runtime.reconciler.once()  # create (not started), create (its lease read with its state), adopt

    changes: list[dict[str, Any]] = [
        {"start": True},  # start
        {  # update every field the role covers: cpu, memory, network, options
            "hostname": "svc2",
            "description": "renamed",
            "tags": ["web"],
            "resources": {"cores": 2, "memory": 1024, "disk": 8},
            "network": {"mode": "dhcp", "bridge": "vmbr0", "vlan": 10},
        },
        {"hostname": "svc2", "resources": {"cores": 2, "memory": 1024, "disk": 12}},  # resize
        {"hostname": "svc2", "resources": {"cores": 2, "memory": 1024, "disk": 12}, "node": "pve2", "migrate": True},
        {"hostname": "svc2", "resources": {"cores": 2, "memory": 1024, "disk": 12}, "node": "pve2", "state": "stopped"},
        {"hostname": "svc2", "node": "pve2", "state": "absent"},  # destroy
    ]
    for change in changes:
        push(operator, "svc", **change)
        runtime.reconciler.once()

    jobs = runtime.store.jobs(limit=100)
    assert {(j.type, j.status) for j in jobs} == {
        (kind, "succeeded") for kind in ("create", "adopt", "start", "update", "migrate", "stop", "destroy")
    }
    assert hostnames(cluster) == ["keep", "legacy"]
    assert status_of(operator, "svc")["phase"] == "Deleted"
    assert status_of(operator, "legacy")["phase"] == "Ready"


@dataclass(frozen=True)
class Case:
    """One privilege taken away, and what then fails: the step, with the path the status names."""

    privilege: str
    before: dict[str, Any]  # the request's fields when made with the whole role
    change: dict[str, Any] | None  # what is pushed without the privilege; None: the create itself is the action
    step: str
    path: str
    adopt: bool = False  # the request takes over the foreign container instead


RESIZED = {"resources": {"cores": 1, "memory": 512, "disk": 12}}
CASES: dict[str, Case] = {
    "create needs Datastore.AllocateSpace for the new volume": Case(
        "Datastore.AllocateSpace", {}, RESIZED, "resize", "/storage/local-lvm"
    ),
    "create needs SDN.Use for the bridge": Case("SDN.Use", {}, None, "create", "/sdn/zones/localnetwork/vmbr0"),
    "create needs VM.Allocate": Case("VM.Allocate", {}, None, "create", "/vms/{vmid}"),
    "destroy needs VM.Allocate": Case("VM.Allocate", {}, {"state": "absent"}, "destroy", "/vms/{vmid}"),
    "create needs VM.Audit to see the container afterwards": Case("VM.Audit", {}, None, "create", "/vms/{vmid}"),
    "update needs VM.Config.CPU for cores": Case(
        "VM.Config.CPU", {}, {"resources": {"cores": 2, "memory": 512, "disk": 8}}, "update config", "/vms/{vmid}"
    ),
    "resize needs VM.Config.Disk": Case("VM.Config.Disk", {}, RESIZED, "resize", "/vms/{vmid}"),
    "update needs VM.Config.Memory": Case(
        "VM.Config.Memory", {}, {"resources": {"cores": 1, "memory": 1024, "disk": 8}}, "update config", "/vms/{vmid}"
    ),
    "update needs VM.Config.Network for the hostname": Case(
        "VM.Config.Network", {}, {"hostname": "svc2"}, "update config", "/vms/{vmid}"
    ),
    "update needs VM.Config.Options for the description": Case(
        "VM.Config.Options", {}, {"description": "renamed"}, "update config", "/vms/{vmid}"
    ),
    "adopt needs VM.Config.Options for the marker": Case(
        "VM.Config.Options", {}, {"vmid": FOREIGN, "adopt": True}, "update config", f"/vms/{FOREIGN}", adopt=True
    ),
    "migrate needs VM.Migrate": Case("VM.Migrate", {}, {"node": "pve2", "migrate": True}, "migrate", "/vms/{vmid}"),
    "stop needs VM.PowerMgmt": Case("VM.PowerMgmt", {}, {"state": "stopped"}, "shutdown", "/vms/{vmid}"),
    "start needs VM.PowerMgmt": Case("VM.PowerMgmt", {"start": False}, {"start": True}, "start", "/vms/{vmid}"),
}


def test_every_privilege_of_the_role_is_needed_by_something_the_reconciler_does() -> None:
    # The VMs' own (clone, cloud-init, guest agent) are shown in tests/test_vms.py.
    assert {case.privilege for case in CASES.values()} | set(VM_PRIVILEGES) == set(REQUIRED_PRIVILEGES)


@pytest.mark.parametrize("name", list(CASES))
def test_without_one_privilege_the_status_names_it_and_the_path(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime, name: str
) -> None:
    case = CASES[name]
    request = "legacy" if case.adopt else "svc"
    vmid = FOREIGN if case.adopt else 200
    if case.adopt:
        add_foreign(cluster)
    elif case.change is not None:
        push(operator, "svc", **case.before)
        push(operator, "keep")  # a bystander: the mass-change guard lets one of two stop or go
        runtime.reconciler.once()
        [vmid] = [c.vmid for c in cluster.containers() if c.config["hostname"] == "svc"]
    before = {c.vmid: (c.node, c.status, dict(c.config)) for c in cluster.containers()}
    grant_only(cluster, set(REQUIRED_PRIVILEGES) - {case.privilege})

    push(operator, request, **{**case.before, **(case.change or {})})
    report = runtime.reconciler.once()

    status = status_of(operator, request)
    assert status["phase"] == "Failed", status
    assert f"{case.step} failed: " in status["message"]
    lacks = f"the API token lacks {case.privilege} on {case.path.format(vmid=vmid)} (see the README's Reconciler role)"
    assert lacks in status["message"]
    assert report.statuses[request].message == status["message"]
    after = {c.vmid: (c.node, c.status, dict(c.config)) for c in cluster.containers()}
    if case.change is None:  # nothing was created, not even a container the token could not see
        assert after == {}
    elif case.step == "destroy":  # shut down first, which the token may do; it is still there
        assert after.keys() == before.keys()
    elif case.step in ("shutdown", "start"):  # the power state is kept (stopping also sets onboot, which it may)
        assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
    else:  # a refused change leaves the container as it was
        assert after == before


def test_a_token_that_loses_vm_audit_never_makes_a_second_container(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    # Without VM.Audit, Proxmox lists no guest: the container made before looks gone, and a create would go
    # through (it needs no VM.Audit) and hide its container too, on every retry.
    push(operator, "svc")
    runtime.reconciler.once()
    [made] = cluster.containers()
    grant_only(cluster, set(REQUIRED_PRIVILEGES) - {"VM.Audit"})

    runtime.reconciler.once()
    runtime.reconciler.once()

    assert cluster.containers() == [made]
    message = status_of(operator, "svc")["message"]
    assert message.startswith("create failed: the API token lacks VM.Audit on /vms/")
    assert "nothing was created" in message
