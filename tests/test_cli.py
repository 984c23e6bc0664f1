"""The `reconciler` command, run as the operator runs it: a real subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from clirun import run
from conftest import FakeCluster

from reconciler.cli.demo import CYCLE, HEADINGS, JOB, NEXT, PLAN, README_SECTION, REQUESTS, STATUS, WHERE
from reconciler.config import TOKEN_SECRET_ENV
from reconciler.demo import INVALID_NAME

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


def _parts(out: str) -> dict[str, str]:
    """The demo's output cut at its headings, which come once each and in order."""
    starts = [out.index(f"== {heading} ==\n") for heading in HEADINGS]
    assert starts == sorted(starts), out
    return {h: out[a:b] for h, a, b in zip(HEADINGS, starts, [*starts[1:], len(out)], strict=True)}


def _line_with(text: str, *words: str) -> str:
    return next((line for line in text.splitlines() if all(w in line for w in words)), "")


def test_demo_tells_each_part_quietly_then_removes_its_repo() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no log lines without --verbose
    part = _parts(result.stdout)
    # (a) the committed requests, one Invalid, and validate's reasons for it
    assert all(f"requests/{n}.yaml" in part[REQUESTS] for n in ("blog", "grafana", "metrics", INVALID_NAME))
    assert "$ reconciler validate" in part[REQUESTS]
    assert f"{INVALID_NAME}.yaml:node: 'pve4' is not an approved node (pve1, pve2, pve3)" in part[REQUESTS]
    # (b) the plan before anything exists: creates, and the Invalid request, nothing done yet
    assert "$ reconciler plan --config" in part[PLAN]
    assert all(_line_with(part[PLAN], "create", n) for n in ("blog", "grafana", "metrics")), part[PLAN]
    assert "'pve4' is not an approved node" in part[PLAN]
    # (c) the cycle made the containers, pushed the files, and a second one had nothing to do
    assert "lxc 200 on pve1: blog, running" in part[CYCLE]
    assert "  caddy/services/blog.example.com.yaml\n" in part[CYCLE] and "  status/wiki.yaml\n" in part[CYCLE]
    assert f"  {INVALID_NAME}: Invalid\n" in part[CYCLE] and "A second cycle: 0 jobs" in part[CYCLE]
    # (d) status at the remote: every request with its phase
    assert "$ reconciler status --config" in part[STATUS]
    assert all(_line_with(part[STATUS], n, "Ready") for n in ("blog", "grafana", "metrics")), part[STATUS]
    assert _line_with(part[STATUS], INVALID_NAME, "Invalid"), part[STATUS]
    # (e) one create's job and its log
    job = re.search(r"\$ reconciler jobs (\d+) --config", part[JOB])
    assert job is not None, part[JOB]
    assert "create blog" in part[JOB] and "container 200 created" in part[JOB]
    # (f) what next: plan after an edit, and the README's section that exists
    assert "reconciler plan --config" in part[NEXT] and f'"{README_SECTION}"' in part[NEXT]
    assert f"\n## {README_SECTION}\n" in (ROOT / "README.md").read_text()
    # (g) removed, and how to keep it
    removed = re.search(r"^Removed (\S+):", part[WHERE], re.M)
    assert removed is not None and not Path(removed.group(1)).exists()
    assert "reconciler demo --keep" in part[WHERE]


def test_demo_keep_leaves_the_repo_it_names_and_its_commands_work() -> None:
    result = run("demo", "--keep")
    kept = re.search(r"^Kept (\S+):", result.stdout, re.M)
    assert kept is not None, result.stdout
    root = Path(kept.group(1))
    try:
        assert result.returncode == 0, result.stderr
        assert root.is_dir() and (root / "infra.git").is_dir()
        where = _parts(result.stdout)[WHERE]
        clone = re.search(r"git clone (\S+) (\S+) && ls (\S+)", where)
        assert clone is not None, where
        subprocess.run(["git", "clone", "-q", clone.group(1), clone.group(2)], check=True, timeout=60)
        assert {"blog.yaml", INVALID_NAME + ".yaml"} <= {p.name for p in Path(clone.group(3)).iterdir()}
        assert f"reconciler status --config {root / 'config.yaml'}\n" in where
        status = run("status", "--config", str(root / "config.yaml"))
        assert _line_with(status.stdout, "blog", "Ready"), status.stdout + status.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
