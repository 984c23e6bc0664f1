"""Push-to-Ready latency of the running daemon: through a signed webhook, `reconciler reconcile`, polling alone.

    python benchmarks/latency.py [--trials 5] [--poll-interval 10]

Each trial pushes a new request from an operator's clone to a bare remote and times until the daemon's
status file saying Ready is on the remote; for `reconcile`, until the command (which waits for Ready) returns,
its own start-up included. The daemon is the real `reconciler run` subprocess; the fake Proxmox (tasks finish
at once) runs in this process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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


def trials(root: Path, count: int, trigger: str, interval: float) -> list[float]:
    out = []
    with environment(root, lambda pve: None, interval=interval) as env:
        operator, daemon = env.operator, env.daemon
        for i in range(count):
            name = f"bench{i}"
            operator.pull()
            operator.write(f"requests/{name}.yaml", request_yaml(name, node=f"pve{i % 3 + 1}"))
            operator.push(f"add {name}")
            began = time.monotonic()
            if trigger == "webhook":
                daemon.push_hook()
            elif trigger == "reconcile":
                command = [sys.executable, "-m", "reconciler", "reconcile", name, "--config", str(daemon.config_path)]
                done = subprocess.run(command, env=daemon.env, capture_output=True, text=True, check=False)
                assert done.returncode == 0 and f"{name}: Ready" in done.stdout, done.stdout + done.stderr
            while not ready_on_remote(operator, name):
                time.sleep(0.02)
            out.append(time.monotonic() - began)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=10.0)
    args = parser.parse_args()
    for label, interval in (("webhook", 3600.0), ("reconcile", 3600.0), ("poll only", args.poll_interval)):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = trials(Path(tmp), args.trials, label, interval)
        print(
            f"{label:>9} (interval {interval:g} s): push to Ready on the remote: median"
            f" {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s over {len(seconds)} pushes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
