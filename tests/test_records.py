"""DNS records through whole passes: the fake Proxmox, a real Git remote and a real BIND taking signed updates.

Every record is checked by asking the server; every status by reading the file the pass pushed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Bind,
    FakeCluster,
    OperatorClone,
    free_dual_port,
    request_yaml,
    start_dnsmasq,
    start_prometheus,
)

from reconciler.config import TSIG_SECRET_ENV, Config, load_config
from reconciler.model.dns import Record, RecordChange, heritage
from reconciler.model.vocab import RecordOp, RecordType
from reconciler.runtime import Runtime, open_runtime

WEB = dict(profile="web-app", service={"domain": "www.lab.example", "port": 8080})


def with_dns(config_path: Path, bind: Bind, **more: Any) -> Config:
    """The test config with a dns block for this server (rfc2136 keys in `rfc2136`, the rest beside them)."""
    rfc2136 = {
        "server": "127.0.0.1",
        "port": bind.port,
        "key_name": "reconciler",
        "timeout": 2,
        **more.pop("rfc2136", {}),
    }
    block = {"dns": {"zone": "lab.example", "ttl": 300, "rfc2136": rfc2136, **more}}
    raw = yaml.safe_load(config_path.read_text())
    raw["proxmox"]["address_refresh"] = 0  # every pass reads the leases again: a move shows at once
    raw.update(block)
    config_path.write_text(yaml.safe_dump(raw))
    return load_config(config_path)


@pytest.fixture
def dns_env(env: dict[str, str], bind: Bind) -> dict[str, str]:
    return {**env, TSIG_SECRET_ENV: bind.secret}


def opened(config: Config, env: dict[str, str]) -> Runtime:
    return open_runtime(config, env)


def status(operator: OperatorClone, name: str) -> dict[str, Any]:
    operator.pull()
    doc = operator.yaml(f"status/{name}.yaml")
    assert isinstance(doc, dict)
    return doc


def test_a_ready_workload_gets_its_records_and_they_follow_its_lease_and_its_removal(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, dns_env: dict[str, str], bind: Bind
) -> None:
    config = with_dns(config_path, bind)
    operator.write("requests/web.yaml", request_yaml("web", **WEB))
    operator.write("requests/keep.yaml", request_yaml("keep", dns=False))  # a bystander for the mass-change guard
    operator.push("add web")
    runtime = opened(config, dns_env)
    try:
        report = runtime.reconciler.once()
        assert bind.ask("keep.lab.example", "A") == []  # dns: false
        address = report.statuses["web"].address
        assert report.statuses["web"].phase == "Ready" and address
        assert bind.ask("web.lab.example", "A") == [address]
        assert bind.ask("_reconciler.web.lab.example", "TXT") == [heritage("reconciler", "web")]
        assert bind.ask("www.lab.example", "CNAME") == ["web.lab.example."]
        doc = status(operator, "web")
        assert doc["phase"] == "Ready"
        assert doc["dns"] == {
            "state": "Ready",
            "records": [f"web.lab.example A {address}", "www.lab.example CNAME web.lab.example"],
        }

        # The DHCP server hands out another lease: the A record follows it.
        [ct] = [c for c in cluster.containers() if c.config.get("hostname") == "web"]
        cluster.pve.leases[ct.vmid] = "192.168.50.177"
        report = runtime.reconciler.once()
        assert report.statuses["web"].address == "192.168.50.177"
        assert bind.ask("web.lab.example", "A") == ["192.168.50.177"]

        # The domain is dropped: its CNAME goes, the hostname's A stays.
        operator.pull()
        operator.write("requests/web.yaml", request_yaml("web", profile="web-app"))
        operator.push("web without a domain")
        runtime.reconciler.once()
        assert bind.ask("www.lab.example", "CNAME") == []
        assert bind.ask("web.lab.example", "A") == ["192.168.50.177"]

        # state: absent destroys the container, then its records go.
        operator.pull()
        operator.write("requests/web.yaml", request_yaml("web", profile="web-app", state="absent"))
        operator.push("web absent")
        report = runtime.reconciler.once()
        assert report.statuses["web"].phase == "Deleted", report.statuses["web"]
        assert [c.config.get("hostname") for c in cluster.containers()] == ["keep"]
        assert bind.ask("web.lab.example", "A") == []
        assert bind.ask("_reconciler.web.lab.example", "TXT") == []
        assert "dns" not in status(operator, "web")
    finally:
        runtime.close()


def test_a_name_someone_else_holds_is_never_changed_and_the_status_says_why(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, dns_env: dict[str, str], bind: Bind
) -> None:
    config = with_dns(config_path, bind)
    # `taken` is in the zone file with no ownership record: someone else's.
    operator.write("requests/taken.yaml", request_yaml("taken"))
    operator.push("add taken")
    runtime = opened(config, dns_env)
    try:
        report = runtime.reconciler.once()
    finally:
        runtime.close()
    assert bind.ask("taken.lab.example", "A") == ["192.0.2.99"]
    doc = status(operator, "taken")
    assert doc["phase"] == "Ready"  # the container is fine: only its record failed
    assert doc["dns"]["state"] == "Failed"
    assert "taken.lab.example holds records the reconciler does not own (A 192.0.2.99)" in doc["dns"]["message"]
    assert doc["message"].endswith("; DNS records failed")
    assert report.statuses["taken"].dns is not None


def test_without_a_transfer_the_servers_prerequisite_refuses_a_name_in_use(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, dns_env: dict[str, str], bind: Bind
) -> None:
    config = with_dns(config_path, bind, rfc2136={"axfr": False})
    operator.write("requests/taken.yaml", request_yaml("taken"))
    operator.push("add taken")
    runtime = opened(config, dns_env)
    try:
        report = runtime.reconciler.once()
        job = runtime.store.job(report.statuses["taken"].job or 0)
        assert job is not None and job.type == "dns" and job.status == "failed"
        logged = " ".join(line.message for line in runtime.store.logs(job.id))
    finally:
        runtime.close()
    assert bind.ask("taken.lab.example", "A") == ["192.0.2.99"]
    doc = status(operator, "taken")
    assert doc["phase"] == "Ready" and doc["dns"]["state"] == "Failed"
    assert "already in use" in doc["dns"]["message"]
    assert "already in use" in logged


def test_a_key_the_server_refuses_fails_the_records_only_and_says_so(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], bind: Bind
) -> None:
    config = with_dns(config_path, bind)
    wrong = "c2VjcmV0LWJ1dC1ub3QtdGhlLXNlcnZlcnMta2V5IQ=="
    operator.write("requests/web.yaml", request_yaml("web"))
    operator.push("add web")
    runtime = opened(config, {**env, TSIG_SECRET_ENV: wrong})
    try:
        report = runtime.reconciler.once()
        retry_in = runtime.runner.next_retry()
    finally:
        runtime.close()
    assert report.statuses["web"].phase == "Ready"
    assert bind.ask("web.lab.example", "A") == []
    doc = status(operator, "web")
    assert doc["dns"]["state"] == "Failed"
    assert "the server refused the TSIG key reconciler" in doc["dns"]["message"]
    assert wrong not in operator.read("status/web.yaml")  # type: ignore[operator]
    assert retry_in is not None  # tried again after its backoff


def test_an_unreachable_server_is_retried_and_the_records_come_once_it_answers(
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    dns_env: dict[str, str],
    bind: Bind,
    tmp_path: Path,
) -> None:
    nobody = free_dual_port()
    config = with_dns(config_path, bind)
    raw = yaml.safe_load(config_path.read_text())
    raw["dns"]["rfc2136"]["port"] = nobody
    config_path.write_text(yaml.safe_dump(raw))
    operator.write("requests/web.yaml", request_yaml("web"))
    operator.push("add web")
    runtime = opened(load_config(config_path), dns_env)
    try:
        runtime.reconciler.once()
    finally:
        runtime.close()
    doc = status(operator, "web")
    assert doc["phase"] == "Ready" and doc["dns"]["state"] == "Failed"
    assert f"127.0.0.1:{nobody}" in doc["dns"]["message"]

    # The server is back (the right port): the next run tries again and the record comes.
    runtime = opened(config, dns_env)
    try:
        report = runtime.reconciler.once()
    finally:
        runtime.close()
    assert bind.ask("web.lab.example", "A") == [report.statuses["web"].address]
    assert status(operator, "web")["dns"]["state"] == "Ready"


def test_a_transfer_finds_the_records_of_a_removed_request_and_deletes_only_ours(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, dns_env: dict[str, str], bind: Bind
) -> None:
    config = with_dns(config_path, bind)
    server = bind.server()
    gone = Record("gone.lab.example.", RecordType.A, "192.168.50.90", "lab.example.")
    server.apply(RecordChange(RecordOp.CREATE, gone), heritage("reconciler", "gone"))
    theirs = Record("theirs.lab.example.", RecordType.A, "192.168.50.91", "lab.example.")
    server.apply(RecordChange(RecordOp.CREATE, theirs), heritage("another-reconciler", "theirs"))
    operator.write("requests/web.yaml", request_yaml("web"))
    operator.push("add web")
    runtime = opened(config, dns_env)
    try:
        runtime.reconciler.once()
    finally:
        runtime.close()
    assert bind.ask("gone.lab.example", "A") == []
    assert bind.ask("theirs.lab.example", "A") == ["192.168.50.91"]
    # The zone file's `shared` says it is this reconciler's, for a request `other` that has no file: gone too.
    assert bind.ask("shared.lab.example", "A") == []
    assert bind.ask("taken.lab.example", "A") == ["192.0.2.99"]  # no ownership record: never touched


def with_outputs(config_path: Path) -> Config:
    """The test config with a hosts file and scrape target files (no DNS server)."""
    raw = yaml.safe_load(config_path.read_text())
    raw["proxmox"]["address_refresh"] = 0
    raw["dns"] = {"zone": "lab.example", "hosts_file": "dns/reconciler.hosts"}
    raw["prometheus"] = {"targets": "prometheus/targets"}
    config_path.write_text(yaml.safe_dump(raw))
    return load_config(config_path)


def publish(operator: OperatorClone, relative: str, folder: Path) -> None:
    """The operator's pipeline: copy a generated file (or every file of a generated folder) from the repo's
    head to where a server reads it; what the repo no longer has goes there too."""
    operator.pull()
    source = operator.path / relative
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p.read_bytes() for p in (source.iterdir() if source.is_dir() else [source]) if p.exists()}
    for stale in [p for p in folder.iterdir() if p.name not in wanted]:
        stale.unlink()
    for name, data in wanted.items():
        (folder / name).write_bytes(data)


def test_a_ready_workload_resolves_through_the_hosts_file_in_dnsmasq_until_it_goes(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    dnsmasq = start_dnsmasq(tmp_path / "dnsmasq", "lab.example")
    server = next(dnsmasq)
    try:
        config = with_outputs(config_path)
        operator.write("requests/web.yaml", request_yaml("web", **WEB))
        operator.write("requests/keep.yaml", request_yaml("keep"))  # a bystander for the mass-change guard
        operator.push("add web")
        runtime = opened(config, env)
        try:
            address = runtime.reconciler.once().statuses["web"].address
            publish(operator, "dns/reconciler.hosts", server.hostsdir)
            server.wait_for(lambda: server.ask("web.lab.example") == ("NOERROR", [str(address)]), "web to resolve")
            assert server.ask("www.lab.example") == ("NOERROR", [str(address)])

            operator.write("requests/web.yaml", request_yaml("web", **WEB, state="absent"))
            operator.push("web absent")
            runtime.reconciler.once()
        finally:
            runtime.close()
        publish(operator, "dns/reconciler.hosts", server.hostsdir)
        server.wait_for(lambda: server.ask("web.lab.example")[0] == "NXDOMAIN", "web to be gone")
        assert server.ask("www.lab.example")[0] == "NXDOMAIN"
        assert server.ask("keep.lab.example")[0] == "NOERROR"
    finally:
        dnsmasq.close()


def test_a_monitored_workload_is_a_prometheus_target_with_its_labels_until_it_goes(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    prometheus = start_prometheus(tmp_path / "prometheus")
    server = next(prometheus)
    try:
        config = with_outputs(config_path)
        monitoring = {"exporters": ["app"], "labels": {"team": "web"}}
        operator.write("requests/web.yaml", request_yaml("web", **WEB, monitoring=monitoring, tags=["blue"]))
        operator.write("requests/keep.yaml", request_yaml("keep", monitoring=False))
        operator.push("add web")
        runtime = opened(config, env)
        try:
            status = runtime.reconciler.once().statuses["web"]
            publish(operator, "prometheus/targets", server.targets_dir)
            assert sorted(p.name for p in server.targets_dir.iterdir()) == ["web.json"]  # keep is not monitored

            def found() -> dict[str, dict[str, str]]:
                return {t["labels"]["exporter"]: t["labels"] for t in server.active_targets()}

            server.wait_for(lambda: len(found()) == 2, "web's two targets")
            node = found()["node"]
            assert node["instance"] == f"{status.address}:9100"
            assert found()["app"]["instance"] == f"{status.address}:8080"
            assert {k: node[k] for k in ("pve_id", "pve_node", "pve_vmid", "pve_type", "pve_name", "managed_by")} == {
                "pve_id": f"lxc/{status.vmid}",
                "pve_node": "pve1",
                "pve_vmid": str(status.vmid),
                "pve_type": "lxc",
                "pve_name": "web",
                "managed_by": "reconciler",
            }
            assert node["team"] == "web" and node["request"] == "web"
            assert set(node["pve_tags"].split(";")) == {"blue", "monitoring", "reconciler", "reconciler.web"}

            operator.write("requests/web.yaml", request_yaml("web", **WEB, state="absent"))
            operator.push("web absent")
            runtime.reconciler.once()
        finally:
            runtime.close()
        publish(operator, "prometheus/targets", server.targets_dir)
        server.wait_for(lambda: server.active_targets() == [], "web's targets to go")
    finally:
        prometheus.close()


def test_an_invalid_request_keeps_its_names_and_targets_and_a_removed_one_loses_them(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    config = with_outputs(config_path)
    operator.write("requests/web.yaml", request_yaml("web", **WEB))
    operator.write("requests/keep.yaml", request_yaml("keep"))  # a bystander for the mass-change guard
    operator.push("add web")
    runtime = opened(config, env)
    try:
        runtime.reconciler.once()
        operator.pull()
        listed = operator.read("dns/reconciler.hosts") or ""
        assert "web.lab.example www.lab.example" in listed and operator.read("prometheus/targets/web.json")

        operator.write("requests/web.yaml", request_yaml("web", **WEB, node="pve9"))  # a typo
        operator.push("web on a node that is not there")
        runtime.reconciler.once()
        assert status(operator, "web")["phase"] == "Invalid"
        assert "web.lab.example www.lab.example" in (operator.read("dns/reconciler.hosts") or "")
        assert operator.read("prometheus/targets/web.json") is not None

        operator.remove("requests/web.yaml")
        operator.push("web removed")
        runtime.reconciler.once()
        operator.pull()
        assert "web.lab.example" not in (operator.read("dns/reconciler.hosts") or "")
        assert operator.read("prometheus/targets/web.json") is None
        assert "keep.lab.example" in (operator.read("dns/reconciler.hosts") or "")
    finally:
        runtime.close()
