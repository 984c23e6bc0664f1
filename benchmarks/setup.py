"""How long setup takes per profile, in the Debian roots of the integration tests (tests/standin.py).

    sudo .venv/bin/python benchmarks/setup.py

For each shipped profile: a fresh container (an overlay of the cached debootstrap root, in a network namespace
of its own), every setup step through the local transport and the `pct` stand-in, timed per step; then the
same steps again in the same container (already set up: what a re-run costs). The packages' .debs come from the
cache; `apt-get update` asks deb.debian.org. Needs root, debootstrap, iproute2 and nftables.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import standin  # noqa: E402

from reconciler.config import ProvisionConfig  # noqa: E402
from reconciler.desired.profile import builtin_profiles_dir, load_profiles  # noqa: E402
from reconciler.desired.validate import validate  # noqa: E402
from reconciler.gateways.pct import Pct  # noqa: E402
from reconciler.model.desired import Desired, RequestFile  # noqa: E402

CACHE = Path.home() / ".cache" / "reconciler-tests" / "debian-12"
REQUESTS = {
    "static-website": {"service": {"domain": "blog.example.com"}},
    "generic-service": {},
    "monitoring-node": {},
    "web-app": {"service": {"domain": "app.example.com", "health": "/healthz"}},
}


def desired(profile: str, extra: dict[str, object]) -> Desired:
    name = profile.split("-")[0]
    doc = {
        "apiVersion": "reconciler/v1",
        "kind": "lxc",
        "name": name,
        "profile": profile,
        "node": "pve1",
        "storage": "local-lvm",
        "resources": {"cores": 1, "memory": 512, "disk": 8},
        "network": {"mode": "dhcp", "bridge": "vmbr0"},
        **extra,
    }
    valid, invalid = validate(
        [RequestFile(f"requests/{name}.yaml", name, yaml.safe_dump(doc).encode())],
        load_profiles(builtin_profiles_dir()),
        None,
    )
    assert not invalid, invalid
    return valid[0]


def run_steps(pct: Pct, vmid: int, d: Desired) -> dict[str, float]:
    took: dict[str, float] = {}
    for step in d.setup.steps:
        began = time.monotonic()
        outcome = pct.exec(
            "pve1", vmid, ["sh", "-s", "--", *step.args], step.script, step.name, lambda _: None, lambda: None
        )
        took[step.name] = time.monotonic() - began
        if outcome.status != 0:
            raise SystemExit(f"{d.profile}: {step.name} failed ({outcome.status}): {outcome.tail[-3:]}")
    return took


def main() -> int:
    reason = standin.missing()
    if reason is not None:
        print(f"cannot run: {reason}")
        return 2
    sets = yaml.safe_load((builtin_profiles_dir() / "package-sets.yaml").read_text())
    began = time.monotonic()
    cache = standin.build_cache(CACHE, sets)
    print(f"cache root ready in {time.monotonic() - began:.1f} s ({cache})")
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        containers = standin.PctStandIn(Path(tmp) / "state", cache)
        wrapper = standin.install(Path(tmp) / "bin", containers.state)
        pct = Pct(ProvisionConfig(transport="local", local={"pct": str(wrapper)}))
        print(f"{'profile':<16} {'steps':>5} {'first run':>10} {'of it: update':>14} {'install':>8} {'again':>7}")
        try:
            for vmid, (profile, extra) in enumerate(REQUESTS.items(), 300):
                d = desired(profile, extra)
                first = run_steps(pct, vmid, d)
                again = run_steps(pct, vmid, d)
                print(
                    f"{profile:<16} {len(d.setup.steps):>5} {sum(first.values()):>9.1f}s"
                    f" {first.get('apt-update', 0):>13.1f}s {first.get('install-packages', 0):>7.1f}s"
                    f" {sum(again.values()):>6.1f}s"
                )
        finally:
            containers.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
