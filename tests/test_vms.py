"""VMs from cloud-init templates, against the fake Proxmox in-process (its guest agent is switched on by the test,
as a booting guest would), with the README's role.

What the fake does not model, and so is asserted through the requests it received instead of the VM's config:
- a QEMU disk resize: the task succeeds and the size stays the template's;
- per-clone cloud-init volumes: a clone shares the template's cloud-init drive;
- `nameserver` validation, and a real node's refusal of agent calls to a VM with agent=0.
"""

from __future__ import annotations

import base64
import shutil
import signal
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
import yaml
from clirun import plan as plan_cli
from conftest import PROFILES, SITE, DaemonProcess, FakeCluster, OperatorClone, boot_guest, keygen
from hypothesis import given
from hypothesis import strategies as st
from test_crash import database, logged, phase_is, reading, remote_status, settled

from reconciler.config import load_config
from reconciler.demo import TOKEN_ID
from reconciler.desired.profile import builtin_profiles_dir
from reconciler.desired.request import public_key_problem
from reconciler.desired.validate import validate
from reconciler.fake import VM_TEMPLATE, guest_interfaces
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.gateways.proxmox_body import sshkeys
from reconciler.model.desired import RequestFile
from reconciler.model.observed import Interface, vm_address
from reconciler.runtime import Runtime, open_runtime


def public_key(kind: str = "ssh-ed25519", comment: str = "operator@laptop", seed: int = 1) -> str:
    """An OpenSSH public key line: the type, then base64 of the length-prefixed type and key bytes."""
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()} {comment}".strip()


KEY = public_key()


def vm_yaml(name: str, /, **changes: Any) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "reconciler/v1",
        "kind": "vm",
        "name": name,
        "profile": "vm-generic",
        "node": "pve1",
        "storage": "local-lvm",
        "resources": {"cores": 2, "memory": 4096, "disk": 32},
        "start": True,
        "network": {"mode": "dhcp", "bridge": "vmbr0"},
        "cloud_init": {"user": "debian", "ssh_keys": [KEY]},
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def problems_of(text: str, name: str = "docker1") -> list[str]:
    _, invalid = validate([RequestFile(f"requests/{name}.yaml", name, text.encode())], PROFILES, SITE)
    return [str(p) for p in invalid[0].problems] if invalid else []


# --- the request -----------------------------------------------------------------------------------------------


def test_a_vm_request_in_the_issues_shape_is_valid_and_resolves_its_template() -> None:
    text = vm_yaml(
        "docker1",
        cloud_init={"user": "debian", "ssh_keys": [KEY], "nameserver": "192.168.1.53", "search_domain": "lab.example"},
        clone={"full": True},
    )
    valid, invalid = validate([RequestFile("requests/docker1.yaml", "docker1", text.encode())], PROFILES, SITE)
    assert invalid == []
    [d] = valid
    assert d.vm is not None
    assert (d.vm.template, d.vm.template_vmid, d.vm.full_clone, d.vm.agent) == ("debian-12-ci", VM_TEMPLATE, True, True)
    assert d.vm.cloud_init.ssh_keys == (KEY,)
    assert (d.vm.cloud_init.nameserver, d.vm.cloud_init.search_domain) == ("192.168.1.53", "lab.example")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cloud_init": None}, "cloud_init: required for kind vm"),
        ({"node": "pve9"}, "node: 'pve9' is not an approved node"),
        ({"storage": "fast"}, "storage: 'fast' is not an approved storage"),
        ({"network": {"mode": "dhcp", "bridge": "vmbr9"}}, "network.bridge: 'vmbr9' is not an approved bridge"),
        ({"network": {"mode": "dhcp", "bridge": "vmbr0", "vlan": 30}}, "network.vlan: 30 is not an approved VLAN"),
        ({"resources": {"cores": 64, "memory": 4096, "disk": 32}}, "resources.cores: 64 is outside"),
        ({"network": {"mode": "static", "address": "10.0.0.5/24", "bridge": "vmbr0"}}, "is not inside vmbr0's"),
        ({"resources": {"cores": 2, "memory": 4096, "disk": 32, "swap": 0}}, "resources.swap: is for containers"),
        ({"migrate": True}, "migrate: is for containers"),
        ({"profile": "generic-service"}, "kind: profile generic-service supports lxc only"),
        ({"cloud_init": {"user": "Debian User"}}, "cloud_init.user"),
        ({"service": {"domain": "docker1.lab.example", "visibility": "public"}}, "does not allow public exposure"),
    ],
)
def test_a_vm_request_breaking_a_rule_is_refused_with_the_field(changes: dict[str, Any], expected: str) -> None:
    found = problems_of(vm_yaml("docker1", **changes))
    assert any(expected in p for p in found), found


def test_cloud_init_and_clone_are_refused_on_a_container() -> None:
    text = vm_yaml("web", kind="lxc", profile="generic-service", resources={"cores": 1, "memory": 512, "disk": 8})
    found = problems_of(text, "web")
    assert "cloud_init: is for kind vm only" in found
    text = vm_yaml("web", kind="lxc", profile="generic-service", cloud_init=None, clone={"full": False})
    assert "clone: is for kind vm only" in problems_of(text, "web")


def test_a_vm_profile_whose_template_the_site_lacks_refuses_its_requests_only() -> None:
    site = SITE.model_copy(update={"vm_templates": {}})
    text = vm_yaml("docker1").encode()
    valid, invalid = validate([RequestFile("requests/docker1.yaml", "docker1", text)], PROFILES, site)
    assert valid == []
    assert [str(p) for p in invalid[0].problems] == [
        "profile: vm-generic's template 'debian-12-ci' is not in site.vm_templates (none configured)"
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "is a private key"),
        ("AAAAC3NzaC1lZDI1NTE5AAAA operator", "is not an OpenSSH public key"),
        ("ssh-ed25519", "holds the type ssh-ed25519 but not the key"),
        ("ssh-ed25519 not*base64", "is not base64"),
        (public_key("ssh-rsa").replace("ssh-rsa", "ssh-ed25519", 1), "is not a ssh-ed25519 key"),
        (KEY + "\nssh-ed25519 AAAA", "holds a line break"),
    ],
)
def test_ssh_keys_are_public_keys_only(key: str, expected: str) -> None:
    problem = public_key_problem(key)
    assert problem is not None and expected in problem
    found = problems_of(vm_yaml("docker1", cloud_init={"user": "debian", "ssh_keys": [key]}))
    assert any(p.startswith("cloud_init.ssh_keys.0:") and expected in p for p in found), found


def test_real_keys_of_every_type_pass() -> None:
    for kind in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "sk-ssh-ed25519@openssh.com"):
        assert public_key_problem(public_key(kind)) is None


# --- sshkeys and the agent's addresses (pure) ----------------------------------------------------------------------

ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-%_.!~*'()")  # PVE's urlencoded format


@given(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40), min_size=1, max_size=4))
def test_sshkeys_encoding_is_what_proxmox_accepts_and_decodes_to_the_keys(comments: list[str]) -> None:
    keys = [public_key(comment=c.strip(), seed=n) for n, c in enumerate(comments)]
    encoded = sshkeys(keys)
    assert set(encoded) <= ALLOWED
    assert unquote(encoded) == "\n".join(keys)


def test_sshkeys_escape_slash_plus_colon_and_space_as_percent_20() -> None:
    encoded = sshkeys([public_key(comment="ops/laptop+yubi:1")])
    assert "%2F" in encoded and "%2B" in encoded and "%3A" in encoded and "%20" in encoded
    assert "+" not in encoded and "/" not in encoded


def test_the_agents_address_skips_loopback_and_link_local_and_prefers_net0s_mac() -> None:
    lo = Interface("lo", ("127.0.0.1",), "00:00:00:00:00:00")
    docker = Interface("docker0", ("172.17.0.1",), "02:42:ac:11:00:01")
    eth0 = Interface("eth0", ("169.254.3.4", "192.168.50.77"), "bc:24:11:00:00:07")
    assert vm_address([lo, docker, eth0], "BC:24:11:00:00:07") == "192.168.50.77"
    assert vm_address([lo, eth0, docker], None) == "192.168.50.77"
    assert vm_address([lo, Interface("eth0", ("169.254.3.4",), None)], None) is None


# --- the workflow against the fake Proxmox ---------------------------------------------------------------------


@pytest.fixture
def vm_config(config_path: Path, tmp_path: Path) -> Path:
    """The test site with short agent waits, hosts-file records, scrape targets, and a profile without agent."""
    profiles = tmp_path / "profiles"
    shutil.copytree(builtin_profiles_dir(), profiles)
    plain = yaml.safe_load((profiles / "vm-generic.yaml").read_text())
    (profiles / "vm-plain.yaml").write_text(yaml.safe_dump({**plain, "name": "vm-plain", "agent": False}))
    steps = {**plain, "name": "vm-steps", "package_sets": ["base"], "post_create_actions": ["install-packages"]}
    (profiles / "vm-steps.yaml").write_text(yaml.safe_dump(steps))
    blind = {**steps, "name": "vm-blind-steps", "agent": False}
    (profiles / "vm-blind-steps.yaml").write_text(yaml.safe_dump(blind))
    doc = yaml.safe_load(config_path.read_text())
    doc["proxmox"].update(agent_timeout=1, config_refresh=0)
    doc["profiles"] = str(profiles)
    doc["dns"] = {"zone": "lab.example", "hosts_file": "dns/hosts"}
    doc["prometheus"] = {"targets": "prometheus/targets"}
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config_path


@pytest.fixture
def vms(vm_config: Path, env: dict[str, str]) -> Any:
    rt = open_runtime(load_config(vm_config), env)
    yield rt
    rt.close()


def static(host: int) -> dict[str, Any]:
    return {"mode": "static", "address": f"192.168.50.{host}/24", "bridge": "vmbr0"}


def push(operator: OperatorClone, name: str, text: str) -> None:
    operator.pull()
    operator.write(f"requests/{name}.yaml", text)
    operator.push(f"{name} changed")


def status(operator: OperatorClone, name: str) -> Any:
    operator.pull()
    return operator.yaml(f"status/{name}.yaml")


def calls(cluster: FakeCluster, method: str, suffix: str) -> list[dict[str, list[str]]]:
    """The bodies of the calls the fake received whose path ends with suffix, oldest first."""
    return [
        parse_qs(body.decode() if isinstance(body, bytes) else str(body or ""), keep_blank_values=True)
        for m, path, body in cluster.pve.requests
        if m == method and path.endswith(suffix)
    ]


def made_vm(cluster: FakeCluster) -> Any:
    [vm] = [v for v in cluster.pve.vms if not v.template]
    return vm


def effective(vm: Any, key: str) -> str:
    """A VM's value of key once its pending changes are in (at its next boot)."""
    return str(vm.pending[key] if key in vm.pending else vm.config.get(key))


def boot(cluster: FakeCluster, vm: Any, address: str = "192.168.50.77") -> None:
    """The guest has booted: its agent answers, with eth0 on net0's MAC."""
    vm.agent = {"interfaces": guest_interfaces(str(vm.config["net0"]), address)}


def test_a_vm_goes_from_a_push_to_running_with_its_address_status_caddy_dns_and_target(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime, tmp_path: Path
) -> None:
    service = {"domain": "docker1.lab.example", "expose": True, "port": 8080}
    push(operator, "docker1", vm_yaml("docker1", service=service, monitoring=True))
    vms.reconciler.once()  # clone, config, resize, start; the agent is not up yet

    vm = made_vm(cluster)
    assert vm.status == "running" and vm.name == "docker1"
    [clone] = calls(cluster, "POST", f"/qemu/{VM_TEMPLATE}/clone")
    assert clone["newid"] == [str(vm.vmid)] and clone["full"] == ["1"] and clone["storage"] == ["local-lvm"]
    [config] = calls(cluster, "PUT", f"/qemu/{vm.vmid}/config")
    assert config["ciuser"] == ["debian"] and config["ipconfig0"] == ["ip=dhcp"] and config["agent"] == ["1"]
    assert unquote(config["sshkeys"][0]) == KEY
    assert vm.config["tags"] == "monitoring;reconciler;reconciler.docker1"
    assert vm.config["net0"].startswith("virtio=") and vm.config["net0"].lower() != "virtio=bc:24:11:90:00:01"
    [resize] = calls(cluster, "PUT", f"/qemu/{vm.vmid}/resize")  # the fake does not grow it: see the docstring
    assert resize == {"disk": ["scsi0"], "size": ["32G"]}
    waiting = status(operator, "docker1")
    assert waiting["phase"] == "Provisioning"
    assert "waiting for its QEMU guest agent, which has not answered after 1 s" in waiting["message"]

    boot(cluster, vm)
    vms.reconciler.once()

    ready = status(operator, "docker1")
    assert ready["phase"] == "Ready", ready
    assert (ready["vmid"], ready["address"]) == (vm.vmid, "192.168.50.77")
    assert ready["message"].startswith(f"VM {vm.vmid} running on pve1")
    caddy = operator.yaml("caddy/services/docker1.lab.example.yaml")
    assert "192.168.50.77:8080" in yaml.safe_dump(caddy)
    assert "192.168.50.77 docker1.lab.example" in (operator.path / "dns/hosts").read_text()
    targets = "".join(p.read_text() for p in sorted((operator.path / "prometheus/targets").glob("*")))
    assert "192.168.50.77:9100" in targets, targets
    # Nothing more to do: a second pass starts no job and sends no change.
    before = len(cluster.pve.requests)
    report = vms.reconciler.cycle()
    assert report.started == {}
    assert [r for r in cluster.pve.requests[before:] if r[0] != "GET"] == []


def test_a_template_without_agent_never_waits_for_one(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "plain", vm_yaml("plain", profile="vm-plain"))
    vms.reconciler.once()

    vm = made_vm(cluster)
    assert vm.status == "running"
    assert calls(cluster, "PUT", f"/qemu/{vm.vmid}/config")[0]["agent"] == ["0"]
    assert [r for r in cluster.pve.requests if "/agent/" in r[1]] == []
    shown = status(operator, "plain")
    assert shown["phase"] == "Ready"
    assert "its DHCP address is unknown: its profile says the template has no QEMU guest agent" in shown["message"]
    assert [j.type for j in vms.store.jobs(limit=10)] == ["clone"]


def test_an_agent_that_never_answers_leaves_the_status_waiting_for_it(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "docker1", vm_yaml("docker1"))
    vms.reconciler.cycle()  # the clone job starts
    vms.runner.wait_idle(60)
    vm = made_vm(cluster)
    cluster.pve.time_scale = 0.05  # its hang is Proxmox's 10 s, shortened
    vm.agent, vm.agent_hangs = {}, True
    vms.reconciler.once()

    shown = status(operator, "docker1")
    assert shown["phase"] == "Provisioning"
    assert "waiting for its QEMU guest agent, which has not answered after 1 s" in shown["message"]
    assert "is qemu-guest-agent installed and running in the template?" in shown["message"]
    assert shown.get("address") is None


def test_setup_is_off_for_vms_until_provision_vm_is_set_and_the_status_says_so(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "docker1", vm_yaml("docker1", profile="vm-steps", network=static(65)))
    vms.reconciler.once()

    shown = status(operator, "docker1")
    assert shown["phase"] == "Ready"
    assert "setup is off for VMs (provision.vm is not set), 3 steps not run" in shown["message"]
    assert shown["setup"] == "off"
    assert [j.type for j in vms.store.jobs(limit=10)] == ["clone"]


# --- setup inside a VM, over SSH to a played first boot ----------------------------------------------------------


@pytest.fixture
def vm_key(tmp_path: Path) -> tuple[Path, str]:
    """The key the operator configures for VMs (provision.vm.key), and its public key for the requests."""
    folder = tmp_path / "vm-key"
    folder.mkdir()
    return folder / "id_ed25519", keygen(folder / "id_ed25519")


@pytest.fixture
def vm_setup(vm_config: Path, env: dict[str, str], vm_key: tuple[Path, str]) -> Any:
    doc = yaml.safe_load(vm_config.read_text())
    doc["provision"] = {"vm": {"key": str(vm_key[0]), "connect_timeout": 5}, "step_timeout": 300}
    vm_config.write_text(yaml.safe_dump(doc, sort_keys=False))
    rt = open_runtime(load_config(vm_config), env)
    yield rt
    rt.close()


def job_log(rt: Runtime, job_type: str) -> str:
    [job] = [j for j in rt.store.jobs(limit=20) if j.type == job_type][:1]
    return "\n".join(line.message for line in rt.store.logs(job.id))


def test_a_template_without_agent_has_its_setup_off_and_the_status_says_why(
    operator: OperatorClone, cluster: FakeCluster, vm_setup: Runtime
) -> None:
    push(operator, "blind", vm_yaml("blind", profile="vm-blind-steps"))
    vm_setup.reconciler.once()

    shown = status(operator, "blind")
    assert shown["phase"] == "Ready"
    assert (
        "setup is off for this VM: its profile says the template has no QEMU guest agent (agent: false), through"
        " which the VM's SSH host key is learned, 3 steps not run"
    ) in shown["message"]
    assert [j.type for j in vm_setup.store.jobs(limit=10)] == ["clone"]


def test_setup_runs_in_the_vm_over_ssh_once_the_token_may_read_its_host_key(
    operator: OperatorClone,
    cluster: FakeCluster,
    vm_setup: Runtime,
    vm_key: tuple[Path, str],
    containers: Any,
    tmp_path: Path,
) -> None:
    cloud_init = {"user": "debian", "ssh_keys": [vm_key[1]]}
    push(operator, "docker1", vm_yaml("docker1", profile="vm-steps", cloud_init=cloud_init))
    vm_setup.reconciler.once()  # cloned and started; its agent is not up yet
    vm = made_vm(cluster)
    guests = boot_guest(containers, vm.vmid, "debian", vm_key[1], tmp_path / "guest-sshd.log")
    guest = next(guests)
    try:
        vm.agent = {
            "interfaces": guest_interfaces(str(vm.config["net0"]), guest.address, 30),
            "files": guest.host_keys,
        }
        vm_setup.reconciler.once()

        # The README's role cannot read a file in the guest: the status names what to grant, nothing connects.
        refused = status(operator, "docker1")
        assert refused["phase"] == "Failed", refused
        assert "the API token lacks VM.GuestAgent.FileRead or VM.GuestAgent.Unrestricted on /vms/" in refused["message"]
        assert "Accepted publickey" not in guest.log.read_text()

        cluster.pve.grant(TOKEN_ID, "/", "VM.GuestAgent.FileRead")
        push(operator, "docker1", vm_yaml("docker1", profile="vm-steps", cloud_init=cloud_init, description="retry"))
        vm_setup.reconciler.once()

        shown = status(operator, "docker1")
        assert shown["phase"] == "Ready", shown
        assert shown["setup"] == "done"
        assert "set up (3 steps)" in shown["message"]
        assert (guest.root / "usr/bin/htop").exists()  # the profile's packages, installed inside the guest
        assert "Accepted publickey for debian" in guest.log.read_text()
        read = [asked["file"] for command, asked in vm.agent_requests if command == "file-read"]
        assert "/etc/ssh/ssh_host_ed25519_key.pub" in read
        log = job_log(vm_setup, "provision")
        assert f"SSH host keys of VM {vm.vmid} read through its guest agent: ssh-ed25519" in log
        assert f"connecting to debian@{guest.address} port 22" in log
    finally:
        guests.close()


def test_a_host_key_other_than_the_one_its_agent_read_is_never_accepted(
    operator: OperatorClone,
    cluster: FakeCluster,
    vm_setup: Runtime,
    vm_key: tuple[Path, str],
    containers: Any,
    tmp_path: Path,
) -> None:
    cluster.pve.grant(TOKEN_ID, "/", "VM.GuestAgent.FileRead")
    cloud_init = {"user": "debian", "ssh_keys": [vm_key[1]]}
    push(operator, "docker1", vm_yaml("docker1", profile="vm-steps", cloud_init=cloud_init))
    vm_setup.reconciler.once()
    vm = made_vm(cluster)
    guests = boot_guest(containers, vm.vmid, "debian", vm_key[1], tmp_path / "guest-sshd.log")
    guest = next(guests)
    try:
        other = keygen(tmp_path / "other_host_key")  # another machine's key, as if one stood at the VM's address
        vm.agent = {
            "interfaces": guest_interfaces(str(vm.config["net0"]), guest.address, 30),
            "files": {"/etc/ssh/ssh_host_ed25519_key.pub": other},
        }
        vm_setup.reconciler.once()

        shown = status(operator, "docker1")
        assert shown["phase"] == "Failed", shown
        assert (
            f"the SSH server at {guest.address} port 22 did not show the host key the VM's guest agent read from its"
            " /etc/ssh" in shown["message"]
        )
        assert "Accepted publickey" not in guest.log.read_text()
        assert not (guest.root / "usr/bin/htop").exists()
    finally:
        guests.close()


def test_state_stopped_shuts_the_vm_down_and_present_starts_it_again(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "keep", vm_yaml("keep", network=static(66)))  # a bystander: the guard lets one of two stop
    push(operator, "docker1", vm_yaml("docker1", network=static(67)))
    vms.reconciler.once()
    [vm] = [v for v in cluster.pve.vms if v.name == "docker1"]

    push(operator, "docker1", vm_yaml("docker1", network=static(67), state="stopped"))
    vms.reconciler.once()
    assert vm.status == "stopped"
    assert calls(cluster, "POST", f"/qemu/{vm.vmid}/status/shutdown")
    assert status(operator, "docker1")["message"] == f"VM {vm.vmid} stopped on pve1 (state: stopped)"

    push(operator, "docker1", vm_yaml("docker1", network=static(67)))
    vms.reconciler.once()
    assert vm.status == "running"


def test_a_static_address_needs_no_agent(operator: OperatorClone, cluster: FakeCluster, vms: Runtime) -> None:
    network = {"mode": "static", "address": "192.168.50.60/24", "bridge": "vmbr0", "vlan": 10}
    push(operator, "db1", vm_yaml("db1", network=network))
    vms.reconciler.once()

    vm = made_vm(cluster)
    [config] = calls(cluster, "PUT", f"/qemu/{vm.vmid}/config")
    assert config["ipconfig0"] == ["ip=192.168.50.60/24,gw=192.168.50.1"]
    assert "tag=10" in vm.config["net0"]
    assert [r for r in cluster.pve.requests if "/agent/" in r[1]] == []
    shown = status(operator, "db1")
    assert (shown["phase"], shown["address"]) == ("Ready", "192.168.50.60")


def test_keys_with_comments_holding_slash_plus_and_colon_reach_proxmox_intact(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    keys = [public_key(comment="ops/laptop+yubi:1", seed=2), public_key("ssh-rsa", "backup key: a/b+c", seed=3)]
    push(operator, "docker1", vm_yaml("docker1", cloud_init={"user": "debian", "ssh_keys": keys}))
    vms.reconciler.once()

    vm = made_vm(cluster)  # the fake checks the encoding as a node does: a wrong one is a 400, and no VM is made
    assert unquote(str(vm.config["sshkeys"])).split("\n") == keys
    assert status(operator, "docker1")["phase"] in ("Provisioning", "Ready")


def test_a_linked_clone_sends_no_storage(operator: OperatorClone, cluster: FakeCluster, vms: Runtime) -> None:
    push(operator, "docker1", vm_yaml("docker1", clone={"full": False}))
    vms.reconciler.once()

    [clone] = calls(cluster, "POST", f"/qemu/{VM_TEMPLATE}/clone")
    assert clone["full"] == ["0"] and "storage" not in clone
    assert made_vm(cluster).status == "running"


def test_clones_onto_one_storage_run_one_at_a_time(operator: OperatorClone, cluster: FakeCluster, vms: Runtime) -> None:
    cluster.pve.clone_gate.clear()
    try:
        push(operator, "one", vm_yaml("one"))
        push(operator, "two", vm_yaml("two"))
        report = vms.reconciler.cycle()
        assert list(report.started) == ["one"]
        assert report.statuses["two"].message.startswith("waiting: another VM is being cloned onto storage local-lvm")
        assert len(calls(cluster, "POST", f"/qemu/{VM_TEMPLATE}/clone")) == 1
    finally:
        cluster.pve.clone_gate.set()
    vms.reconciler.once()
    assert sorted(v.name for v in cluster.pve.vms if not v.template) == ["one", "two"]


def test_a_storage_lock_timeout_is_tried_again_after_a_backoff(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    cluster.pve.fail("POST", f"/nodes/pve1/qemu/{VM_TEMPLATE}/clone", error="config_lock_timeout", times=1)
    push(operator, "docker1", vm_yaml("docker1"))
    report = vms.reconciler.once()

    assert "got timeout" in report.statuses["docker1"].message
    [attempt] = [j for j in vms.store.jobs(limit=10) if j.type == "clone"]
    assert attempt.status == "failed"
    vms.reconciler.once()  # a new run tries failures again at once; the daemon waits out the backoff
    assert made_vm(cluster).name == "docker1"
    assert len(calls(cluster, "POST", f"/qemu/{VM_TEMPLATE}/clone")) == 2


def test_in_place_updates_cores_memory_disk_and_cloud_init_at_next_boot(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "docker1", vm_yaml("docker1"))
    vms.reconciler.once()
    vm = made_vm(cluster)
    boot(cluster, vm)
    vms.reconciler.once()

    other = public_key(comment="second", seed=9)
    push(
        operator,
        "docker1",
        vm_yaml(
            "docker1",
            resources={"cores": 4, "memory": 8192, "disk": 40},
            cloud_init={"user": "debian", "ssh_keys": [KEY, other]},
        ),
    )
    report = vms.reconciler.once()

    assert (effective(vm, "cores"), effective(vm, "memory")) == ("4", "8192")
    assert unquote(effective(vm, "sshkeys")).split("\n") == [KEY, other]
    assert calls(cluster, "PUT", f"/qemu/{vm.vmid}/resize")[-1] == {"disk": ["scsi0"], "size": ["40G"]}
    [update] = [j for j in vms.store.jobs(limit=20) if j.type == "update"]
    assert "cloud-init (sshkeys) takes effect at the VM's next boot" in (update.summary or "")
    assert report.statuses["docker1"].phase.value == "Ready"

    push(operator, "docker1", vm_yaml("docker1", resources={"cores": 4, "memory": 8192, "disk": 40}, start=True))
    push(operator, "docker1", vm_yaml("docker1", resources={"cores": 4, "memory": 8192, "disk": 20}))
    vms.reconciler.once()
    shown = status(operator, "docker1")
    assert shown["phase"] == "Failed" and "resources.disk" in shown["message"] and "cannot shrink" in shown["message"]


def test_state_absent_destroys_the_vm_and_protection_blocks_it(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    push(operator, "keep", vm_yaml("keep", network=static(61)))  # a bystander: the guard lets one of two go
    push(operator, "docker1", vm_yaml("docker1", protected=True, network=static(62)))
    vms.reconciler.once()
    [vm] = [v for v in cluster.pve.vms if v.name == "docker1"]
    assert str(vm.config.get("protection")) == "1"

    push(operator, "docker1", vm_yaml("docker1", protected=True, state="absent", network=static(62)))
    vms.reconciler.once()
    shown = status(operator, "docker1")
    assert shown["phase"] == "Failed" and "protected: true, which blocks destruction" in shown["message"]
    assert cluster.pve.vm(vm.vmid) is not None

    push(operator, "docker1", vm_yaml("docker1", state="absent", network=static(62)))
    vms.reconciler.once()
    assert cluster.pve.vm(vm.vmid) is None
    assert status(operator, "docker1")["phase"] == "Deleted"
    assert [v.name for v in cluster.pve.vms if not v.template] == ["keep"]


def test_drift_on_a_vm_is_put_back(operator: OperatorClone, cluster: FakeCluster, vms: Runtime) -> None:
    push(operator, "docker1", vm_yaml("docker1", network=static(63)))
    vms.reconciler.once()
    vm = made_vm(cluster)
    vm.config["memory"] = 1024  # by hand
    report = vms.reconciler.once()
    assert effective(vm, "memory") == "4096"
    [update] = [j for j in vms.store.jobs(limit=20) if j.type == "update"]
    assert "memory: 1024 -> 4096" in (update.summary or "")
    # Proxmox holds a running VM's memory change until its next boot (in /pending): the status says so.
    assert "memory changed, in effect at its next boot" in report.statuses["docker1"].message


def test_a_vm_made_by_hand_is_adopted_by_its_marker_only(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime
) -> None:
    net0 = "virtio=BC:24:11:00:02:50,bridge=vmbr0"
    legacy = cluster.pve.add_vm(250, "legacy", node="pve1", status="running", config={"cores": 1, "net0": net0})
    push(operator, "legacy", vm_yaml("legacy", vmid=250, adopt=True))
    vms.reconciler.once()
    assert legacy.config["tags"] == "reconciler;reconciler.legacy"
    assert legacy.config["cores"] == 1 and "ciuser" not in legacy.config
    shown = status(operator, "legacy")
    assert (shown["phase"] == "Ready" and "differences" in shown["message"]) or "difference(s)" in shown["message"]


def test_reconciler_plan_shows_the_clone(
    operator: OperatorClone, cluster: FakeCluster, vm_config: Path, env: dict[str, str]
) -> None:
    push(operator, "docker1", vm_yaml("docker1"))
    result = plan_cli(vm_config, env)
    assert "+ create docker1: vm 200 on pve1, full clone of template debian-12-ci (9000)" in result.stdout, (
        result.stdout
    )


def test_sigkill_during_a_clone_makes_no_second_vm(
    vm_config: Path, daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    db = database(vm_config)
    cluster.pve.time_scale = 1.0  # tasks run as on a node: the call returns, the task goes on
    cluster.pve.clone_gate.clear()  # the clone's copy runs until the test lets it end
    try:
        daemon.configure(recheck=0.2).start()
        push(operator, "docker1", vm_yaml("docker1", network=static(64)))
        assert daemon.push_hook()[0] == 202
        daemon.wait_for(lambda: logged(db, "clone task UPID:pve1:"), what="the clone call")
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        # The copy ends while nobody watches: the VM is there, unlocked, without its config or marker.
    finally:
        cluster.pve.clone_gate.set()
    vm = made_vm(cluster)
    deadline = time.monotonic() + 30
    while vm.lock is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vm.lock is None and "tags" not in vm.config

    daemon.start()
    daemon.wait_for(phase_is(operator, "docker1", "Ready"), what="status/docker1.yaml Ready on the remote")

    assert made_vm(cluster) is vm  # finished, not cloned again
    assert len(calls(cluster, "POST", f"/qemu/{VM_TEMPLATE}/clone")) == 1
    assert vm.config["tags"] == "reconciler;reconciler.docker1" and vm.status == "running"
    assert remote_status(operator, "docker1")["vmid"] == vm.vmid
    assert daemon.stop() == 0
    with reading(db) as store:
        settled(store)


# --- the role: what VMs add to it, each needed --------------------------------------------------------------------

VM_PRIVILEGES = {  # privilege -> the step that fails without it, and the path the status names
    "VM.Clone": ("clone failed: ", f"/vms/{VM_TEMPLATE}"),
    "VM.Config.Cloudinit": ("update config failed: ", "/vms/200"),
    "VM.GuestAgent.Audit": ("read guest agent failed: ", "/vms/200"),
}


@pytest.mark.parametrize("privilege", sorted(VM_PRIVILEGES))
def test_without_a_vm_privilege_the_status_names_it_and_the_path(
    operator: OperatorClone, cluster: FakeCluster, vms: Runtime, privilege: str
) -> None:
    cluster.pve.acl[TOKEN_ID] = [("/", set(REQUIRED_PRIVILEGES) - {privilege})]
    push(operator, "docker1", vm_yaml("docker1"))
    vms.reconciler.once()
    if privilege == "VM.GuestAgent.Audit":
        boot(cluster, made_vm(cluster))
        vms.reconciler.once()

    step, path = VM_PRIVILEGES[privilege]
    message = status(operator, "docker1")["message"]
    assert step in message and f"the API token lacks {privilege}" in message and f" on {path} " in message, message
    made = [v for v in cluster.pve.vms if not v.template]
    assert len(made) == (0 if privilege == "VM.Clone" else 1)  # a refused config is retried, never recloned
