"""The request folder and the generated folders, read safely: real Git remote, the fake Proxmox VE, real cycles.

A link is never followed, a name that is no request's never writes another request's status, two files for one
request are never both applied, and a generated file edited by hand is reported instead of silently left stale.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import FakeCluster, OperatorClone, request_yaml, static

from reconciler.parse import MAX_FILE_BYTES
from reconciler.runtime import Runtime

CANARY = "canary-7f3e9b1c-host-secret"
REPO_CANARY = "canary-2d4a-in-a-subfolder"


def run_once(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`reconciler once` as the operator runs it, logging JSON lines."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--log-format", "json", "once", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def reconciler_commits(operator: OperatorClone) -> str:
    """Every change the reconciler committed, as patches."""
    operator.repo.git.fetch("-q", "origin")
    return str(operator.repo.git.log("-p", "--binary", "--author=reconciler", "origin/main"))


def stored(config_path: Path) -> bytes:
    """The job database's bytes, with its journal if any."""
    folder = config_path.parent
    return b"".join(p.read_bytes() for p in folder.glob("jobs.sqlite*"))


def generated_files(operator: OperatorClone) -> dict[str, bytes]:
    """The status and Caddy files on the remote branch."""
    operator.pull()
    return {
        str(p.relative_to(operator.path)): p.read_bytes()
        for folder in ("status", "caddy")
        for p in (operator.path / folder).rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def status_of(operator: OperatorClone, name: str) -> Any:
    return operator.yaml(f"status/{name}.yaml")


def odd_statuses(operator: OperatorClone) -> dict[str, Any]:
    """The statuses under names no request can have (`_...`), by the file each names."""
    found = {}
    for path in sorted((operator.path / "status").glob("_*.yaml")):
        doc = operator.yaml(str(path.relative_to(operator.path)))
        found[doc["request"]] = doc
    return found


def test_two_files_for_one_request_are_both_refused_and_never_both_created(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    blog = dict(
        profile="static-website",
        network=static("192.168.50.210/24"),
        service={"domain": "blog.example.com", "expose": True, "port": 80},
    )
    operator.write("requests/blog.yaml", request_yaml("blog", **blog))
    operator.write("requests/dup.yaml", request_yaml("dup"))
    operator.write("requests/dup.yml", request_yaml("dup", node="pve2"))
    operator.write("requests/Case.yaml", request_yaml("case"))
    operator.write("requests/case.yaml", request_yaml("case"))
    operator.push()

    report = runtime.reconciler.once()

    assert [c.config["hostname"] for c in cluster.containers()] == ["blog"]
    assert report.statuses["blog"].phase == "Ready"
    operator.pull()
    dup = status_of(operator, "dup")
    assert (dup["phase"], dup["request"]) == ("Invalid", "requests/dup.yaml, requests/dup.yml")
    assert dup["problems"] == [
        "requests/dup.yaml and requests/dup.yml name the same request dup; neither is applied until one is removed"
    ]
    case = status_of(operator, "case")
    assert case["phase"] == "Invalid"
    assert "differ only in case: they collide on case-insensitive checkouts" in case["problems"][0]
    assert sorted(p.name for p in (operator.path / "status").iterdir()) == ["blog.yaml", "case.yaml", "dup.yaml"]

    # A second file for a request that has its container: refused; the container and its route are left as they are.
    operator.write("requests/blog.yml", request_yaml("blog", **blog, resources={"cores": 2, "memory": 1024, "disk": 8}))
    operator.push()
    report = runtime.reconciler.once()
    [ct] = cluster.containers()
    assert (ct.config["hostname"], str(ct.config["memory"]), str(ct.config["cores"])) == ("blog", "512", "1")
    assert report.statuses["blog"].phase == "Invalid"
    operator.pull()
    assert status_of(operator, "blog")["message"].endswith(f"container {ct.vmid} is left as it is")
    assert operator.read("caddy/services/blog.example.com.yaml") is not None


def test_a_name_that_is_no_request_name_never_writes_another_requests_status(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/evil.yaml", request_yaml("evil"))
    for name in (".evil.yaml", "..evil.yaml", "evil\nphase: Ready.yaml", "Evil.yml"):
        operator.write(f"requests/{name}", request_yaml("evil", node="pve3"))
    operator.push()

    report = runtime.reconciler.once()

    assert cluster.containers() == []  # evil.yaml and Evil.yml collide: neither is applied
    operator.pull()
    evil = status_of(operator, "evil")
    assert (evil["phase"], evil["request"]) == ("Invalid", "requests/Evil.yml, requests/evil.yaml")
    odd = odd_statuses(operator)
    assert sorted(odd) == ["requests/..evil.yaml", "requests/.evil.yaml", "requests/evil\\nphase: Ready.yaml"]
    for doc in odd.values():
        assert doc["phase"] == "Invalid" and doc["name"].startswith("_evil-")
        assert "is not a valid request name" in doc["problems"][0]
    newline = odd["requests/evil\\nphase: Ready.yaml"]["name"]
    text = (operator.path / "status" / f"{newline}.yaml").read_text()
    assert [line for line in text.splitlines() if line.startswith("phase:")] == ["phase: Invalid"]
    assert {n for n, s in report.statuses.items() if s.phase != "Invalid"} == set()

    operator.remove("requests/Evil.yml")
    operator.push()
    report = runtime.reconciler.once()
    assert report.statuses["evil"].phase == "Ready"
    [ct] = cluster.containers()
    assert ct.node == "pve1"  # from evil.yaml, never from a file of another name
    operator.pull()
    assert status_of(operator, "evil")["phase"] == "Ready"
    assert len(odd_statuses(operator)) == 3


def test_odd_long_and_many_names_get_short_statuses_of_their_own(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    long = "\u0436" * 120 + ".yaml"  # 245 bytes, some 730 characters once escaped
    operator.write("requests/.yaml", request_yaml("blog"))
    operator.write(f"requests/{long}", request_yaml("blog"))
    # 16 case variants of blog, each as .yaml and .yml: 32 links that all name one request on macOS.
    variants = ["".join(c) for c in itertools.product(*[(ch, ch.upper()) for ch in "blog"])]
    for stem in variants:
        for suffix in (".yaml", ".yml"):
            os.symlink("elsewhere", operator.path / "requests" / f"{stem}{suffix}")
    operator.push()

    report = runtime.reconciler.once()

    assert cluster.containers() == []
    assert {s.phase for s in report.statuses.values()} == {"Invalid"}
    operator.pull()
    blog = status_of(operator, "blog")
    assert blog["request"] == "requests/BLOG.yaml, requests/BLOG.yml, requests/BLOg.yaml and 29 more"
    # 16 stems named twice, the case collision, 32 links: capped like a request file's own problems.
    assert len(blog["problems"]) == 21 and blog["problems"][-1] == "... and 29 more problems"
    assert blog["problems"][16].startswith(
        "requests/BLOG.yaml, requests/BLOG.yml, requests/BLOg.yaml and 29 more differ only in case:"
    )
    odd = odd_statuses(operator)
    cut = "requests/" + "\\u0436" * 10 + "….yaml"
    assert sorted(odd) == ["requests/.yaml", cut]
    assert odd["requests/.yaml"]["problems"] == [
        "requests/.yaml: no request name before .yaml; name the file after its request (blog.yaml)"
    ]
    assert odd[cut]["problems"][0].startswith(f"{cut}: '" + "\\u0436" * 10 + "…' is not a valid request name")
    for path in (operator.path / "status").iterdir():
        assert path.stat().st_size < 4000, path.read_text()


def test_links_and_folders_in_requests_are_refused_unread_and_their_targets_never_leak(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.yaml").write_text(request_yaml("blog", description=CANARY, tags=[CANARY[:20]]))
    operator.write("requests/good.yaml", request_yaml("good"))
    os.symlink(outside / "secret.yaml", operator.path / "requests/blog.yaml")
    os.symlink(outside / "secret.yaml", operator.path / "requests/notes.md")
    os.symlink(outside, operator.path / "requests/host.yaml")
    operator.write("requests/sub/inner.yaml", request_yaml("inner", description=REPO_CANARY))
    operator.push()

    result = run_once(config_path, env)

    assert result.returncode == 1, result.stdout + result.stderr  # invalid requests, no error
    assert [c.config["hostname"] for c in cluster.containers()] == ["good"]
    operator.pull()
    assert status_of(operator, "blog")["problems"] == [
        "requests/blog.yaml is a symbolic link; the reconciler does not follow links"
    ]
    assert status_of(operator, "host")["problems"] == [
        "requests/host.yaml is a symbolic link; the reconciler does not follow links"
    ]
    odd = odd_statuses(operator)
    assert odd["requests/notes.md"]["problems"] == [
        "requests/notes.md is a symbolic link; the reconciler does not follow links"
    ]
    assert odd["requests/sub"]["problems"] == ["requests/sub is a folder; request files must lie directly in requests/"]

    # What the reconciler said, stored, committed and asked of Proxmox (the operator's own commits aside).
    everything = result.stdout + result.stderr + reconciler_commits(operator)
    everything += "".join(t.decode("utf-8", "replace") for p, t in generated_files(operator).items())
    everything += stored(config_path).decode("utf-8", "replace")
    everything += "".join(body.decode("utf-8", "replace") for *_, body in cluster.pve.requests)
    assert CANARY not in everything and CANARY[:20] not in everything
    assert str(outside) not in everything  # not even where the link points
    assert REPO_CANARY not in everything  # the subfolder's file is never read either


@pytest.mark.parametrize("folder", ["requests", "status", "caddy"])
def test_a_linked_folder_refuses_the_pass_and_nothing_is_read_or_written_through_it(
    folder: str,
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "blog.yaml").write_text(request_yaml("blog", description=CANARY))
    (outside / "services").mkdir()
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    if folder != "requests":
        operator.write("requests/good.yaml", request_yaml("good"))
    os.symlink(outside, operator.path / folder)
    operator.push()

    result = run_once(config_path, env)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"git read: {folder} is a symbolic link; the reconciler reads and writes only real folders" in (
        result.stdout + result.stderr
    )
    assert cluster.containers() == []
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before
    assert reconciler_commits(operator) == ""
    everything = result.stdout + result.stderr + stored(config_path).decode("utf-8", "replace")
    assert CANARY not in everything


def test_a_generated_file_that_is_a_link_is_never_written_through(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    original = request_yaml("blog")
    operator.write("requests/blog.yaml", original)
    (operator.path / "status").mkdir()
    os.symlink("../requests/blog.yaml", operator.path / "status/blog.yaml")
    operator.push()

    with structlog.testing.capture_logs() as logs:
        report = runtime.reconciler.once()

    assert report.statuses["blog"].phase == "Ready"
    operator.pull()
    assert (operator.path / "requests/blog.yaml").read_text() == original
    assert (operator.path / "status/blog.yaml").is_symlink()
    warnings = [e for e in logs if e["event"] == "generated file edited by hand"]
    assert [(e["path"], e["log_level"]) for e in warnings] == [("status/blog.yaml", "warning")]
    assert runtime.reconciler.hand_edits.current.keys() == {"status/blog.yaml"}


def test_a_generated_file_whose_header_was_removed_is_reported_once_per_change(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write(
        "requests/blog.yaml",
        request_yaml(
            "blog", profile="static-website", service={"domain": "blog.example.com", "expose": True, "port": 80}
        ),
    )
    operator.push()
    assert runtime.reconciler.once().statuses["blog"].phase == "Ready"
    operator.pull()
    edited = ["status/blog.yaml", "caddy/services/blog.example.com.yaml"]
    for path in edited:
        text = operator.read(path) or ""
        operator.write(path, text.split("\n", 1)[1])  # the header line removed by hand
    operator.push("tidy the generated files")

    def warned() -> list[str]:
        with structlog.testing.capture_logs() as logs:
            runtime.reconciler.cycle()
        return sorted(e["path"] for e in logs if e["event"] == "generated file edited by hand")

    assert warned() == sorted(edited)
    assert sorted(runtime.reconciler.hand_edits.current) == sorted(edited)
    assert warned() == []  # said once, not on every pass
    operator.pull()
    operator.write("status/blog.yaml", (operator.read("status/blog.yaml") or "") + "# still mine\n")
    operator.push("edit again")
    assert warned() == ["status/blog.yaml"]
    assert sorted(runtime.reconciler.hand_edits.current) == sorted(edited)

    operator.pull()
    for path in edited:
        operator.remove(path)
    operator.push("let the reconciler write them again")
    assert warned() == []
    assert runtime.reconciler.hand_edits.current == {}
    operator.pull()
    assert (operator.read("status/blog.yaml") or "").startswith("# Written by reconciler")


def test_empty_binary_and_oversized_files_are_refused_and_the_rest_provisioned(
    operator: OperatorClone, cluster: FakeCluster, runtime: Runtime
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    (operator.path / "requests/empty.yaml").write_bytes(b"")
    (operator.path / "requests/binary.yaml").write_bytes(request_yaml("binary").encode() + b"\0\x01\x02")
    (operator.path / "requests/big.yaml").write_bytes(request_yaml("big").encode() + b"#" * MAX_FILE_BYTES)
    operator.push()

    report = runtime.reconciler.once()

    assert [c.config["hostname"] for c in cluster.containers()] == ["good"]
    problems = {n: s.problems for n, s in report.statuses.items() if s.phase == "Invalid"}
    assert problems["empty"] == ("the file is empty",)
    assert "NUL byte" in problems["binary"][0]
    size = len(request_yaml("big").encode()) + MAX_FILE_BYTES
    assert problems["big"] == (f"requests/big.yaml is {size} bytes; a request file may hold at most {MAX_FILE_BYTES}",)


def test_the_checkout_reads_at_most_the_limit_and_never_through_a_link(
    operator: OperatorClone, runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "outside.yaml").write_text(CANARY)
    (operator.path / "requests").mkdir()
    (operator.path / "requests/huge.yaml").write_bytes(b"x" * (4 * MAX_FILE_BYTES))
    os.symlink(tmp_path / "outside.yaml", operator.path / "requests/link.yaml")
    os.symlink(tmp_path / "outside.yaml", operator.path / "confirm.yaml")
    operator.push()
    checkout = runtime.reconciler.checkout
    checkout.sync()

    read = checkout.read_entries("requests", ["huge.yaml", "link.yaml", "missing.yaml"], MAX_FILE_BYTES + 1)

    assert {name: None if data is None else len(data) for name, data in read.items()} == {
        "huge.yaml": MAX_FILE_BYTES + 1,
        "link.yaml": None,
        "missing.yaml": None,
    }
    assert checkout.read_file("confirm.yaml") is None
    assert checkout.read_dir("requests") == {"requests/huge.yaml": b"x" * (MAX_FILE_BYTES + 1)}
    assert checkout.link_in_path("requests/link.yaml") == "requests/link.yaml"
    assert checkout.link_in_path("requests/huge.yaml") is None
