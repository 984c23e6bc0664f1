"""Cycle speed against the fake Proxmox VE (tasks finish at once), over a real bare Git remote.

    python benchmarks/cycle.py [--requests 1000] [--create 30]

(a) a pass with N valid requests already in place and nothing to do: wall time and Proxmox API calls,
    for N/10 and N requests (the number of calls must not grow with N);
(b) creating M containers across 3 nodes from scratch with `once` (every pass, job and push until all are
    Ready): wall time, and the first pass alone (what a push waits for before its statuses show).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import git

from reconciler import logs
from reconciler.config import TOKEN_SECRET_ENV, load_config
from reconciler.demo import AUTHOR, TOKEN_ID, write_config
from reconciler.fake import add_token, new_fake, serving
from reconciler.gateways.git import seed_bare_repo
from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES
from reconciler.runtime import open_runtime

NODES = ("pve1", "pve2", "pve3")

REQUEST = """\
apiVersion: reconciler/v1
kind: lxc
name: {name}
profile: generic-service
node: {node}
storage: local-lvm
resources: {{cores: 1, memory: 512, disk: 8}}
network: {network}
"""


def requests(count: int, static: bool) -> dict[str, bytes]:
    files = {}
    for i in range(count):
        name = f"w{i:04d}"
        network = (
            f"{{mode: static, address: 192.168.50.{10 + i}/24, bridge: vmbr0}}"
            if static
            else "{mode: dhcp, bridge: vmbr0}"
        )
        files[f"requests/{name}.yaml"] = REQUEST.format(name=name, node=NODES[i % 3], network=network).encode()
    return files


def scenario(root: Path, files: dict[str, bytes], vmids: int) -> tuple[float, float, float, int, int, float, int]:
    """(first pass s, `once` s, median no-op pass s, API calls of a no-op pass, containers, s and calls of a
    no-op pass that reads every owned guest's config again for drift) for one repo."""
    pve = new_fake(NODES)
    secret = secrets.token_urlsafe(24)
    add_token(pve, TOKEN_ID, secret, REQUIRED_PRIVILEGES)
    remote = root / "infra.git"
    seed_bare_repo(remote, files, AUTHOR)
    with serving(pve, root / "pki") as ca_file:
        config = load_config(write_config(root, remote, pve.port, ca_file, vmid_range=(1000, 1000 + vmids)))
        runtime = open_runtime(config, {**os.environ, TOKEN_SECRET_ENV: secret})
        try:
            began = time.perf_counter()
            runtime.reconciler.cycle()
            first_pass = time.perf_counter() - began
            first = runtime.reconciler.once()
            first_s = time.perf_counter() - began
            assert not first.failing and set(first.phases) == {"Ready"}, first.phases
            times, calls = [], []
            for _ in range(5):
                before = len(pve.requests)
                began = time.perf_counter()
                report = runtime.reconciler.cycle()
                times.append(time.perf_counter() - began)
                calls.append(len(pve.requests) - before)
                assert report.commit is None and not report.started
            assert len(set(calls)) == 1
            runtime.reconciler.configs.refresh = 0  # as when proxmox.config_refresh has passed for every guest
            before = len(pve.requests)
            began = time.perf_counter()
            report = runtime.reconciler.cycle()
            reread = time.perf_counter() - began
            assert report.commit is None and not report.started
            reread_calls = len(pve.requests) - before
            return first_pass, first_s, statistics.median(times), calls[0], len(pve.cts), reread, reread_calls
        finally:
            runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--create", type=int, default=30)
    args = parser.parse_args()
    logs.setup(json_lines=True, level="warning", stream=sys.stderr)
    print(f"python {sys.version.split()[0]}, git {git.Git().version_info}, {os.cpu_count()} cores")
    for count in (args.requests // 10, args.requests):
        with tempfile.TemporaryDirectory() as tmp:
            _, first, noop, calls, cts, reread, reread_calls = scenario(
                Path(tmp), requests(count, static=False), count + 10
            )
        print(
            f"(a) {count:>5} requests in place, nothing to do: {noop * 1000:7.1f} ms per pass (median of 5),"
            f" {calls} Proxmox API call(s); `once` created {cts} containers in {first:.1f} s;"
            f" a pass re-reading every config for drift: {reread * 1000:.0f} ms, {reread_calls} calls"
        )
    with tempfile.TemporaryDirectory() as tmp:
        first_pass, first, _, _, cts, _, _ = scenario(Path(tmp), requests(args.create, static=True), args.create + 10)
    print(
        f"(b) creating {cts} containers across {len(NODES)} nodes from scratch: {first:.2f} s until all Ready"
        f" (every pass: fetch, plan, jobs, status and Caddy files, commit, push); first pass {first_pass:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
