"""`reconciler validate`, run as the operator's CI runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from clirun import CANARY, outside_request, run
from conftest import PROFILES, SITE, FakeCluster, OperatorClone, request_yaml, static

from reconciler.config import load_config
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES
from reconciler.report import site
from reconciler.report.status import render

ROOT = Path(__file__).resolve().parent.parent


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/ok.yaml").write_text(request_yaml("ok"))
    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", profile="nope", extra=1))
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["requests/bad.yaml:extra: unknown key"]
    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", profile="nope"))
    result = run("validate", "requests", cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "requests/bad.yaml:profile: 'nope' is not an approved profile (generic-service, monitoring-node, "
        "static-website, vm-generic, web-app)"
    ]
    (tmp_path / "requests/bad.yaml").unlink()
    result = run("validate", "requests/ok.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 request file valid\n")


def test_validate_with_a_config_checks_the_site_values(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(request_yaml("w", node="pve7"))
    result = run("validate", str(tmp_path / "w.yaml"), "--config", str(ROOT / "examples/config.yaml"))
    assert result.returncode == 1
    assert result.stdout == f"{tmp_path}/w.yaml:node: 'pve7' is not an approved node (pve1, pve2)\n"


def test_validate_names_the_file_alone_when_the_whole_file_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    result = run("validate", str(tmp_path / "broken.yaml"))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{tmp_path}/broken.yaml: not valid YAML at line 2")


def test_validate_blames_the_new_request_in_a_clash_not_the_provisioned_one(tmp_path: Path) -> None:
    svc = {"domain": "app.example.com"}
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/a-new.yaml").write_text(request_yaml("a-new", service=svc))
    (tmp_path / "requests/b-old.yaml").write_text(request_yaml("b-old", service=svc))
    # What the reconciler pushed for b-old: it already has its container.
    (tmp_path / "status").mkdir()
    status = render(Standing("b-old", "requests/b-old.yaml", Phase.READY, "container 200 running", vmid=200))
    (tmp_path / "status/b-old.yaml").write_text(status)

    result = run("validate", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "requests/a-new.yaml:service.domain: app.example.com is also requested by b-old"
    ]


# --- request files read by the daemon's rules (desired.files): links never followed, names and sizes judged unread


def test_validate_refuses_links_folders_and_oversized_files_as_a_pass_does_and_never_reads_a_link(
    tmp_path: Path,
) -> None:
    outside = outside_request(tmp_path)
    requests = tmp_path / "requests"
    requests.mkdir()
    (requests / "good.yaml").write_text(request_yaml("good"))
    (requests / "blog.yaml").symlink_to(outside / "secret.yaml")
    (requests / "sub").mkdir()
    (requests / "sub/inner.yaml").write_text(request_yaml("inner", **{CANARY: 1}))
    big = request_yaml("big").encode() + b"#" * MAX_FILE_BYTES
    (requests / "big.yaml").write_bytes(big)
    (tmp_path / "linked").symlink_to(outside)

    result = run("validate", cwd=tmp_path)
    alone = run("validate", "requests/blog.yaml", "requests/good.yaml", cwd=tmp_path)
    folder = run("validate", "linked", cwd=tmp_path)
    through = run("validate", "linked/secret.yaml", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"requests/big.yaml is {len(big)} bytes; a request file may hold at most {MAX_FILE_BYTES}",
        "requests/blog.yaml is a symbolic link; the reconciler does not follow links",
        "requests/sub is a folder; request files must lie directly in requests/",
    ]
    assert (alone.returncode, alone.stdout) == (
        1,
        "requests/blog.yaml is a symbolic link; the reconciler does not follow links\n",
    )
    assert (folder.returncode, folder.stdout) == (
        1,
        "./linked is a symbolic link; the reconciler does not follow links\n",
    )
    assert (through.returncode, through.stdout) == (2, "")
    assert (
        through.stderr == "reconciler: linked: the folder is a symbolic link; the reconciler reads only real folders\n"
    )
    everything = "".join(r.stdout + r.stderr for r in (result, alone, folder, through))
    assert CANARY not in everything and str(outside) not in everything


def test_validate_refuses_both_files_of_one_request_names_differing_in_case_and_names_that_are_no_request_name(
    tmp_path: Path,
) -> None:
    requests = tmp_path / "requests"
    requests.mkdir()
    (requests / "ok.yaml").write_text(request_yaml("ok"))
    (requests / "dup.yaml").write_text(request_yaml("dup"))
    (requests / "dup.yml").write_text(request_yaml("dup", node="pve2"))
    (requests / "Case.yaml").write_text(request_yaml("case"))
    (requests / "case.yaml").write_text(request_yaml("case"))
    (requests / ".evil.yaml").write_text(request_yaml("evil"))
    (requests / "README.md").write_text("not a request")

    result = run("validate", cwd=tmp_path)
    # A pre-commit hook names only the files changed: the one added beside its twin is refused all the same.
    added = run("validate", "requests/dup.yml", "requests/ok.yaml", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "requests/.evil.yaml: '.evil' is not a valid request name (lower-case letters, digits and '-', starting and"
        " ending with a letter or digit, at most 63 characters)",
        "requests/Case.yaml and requests/case.yaml differ only in case: they collide on case-insensitive checkouts"
        " (macOS, Windows); neither is applied until one is renamed",
        "requests/dup.yaml and requests/dup.yml name the same request dup; neither is applied until one is removed",
    ]
    assert (added.returncode, added.stdout) == (
        1,
        "requests/dup.yaml and requests/dup.yml name the same request dup; neither is applied until one is removed\n",
    )


# --- the site file the daemon publishes, the -o documents, every problem of a file at once

SKIPPED = (
    "no site values (site.yaml not found): skipped the checks of nodes, storages, bridges and addresses, VLANs,"
    " limits, the VMID range and reserved addresses; profiles are the shipped ones"
)
DOC_KEYS = ["valid", "files", "site", "skipped", "note", "problems"]


def daemon_once(config_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = run("once", "--config", str(config_path), env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result


def test_once_publishes_the_site_file_and_validate_checks_a_clone_against_it_without_a_config(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()
    daemon_once(config_path, env)
    operator.pull()
    text = operator.read("site.yaml")
    assert text is not None and text.startswith("# Written by reconciler from its config")
    assert site.parse(text).site == load_config(config_path).site
    # Committed once, with the statuses of the pass that first wrote it.
    [written] = operator.repo.git.log("--format=%H", "origin/main", "--", "site.yaml").split()
    assert "status/good.yaml" in operator.repo.git.show("--name-only", "--format=", written)

    operator.write("requests/far.yaml", request_yaml("far", network=static("10.9.8.7/24")))
    result = run("validate", cwd=operator.path)
    as_json = run("validate", "-o", "json", cwd=operator.path)

    assert result.returncode == 1, result.stderr
    assert result.stdout == "requests/far.yaml:network.address: 10.9.8.7/24 is not inside vmbr0's 192.168.50.0/24\n"
    assert result.stderr == ""  # the site's checks ran: nothing skipped
    doc = json.loads(as_json.stdout)
    assert (doc["site"], doc["skipped"], doc["note"], doc["files"]) == ("site.yaml", [], None, 2)
    # A second pass with nothing new commits nothing: the site file is written only when it differs.
    head = operator.repo.git.rev_parse("origin/main")
    daemon_once(config_path, env)
    operator.repo.git.fetch("-q")
    assert operator.repo.git.rev_parse("origin/main") == head


def test_without_a_site_file_validate_says_which_checks_it_skipped_and_still_checks_the_format(
    tmp_path: Path,
) -> None:
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/ok.yaml").write_text(request_yaml("ok", node="pve9", network=static("10.9.8.7/24")))
    result = run("validate", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "1 request file valid\n")
    assert result.stderr == f"reconciler: {SKIPPED}\n"

    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", extra=1))
    result = run("validate", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "requests/bad.yaml:extra: unknown key\n")
    assert result.stderr == f"reconciler: {SKIPPED}\n"


def test_validate_reads_a_site_file_named_with_site_and_a_config_wins_over_it(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/w.yaml").write_text(request_yaml("w", node="pve2"))
    only_pve1 = SITE.model_copy(update={"nodes": ["pve1"]})
    (tmp_path / "elsewhere.yaml").write_text(site.render(only_pve1, PROFILES))
    named = run("validate", "--site", "elsewhere.yaml", cwd=tmp_path)
    assert (named.returncode, named.stdout) == (1, "requests/w.yaml:node: 'pve2' is not an approved node (pve1)\n")
    (tmp_path / "site.yaml").write_text(site.render(only_pve1, PROFILES))
    found = run("validate", cwd=tmp_path)
    assert (found.returncode, found.stdout, found.stderr) == (1, named.stdout, "")
    config = run("validate", "--site", "elsewhere.yaml", "--config", str(ROOT / "examples/config.yaml"), cwd=tmp_path)
    assert (config.returncode, config.stdout) == (0, "1 request file valid\n")
    # A site file somebody wrote by hand is not trusted: the checks are skipped, and said so.
    (tmp_path / "site.yaml").write_text(site.render(only_pve1, PROFILES).split("\n", 2)[2])
    untrusted = run("validate", cwd=tmp_path)
    assert untrusted.returncode == 0 and "site.yaml has lost the reconciler's header" in untrusted.stderr


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_validate_documents_have_every_key_whatever_the_outcome(tmp_path: Path, output: str) -> None:
    load = json.loads if output == "json" else yaml.safe_load
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/ok.yaml").write_text(request_yaml("ok"))
    good = run("validate", "-o", output, cwd=tmp_path)
    assert good.returncode == 0 and good.stderr == ""
    assert load(good.stdout) == {
        "valid": True,
        "files": 1,
        "site": None,
        "skipped": [
            "nodes",
            "storages",
            "bridges and addresses",
            "VLANs",
            "limits",
            "the VMID range",
            "reserved addresses",
        ],
        "note": SKIPPED,
        "problems": [],
    }
    (tmp_path / "requests/bad.yaml").write_text(request_yaml("bad", extra=1))
    (tmp_path / "requests/broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "site.yaml").write_text(site.render(SITE, PROFILES))
    bad = run("validate", "-o", output, cwd=tmp_path)
    doc = load(bad.stdout)
    assert bad.returncode == 1 and list(doc) == DOC_KEYS
    assert {k: doc[k] for k in ("valid", "files", "site", "skipped", "note")} == {
        "valid": False,
        "files": 3,
        "site": "site.yaml",
        "skipped": [],
        "note": None,
    }
    [unknown, whole] = doc["problems"]
    assert unknown == {"path": "requests/bad.yaml", "field": "extra", "reason": "unknown key"}
    assert whole["path"] == "requests/broken.yaml" and whole["field"] is None
    assert whole["reason"].startswith("not valid YAML at line 2")


def test_validate_reports_a_clash_beside_the_field_errors_of_the_same_file(tmp_path: Path) -> None:
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/b.yaml").write_text(request_yaml("b", network=static("192.168.50.40/24")))
    (tmp_path / "requests/a.yaml").write_text(
        request_yaml("a", network=static("192.168.50.40/24"), service={"domain": "x.example.com"}, extra=1)
    )
    result = run("validate", cwd=tmp_path)
    # a comes first alphabetically, but b's file is valid: the one with errors (never acted on) loses.
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "requests/a.yaml:extra: unknown key",
        "requests/a.yaml:network.address: 192.168.50.40 is also requested by b",
    ]


def test_a_provisioned_request_with_field_errors_keeps_its_domain_and_the_newcomer_is_blamed(tmp_path: Path) -> None:
    svc = {"domain": "app.example.com"}
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests/a-new.yaml").write_text(request_yaml("a-new", service=svc))
    (tmp_path / "requests/b-old.yaml").write_text(request_yaml("b-old", service=svc, extra=1))
    (tmp_path / "status").mkdir()
    status = render(Standing("b-old", "requests/b-old.yaml", Phase.READY, "container 200 running", vmid=200))
    (tmp_path / "status/b-old.yaml").write_text(status)

    result = run("validate", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "requests/a-new.yaml:service.domain: app.example.com is also requested by b-old",
        "requests/b-old.yaml:extra: unknown key",
    ]


def test_the_newcomer_is_blamed_for_a_clash_by_validate_and_by_the_daemon_with_its_field_errors_too(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/zeta.yaml", request_yaml("zeta", network=static("192.168.50.40/24")))
    operator.push()
    daemon_once(config_path, env)
    operator.pull()
    # alpha is first alphabetically, but zeta has its container; alpha also asks for more cores than allowed.
    alpha = request_yaml("alpha", network=static("192.168.50.40/24"), resources={"cores": 99, "memory": 512, "disk": 8})
    operator.write("requests/alpha.yaml", alpha)

    checked = run("validate", cwd=operator.path)
    operator.push()
    daemon_once(config_path, env)
    operator.pull()

    clash = "network.address: 192.168.50.40 is also requested by zeta"
    cores = "resources.cores: 99 is outside the approved range 1..8"
    assert checked.returncode == 1 and checked.stderr == ""
    assert checked.stdout.splitlines() == [f"requests/alpha.yaml:{cores}", f"requests/alpha.yaml:{clash}"]
    alpha_status, zeta_status = operator.yaml("status/alpha.yaml"), operator.yaml("status/zeta.yaml")
    assert alpha_status["phase"] == "Invalid" and alpha_status["problems"] == [cores, clash]
    assert zeta_status["phase"] == "Ready" and "problems" not in zeta_status
    assert [c.config.get("hostname") for c in cluster.containers()] == ["zeta"]


def test_the_daemon_never_gives_the_address_of_a_provisioned_request_with_field_errors_to_a_newcomer(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/zeta.yaml", request_yaml("zeta", network=static("192.168.50.40/24")))
    operator.push()
    daemon_once(config_path, env)
    operator.pull()
    # zeta's file gets a typo (its container stays as it is) while alpha, valid, asks for the same address.
    operator.write("requests/zeta.yaml", request_yaml("zeta", network=static("192.168.50.40/24"), extra=1))
    operator.write("requests/alpha.yaml", request_yaml("alpha", network=static("192.168.50.40/24")))
    operator.push()

    daemon_once(config_path, env)
    operator.pull()
    checked = run("validate", cwd=operator.path)

    clash = "network.address: 192.168.50.40 is also requested by zeta"
    assert operator.yaml("status/alpha.yaml")["problems"] == [clash]
    assert operator.yaml("status/zeta.yaml")["problems"] == ["extra: unknown key"]
    assert [c.config.get("hostname") for c in cluster.containers()] == ["zeta"]
    assert checked.stdout.splitlines() == [f"requests/alpha.yaml:{clash}", "requests/zeta.yaml:extra: unknown key"]
