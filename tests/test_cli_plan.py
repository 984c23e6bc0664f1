"""`reconciler plan`, run as the operator runs it: a real subprocess beside a real remote and the fake Proxmox."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import git
from clirun import CANARY, container, once, outside_request, plan, run
from conftest import PROFILES, SITE, FakeCluster, OperatorClone, request_yaml, static, with_provision

from reconciler.config import TOKEN_SECRET_ENV, Config
from reconciler.demo import TOKEN_ID
from reconciler.desired.validate import validate
from reconciler.fake import add_token
from reconciler.lock import CheckoutLock
from reconciler.model.action import Provision
from reconciler.model.desired import RequestFile
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase, Transport
from reconciler.report import caddy
from reconciler.report.plan_text import PlanView, changes, render_json, render_text, summary
from reconciler.runtime import open_planner

ROOT = Path(__file__).resolve().parent.parent


def test_plan_then_once_then_jobs_and_no_secret_anywhere(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    planned = run("plan", "--config", str(config_path), env=env)
    assert planned.returncode == 2, planned.stderr  # something would change
    assert "+ create good: lxc 200 on pve1 (generic-service, 1 core, 512 MB, 8 GB, dhcp)" in planned.stdout
    assert "x invalid bad: requests/bad.yaml\n    node: 'pve9' is not an approved node" in planned.stdout
    assert cluster.containers() == []

    once = run("--log-format", "json", "once", "--config", str(config_path), env=env)
    assert once.returncode == 1, once.stderr
    assert "good: Ready: container 200 running on pve1" in once.stdout
    assert "bad: Invalid:" in once.stdout
    assert len(cluster.containers()) == 1

    again = run("once", "--config", str(config_path), env=env)
    assert "no changes to commit" in again.stdout
    replanned = run("plan", "--config", str(config_path), env=env)
    assert replanned.returncode == 0, replanned.stdout + replanned.stderr
    assert replanned.stdout.endswith("Plan: nothing to change (1 invalid).\n")

    jobs = run("jobs", "--config", str(config_path), env=env)
    assert "create" in jobs.stdout and "validate" in jobs.stdout
    job_id = next(line.split()[0] for line in jobs.stdout.splitlines() if " create " in line)
    detail = run("jobs", job_id, "--config", str(config_path), env=env)
    assert "create good (generic-service): succeeded" in detail.stdout
    assert "create task UPID:pve1:" in detail.stdout

    everything = planned.stdout + planned.stderr + once.stdout + once.stderr + again.stderr + detail.stdout
    assert cluster.secret not in everything + replanned.stdout + replanned.stderr
    database = (config_path.parent / "jobs.sqlite").read_bytes()
    checkout = b"".join(p.read_bytes() for p in (config_path.parent / "checkout").rglob("*") if p.is_file())
    assert cluster.secret.encode() not in database + checkout


def test_plan_of_a_directory_screens_it_as_a_pass_screens_requests_and_never_follows_a_link(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    outside = outside_request(tmp_path)
    operator.write("requests/base.yaml", request_yaml("base"))
    operator.write("requests/.evil.yaml", request_yaml("evil"))
    operator.push()
    first = run("once", "--config", str(config_path), env=env)
    assert first.returncode == 1, first.stdout + first.stderr  # .evil.yaml is invalid; base is created
    tree = tmp_path / "pull-request" / "requests"
    tree.mkdir(parents=True)
    (tree / "base.yaml").write_text(request_yaml("base"))
    (tree / ".evil.yaml").write_text(request_yaml("evil"))

    same = plan(config_path, env, "--requests", str(tree))

    assert same.returncode == 0, same.stdout + same.stderr  # the refused entry keeps its status as it is
    assert same.stdout.endswith("Plan: nothing to change (1 invalid).\n")

    (tree / "blog.yaml").symlink_to(outside / "secret.yaml")
    (tree / "dup.yaml").write_text(request_yaml("dup"))
    (tree / "dup.yml").write_text(request_yaml("dup"))
    changed = plan(config_path, env, "--requests", str(tree))
    (tmp_path / "linked").symlink_to(outside)
    linked = plan(config_path, env, "--requests", str(tmp_path / "linked"))

    assert changed.returncode == 2, changed.stdout + changed.stderr
    assert (
        "x invalid blog: requests/blog.yaml\n    requests/blog.yaml is a symbolic link; the reconciler does not"
        " follow links\n"
    ) in changed.stdout
    assert (
        "x invalid dup: requests/dup.yaml, requests/dup.yml\n    requests/dup.yaml and requests/dup.yml name the"
        " same request dup; neither is applied until one is removed\n"
    ) in changed.stdout
    [evil] = [line for line in changed.stdout.splitlines() if line.startswith("x invalid _evil-")]
    assert evil.endswith(": requests/.evil.yaml")
    assert "status/evil.yaml" not in changed.stdout
    assert "Files to change in the repository (main):\n  status/blog.yaml: status written\n" in changed.stdout
    assert (linked.returncode, linked.stdout) == (1, "")
    assert linked.stderr.splitlines()[-1] == (
        f"reconciler: --requests: {tmp_path}/linked is a symbolic link; the reconciler does not follow links"
    )
    everything = same.stdout + same.stderr + changed.stdout + changed.stderr + linked.stdout + linked.stderr
    assert CANARY not in everything and str(outside) not in everything


def test_plan_of_a_branch_shows_the_entries_it_refuses_and_not_those_of_the_configured_branch(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/base.yaml", request_yaml("base"))
    operator.write("requests/.evil.yaml", request_yaml("evil"))
    operator.push()
    operator.repo.git.checkout("-q", "-b", "feature")
    operator.remove("requests/.evil.yaml")
    operator.write("requests/dup.yaml", request_yaml("dup"))
    operator.write("requests/dup.yml", request_yaml("dup", node="pve2"))
    operator.repo.git.add("--all")
    operator.repo.git.commit("-q", "-m", "feature")
    operator.repo.git.push("-q", "origin", "HEAD:refs/heads/feature")

    on_branch = plan(config_path, env, "--ref", "feature")
    on_main = plan(config_path, env)

    assert on_branch.returncode == 2, on_branch.stdout + on_branch.stderr
    assert (
        "x invalid dup: requests/dup.yaml, requests/dup.yml\n    requests/dup.yaml and requests/dup.yml name the"
        " same request dup; neither is applied until one is removed\n"
    ) in on_branch.stdout
    assert "+ create dup" not in on_branch.stdout
    assert "_evil-" not in on_branch.stdout  # main's refused entry is not the branch's
    assert on_main.returncode == 2, on_main.stdout + on_main.stderr
    assert "x invalid _evil-" in on_main.stdout and "dup" not in on_main.stdout


# --- `reconciler plan`: read-only beside a running daemon, exit status as terraform's -detailed-exitcode


def test_plan_names_every_kind_of_change_one_line_each_sorted_by_request(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    for name, fields in {
        "up": {},
        "grow": {},
        "halted": {},
        "pause": {"state": "stopped"},
        "gone": {},
        "left": {},
        "moved": {},
        "stuck": {},
        "steady": {},
    }.items():
        operator.write(f"requests/{name}.yaml", request_yaml(name, **fields))
    operator.push()
    once(config_path, env)
    operator.pull()
    cluster.pve.add_ct(250, "legacy", node="pve2", status="running", config={"cores": 2, "memory": 1024})
    container(cluster, "halted").status = "stopped"  # stopped by hand: started again
    container(cluster, "pause").status = "running"  # started by hand: stopped again (state: stopped)
    for name, fields in {
        "new": {},
        "up": {"resources": {"cores": 2, "memory": 512, "disk": 8}},
        "grow": {"resources": {"cores": 1, "memory": 512, "disk": 12}},
        "gone": {"state": "absent"},
        "moved": {"node": "pve2", "migrate": True},
        "stuck": {"node": "pve2"},
        "legacy": {"adopt": True, "vmid": 250, "node": "pve2"},
    }.items():
        operator.write(f"requests/{name}.yaml", request_yaml(name, **fields))
    operator.remove("requests/left.yaml")
    operator.push("every kind of change")
    ids = {c.config.get("hostname"): c.vmid for c in cluster.containers()}

    result = plan(config_path, env)

    assert result.returncode == 2, result.stdout + result.stderr
    header, actions, files, summary = result.stdout.split("\n\n")
    assert header.startswith("Planning main at ") and header.endswith(": 10 request files.")
    steps = [line for line in actions.splitlines() if line.startswith("      ")]  # as report.steps says them
    assert [line.split(":")[0] for line in steps] == [
        "      1. wait-network",
        "      2. apt-update",
        "      3. install-packages",
    ]
    assert [line for line in actions.splitlines() if line not in steps] == [
        f"- destroy gone: lxc {ids['gone']} on pve1 and its volumes (state: absent)",
        f"~ resize grow: lxc {ids['grow']} on pve1: rootfs -> 12 GB",
        f"^ start halted: lxc {ids['halted']} on pve1",
        f"? orphan left: request file removed; container {ids['left']} left as it is (to destroy it, restore the file"
        " with state: absent)",
        "* adopt legacy: lxc 250 on pve2 (its marker only; nothing else changes)",
        f"> migrate moved: lxc {ids['moved']} from pve1 to pve2 (restart mode: it stops and starts again)",
        "+ create new: lxc 209 on pve1 (generic-service, 1 core, 512 MB, 8 GB, dhcp)",
        "    setup is off (provision.transport: off); with ssh or local it would run:",
        f"v stop pause: lxc {ids['pause']} on pve1 (state: stopped)",
        f"! refuse stuck: lxc {ids['stuck']} on pve1 is kept as it is:",
        "    node: asked pve2, kept pve1 (set migrate: true to move it)",
        f"~ update up: lxc {ids['up']} on pve1",
        "    cores: 1 -> 2",
    ]
    changed = ["gone", "grow", "halted", "left", "legacy", "moved", "new", "pause", "stuck", "up"]  # not steady
    assert files.splitlines() == [
        "Files to change in the repository (main):",
        *(f"  status/{name}.yaml: status written" for name in changed),
    ]
    assert summary == (
        "Plan: 1 to create, 6 to change, 1 to destroy (1 update, 1 resize, 1 migrate, 1 start, 1 stop, 1 adopt);"
        " 1 refused, 1 orphaned; 10 files to change.\n"
    )

    document = json.loads(plan(config_path, env, "--json").stdout)
    assert [(a["request"], a["action"]) for a in document["actions"]] == [
        ("gone", "destroy"),
        ("grow", "resize"),
        ("halted", "start"),
        ("legacy", "adopt"),
        ("moved", "migrate"),
        ("new", "create"),
        ("pause", "stop"),
        ("up", "update"),
    ]
    up = document["actions"][-1]
    assert (up["vmid"], up["node"]) == (ids["up"], "pve1")
    assert up["details"] == {"changes": [{"field": "cores", "old": "1", "new": "2"}], "grow_to": None, "corrects": []}
    assert document["refusals"] == [
        {
            "request": "stuck",
            "vmid": ids["stuck"],
            "node": "pve1",
            "refused": [{"field": "node", "asked": "pve2", "kept": "pve1 (set migrate: true to move it)"}],
        }
    ]
    assert [o["request"] for o in document["orphans"]] == ["left"]
    assert document["files"][0] == {"path": "status/gone.yaml", "kind": "status", "change": "write"}
    assert {k: v for k, v in document["summary"].items() if v and k != "text"} == {
        **dict.fromkeys(("create", "update", "destroy", "resize", "migrate", "start", "stop", "adopt"), 1),
        "change": 6,  # update, resize, migrate, start, stop and adopt: one job each
        "refused": 1,
        "orphaned": 1,
        "files": 10,
        "changes": True,
    }
    assert document["summary"]["text"] == summary.strip()
    assert [c.status for c in cluster.containers() if c.vmid != 250].count("running") == 8  # nothing was done


BLOG = dict(
    profile="static-website",
    network=static("192.168.50.210/24"),
    service={"domain": "blog.example.com", "expose": True, "visibility": "public", "port": 80},
)


def test_plan_says_a_removed_route_takes_a_live_site_away_and_what_the_guard_holds_back(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/blog.yaml", request_yaml("blog", **BLOG))
    operator.write("requests/other.yaml", request_yaml("other"))
    operator.push()
    once(config_path, env)
    operator.pull()
    operator.remove("requests/blog.yaml")
    operator.push("remove blog")

    result = plan(config_path, env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "? orphan blog: request file removed; container 200 left as it is" in result.stdout
    assert (
        "Files to change in the repository (main):\n"
        "  caddy/services/blog.example.com.yaml: Caddy file removed: takes the route of the live site blog.example.com"
        " away\n"
        "  status/blog.yaml: status written\n"
    ) in result.stdout
    assert result.stdout.endswith("Plan: 0 to create, 0 to change, 0 to destroy; 1 orphaned; 2 files to change.\n")

    operator.remove("requests/other.yaml")  # every owned container would be orphaned: the guard holds it back
    operator.push("remove other")

    held = plan(config_path, env)

    assert held.returncode == 2, held.stdout + held.stderr
    assert "? orphan" not in held.stdout and "caddy/services" not in held.stdout
    assert "\nheld by the mass-change guard: this pass would destroy 0, stop 0 and orphan 2 of 2 owned guests" in (
        held.stdout
    )
    assert "    held back: blog, other\n" in held.stdout
    assert held.stdout.endswith("; 2 files to change; some held by the mass-change guard.\n")
    document = json.loads(plan(config_path, env, "--json").stdout)
    assert document["held"]["requests"] == ["blog", "other"]
    assert document["orphans"] == []


def test_plan_shows_the_setup_steps_once_setup_is_turned_on(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/blog.yaml", request_yaml("blog", **BLOG))
    operator.push()
    once(config_path, env)  # setup off: created and routed, no step run
    with_provision(config_path, {"transport": "local"})

    result = plan(config_path, env)

    assert result.returncode == 2, result.stdout + result.stderr
    steps = result.stdout.split("\n\n")[1].splitlines()
    assert steps[0] == "= setup blog: lxc 200 on pve1, through pct (local):"
    assert steps[1:3] == [
        "      1. wait-network: wait for the container's network",
        "      2. apt-update: refresh the package lists",
    ]
    assert [line.split(". ")[1].split(":")[0] for line in steps[1:]] == [
        "wait-network",
        "apt-update",
        "install-packages",
        "prepare-docroot",
        "write-web-server-config",
    ]
    assert "caddy/services" not in result.stdout  # the route stays while setup runs
    assert result.stdout.endswith("Plan: 0 to create, 1 to change, 0 to destroy (1 setup); 1 file to change.\n")


def test_plan_of_an_unmerged_branch_shows_its_work_against_the_configured_branchs_statuses(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/base.yaml", request_yaml("base"))
    operator.push()
    once(config_path, env)  # status/base.yaml is pushed to main; the branch below does not have it
    operator.repo.git.checkout("-q", "-b", "feature")
    operator.write("requests/feature.yaml", request_yaml("feature", node="pve2"))
    operator.repo.git.add("--all")
    operator.repo.git.commit("-q", "-m", "feature")
    operator.repo.git.push("-q", "origin", "HEAD:refs/heads/feature")
    branch_tip = operator.repo.head.commit.hexsha

    on_branch = plan(config_path, env, "--ref", "feature")
    on_main = plan(config_path, env)

    assert on_branch.returncode == 2, on_branch.stdout + on_branch.stderr
    assert on_branch.stdout.startswith(
        f"Planning the 2 request files of branch feature at {branch_tip[:12]} against the status and Caddy files of"
        " main at "
    )
    assert "+ create feature: lxc 201 on pve2 (generic-service, 1 core, 512 MB, 8 GB, dhcp)" in on_branch.stdout
    assert "Files to change in the repository (main):\n  status/feature.yaml: status written\n\n" in on_branch.stdout
    assert (on_main.returncode, "feature" in on_main.stdout) == (0, False), on_main.stdout + on_main.stderr
    assert on_main.stdout.endswith("No file to change in the repository (main).\n\nPlan: nothing to change.\n")
    assert len(cluster.containers()) == 1

    missing = plan(config_path, env, "--ref", "nosuch")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.strip() == "reconciler: git ls-remote: the remote has no branch nosuch"
    bad = plan(config_path, env, "--ref=~x")
    assert (bad.returncode, bad.stderr.strip()) == (1, "reconciler: --ref: '~x' is not a branch name")


def test_plan_of_a_directory_of_request_files_keeps_the_revision_of_the_unchanged_ones(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    operator.write("requests/base.yaml", request_yaml("base"))
    operator.push()
    once(config_path, env)
    tree = tmp_path / "pull-request" / "requests"  # a plain directory: no Git here
    tree.mkdir(parents=True)
    (tree / "base.yaml").write_text(request_yaml("base"))

    same = plan(config_path, env, "--requests", str(tree))

    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith(f"Planning the 1 request file of {tree} against the status and Caddy files of")
    assert same.stdout.endswith("Plan: nothing to change.\n")

    (tree / "new.yaml").write_text(request_yaml("new"))
    (tree / "notes.txt").write_text("not a request")
    added = plan(config_path, env, "--requests", str(tree))

    assert added.returncode == 2, added.stdout + added.stderr
    assert "+ create new: lxc 201 on pve1" in added.stdout
    assert "Files to change in the repository (main):\n  status/new.yaml: status written\n\n" in added.stdout
    document = json.loads(plan(config_path, env, "--requests", str(tree), "--json").stdout)
    assert document["requests_from"] == str(tree)
    assert document["files"] == [{"path": "status/new.yaml", "kind": "status", "change": "write"}]

    nowhere = plan(config_path, env, "--requests", str(tmp_path / "nowhere"))
    assert (nowhere.returncode, nowhere.stderr.strip()) == (
        1,
        f"reconciler: --requests: {tmp_path}/nowhere is not a directory",
    )
    both = plan(config_path, env, "--requests", str(tree), "--ref", "main")
    assert both.returncode == 1 and "not allowed with argument" in both.stderr


def test_plan_as_json_without_a_job_database_says_so_on_stderr(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/web.yaml", request_yaml("web"))
    operator.push()

    result = plan(config_path, env, "--json")

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"reconciler: no job database at {config_path.parent}/jobs.sqlite; planning without the job history"
    )
    document = json.loads(result.stdout)
    assert document["job_history"] is False
    assert document["actions"] == [
        {
            "request": "web",
            "action": "create",
            "vmid": 200,
            "node": "pve1",
            "description": "create web: lxc 200 on pve1 (generic-service, 1 core, 512 MB, 8 GB, dhcp)",
            "details": {},
        }
    ]
    assert document["files"] == [
        {"path": "site.yaml", "kind": "site", "change": "write"},  # published for `validate` at the first pass
        {"path": "status/web.yaml", "kind": "status", "change": "write"},
    ]
    assert document["held"] is None
    assert document["summary"]["create"] == 1 and document["summary"]["files"] == 2
    assert document["summary"]["changes"] is True
    assert not (config_path.parent / "jobs.sqlite").exists() and not (config_path.parent / "checkout").exists()


def test_plan_runs_beside_a_daemon_holding_the_lock_and_touches_neither_its_checkout_nor_its_database(
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    config: Config,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    operator.write("requests/base.yaml", request_yaml("base"))
    operator.push()
    once(config_path, env)
    operator.pull()
    operator.write("requests/new.yaml", request_yaml("new"))
    operator.push()
    checkout, database = config.git.checkout, config.state.database

    def daemon_checkout() -> tuple[str, str, dict[str, bytes]]:
        repo = git.Repo(checkout)
        try:
            refs = repo.git.execute(["git", "show-ref"])
            return (
                refs,
                repo.git.execute(["git", "status", "--porcelain", "--ignored"]),
                {str(p): p.read_bytes() for p in checkout.rglob("*") if p.is_file()},
            )
        finally:
            repo.close()

    before = daemon_checkout()
    database.chmod(0o444)  # the daemon's user may give others read access only
    stored = database.read_bytes()
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    lock = CheckoutLock(checkout).acquire()  # as a running daemon holds it
    try:
        result = run("plan", "--config", str(config_path), env={**env, "TMPDIR": str(scratch)})
    finally:
        lock.release()

    assert result.returncode == 2, result.stdout + result.stderr
    assert "+ create new: lxc 201 on pve1" in result.stdout
    assert "job history" not in result.stderr  # read from the daemon's database
    assert daemon_checkout() == before  # not fetched, not reset, nothing written
    assert database.read_bytes() == stored
    assert list(scratch.iterdir()) == []  # its own clone is gone
    planner = open_planner(config, env)
    try:
        assert planner.history is None and planner.store.readonly
    finally:
        planner.close()


def test_plan_exits_1_when_it_cannot_run(config_path: Path, cluster: FakeCluster, env: dict[str, str]) -> None:
    bad = config_path.with_name("bad.yaml")
    bad.write_text(config_path.read_text().replace("vmid_range: [200, 299]", "vmid_range: [20, 29]"))
    result = run("plan", "--config", str(bad), env=env)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"reconciler: {bad}: site.vmid_range: ")

    unset = {k: v for k, v in env.items() if k != TOKEN_SECRET_ENV}
    assert plan(config_path, unset).returncode == 1
    unknown = plan(config_path, env, "--bogus")
    assert (unknown.returncode, unknown.stderr.splitlines()[-1]) == (
        1,
        "reconciler: error: unrecognized arguments: --bogus",
    )
    assert run("plan", "--config", env=env).returncode == 1  # a usage error is no "2: changes"
    config_path.write_text(config_path.read_text().replace(f"port: {cluster.port}", "port: 1"))
    unreachable = plan(config_path, env)
    assert (unreachable.returncode, unreachable.stderr.splitlines()[-1]) == (
        1,
        "reconciler: list guests: cannot connect to the Proxmox API at 127.0.0.1:1",
    )


def test_the_plan_text_of_a_setup_of_routes_and_of_failures() -> None:
    """The renderer alone, for what a pass over the fake rarely shows at once: a Caddy file created, changed and
    removed, a setup over SSH, a request that fails without a refusal."""
    [web], _ = validate([RequestFile("requests/web.yaml", "web", request_yaml("web", **BLOG).encode())], PROFILES, SITE)
    old_route = caddy.render("old", "requests/old.yaml", "old.example.com", "192.168.50.9", 80).encode()
    view = PlanView(
        branch="main",
        revision="0123456789abcdef",
        request_count=3,
        actions=[Provision(web, 200, "pve1")],
        standings={
            "web": Provision(web, 200, "pve1").standing(),
            "lost": Standing("lost", "requests/lost.yaml", Phase.FAILED, "node pve2 is offline: state unknown"),
            "bad": Standing("bad", "requests/bad.yaml", Phase.INVALID, "1 problem(s)", problems=("node: no such",)),
        },
        files={
            "caddy/services/blog.example.com.yaml": caddy.render(
                "web", "requests/web.yaml", "blog.example.com", "192.168.50.210", 80
            ),
            "caddy/services/old.example.com.yaml": None,
            "caddy/services/app.example.com.yaml": caddy.render(
                "app", "requests/app.yaml", "app.example.com", "192.168.50.12", 8080
            ),
            "status/web.yaml": "...",
        },
        caddy_files={
            "caddy/services/old.example.com.yaml": old_route,
            "caddy/services/app.example.com.yaml": old_route.replace(b"old", b"app"),
        },
        caddy_dir="caddy/services",
        transport=Transport.SSH,
    )

    lines = render_text(view).splitlines()
    steps = [line for line in lines if line.startswith("      ")]  # each step as report.steps says it
    assert [line.split(":")[0] for line in steps] == [
        "      1. wait-network",
        "      2. apt-update",
        "      3. install-packages",
        "      4. prepare-docroot",
        "      5. write-web-server-config",
    ]
    assert [line for line in lines if line not in steps] == [
        "Planning main at 0123456789ab: 3 request files.",
        "",
        "x invalid bad: requests/bad.yaml",
        "    node: no such",
        "! fail lost: node pve2 is offline: state unknown",
        "= setup web: lxc 200 on pve1, through pct (ssh):",
        "",
        "Files to change in the repository (main):",
        "  caddy/services/app.example.com.yaml: Caddy file changed: routes app.example.com to 192.168.50.12:8080",
        "  caddy/services/blog.example.com.yaml: Caddy file created: routes blog.example.com to 192.168.50.210:80",
        "  caddy/services/old.example.com.yaml: Caddy file removed: takes the route of the live site old.example.com"
        " away",
        "  status/web.yaml: status written",
        "",
        "Plan: 0 to create, 1 to change, 0 to destroy (1 setup); 1 failing, 1 invalid; 4 files to change.",
    ]
    document = json.loads(render_json(view))
    assert document["files"][:3] == [
        {
            "path": "caddy/services/app.example.com.yaml",
            "kind": "caddy",
            "change": "change",
            "domain": "app.example.com",
            "backend": "192.168.50.12:8080",
        },
        {
            "path": "caddy/services/blog.example.com.yaml",
            "kind": "caddy",
            "change": "create",
            "domain": "blog.example.com",
            "backend": "192.168.50.210:80",
        },
        {
            "path": "caddy/services/old.example.com.yaml",
            "kind": "caddy",
            "change": "remove",
            "domain": "old.example.com",
            "request": "old",
        },
    ]
    assert document["actions"][0]["action"] == "setup"
    assert {k: document["summary"][k] for k in ("create", "change", "destroy", "setup", "files")} == {
        "create": 0,
        "change": 1,
        "destroy": 0,
        "setup": 1,
        "files": 4,
    }
    assert document["actions"][0]["details"]["steps"][0] == "wait-network"
    assert document["failing"] == [{"request": "lost", "vmid": None, "message": "node pve2 is offline: state unknown"}]
    assert document["invalid"] == [{"request": "bad", "path": "requests/bad.yaml", "problems": ["node: no such"]}]

    quiet = replace(view, actions=[], files={}, standings={"bad": view.standings["bad"]})
    assert summary(quiet) == "Plan: nothing to change (1 invalid)."
    assert not changes(quiet) and changes(view)


def test_plan_reads_proxmox_only_so_a_token_that_can_only_read_is_enough(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/web.yaml", request_yaml("web", network=static("192.168.50.20/24")))
    operator.push()
    once(config_path, env)
    operator.pull()
    operator.write("requests/web.yaml", request_yaml("web", network=static("192.168.50.20/24"), start=False))
    operator.write("requests/db.yaml", request_yaml("db", network=static("192.168.50.21/24")))
    operator.push()
    # What the README suggests for CI: a token of the reconciler's user with the PVEAuditor role, whose
    # privileges are those both grant: VM.Audit and Datastore.Audit.
    add_token(cluster.pve, "planner@pve!ci", "ci-secret", ("VM.Audit", "Datastore.Audit"))
    ci_config = config_path.with_name("ci.yaml")
    ci_config.write_text(config_path.read_text().replace(TOKEN_ID, "planner@pve!ci"))
    calls = len(cluster.pve.requests)

    daemons = plan(config_path, env)
    ci = run("plan", "--config", str(ci_config), env={**env, TOKEN_SECRET_ENV: "ci-secret"})

    assert ci.returncode == daemons.returncode == 2, ci.stdout + ci.stderr
    assert ci.stdout == daemons.stdout
    assert (
        "+ create db: lxc 201 on pve1" in ci.stdout and "~ update web: lxc 200 on pve1\n    onboot: 1 -> 0" in ci.stdout
    )
    assert {method for method, _, _ in cluster.pve.requests[calls:]} == {"GET"}
