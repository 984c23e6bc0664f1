"""`reconciler status` (alias `get`), run as the operator runs it: a subprocess reading the status files that a
real `reconciler once` pushed to a real bare repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import git
import yaml
from clirun import STATUS_KEYS as KEYS
from clirun import run
from conftest import FakeCluster, OperatorClone, request_yaml, static

from reconciler.config import TOKEN_SECRET_ENV, TSIG_SECRET_ENV
from reconciler.model.vocab import Phase

BLOG = dict(
    profile="static-website",
    network=static("192.168.50.210/24"),
    service={"domain": "blog.example.com", "expose": True, "visibility": "public", "port": 80},
)


def once(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = run("once", "--config", str(config_path), env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result


def three_requests(operator: OperatorClone, config_path: Path, env: dict[str, str]) -> None:
    """good (dhcp) and blog (static, exposed) become Ready; bad asks for a node that is not approved."""
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write("requests/blog.yaml", request_yaml("blog", **BLOG))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()
    assert once(config_path, env).returncode == 1


def remote_head(remote: Path) -> str:
    return str(git.Repo(remote).commit("main").hexsha)


def document(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_status_prints_a_table_with_a_header_and_exits_1_when_a_request_is_invalid(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    three_requests(operator, config_path, env)

    result = run("status", "--config", str(config_path), env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    header, *rows, summary = result.stdout.splitlines()
    columns = ["NAME", "PHASE", "HEALTH", "VMID", "NODE", "ADDRESS", "DOMAIN", "AGE", "DRIFT", "JOB", "MESSAGE"]
    assert header.split() == columns
    by_name = {row.split()[0]: row.split() for row in rows}
    assert sorted(by_name) == ["bad", "blog", "good"]
    # Health is not known with setup off (provision.transport: off): a dash, as for every unknown value.
    assert by_name["blog"][1:7] == ["Ready", "-", "200", "pve1", "192.168.50.210", "blog.example.com"]
    assert by_name["good"][1:5] == ["Ready", "-", "201", "pve1"] and by_name["good"][6] == "-"
    assert by_name["bad"][1:7] == ["Invalid", "-", "-", "-", "-", "-"]
    for row in by_name.values():
        assert re.fullmatch(r"\d+[smhd]", row[7]), row  # the age of the status file's last commit
        assert row[8] == "-" and row[9].isdigit()  # no drift; the job that explains it
    # Columns line up under the header.
    assert {row.index(by_name["good"][1]) for row in rows if " Ready " in row} == {header.index("PHASE")}
    assert summary.startswith("3 requests in status/ at main ") and summary.endswith(": 1 Invalid, 2 Ready")

    alias = run("get", "--config", str(config_path), env=env)
    assert alias.returncode == 1 and alias.stdout.splitlines()[0] == header
    as_json = ("--config", str(config_path), "-o", "json")
    assert document(run("get", *as_json, env=env)) == document(run("status", *as_json, env=env))


def test_status_json_has_the_documented_shape_at_the_remote_head(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], remote: Path
) -> None:
    three_requests(operator, config_path, env)

    result = run("status", "--config", str(config_path), "-o", "json", env=env)

    assert result.returncode == 1, result.stderr
    doc = document(result)
    assert list(doc) == ["revision", "requests"] and doc["revision"] == remote_head(remote)
    assert [r["name"] for r in doc["requests"]] == ["bad", "blog", "good"]
    bad, blog, _ = doc["requests"]
    assert all(list(r) == KEYS for r in doc["requests"])
    assert {k: blog[k] for k in ("request", "phase", "healthy", "vmid", "node", "address", "domain", "drift")} == {
        "request": "requests/blog.yaml",
        "phase": "Ready",
        "healthy": None,
        "vmid": 200,
        "node": "pve1",
        "address": "192.168.50.210",
        "domain": "blog.example.com",
        "drift": [],
    }
    assert isinstance(blog["job"], int) and blog["message"].startswith("container 200 running on pve1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", blog["changed"])
    assert bad["phase"] == "Invalid" and bad["vmid"] is None and bad["domain"] is None
    assert any("pve9" in p for p in bad["problems"])

    as_yaml = run("status", "--config", str(config_path), "-o", "yaml", env=env)
    assert yaml.safe_load(as_yaml.stdout) == doc


def test_status_filters_by_phase_and_name_and_exits_by_what_it_lists(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    three_requests(operator, config_path, env)
    config = ("--config", str(config_path), "-o", "json")

    ready = run("status", *config, "--phase", "ready", env=env)
    assert ready.returncode == 0, ready.stderr  # the Invalid one is not listed
    assert [r["name"] for r in document(ready)["requests"]] == ["blog", "good"]
    both = run("status", *config, "--phase", "Ready", "--phase", "Invalid", env=env)
    assert (both.returncode, len(document(both)["requests"])) == (1, 3)
    named = run("status", *config, "good", "bad", env=env)
    assert (named.returncode, [r["name"] for r in document(named)["requests"]]) == (1, ["bad", "good"])
    assert run("status", *config, "good", env=env).returncode == 0

    unknown = run("status", *config, "good", "nope", env=env)
    assert unknown.returncode == 2
    assert "reconciler: no status for nope in status/ at main " in unknown.stderr
    wrong = run("status", *config, "--phase", "Done", env=env)
    assert wrong.returncode == 2
    assert f"'Done' is not a phase ({', '.join(p.value for p in Phase)})" in wrong.stderr


def test_status_shows_drift_fields(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/svc.yaml", request_yaml("svc", drift="report"))
    operator.push()
    once(config_path, env)
    [ct] = cluster.containers()
    ct.config["memory"] = 1024  # changed by hand in Proxmox
    once(config_path, env)

    table = run("status", "--config", str(config_path), env=env)
    doc = document(run("status", "--config", str(config_path), "-o", "json", env=env))

    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[8:10] == ["1:", "memory"]
    assert doc["requests"][0]["drift"] == [{"field": "memory", "desired": "512", "observed": "1024"}]


def test_status_reads_the_remote_head_and_leaves_the_daemons_checkout_alone(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], remote: Path
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()
    once(config_path, env)
    checkout = git.Repo(config_path.parent / "checkout")
    before = checkout.head.commit.hexsha
    operator.pull()
    operator.write("notes.txt", "a commit the daemon has not fetched yet\n")
    newest = operator.push()

    doc = document(run("status", "--config", str(config_path), "-o", "json", env=env))

    assert doc["revision"] == newest == remote_head(remote) != before
    assert [r["name"] for r in doc["requests"]] == ["good"]
    assert checkout.head.commit.hexsha == before
    assert checkout.git.rev_parse("refs/remotes/origin/main") == before  # nothing was fetched into it
    assert not (config_path.parent / "checkout" / "notes.txt").exists()


def test_status_with_repo_reads_a_working_tree_and_only_files_the_reconciler_wrote(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    three_requests(operator, config_path, env)
    operator.pull()
    operator.write("status/forged.yaml", "name: forged\nphase: Ready\nmessage: hand-written\n")

    result = run("status", "--repo", str(operator.path), "-o", "json")

    assert result.returncode == 1, result.stderr
    doc = document(result)
    assert doc["revision"] is None
    assert [r["name"] for r in doc["requests"]] == ["bad", "blog", "good"]
    assert all(r["changed"] is None for r in doc["requests"])  # a working tree's history is not read
    assert "ignored 1 file not written by the reconciler: status/forged.yaml" in result.stderr
    table = run("status", "--repo", str(operator.path), "--phase", "Ready")
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[7] == "-"

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "status").mkdir(parents=True)
    (elsewhere / "status/good.yaml").write_text((operator.path / "status/good.yaml").read_text())
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "status").symlink_to(elsewhere / "status")
    refused = run("status", "--repo", str(linked))
    assert refused.returncode == 2
    assert f"{linked}/status is a symbolic link; status files are read from real folders" in refused.stderr
    missing = run("status", "--repo", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and f"{tmp_path}/nowhere is not a folder" in missing.stderr


def test_status_of_a_remote_without_the_branch_is_an_error(
    config_path: Path, env: dict[str, str], remote: Path
) -> None:
    git.Repo(remote).git.branch("-m", "main", "trunk")

    result = run("status", "--config", str(config_path), env=env)

    assert result.returncode == 2
    assert "the remote has no branch main" in result.stderr


def test_status_runs_git_without_the_secrets_of_its_environment(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()
    once(config_path, env)
    # Every git started (by git.py or by GitPython reading a commit's date) records its environment first.
    real = shutil.which("git")
    bin_dir, seen = tmp_path / "bin", tmp_path / "seen"
    bin_dir.mkdir()
    seen.mkdir()
    (bin_dir / "git").write_text(f'#!/bin/sh\necho "git $*" > "{seen}/$$"\nenv >> "{seen}/$$"\nexec {real} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    canary = {TOKEN_SECRET_ENV: cluster.secret, TSIG_SECRET_ENV: "tsig-canary-7f3a"}

    result = run(
        "--config", str(config_path), "status", "-o", "json", env={**env, **canary, "PATH": f"{bin_dir}:{env['PATH']}"}
    )

    assert result.returncode == 0, result.stderr
    assert document(result)["requests"][0]["changed"] is not None  # a commit's date was read
    recorded = [path.read_text() for path in seen.iterdir()]
    assert any(text.startswith("git cat-file") for text in recorded)
    leaked = [text.splitlines()[0] for text in recorded if any(secret in text for secret in canary.values())]
    assert leaked == []
