"""The `reconciler` command, run as the operator runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FakeCluster, OperatorClone, request_yaml

from reconciler.config import TOKEN_SECRET_ENV
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase
from reconciler.report.status import render

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/ok.yaml").write_text(request_yaml("ok"))
    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", profile="nope", extra=1))
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["requests/bad.yaml:extra: unknown key"]
    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", profile="nope"))
    result = run("validate", "requests", cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "requests/bad.yaml:profile: 'nope' is not an approved profile (generic-service, monitoring-node, "
        "static-website, web-app)"
    ]
    (tmp_path / "requests/bad.yaml").unlink()
    result = run("validate", "requests/ok.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 request file(s) valid\n")


def test_validate_with_a_config_checks_the_site_values(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(request_yaml("w", node="pve7"))
    result = run("validate", str(tmp_path / "w.yaml"), "--config", str(ROOT / "examples/config.yaml"))
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path}/w.yaml:node: 'pve7' is not an approved node (pve1, pve2)\n"


def test_plan_then_once_then_jobs_and_no_secret_anywhere(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    planned = run("plan", "--config", str(config_path), env=env)
    assert planned.returncode == 1  # an invalid request
    assert "  create good: lxc 200 on pve1 (generic-service, 1 cores, 512 MB, 8 GB, dhcp)" in planned.stdout
    assert cluster.containers() == []

    once = run("--log-format", "json", "once", "--config", str(config_path), env=env)
    assert once.returncode == 1, once.stderr
    assert "good: Ready: container 200 running on pve1" in once.stdout
    assert "bad: Invalid:" in once.stdout
    assert len(cluster.containers()) == 1

    again = run("once", "--config", str(config_path), env=env)
    assert "no changes to commit" in again.stdout

    jobs = run("jobs", "--config", str(config_path), env=env)
    assert "create" in jobs.stdout and "validate" in jobs.stdout
    job_id = next(line.split()[0] for line in jobs.stdout.splitlines() if " create " in line)
    detail = run("jobs", job_id, "--config", str(config_path), env=env)
    assert "create good (generic-service): succeeded" in detail.stdout
    assert "create task UPID:pve1:" in detail.stdout

    everything = planned.stdout + planned.stderr + once.stdout + once.stderr + again.stderr + detail.stdout
    assert cluster.secret not in everything
    database = (config_path.parent / "jobs.sqlite").read_bytes()
    checkout = b"".join(p.read_bytes() for p in (config_path.parent / "checkout").rglob("*") if p.is_file())
    assert cluster.secret.encode() not in database + checkout


def test_a_missing_secret_or_an_unreachable_proxmox_exits_2_with_a_clear_line(
    config_path: Path, cluster: FakeCluster
) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_SECRET_ENV}
    result = run("once", "--config", str(config_path), env=env)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"reconciler: environment: {TOKEN_SECRET_ENV} is not set (the Proxmox API token secret)"
    )
    text = config_path.read_text().replace(f"port: {cluster.port}", "port: 1")
    config_path.write_text(text)
    result = run("once", "--config", str(config_path), env={**env, TOKEN_SECRET_ENV: cluster.secret})
    assert result.returncode == 2
    assert result.stderr.strip() == "reconciler: list guests: cannot connect to the Proxmox API at 127.0.0.1:1"


def test_demo_shows_a_container_a_status_file_and_a_caddy_file_pushed() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "container 200 on pve1: blog running" in out
    assert "--- pushed: status/blog.yaml" in out and "phase: Ready" in out
    assert "--- pushed: caddy/services/blog.example.com.yaml" in out and "backend: 192.168.50.210:80" in out
    assert "Run 2: 0 jobs, commit none (nothing changed)" in out


def test_validate_names_the_file_alone_when_the_whole_file_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    result = run("validate", str(tmp_path / "broken.yaml"))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{tmp_path}/broken.yaml: not valid YAML at line 2")


def test_validate_blames_the_new_request_in_a_clash_not_the_provisioned_one(tmp_path: Path) -> None:
    svc = {"domain": "app.example.com"}
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/a-new.yaml").write_text(request_yaml("a-new", service=svc))
    (tmp_path / "requests/b-old.yaml").write_text(request_yaml("b-old", service=svc))
    # What the reconciler pushed for b-old: it already has its container.
    (tmp_path / "status").mkdir()
    status = render(Standing("b-old", "requests/b-old.yaml", Phase.READY, "container 200 running", vmid=200))
    (tmp_path / "status/b-old.yaml").write_text(status)

    result = run("validate", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "requests/a-new.yaml:service.domain: app.example.com is also requested by b-old"
    ]
