"""How the CLI tests run the `reconciler` command: as the operator does, a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import FakeCluster, request_yaml

CANARY = "canary-5c1e-outside-the-repo"
# The keys of a request's entry in `status -o json`, in order (README: "Where everything stands").
STATUS_KEYS = [
    "name",
    "request",
    "phase",
    "healthy",
    "vmid",
    "node",
    "address",
    "domain",
    "changed",
    "drift",
    "job",
    "message",
    "problems",
    "dns",
]


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


def outside_request(tmp_path: Path) -> Path:
    """A folder outside the repository with a request file whose key and value carry the canary: read, it would
    be printed (`<file>:<canary>: unknown key`)."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.yaml").write_text(request_yaml("blog", description=CANARY, **{CANARY: 1}))
    return outside


def plan(config_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run("plan", "--config", str(config_path), *args, env=env)


def once(config_path: Path, env: dict[str, str]) -> None:
    result = run("once", "--config", str(config_path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def container(cluster: FakeCluster, hostname: str) -> Any:
    [ct] = [c for c in cluster.containers() if c.config.get("hostname") == hostname]
    return ct
