"""Push-to-Ready latency of the running daemon: through a signed webhook, and by polling alone.

    python benchmarks/latency.py [--trials 5] [--poll-interval 10]

Each trial pushes a new request from an operator's clone to a bare remote and times until the daemon's
status file saying Ready is on the remote. The daemon is the real `reconciler run` subprocess; the fake
Proxmox (tasks finish at once) runs in this process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness import OperatorClone, environment, request_yaml


def ready_on_remote(operator: OperatorClone, name: str) -> bool:
    operator.repo.git.fetch("-q", "origin")
    try:
        return "phase: Ready" in operator.repo.git.show(f"origin/main:status/{name}.yaml")
    except Exception:
        return False


def trials(root: Path, count: int, webhook: bool, interval: float) -> list[float]:
    out = []
    with environment(root, lambda pve: None, interval=interval) as env:
        operator, daemon = env.operator, env.daemon
        for i in range(count):
            name = f"bench{i}"
            operator.pull()
            operator.write(f"requests/{name}.yaml", request_yaml(name, node=f"pve{i % 3 + 1}"))
            operator.push(f"add {name}")
            began = time.monotonic()
            if webhook:
                daemon.push_hook()
            while not ready_on_remote(operator, name):
                time.sleep(0.02)
            out.append(time.monotonic() - began)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    args = parser.parse_args()
    for label, webhook, interval in (("webhook", True, 3600.0), ("poll only", False, args.poll_interval)):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = trials(Path(tmp), args.trials, webhook, interval)
        print(
            f"{label:>9} (interval {interval:g} s): push to Ready on the remote: median"
            f" {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s over {len(seconds)} pushes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
