"""The git gateway against real git: a bare remote on disk (with hooks where a test needs one), or HTTPS."""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from conftest import OperatorClone
from fakepve.certs import make_cert

from reconciler.config import GIT_TOKEN_ENV, GitConfig
from reconciler.gateways.git import Checkout
from reconciler.model.errors import GitError

STATUS = "status/web.yaml"


@pytest.fixture
def checkout(remote: Path, tmp_path: Path) -> Checkout:
    co = Checkout(GitConfig(remote=str(remote), checkout=tmp_path / "reconciler"))
    co.sync()
    return co


def install_hook(remote: Path, name: str, script: str) -> None:
    hook = remote / "hooks" / name
    hook.write_text("#!/bin/sh\n" + script)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


def remote_main(remote: Path) -> git.Commit:
    return git.Repo(remote).commit("refs/heads/main")


def test_a_push_that_loses_a_race_is_built_again_on_the_new_tip(
    remote: Path, operator: OperatorClone, checkout: Checkout, tmp_path: Path
) -> None:
    # The operator's commit waits on a side branch; the remote's hook moves main to it while git receives the
    # reconciler's push, once, so git fails to lock the ref: "cannot lock ref 'refs/heads/main': is at <side>
    # but expected <the commit ours was built on>".
    operator.write("requests/web.yaml", "name: web\n")
    operator.repo.git.add("--all")
    operator.repo.git.commit("-q", "-m", "operator change")
    side = operator.repo.head.commit.hexsha
    operator.repo.git.push("-q", "origin", "HEAD:refs/heads/side")
    raced, calls = tmp_path / "raced", tmp_path / "hook-calls"
    install_hook(
        remote,
        "pre-receive",
        f"""cat >/dev/null
echo call >> '{calls}'
if [ ! -e '{raced}' ]; then
  touch '{raced}'
  (unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
   git update-ref refs/heads/main {side}) || exit 1
fi
exit 0
""",
    )

    commit = checkout.publish({STATUS: "phase: Running\n"}, "reconciler: status")

    assert commit is not None
    assert raced.exists() and len(calls.read_text().splitlines()) == 2  # lost once, then went through
    main = remote_main(remote)
    assert main.hexsha == commit
    assert (main.tree / STATUS).data_stream.read() == b"phase: Running\n"
    assert (main.tree / "requests/web.yaml").data_stream.read() == b"name: web\n"
    assert [p.hexsha for p in main.parents] == [side]  # ours on top of the operator's, nothing rewritten
    assert all(len(c.parents) <= 1 for c in git.Repo(remote).iter_commits("refs/heads/main"))
    operator.pull()
    assert operator.log() == ["reconciler: status", "operator change", "Seed requests"]


def test_a_push_the_remote_declines_is_a_permanent_error_with_the_remotes_message(
    remote: Path, checkout: Checkout, tmp_path: Path
) -> None:
    before = remote_main(remote).hexsha
    calls = tmp_path / "hook-calls"
    install_hook(
        remote,
        "pre-receive",
        f"cat >/dev/null\necho call >> '{calls}'\necho 'main is protected: open a pull request' >&2\nexit 1\n",
    )

    with pytest.raises(GitError) as caught:
        checkout.publish({STATUS: "phase: Running\n"}, "reconciler: status")

    assert caught.value.step == "push"
    assert caught.value.temporary is False
    assert "main is protected: open a pull request" in caught.value.reason
    assert len(calls.read_text().splitlines()) == 1  # asked once, not again and again
    assert remote_main(remote).hexsha == before


def test_a_remote_that_is_gone_is_a_temporary_error(remote: Path, checkout: Checkout) -> None:
    shutil.rmtree(remote)

    with pytest.raises(GitError) as caught:
        checkout.sync()

    assert caught.value.step == "fetch"
    assert caught.value.temporary is True


def test_the_checkout_tells_its_own_pushes_from_the_operators(
    remote: Path, operator: OperatorClone, checkout: Checkout
) -> None:
    operator.write("requests/web.yaml", "name: web\n")
    theirs = operator.push("operator change")
    assert checkout.remote_tip() == theirs == remote_main(remote).hexsha
    assert not checkout.is_own(theirs)

    checkout.sync()
    ours = checkout.publish({STATUS: "phase: Running\n"}, "reconciler: status")
    tip = checkout.remote_tip()
    assert tip is not None and tip == ours
    assert checkout.is_own(tip)

    operator.pull()
    operator.write("requests/db.yaml", "name: db\n")
    again = operator.push("another operator change")
    assert checkout.remote_tip() == again
    assert not checkout.is_own(again)


def test_a_branch_the_remote_does_not_have_has_no_tip(remote: Path, tmp_path: Path) -> None:
    co = Checkout(GitConfig(remote=str(remote), branch="nothing-here", checkout=tmp_path / "reconciler"))
    assert co.remote_tip() is None


def test_the_checkout_knows_its_commit_before_the_remote_shows_it(
    remote: Path, checkout: Checkout, tmp_path: Path
) -> None:
    # A watcher on the remote's refs may look while the push is still running: the commit must be known then.
    seen, release = tmp_path / "seen", tmp_path / "release"
    install_hook(
        remote,
        "post-receive",
        f"""read old new ref
echo "$new" > '{seen}.tmp' && mv '{seen}.tmp' '{seen}'
i=0
while [ ! -e '{release}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
""",
    )
    result: list[str | None] = []
    pushing = threading.Thread(target=lambda: result.append(checkout.publish({STATUS: "x: 1\n"}, "reconciler: s")))
    pushing.start()
    try:
        deadline = time.monotonic() + 30
        while not seen.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen.exists(), "the push never reached the remote"
        moved_to = seen.read_text().strip()
        assert remote_main(remote).hexsha == moved_to  # what a watcher of the remote's refs sees
        assert pushing.is_alive()  # publish has not returned yet
        assert checkout.is_own(moved_to)
    finally:
        release.touch()
        pushing.join(60)
    assert result == [moved_to]


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def _refuse(self) -> None:
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="infra"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = _refuse
    do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An HTTPS server on loopback that records each request's headers and answers 401; git trusts its cert."""
    pki = tmp_path / "pki"
    pki.mkdir()
    certfile, keyfile, _ = make_cert(str(pki), hosts=("127.0.0.1",))
    monkeypatch.setenv("GIT_SSL_CAINFO", certfile)
    seen: list[dict[str, str]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/infra.git", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_git_token_is_sent_from_the_environment_and_never_written_to_git_config(
    tmp_path: Path, https_remote: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = https_remote
    token = "ghp_never_on_disk_123456"
    config = GitConfig(remote=url, checkout=tmp_path / "co")
    checkout = Checkout(
        config, {GIT_TOKEN_ENV: token, "PATH": "/usr/bin:/bin", "GIT_SSL_CAINFO": os.environ["GIT_SSL_CAINFO"]}
    )

    with pytest.raises(GitError) as caught:
        checkout.sync()  # the server refuses the token: the fetch fails, after having sent it

    expected = "Basic " + base64.b64encode(f"reconciler:{token}".encode()).decode()
    assert seen, "git never reached the server"
    assert any(request.get("authorization") == expected for request in seen)
    assert caught.value.step == "fetch"
    assert token not in str(caught.value)
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "co" / ".git").rglob("*") if p.is_file())
    assert token.encode() not in on_disk
    assert url.encode() in (tmp_path / "co" / ".git" / "config").read_bytes()


def test_a_checkout_made_with_a_token_in_its_url_is_pointed_at_the_configured_remote(
    remote: Path, tmp_path: Path
) -> None:
    # An older release wrote the URL as given; the config now refuses credentials in it, and the next start
    # must not keep the token on disk, nor fetch from the remote it no longer names.
    path = tmp_path / "old-checkout"
    git.Repo.init(path, initial_branch="main").create_remote("origin", "https://ghp_old_token_123@gitea.lan/x.git")
    checkout = Checkout(GitConfig(remote=str(remote), checkout=path))
    assert checkout.sync() is not None  # fetched from the configured remote
    config_text = (path / ".git" / "config").read_text()
    assert "ghp_old_token_123" not in config_text
    assert f"url = {remote}" in config_text
