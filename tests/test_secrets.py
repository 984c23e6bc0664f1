"""Secrets stay where they belong: known canaries for every secret the reconciler holds are looked for, through
failing and succeeding cycles, in everything it writes, answers and starts; files it makes are its owner's alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import io
import json
import logging
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from conftest import (
    DaemonProcess,
    FakeCluster,
    HostPct,
    NodeSshd,
    OperatorClone,
    request_yaml,
    with_provision,
)
from fakepve.certs import make_cert

from reconciler import logs
from reconciler.config import GIT_TOKEN_ENV, TOKEN_SECRET_ENV, GitConfig
from reconciler.demo import TOKEN_ID
from reconciler.gateways.git import Checkout, git_environment
from reconciler.gateways.sqlite import JobStore
from reconciler.lock import CheckoutLock
from reconciler.model.errors import GitError

WEBHOOK_ENV = "RECONCILER_WEBHOOK_SECRET"
TSIG_ENV = "RECONCILER_TSIG_SECRET"  # the DNS feature's key, not read by anything yet: it must leak nowhere either


def canary(kind: str) -> str:
    return f"canary-{kind}-{secrets.token_hex(10)}"


def forms(value: str) -> list[bytes]:
    """value as bytes, and the parts of its base64 encoding that show whatever precedes it (Basic auth)."""
    data = value.encode()
    found = [data]
    for skip in range(3):
        rest = data[skip:]
        found.append(base64.b64encode(rest[: len(rest) // 3 * 3]))
    return found


def leaks(canaries: dict[str, str], haystack: bytes) -> list[str]:
    return [kind for kind, value in canaries.items() if any(form in haystack for form in forms(value))]


# --- the scrubber: logs, stored messages


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "console"])
def test_the_log_scrubs_a_secret_and_its_base64_forms_from_every_field_traceback_and_library_record(
    json_lines: bool, caplog: pytest.LogCaptureFixture
) -> None:
    secret = canary("token")
    logs.register_secret(secret)
    basic = base64.b64encode(f"reconciler:{secret}".encode()).decode()
    stream = io.StringIO()
    logs.setup(json_lines=json_lines, stream=stream)
    log = structlog.get_logger("test")
    try:
        raise ValueError(f"Invalid header value b'PVEAPIToken=reconciler@pve!gitops={secret}\\r'")
    except ValueError:
        log.exception("call failed", header=f"Authorization: Basic {basic}", args=[secret])
    logging.getLogger("urllib3.test").warning("retrying %s", f"https://x:{secret}@host/")
    written = (stream.getvalue() + caplog.text).encode()
    assert b"Invalid header value" in written and b"retrying https://x:" in written  # the lines are there
    assert leaks({"token": secret}, written) == []
    assert logs.scrub(f"Basic {basic}") != f"Basic {basic}"


def test_the_job_database_stores_no_registered_secret(tmp_path: Path) -> None:
    secret = canary("token")
    logs.register_secret(secret)
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create_job("create", "blog", "web-app", {"name": "blog", "description": secret})
    store.log(job, "error", f"HTTPError: header PVEAPIToken=x={secret}")
    store.finish_job(job, False, f"failed: {secret}", {"said": secret}, error=f"InvalidHeader: {secret}\r")
    other = store.create_job("create", "wiki", "web-app", {})
    store.interrupt_running(f"interrupted with {secret}")
    assert "[redacted]" in store.logs(job)[0].message
    assert store.job(job) is not None and store.job(other) is not None
    store.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"HTTPError: header PVEAPIToken" in stored  # the messages themselves are kept
    assert leaks({"token": secret}, stored) == []


# --- git gets only what it needs of the environment


def test_git_and_its_hooks_see_none_of_the_daemons_secrets(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canaries = {"token": canary("token"), "tsig": canary("tsig"), "webhook": canary("webhook")}
    for name, kind in ((TOKEN_SECRET_ENV, "token"), (TSIG_ENV, "tsig"), (WEBHOOK_ENV, "webhook")):
        monkeypatch.setenv(name, canaries[kind])
    seen = tmp_path / "hook-env"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\nenv > {seen}\necho refused by the test hook >&2\nexit 1\n")
    hook.chmod(0o755)
    config = GitConfig(remote=str(remote), checkout=tmp_path / "checkout")
    checkout = Checkout(config, dict(os.environ))
    checkout.sync()

    with pytest.raises(GitError, match="refused by the test hook"):
        checkout.publish({"status/x.yaml": "phase: Ready\n"}, "status")

    environment = seen.read_bytes()
    assert b"PATH=" in environment and b"GIT_DIR=" in environment  # the hook did print what it got
    assert leaks(canaries, environment) == []
    assert leaks(canaries, json.dumps(git_environment(config, dict(os.environ))).encode()) == []


# --- files the reconciler makes are its owner's alone, whatever the umask


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_job_database_the_checkout_and_the_lock_are_created_owner_only(
    tmp_path: Path, remote: Path, open_umask: None
) -> None:
    store = JobStore(tmp_path / "state" / "jobs.sqlite")
    store.create_job("create", "blog", None, {})
    lock = CheckoutLock(tmp_path / "checkout").acquire()
    checkout = Checkout(GitConfig(remote=str(remote), checkout=tmp_path / "checkout"))
    try:
        checkout.sync()
        modes = {p.name: p.stat().st_mode & 0o777 for p in [*(tmp_path / "state").iterdir(), lock.path]}
        assert modes == {
            "jobs.sqlite": 0o600,
            "jobs.sqlite-wal": 0o600,
            "jobs.sqlite-shm": 0o600,
            "checkout.lock": 0o600,
        }
        assert (tmp_path / "checkout").stat().st_mode & 0o777 == 0o700
        # One an older release left open is closed.
        (tmp_path / "old").mkdir(mode=0o755)
        Checkout(GitConfig(remote=str(remote), checkout=tmp_path / "old"))
        assert (tmp_path / "old").stat().st_mode & 0o777 == 0o700
    finally:
        checkout.repo.close()
        lock.release()
        store.close()


# --- start-up: the config and key files, secrets from the environment, TLS


def reconciler(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_a_config_readable_by_others_or_an_open_key_stops_the_start_naming_the_file(
    config_path: Path, env: dict[str, str], tmp_path: Path
) -> None:
    config_path.chmod(0o644)
    result = reconciler("once", "--config", str(config_path), env=env)
    assert result.returncode == 2
    assert result.stderr == (
        f"reconciler: {config_path}: the config file {config_path} is readable by others (mode 0644):"
        f" run chmod o-rwx {config_path}\n"
    )
    config_path.chmod(0o640)  # read through its group, as the README installs it
    key = tmp_path / "id_ed25519"
    key.write_text("not a key\n")
    key.chmod(0o644)
    with_provision(config_path, {"transport": "ssh", "ssh": {"key": str(key), "known_hosts": str(tmp_path / "kh")}})
    result = reconciler("run", "--config", str(config_path), env=env)
    assert result.returncode == 2
    assert f"the SSH key (provision.ssh.key) {key} is readable by its group and others (mode 0644)" in result.stderr
    assert f"run chmod 600 {key}" in result.stderr


@pytest.mark.parametrize("name", [TOKEN_SECRET_ENV, GIT_TOKEN_ENV, WEBHOOK_ENV])
def test_a_secret_with_a_control_character_inside_stops_the_start_naming_the_variable_only(
    name: str, config_path: Path, env: dict[str, str]
) -> None:
    value = canary("inner")
    result = reconciler("run", "--config", str(config_path), env={**env, name: value[:12] + "\x1b" + value[12:]})
    assert result.returncode == 2
    assert result.stderr == (
        f"reconciler: environment: {name} holds a control character (a CR from an env file with Windows line ends?)\n"
    )
    assert value[:12] not in result.stdout + result.stderr


def test_tls_verification_turned_off_is_said_once_at_start_and_urllib3_stays_quiet(
    config_path: Path, env: dict[str, str]
) -> None:
    config_path.write_text(config_path.read_text().replace("verify_ssl: true", "verify_ssl: false"))
    result = reconciler("--log-format", "json", "once", "--config", str(config_path), env=env)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line).get("event") for line in result.stderr.splitlines() if line.startswith("{")]
    assert events.count("proxmox tls verification off") == 1
    assert "InsecureRequestWarning" not in result.stderr and "Unverified HTTPS request" not in result.stderr


# --- the canaries: full cycles, failing and not, and every place a secret could end up


class ProcessWatch:
    """Samples the command line and environment of every process below pid while it runs, for the canaries.

    encoded_ok names, per canary kind, the programs (argv[0]'s last part) whose environment may hold that canary
    base64-encoded, never as it is: git and git-remote-https, which get an https remote's Basic header so by
    design (GIT_CONFIG_VALUE_n, readable by their user only). Those seen holding it are kept in encoded.
    """

    def __init__(self, pid: int, canaries: dict[str, str], encoded_ok: dict[str, frozenset[str]] | None = None) -> None:
        self.pid = pid
        self.canaries = canaries
        self.encoded_ok = encoded_ok or {}
        self.seen: set[str] = set()  # command lines seen, to show the watch saw something
        self.hits: list[tuple[str, str, str]] = []  # (command line, where, canary kind)
        self.encoded: set[str] = set()  # programs seen holding an encoded_ok canary in their environment
        self._itself = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessWatch:
        # Popen has returned, so pid is past its exec, but the kernel may not have set its new command line
        # yet (it reads empty for a moment).
        deadline = time.monotonic() + 10
        while not self._itself and time.monotonic() < deadline:
            self._itself = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            time.sleep(0 if self._itself else 0.01)
        assert self._itself, f"process {self.pid} shows no command line"
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _children(self) -> dict[int, list[int]]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        return children

    def look(self) -> None:
        """One look at every process below pid now (also called by a test at a moment it knows what runs)."""
        children = self._children()
        below, todo = [], list(children.get(self.pid, []))
        while todo:
            pid = todo.pop()
            below.append(pid)
            todo.extend(children.get(pid, []))
        for pid in below:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            # A child between fork and exec is still the daemon (its memory, its environment): not yet a process
            # it started, so it is skipped until it has become one.
            if cmdline == self._itself:
                continue
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            program = os.path.basename(cmdline.split(b"\0")[0].decode(errors="replace"))
            self.seen.add(shown)
            for kind in leaks(self.canaries, cmdline):
                self.hits.append((shown, "cmdline", kind))
            for kind in leaks(self.canaries, environ):
                if program in self.encoded_ok.get(kind, ()) and self.canaries[kind].encode() not in environ:
                    self.encoded.add(program)
                else:
                    self.hits.append((shown, "environ", kind))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.look()
            time.sleep(0.02)


STEP_PCT = """#!/bin/sh
# The node's pct for this test: `pct set` succeeds; every setup step prints its environment and fails.
if [ "$1" = set ]; then exit 0; fi
env > {seen}
env
sleep 1
echo "the step printed its environment"
exit 1
"""

GIT_HOOK = """#!/bin/sh
# The remote refuses every push, printing its environment (what the reconciler's git handed on).
echo "refused-by-test-hook"
env | tee {seen} >&2
sleep 1
exit 1
"""


def signed_push(process: DaemonProcess, secret: str, body: bytes | None = None) -> tuple[int, str]:
    # Each a push of its own: the daemon ignores a delivery whose body it has seen (a replay).
    body = body or json.dumps({"ref": "refs/heads/main", "after": secrets.token_hex(20)}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": signature, "Content-Type": "application/json"}
    return process.post("/webhook", body, headers)


def test_no_secret_reaches_a_log_the_database_a_file_a_commit_an_answer_or_a_process(
    tmp_path: Path,
    remote: Path,
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    host_sshd: NodeSshd,
    host_pct: HostPct,
) -> None:
    key_lines = host_sshd.key.read_text().splitlines()
    canaries = {
        "token": canary("token"),
        "git token": canary("gittoken"),
        "webhook": canary("webhook"),
        "tsig": canary("tsig"),
        "ssh key": max(key_lines, key=len),  # a line of the private key itself
    }
    cluster.pve.apitokens[TOKEN_ID] = canaries["token"]
    env = {
        **os.environ,
        TOKEN_SECRET_ENV: canaries["token"] + "\r\n",  # saved by an editor with Windows line ends: still works
        GIT_TOKEN_ENV: canaries["git token"],
        WEBHOOK_ENV: canaries["webhook"] + " \r",
        TSIG_ENV: canaries["tsig"],
    }
    pct_env, hook_env = tmp_path / "pct-env", tmp_path / "hook-env"
    host_pct.path.write_text(STEP_PCT.format(seen=pct_env))
    with_provision(config_path, host_sshd.provision(step_timeout=30))
    process = DaemonProcess(config_path, env, tmp_path / "daemon.log").configure(backoff_base=1, backoff_max=2)
    answers: list[str] = []

    def answer(path: str) -> None:
        answers.append(f"{path}: {process.get(path)}")

    def accepted(delivery: tuple[int, str]) -> None:
        """The signed delivery was taken: the webhook secret works, its CR dropped as the daemon read it."""
        answers.append(f"webhook: {delivery}")
        assert delivery[0] == 202, delivery

    # Proxmox refuses the create; the remote refuses the status push, printing the environment git gave it.
    operator.write("requests/alpha.yaml", request_yaml("alpha"))
    operator.push()
    cluster.pve.fail("POST", "/nodes/pve1/lxc", 500, "storage 'local-lvm' is full")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(GIT_HOOK.format(seen=hook_env))
    hook.chmod(0o755)
    process.start(wait_ready=False)
    assert process.proc is not None
    try:
        with ProcessWatch(process.proc.pid, canaries) as watch:
            process.wait_for(
                lambda: "refused-by-test-hook" in process.log() and "is full" in process.log(),
                timeout=60,
                what="a refused create and a refused push",
            )
            answer("/readyz")
            answer("/healthz")

            # Proxmox refuses the token itself, then cannot list guests.
            cluster.pve.apitokens[TOKEN_ID] = "not-the-reconcilers-token"
            accepted(signed_push(process, canaries["webhook"]))
            process.wait_for(lambda: "API token was refused" in process.log(), timeout=30, what="a refused token")
            answer("/readyz")
            cluster.pve.apitokens[TOKEN_ID] = canaries["token"]
            cluster.pve.fail("GET", "/cluster/resources", 500, "cluster not ready - no quorum?")
            accepted(signed_push(process, canaries["webhook"]))
            process.wait_for(lambda: "no quorum" in process.log(), timeout=30, what="a failed listing")
            answer("/readyz")

            # Everything answers again: the container is made, and its setup step fails printing its environment.
            cluster.pve.failures.clear()
            hook.unlink()
            accepted(signed_push(process, canaries["webhook"]))

            def setup_failed() -> bool:
                operator.pull()
                status = operator.yaml("status/alpha.yaml") or {}
                return status.get("setup") == "failed" and "the step printed its environment" in str(status)

            process.wait_for(setup_failed, timeout=90, what="alpha's setup to fail and its status to be pushed")
            for path in ("/readyz", "/healthz", "/metrics"):
                answer(path)
            answers.append(f"bad signature: {signed_push(process, 'wrong')}")
            answers.append(f"not json: {signed_push(process, canaries['webhook'], b'{' * 5000)}")
        assert process.stop() == 0
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)

    # The watch saw the processes that matter: git pushing into the hook, and ssh running the step.
    assert any("pre-receive" in line for line in watch.seen), sorted(watch.seen)
    assert any(line.startswith("ssh ") for line in watch.seen), sorted(watch.seen)
    assert watch.hits == []
    assert len(cluster.containers()) == 1 and "PATH=" in pct_env.read_text() and "GIT_DIR=" in hook_env.read_text()

    daemon_root = config_path.parent
    written = {
        "the daemon's log": process.log().encode(),
        "the HTTP answers": "\n".join(answers).encode(),
        "what the hook and the step were given": hook_env.read_bytes() + pct_env.read_bytes(),
        "the history": operator.repo.git.log("--all", "-p", "--format=%H %an %ae %B").encode(),
    }
    for root in (daemon_root, operator.path):
        for path in sorted(root.rglob("*")):
            if path.is_file():
                written[str(path)] = path.read_bytes()
    assert b"[remote rejected]" in written["the daemon's log"] or b"refused-by-test-hook" in written["the daemon's log"]
    assert any(b"is full" in data for name, data in written.items() if "jobs.sqlite" in name)
    found = {name: leaks(canaries, data) for name, data in written.items()}
    assert {name: kinds for name, kinds in found.items() if kinds} == {}

    # Owner-only: the database, the lock and all of the checkout (the daemon's umask is 077).
    opened = [
        f"{p} {p.stat().st_mode & 0o777:o}"
        for p in [*daemon_root.rglob("*")]
        if p.stat().st_mode & 0o077 and not p.is_symlink()
    ]
    assert opened == []


# --- an https remote that checks the git token: git's smart HTTP (git http-backend as CGI) behind TLS on loopback


@dataclass
class Received:
    """One request as the git server got it; rest is all of it but the Authorization header's value."""

    method: str
    path: str
    authorized: bool
    rest: bytes


@dataclass
class HttpsGitServer:
    """Serves root/infra.git over https to requests carrying exactly header, the git token's Basic header."""

    url: str
    ca_file: str
    token: str
    header: str
    root: Path
    received: list[Received] = field(default_factory=list)
    on_request: Callable[[], None] | None = None  # called while the client waits for its answer


class _SmartHttp(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue` as git's curl expects them
    timeout = 30
    site: HttpsGitServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(chunks)

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _serve(self) -> None:
        site = self.site
        body = self._body()
        authorized = self.headers.get("Authorization") == site.header
        others = [(k, v) for k, v in self.headers.items() if k.lower() != "authorization"]
        rest = "\n".join([self.requestline, *(f"{k}: {v}" for k, v in others)]).encode()
        site.received.append(Received(self.command, self.path, authorized, rest))
        if site.on_request is not None:
            site.on_request()
        path, _, query = self.path.partition("?")
        if not authorized:
            self._answer(401, [("WWW-Authenticate", 'Basic realm="infra"')], b"")
            return
        if not path.startswith("/infra.git/"):
            self._answer(404, [], b"")
            return
        # As a web server runs it: the user it authenticated, the request's headers (but Authorization, which
        # Apache does not hand to CGI either); the hooks of a push get this environment.
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(site.root / "server-home"),
            "GIT_PROJECT_ROOT": str(site.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "reconciler",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in others:
            if name.lower() not in ("content-type", "content-length", "transfer-encoding"):
                env["HTTP_" + name.upper().replace("-", "_")] = value
        backend = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, _, payload = backend.stdout.partition(b"\r\n\r\n")
        if not head:
            self._answer(500, [], backend.stderr)
            return
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value.strip()))
        self._answer(status, headers, payload)


@pytest.fixture
def https_git(tmp_path: Path, remote: Path) -> Iterator[HttpsGitServer]:
    """The `remote` bare repository served by git's smart HTTP over TLS on loopback, for a canary git token."""
    assert remote.parent == tmp_path and remote.name == "infra.git"
    pki = tmp_path / "git-pki"
    pki.mkdir()
    (tmp_path / "server-home").mkdir()
    certfile, keyfile, _ = make_cert(str(pki), name="git", hosts=("127.0.0.1",))
    token = canary("gittoken")
    header = "Basic " + base64.b64encode(f"reconciler:{token}".encode()).decode()
    site = HttpsGitServer("", certfile, token, header, tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("SmartHttp", (_SmartHttp,), {"site": site}))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    site.url = f"https://127.0.0.1:{server.server_address[1]}/infra.git"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


BLOCKING_STEP_PCT = """#!/bin/sh
# `pct set` succeeds; a setup step prints its environment, then waits (60 s at most) for the test, then fails.
if [ "$1" = set ]; then exit 0; fi
env > {seen}.tmp && mv {seen}.tmp {seen}
i=0
while [ ! -e {release} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
echo "the step printed its environment"
exit 1
"""

REFUSING_HOOK = """#!/bin/sh
# The server refuses every push, keeping the environment the push's hooks get.
env > {seen}
echo "refused-by-test-hook" >&2
exit 1
"""

GIT_PROGRAMS = frozenset({"git", "git-remote-https", "git-remote-http"})

GITPYTHON_GIT = """#!/bin/sh
# GitPython's git (GIT_PYTHON_GIT_EXECUTABLE): keeps the command and environment it was given, then is git.
{{ echo "args: $*"; env; }} > {calls}/$$
exec git "$@"
"""


def test_a_git_token_reaches_an_https_remote_only_as_gits_authorization_header(
    tmp_path: Path,
    remote: Path,
    operator: OperatorClone,
    cluster: FakeCluster,
    config_path: Path,
    host_sshd: NodeSshd,
    host_pct: HostPct,
    https_git: HttpsGitServer,
) -> None:
    canaries = {"git token": https_git.token}
    config_path.write_text(config_path.read_text().replace(f"  remote: {remote}\n", f"  remote: {https_git.url}\n"))
    assert https_git.url in config_path.read_text()
    # GitPython runs git too (`git version` on import), with whatever environment the daemon has: it is kept.
    gitpython_calls = tmp_path / "gitpython-calls"
    gitpython_calls.mkdir()
    gitpython_git = tmp_path / "gitpython-git"
    gitpython_git.write_text(GITPYTHON_GIT.format(calls=gitpython_calls))
    gitpython_git.chmod(0o755)
    env = {
        **os.environ,
        TOKEN_SECRET_ENV: cluster.secret,
        GIT_TOKEN_ENV: https_git.token,
        "GIT_SSL_CAINFO": https_git.ca_file,
        "GIT_PYTHON_GIT_EXECUTABLE": str(gitpython_git),
    }
    pct_env, hook_env, release, output = (tmp_path / n for n in ("pct-env", "hook-env", "release", "once.log"))
    host_pct.path.write_text(BLOCKING_STEP_PCT.format(seen=pct_env, release=release))
    with_provision(config_path, host_sshd.provision(step_timeout=30))
    operator.write("requests/alpha.yaml", request_yaml("alpha"))
    operator.push()

    def pushed() -> bool:
        listed = subprocess.run(
            ["git", "--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return "status/alpha.yaml" in listed.stdout.split()

    with output.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "once", "--config", str(config_path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with ProcessWatch(process.pid, canaries, encoded_ok={"git token": GIT_PROGRAMS}) as watch:
            # The server looks too, at each request: git then waits for its answer, so it is surely seen.
            https_git.on_request = watch.look
            # The container is made and its status pushed; its setup step runs, and waits.
            deadline = time.monotonic() + 60
            while not (pct_env.exists() and pushed()) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pct_env.exists() and pushed(), (
                f"no status pushed, or the setup step never ran:\n{output.read_text()}"
            )
            watch.look()  # ssh is running the step now, held until release
            # From now on the server refuses every push: the step's failure is not taken.
            hook = remote / "hooks" / "pre-receive"
            hook.write_text(REFUSING_HOOK.format(seen=hook_env))
            hook.chmod(0o755)
            release.touch()
            assert process.wait(60) == 2, output.read_text()  # the refused push ends the run as an error
    finally:
        https_git.on_request = None
        if process.poll() is None:
            process.kill()
            process.wait(10)

    # The token reached the server, as the Basic header of every request, in fetches and pushes alike.
    requests = {(r.method, r.path.split("/")[-1]) for r in https_git.received}
    assert {
        ("GET", "refs?service=git-upload-pack"),
        ("POST", "git-upload-pack"),
        ("GET", "refs?service=git-receive-pack"),
        ("POST", "git-receive-pack"),
    } <= requests, requests
    assert [r.path for r in https_git.received if not r.authorized] == []
    assert leaks(canaries, b"\n".join(r.rest for r in https_git.received)) == []  # not in a URL or other header
    log = output.read_text()
    assert "refused-by-test-hook" in log
    assert "REMOTE_USER=reconciler" in hook_env.read_text() and "GIT_DIR=" in hook_env.read_text()
    assert "PATH=" in pct_env.read_text()
    operator.pull()
    assert operator.yaml("status/alpha.yaml") is not None  # pushed before the server began to refuse

    # The watch saw git talking to the server with the header in its environment (as designed), and ssh;
    # nothing else held it, and nothing held it in a command line.
    assert watch.hits == []
    assert any("git-remote-https" in line for line in watch.seen), sorted(watch.seen)
    assert "git-remote-https" in watch.encoded, sorted(watch.seen)
    assert any(line.startswith("ssh ") for line in watch.seen), sorted(watch.seen)

    daemon_root = config_path.parent
    git_config = daemon_root / "checkout" / ".git" / "config"
    assert https_git.url.encode() in git_config.read_bytes()
    gitpython = {str(p): p.read_bytes() for p in gitpython_calls.iterdir()}
    assert any(b"args: version" in data for data in gitpython.values()), gitpython
    written = {
        **gitpython,
        "the output of the run": log.encode(),
        "what the server's hook and the setup step were given": hook_env.read_bytes() + pct_env.read_bytes(),
        "the history": operator.repo.git.log("--all", "-p", "--format=%H %an %ae %B").encode(),
    }
    for root in (daemon_root, operator.path, remote):
        for path in sorted(root.rglob("*")):
            if path.is_file():
                written[str(path)] = path.read_bytes()
    assert str(git_config) in written and any("jobs.sqlite" in name for name in written)
    found = {name: leaks(canaries, data) for name, data in written.items()}
    assert {name: kinds for name, kinds in found.items() if kinds} == {}
