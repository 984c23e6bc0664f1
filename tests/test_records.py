"""DNS records through whole passes: the fake Proxmox, a real Git remote and a real BIND taking signed updates.

Every record is checked by asking the server; every status by reading the file the pass pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Bind, FakeCluster, OperatorClone, free_dual_port, request_yaml, start_named

from reconciler.config import TSIG_SECRET_ENV, Config, load_config
from reconciler.model.dns import Record, RecordChange, heritage
from reconciler.model.vocab import RecordOp, RecordType
from reconciler.runtime import Runtime, open_runtime

WEB = dict(profile="web-app", service={"domain": "www.lab.example", "port": 8080})


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    yield from start_named(tmp_path / "bind")


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
