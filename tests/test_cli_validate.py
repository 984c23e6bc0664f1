"""`reconciler validate`, run as the operator's CI runs it: a real subprocess."""

from __future__ import annotations

from pathlib import Path

from clirun import CANARY, outside_request, run
from conftest import request_yaml

from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES
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
        "static-website, web-app)"
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
