"""`reconciler demo`: the story of one cycle, told with the commands an operator runs (validate, plan, status, jobs).

Each command is called through the parser, as `reconciler ...` would run it, so the demo shows what they print
today. The sandbox (a throw-away bare remote, an in-process fake Proxmox VE, a config for both) is
reconciler/demo.py's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from reconciler.config import TOKEN_SECRET_ENV
from reconciler.demo import INVALID_NAME, Sandbox, create_job, demo_requests, pushed_files, run_cycle, sandbox
from reconciler.gateways.sqlite import JobStore
from reconciler.parse import load_yaml

# One heading per part, in the order they are printed (the demo's test looks for each).
REQUESTS = "1. The request files, committed to a throw-away Git repo"
PLAN = "2. reconciler plan: what the first cycle would do, changing nothing"
CYCLE = "3. One cycle, as `reconciler once` runs it"
STATUS = "4. reconciler status: where every request stands now"
JOB = "5. reconciler jobs: the log of one create"
NEXT = "6. What to try next"
WHERE = "7. Where the demo's repo is"
HEADINGS = (REQUESTS, PLAN, CYCLE, STATUS, JOB, NEXT, WHERE)
SHOWN = ("blog", INVALID_NAME)  # the request files printed in full; the others get one line each
README_SECTION = "Running it for real"


def run_story(out: TextIO, keep: bool = False) -> int:
    """Commit the requests, plan, run a cycle, show the status and a job's log; 0 when only the deliberately
    Invalid request failed."""
    files = demo_requests()
    with sandbox(files, keep=keep) as box:
        _heading(out, REQUESTS)
        _show_requests(out, box, files)
        _heading(out, PLAN)
        # An empty job database, as the daemon's first pass has: plan then reads it as the daemon would.
        JobStore(box.config.state.database).close()
        with _secret_in_environ(box.secret):
            _command(out, "plan", "--config", str(box.config_path))
        _heading(out, CYCLE)
        failing = _show_cycle(out, box)
        _heading(out, STATUS)
        _command(out, "status", "--config", str(box.config_path))
        job = create_job(box, "blog")
        _heading(out, JOB)
        if job is None:
            out.write("no create job was recorded for blog\n")
        else:
            _command(out, "jobs", str(job), "--config", str(box.config_path))
        _heading(out, NEXT)
        _show_next(out, box, keep)
        root = box.root
    _heading(out, WHERE)
    _show_where(out, root, keep)
    return 1 if failing != [INVALID_NAME] else 0


def _heading(out: TextIO, title: str) -> None:
    out.write(f"\n== {title} ==\n")


def _command(out: TextIO, *argv: str) -> int:
    """Run a `reconciler` command in this process, through the parser, printing its line first."""
    from reconciler.cli.main import parser  # main imports this module's caller: import when run

    out.write(f"$ reconciler {' '.join(argv)}\n")
    args = parser().parse_args(list(argv))
    code: int = args.fn(args, out)
    return code


@contextmanager
def _secret_in_environ(secret: str) -> Iterator[None]:
    """The fake's token secret where `plan` reads it, as an operator exports the real one, for as long as needed."""
    before = os.environ.get(TOKEN_SECRET_ENV)
    os.environ[TOKEN_SECRET_ENV] = secret
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKEN_SECRET_ENV, None)
        else:
            os.environ[TOKEN_SECRET_ENV] = before


def _show_requests(out: TextIO, box: Sandbox, files: dict[str, bytes]) -> None:
    out.write(
        f"An operator commits one file per workload to requests/ and pushes; here to {box.remote} (branch main).\n"
        "The demo's site: nodes pve1, pve2, pve3; bridge vmbr0 on 192.168.50.0/24; VMIDs 200..299.\n\n"
    )
    width = max(len(path) for path in files)
    for path, data in files.items():
        doc = load_yaml(data.decode())
        what = f"{doc.get('profile')} on {doc.get('node')}: {doc.get('description')}" if isinstance(doc, dict) else ""
        out.write(f"  {path.ljust(width)}  {what}\n")
    for name in SHOWN:
        path = f"requests/{name}.yaml"
        out.write(f"\n--- {path}\n{files[path].decode()}")
    out.write(
        f"\n{INVALID_NAME} is Invalid on purpose. `reconciler validate` checks request files offline (in CI or a"
        " pre-commit hook)\nagainst the site's approved values, and says why, one line per problem:\n"
    )
    _command(out, "validate", str(box.work / "requests"), "--config", str(box.config_path))


def _show_cycle(out: TextIO, box: Sandbox) -> list[str]:
    """Run the cycle and a second one; say what Proxmox now holds; the failing requests of the first."""
    out.write(
        "The daemon runs this cycle on every push (or `reconciler once` runs it by hand): it creates what is missing,\n"
        "follows each job to its end (a create, then the lookup of a DHCP address), and pushes a status file per\n"
        "request (and a Caddy file per exposed service) after each pass.\n\n"
    )
    report = run_cycle(box)
    commit = report.commit[:12] if report.commit else "none"
    started = ", ".join(sorted(report.started)) or "none"
    out.write(f"{report.passes} passes; jobs started for {started}; last pushed commit {commit}\n")
    for name, standing in sorted(report.statuses.items()):
        out.write(f"  {name}: {standing.phase}\n")
    out.write("Proxmox VE (the fake) now holds:\n")
    for ct in sorted(box.pve.cts, key=lambda c: c.vmid):
        net0 = dict(part.split("=", 1) for part in str(ct.config.get("net0", "")).split(",") if "=" in part)
        out.write(f"  lxc {ct.vmid} on {ct.node}: {ct.config.get('hostname')}, {ct.status}, net0 ip={net0.get('ip')}\n")
    out.write("Pushed to the remote:\n" + "".join(f"  {path}\n" for path in pushed_files(box)))
    again = run_cycle(box)
    if again.started or again.commit:
        out.write(f"A second cycle started {len(again.started)} jobs: Git and Proxmox did not agree yet\n")
    else:
        out.write("A second cycle: 0 jobs, nothing to commit (nothing changed): Git and Proxmox agree.\n")
    return report.failing


def _show_next(out: TextIO, box: Sandbox, keep: bool) -> None:
    out.write(
        "- Change a request and see what would happen before it does: edit requests/blog.yaml (say memory: 1024)\n"
        "  in your infra repo, then `reconciler plan --config /etc/reconciler/config.yaml` prints `~ update blog`\n"
        "  and changes nothing; push, and the daemon makes the change.\n"
        "- Check request files offline, in CI or a pre-commit hook: `reconciler validate requests/ --config ...`.\n"
    )
    if keep:
        work = box.root / "try"
        out.write(
            "- In the kept repo, offline (the fake Proxmox VE ends with the demo: `plan` and `once` need one):\n"
            f"    git clone {box.remote} {work}\n"
            f"    $EDITOR {work}/requests/wiki.yaml    # node: pve1, memory: 2048\n"
            f"    reconciler validate {work}/requests --config {box.config_path}\n"
        )
    out.write(f'- Run it for real, against your Proxmox VE: the README\'s section "{README_SECTION}".\n')


def _show_where(out: TextIO, root: Path, keep: bool) -> None:
    if not keep:
        out.write(
            f"Removed {root}: the bare remote, the config and the job database went with it.\n"
            "Run `reconciler demo --keep` to keep it, with the commands to look inside.\n"
        )
        return
    out.write(
        f"Kept {root}:\n"
        f"  {root / 'infra.git'}    the bare Git remote: requests, and the status and Caddy files pushed\n"
        f"  {root / 'config.yaml'}  the demo's config (a fake Proxmox VE that no longer runs)\n"
        f"  {root / 'jobs.sqlite'}  the job database, with each job's log\n"
        "Look:\n"
        f"  git clone {root / 'infra.git'} {root / 'look'} && ls {root / 'look' / 'status'}\n"
        f"  reconciler status --config {root / 'config.yaml'}\n"
        f"  reconciler jobs --config {root / 'config.yaml'}\n"
        f"Remove it: rm -rf {root}\n"
    )
