"""Responsiveness of the running daemon while long work goes on: no pass waits for a create or a DHCP lease.

    python benchmarks/responsiveness.py [--rounds 2] [--pushes 5] [--gap 2.5]

(A) Creates take 15 s (the fake's create task runs in real time). 2 s into one create on pve1, a push adds
    a bad request (node: pve9, not approved) and a valid one on pve2. Timed from that push (+ webhook):
    the bad request's status with phase Invalid on the remote (target < 2 s), and the pve2 container's
    status with phase Ready on the remote (target < its own 15 s task + 2 s = 17 s).
(B) One container's DHCP lease never comes while the daemon waits for it (proxmox.address_timeout 60 s,
    the default). During that wait, webhook pushes of other, unrelated requests are timed to Ready on the
    remote (target < 2 s each): first requests with static addresses (no lease wait of their own), then
    requests with DHCP whose leases the fake hands out at once (only the one container is refused); one push
    every --gap seconds, so the measurements spread over the first ~25 s of the 60 s wait.

The daemon is the real `reconciler run` subprocess (hourly polls, no watcher: only the webhook and job ends
start a pass); the fake Proxmox and a bare Git remote run in this process; the remote is polled every
20 ms with `git fetch` + `git show origin/main:status/<name>.yaml` from an operator's clone.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import git
import yaml
from harness import NODES, DaemonProcess, Env, OperatorClone, environment, request_yaml, static

from reconciler.fake import DhcpFakePve

POLL = 0.02
CREATE_SECS = 15.0
INTO_CREATE = 2.0
TARGET_INVALID = 2.0
TARGET_READY_A = CREATE_SECS + 2.0
TARGET_READY_B = 2.0
ADDRESS_TIMEOUT = 60.0
NO_LEASE = "nolease"


def status_on_remote(operator: OperatorClone, name: str) -> dict[str, object]:
    """status/<name>.yaml on the remote's main as last fetched ({}: none yet)."""
    try:
        doc = yaml.safe_load(operator.repo.git.show(f"origin/main:status/{name}.yaml"))
    except git.GitCommandError:
        return {}
    return doc if isinstance(doc, dict) else {}


def phases_on_remote(operator: OperatorClone, names: list[str]) -> dict[str, str | None]:
    """Each request's phase in status/<name>.yaml on the remote's main (None: no status file yet)."""
    operator.repo.git.fetch("-q", "origin")
    return {name: status_on_remote(operator, name).get("phase") for name in names}  # type: ignore[misc]


def time_phases(env: Env, began: float, wanted: list[tuple[str, str]], timeout: float) -> dict[tuple[str, str], float]:
    """Seconds from `began` until each (request, phase) is first seen on the remote; missing: not seen in time."""
    seen: dict[tuple[str, str], float] = {}
    while time.monotonic() - began < timeout:
        pending = [w for w in wanted if w not in seen]
        if not pending:
            break
        phases = phases_on_remote(env.operator, sorted({name for name, _ in pending}))
        now = time.monotonic()
        for name, phase in pending:
            if phases[name] == phase:
                seen[name, phase] = now - began
        if env.daemon.proc is not None and env.daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited; its log:\n{env.daemon.log()[-3000:]}")
        time.sleep(POLL)
    return seen


def wait_until(check: Callable[[], bool], timeout: float, what: str, daemon: DaemonProcess) -> None:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"waited {timeout:g} s for {what}; daemon log:\n{daemon.log()[-3000:]}")
        time.sleep(POLL)


def push(env: Env, files: dict[str, str], message: str) -> float:
    """Commit and push the files from the operator's clone, then deliver the webhook; the push's end."""
    env.operator.pull()
    for name, text in files.items():
        env.operator.write(f"requests/{name}.yaml", text)
    repo = env.operator.repo
    repo.git.add("--all")
    repo.git.commit("-q", "-m", message)
    for attempt in range(5):
        try:
            repo.git.push("-q", "origin", "HEAD:main")
            break
        except git.GitCommandError:  # the daemon pushed statuses since the pull: rebase on them, push again
            if attempt == 4:
                raise
            env.operator.pull()
            env.rejected += 1
    pushed = time.monotonic()
    status, body = env.daemon.push_hook()
    if status != 202:
        raise RuntimeError(f"webhook answered {status}: {body}")
    return pushed


def seconds_or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def verdict(seconds: float | None, target: float) -> str:
    if seconds is None:
        return f"NOT SEEN (target < {target:g} s)"
    miss = "" if seconds < target else f"  MISSED by {seconds - target:.2f} s"
    return f"{seconds:.2f} s after the push (target < {target:g} s){miss}"


def summary(label: str, values: list[float | None], target: float) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return f"{label}: never seen in {len(values)} tries (target < {target:g} s)"
    worst = max(got)
    ok = "met" if len(got) == len(values) and worst < target else "MISSED"
    return (
        f"{label}: median {statistics.median(got):.2f} s, max {worst:.2f} s over {len(values)}"
        f" (target < {target:g} s: {ok})"
    )


def tail_on_miss(env: Env, missed: bool) -> None:
    if missed:
        print(f"--- daemon log, last lines (a target was missed):\n{env.daemon.log()[-6000:]}", file=sys.stderr)


# (A) ---------------------------------------------------------------------------------------------------------


def slow_creates(pve: DhcpFakePve) -> None:
    pve.time_scale = 1.0
    pve.ct_secs["create"] = CREATE_SECS


def round_a(root: Path, number: int) -> tuple[float | None, float | None, float | None]:
    """(bad Invalid, second Ready, first Ready): seconds after the second push (the first's from its own)."""
    with environment(root, slow_creates, address_timeout=10) as env:
        first = push(env, {"first": request_yaml("first", node="pve1", network=static("192.168.50.11/24"))}, "first")
        wait_until(
            lambda: any(c.lock == "create" for c in env.pve.cts), 10, "the first create task to start", env.daemon
        )
        create_began = time.monotonic()
        time.sleep(max(0.0, create_began + INTO_CREATE - time.monotonic()))
        files = {
            "bad": request_yaml("bad", node="pve9", network=static("192.168.50.12/24")),
            "second": request_yaml("second", node="pve2", network=static("192.168.50.13/24")),
        }
        pushed = push(env, files, "bad and second")
        into = pushed - create_began
        wanted = [("bad", "Invalid"), ("second", "Provisioning"), ("second", "Ready"), ("first", "Ready")]
        seen = time_phases(env, pushed, wanted, TARGET_READY_A + 15)
        bad, second = seen.get(("bad", "Invalid")), seen.get(("second", "Ready"))
        provisioning = seen.get(("second", "Provisioning"))
        first_ready = seen.get(("first", "Ready"))
        first_ready = None if first_ready is None else first_ready + pushed - first
        print(f"(A) round {number}: push made {into:.2f} s into the first create (pve1, {CREATE_SECS:g} s task)")
        print(f"(A) round {number}: bad request Invalid on the remote: {verdict(bad, TARGET_INVALID)}")
        print(
            f"(A) round {number}: second create (pve2) Ready on the remote: {verdict(second, TARGET_READY_A)}"
            f" [its task: {CREATE_SECS:g} s; Provisioning on the remote at {seconds_or_dash(provisioning)} s]"
        )
        print(
            f"(A) round {number}: (context) first create (pve1) Ready on the remote:"
            f" {seconds_or_dash(first_ready)} s after its own push"
        )
        missed = bad is None or bad >= TARGET_INVALID or second is None or second >= TARGET_READY_A
        tail_on_miss(env, missed)
        return bad, second, first_ready


# (B) ---------------------------------------------------------------------------------------------------------


def one_lease_refused(pve: DhcpFakePve) -> None:
    """Leases come at once for every container but the one named NO_LEASE, whose DHCP server never answers."""
    original = pve._lease

    def lease(vmid: int) -> str | None:
        ct = pve.ct(vmid)
        if ct is not None and ct.config.get("hostname") == NO_LEASE:
            return None
        return original(vmid)

    pve._lease = lease  # type: ignore[method-assign]


def lease_wait(database: Path) -> tuple[int, str] | None:
    """(job id, status) of the newest find-address job of the no-lease request, from the daemon's job database."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(
            "SELECT id, status FROM jobs WHERE request = ? AND type = 'find-address' ORDER BY id DESC LIMIT 1",
            (NO_LEASE,),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return (int(row[0]), str(row[1])) if row else None


def waiting_on_remote(env: Env) -> bool:
    """The no-lease request's status on the remote is Provisioning and names its running find-address job:
    the daemon has pushed all it knows about it, so the operator's next push does not race the daemon's."""
    job = lease_wait(env.database)
    if job is None or job[1] != "running":
        return False
    env.operator.repo.git.fetch("-q", "origin")
    doc = status_on_remote(env.operator, NO_LEASE)
    return doc.get("phase") == "Provisioning" and doc.get("job") == job[0]


def scenario_b(root: Path, pushes: int, gap: float) -> None:
    with environment(root, one_lease_refused, address_timeout=ADDRESS_TIMEOUT) as env:
        push(env, {NO_LEASE: request_yaml(NO_LEASE, node="pve1")}, "a container whose lease never comes")
        wait_until(lambda: waiting_on_remote(env), 15, "the lease wait, Provisioning on the remote", env.daemon)
        wait_began = time.monotonic()
        print(
            f"(B) {NO_LEASE} (DHCP, lease refused) is Provisioning with its address wait running"
            f" (proxmox.address_timeout {ADDRESS_TIMEOUT:g} s)"
        )
        results: dict[str, list[float | None]] = {"static": [], "dhcp": []}
        for i in range(pushes * 2):
            mode = "static" if i < pushes else "dhcp"
            name = f"{mode}{i % pushes}"
            node = NODES[i % len(NODES)]
            network = static(f"192.168.50.{20 + i}/24") if mode == "static" else {"mode": "dhcp", "bridge": "vmbr0"}
            time.sleep(max(0.0, wait_began + i * gap - time.monotonic()))  # spread over the wait
            pushed = push(env, {name: request_yaml(name, node=node, network=network)}, f"add {name}")
            seconds = time_phases(env, pushed, [(name, "Ready")], TARGET_READY_B + 10).get((name, "Ready"))
            results[mode].append(seconds)
            job = lease_wait(env.database)
            waiting = job[1] if job else "none"
            print(
                f"(B) push {i + 1} ({name}, {mode} address, {node}) Ready on the remote:"
                f" {verdict(seconds, TARGET_READY_B)}; lease wait {time.monotonic() - wait_began:.1f} s in,"
                f" job {waiting}"
            )
        still = phases_on_remote(env.operator, [NO_LEASE])[NO_LEASE]
        waited = time.monotonic() - wait_began
        during = (lease_wait(env.database) or (0, ""))[1] == "running" and waited < ADDRESS_TIMEOUT
        print(
            f"(B) after the pushes: {NO_LEASE} still {still}, its address wait"
            f" {'still running' if during else 'NOT running any more'} ({waited:.1f} s in);"
            f" operator pushes that had to rebase on a daemon push first: {env.rejected}"
        )
        for mode, label in (("static", "static-address"), ("dhcp", "DHCP (lease at once)")):
            print(summary(f"(B) {label} request pushed during the lease wait, to Ready", results[mode], TARGET_READY_B))
        everything = results["static"] + results["dhcp"]
        tail_on_miss(env, not during or any(s is None or s >= TARGET_READY_B for s in everything))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (A), ~20 s each")
    parser.add_argument("--pushes", type=int, default=5, help="pushes of each kind in (B)")
    parser.add_argument("--gap", type=float, default=2.5, help="s between the starts of (B)'s pushes")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, git {git.Git().version_info}, {os.cpu_count()} cores")
    print(
        f"(A) fake: time_scale 1.0, create task {CREATE_SECS:g} s; all requests static addresses;"
        f" remote polled every {POLL * 1000:g} ms"
    )
    bads: list[float | None] = []
    seconds: list[float | None] = []
    for number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="responsiveness-a-") as tmp:
            bad, second, _ = round_a(Path(tmp), number)
        bads.append(bad)
        seconds.append(second)
    print(summary("(A) bad request Invalid on the remote, after the push", bads, TARGET_INVALID))
    print(summary("(A) second create Ready on the remote, after the push", seconds, TARGET_READY_A))
    print(
        f"(B) fake: tasks finish at once; leases at once except for {NO_LEASE} (refused for that container only);"
        f" measured requests: {args.pushes} with static addresses, then {args.pushes} with DHCP,"
        f" one push every {args.gap:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="responsiveness-b-") as tmp:
        scenario_b(Path(tmp), args.pushes, args.gap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
