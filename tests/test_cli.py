"""The `reconciler` command, run as the operator runs it: a real subprocess."""

from __future__ import annotations

import os
from pathlib import Path

from clirun import run
from conftest import FakeCluster

from reconciler.config import TOKEN_SECRET_ENV

ROOT = Path(__file__).resolve().parent.parent


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
