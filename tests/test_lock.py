"""The supply chain: the locks pin every dependency with hashes, follow pyproject.toml, and CI audits them.

The audit runs the real pip-audit and the real `.ci/audit.py`; the advisory service is played by an HTTPS proxy on
127.0.0.1 that answers every tunnelled request itself, with a certificate from a CA made for the test.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
AUDIT = ROOT / ".ci" / "audit.py"
# Installed on a production machine only through the test extra, never through the daemon's lock.
TEST_ONLY = {"fakepve", "pytest", "hypothesis", "mypy", "ruff", "import-linter", "pip-audit"}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ci_{name}", ROOT / ".ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """Package -> (pinned version, hashes) of a lock file's text; fails on anything but `name==version --hash`."""
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        entry = line.split("#", 1)[0].split()
        if not entry:
            continue
        name, equals, version = entry[0].partition("==")
        assert equals and version and ";" not in line, f"not an exact pin for one platform: {line!r}"
        hashes = [option.removeprefix("--hash=") for option in entry[1:]]
        assert all(option.startswith("--hash=") for option in entry[1:]), f"unexpected option in {line!r}"
        found[canonicalize_name(name)] = (version, hashes)
    return found


def problems(lock_text: str, wanted: list[str]) -> list[str]:
    """What keeps a lock from installing `wanted` (requirement strings) with hashes: one line per problem."""
    locked = pins(lock_text)
    found = []
    for name, (version, hashes) in sorted(locked.items()):
        if not hashes or not all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in hashes):
            found.append(f"{name}=={version} has no sha256 hash")
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "reconciler":  # the test extra's `reconciler[demo]`: the project itself, installed from source
            continue
        if name not in locked:
            found.append(f"{line}: not pinned in the lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            found.append(f"{line}: the lock pins {locked[name][0]}")
    return found


def runtime_requirements() -> list[str]:
    return list(PYPROJECT["project"]["dependencies"])


def all_requirements() -> list[str]:
    extras = PYPROJECT["project"]["optional-dependencies"].values()
    return runtime_requirements() + [line for reqs in extras for line in reqs]


def test_every_runtime_dependency_is_pinned_in_the_daemons_lock_with_hashes() -> None:
    assert problems(RUNTIME_LOCK.read_text(), runtime_requirements()) == []


def test_every_dependency_and_extra_is_pinned_in_the_test_lock_with_hashes() -> None:
    assert problems(TEST_LOCK.read_text(), all_requirements()) == []


def test_the_check_finds_a_missing_hash_a_missing_pin_and_a_pin_outside_the_range() -> None:
    text = RUNTIME_LOCK.read_text()
    version = pins(text)["pydantic"][0]
    no_hash = re.sub(r"(?m)^(pyyaml==\S+) \\\n(\s+--hash=\S+ \\\n)*\s+--hash=\S+$", r"\1", text)
    assert problems(no_hash, runtime_requirements()) == [f"pyyaml=={pins(text)['pyyaml'][0]} has no sha256 hash"]
    no_pin = re.sub(r"(?ms)^structlog==.*?(?=^\S)", "", text)
    assert problems(no_pin, runtime_requirements()) == ["structlog>=24.1: not pinned in the lock"]
    assert problems(text, [f"pydantic>{version}"]) == [f"pydantic>{version}: the lock pins {version}"]


def test_the_daemons_lock_holds_no_test_tool_and_no_agpl_package() -> None:
    assert TEST_ONLY & set(pins(RUNTIME_LOCK.read_text())) == set()
    assert set(pins(TEST_LOCK.read_text())) >= TEST_ONLY


def test_the_tests_run_the_versions_the_daemon_installs() -> None:
    runtime, test = pins(RUNTIME_LOCK.read_text()), pins(TEST_LOCK.read_text())
    assert {name: test[name][0] for name in runtime if name in test} == {n: v for n, (v, _) in runtime.items()}


@pytest.mark.parametrize(("lock", "extras"), [(RUNTIME_LOCK, False), (TEST_LOCK, True)], ids=["daemon", "test"])
def test_the_lock_is_current_with_pyproject(lock: Path, extras: bool) -> None:
    locker = _script("lock")
    expected = f"{locker.FINGERPRINT}{locker.fingerprint(PYPROJECT, extras)}"
    recorded = [line for line in lock.read_text().splitlines() if line.startswith(locker.FINGERPRINT)]
    assert recorded == [expected], f"{lock.name} was compiled from another pyproject.toml: run python3 .ci/lock.py"
    # The fingerprint covers what the lock is compiled from, and nothing of the test extra for the daemon's lock.
    changed = json.loads(json.dumps(PYPROJECT))
    changed["project"]["dependencies"].append("rich")
    assert locker.fingerprint(changed, extras) != locker.fingerprint(PYPROJECT, extras)
    changed = json.loads(json.dumps(PYPROJECT))
    changed["project"]["optional-dependencies"]["test"].append("rich")
    assert (locker.fingerprint(changed, extras) != locker.fingerprint(PYPROJECT, extras)) is extras


def _pip_dry_run(lock: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--require-hashes"]
    command += ["--only-binary", ":all:", "--disable-pip-version-check", "--quiet", "--requirement", str(lock)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    offline = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
    if result.returncode != 0 and any(marker in result.stderr for marker in offline):
        pytest.skip(f"the package index cannot be reached: {result.stderr.strip().splitlines()[-1]}")
    return result


def test_the_daemons_lock_installs_whole_with_require_hashes(tmp_path: Path) -> None:
    result = _pip_dry_run(RUNTIME_LOCK)
    assert result.returncode == 0, result.stderr
    # Whole: pip refuses a lock that leaves out a dependency of a pinned package (here gitdb's smmap).
    partial = tmp_path / "partial.lock"
    partial.write_text(re.sub(r"(?ms)^smmap==.*?(?=^\S)", "", RUNTIME_LOCK.read_text()))
    result = _pip_dry_run(partial)
    assert result.returncode != 0 and "smmap" in result.stderr and "pinned" in result.stderr, result.stderr


def test_ci_audits_both_locks() -> None:
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ".venv/bin/python .ci/audit.py requirements.lock requirements-test.lock" in run


# The advisory service, played by an HTTPS proxy that terminates every CONNECT tunnel itself.


def _certificates(directory: Path) -> tuple[Path, Any]:
    """A CA (written to ca.pem) and a function that writes a server certificate it signed for a host name."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler test advisory CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def server_files(host: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{host}.pem", directory / f"{host}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_file, key_file

    return ca_file, server_files


class _Advisories(BaseHTTPRequestHandler):
    """Answers `/pypi/<name>/<version>/json` inside a tunnel from the proxy's table, 404 for anything else."""

    protocol_version = "HTTP/1.1"
    server: _Proxy

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        key = (canonicalize_name(parts[1]), parts[2]) if len(parts) == 4 and parts[0] == "pypi" else None
        vulns = self.server.advisories.get(key) if key else None
        self.server.asked.append(self.path)
        status, body = (404, {"message": "Not Found"}) if vulns is None else (200, {"vulnerabilities": vulns})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `asked` instead."""


class _Tunnel(socketserver.StreamRequestHandler):
    # Unbuffered, so that reading the CONNECT request never swallows the first bytes of the TLS handshake.
    rbufsize = 0
    server: _Proxy

    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        if len(request) != 3 or request[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with self.server.context(request[1].rsplit(":", 1)[0]).wrap_socket(self.connection, server_side=True) as tls:
            _Advisories(tls, self.client_address, self.server)


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.ca_file, self._server_files = _certificates(directory)
        self.advisories: dict[tuple[str, str] | None, list[dict[str, Any]]] = {}
        self.asked: list[str] = []
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            if host not in self._contexts:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self._server_files(host))
                self._contexts[host] = context
            return self._contexts[host]

    def env(self) -> dict[str, str]:
        """The environment that sends pip-audit's requests through this proxy and trusts its CA."""
        env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
        env["HTTPS_PROXY"] = f"http://{self.server_address[0]}:{self.server_address[1]}"
        env["REQUESTS_CA_BUNDLE"] = str(self.ca_file)
        return env


@pytest.fixture
def advisory_service(tmp_path: Path) -> Iterator[_Proxy]:
    proxy = _Proxy(tmp_path)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    thread.join(timeout=10)


def _lock(tmp_path: Path, *requirements: str) -> Path:
    lock = tmp_path / "requirements.lock"
    lock.write_text("".join(f"{req} \\\n    --hash=sha256:{'0' * 64}\n" for req in requirements))
    return lock


def _audit(lock: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(AUDIT), str(lock)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


ADVISORY = {
    "id": "GHSA-aaaa-bbbb-cccc",
    "aliases": ["CVE-2099-0001"],
    "summary": "Authorization header sent to another host on redirect",
    "details": "…",
    "fixed_in": ["2.99.1"],
    "withdrawn": None,
}


def test_audit_fails_naming_the_package_the_advisory_and_the_fix(tmp_path: Path, advisory_service: _Proxy) -> None:
    advisory_service.advisories = {("requests", "2.99.0"): [ADVISORY], ("pyyaml", "6.0.4"): []}
    result = _audit(_lock(tmp_path, "requests==2.99.0", "pyyaml==6.0.4"), advisory_service.env())
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ci: vulnerability audit failed: 1 known vulnerability in the locked packages"
    assert lines[1].startswith("  requests==2.99.0 (") and "GHSA-aaaa-bbbb-cccc" in lines[1]
    assert "CVE-2099-0001" in lines[1] and "fixed in 2.99.1. Authorization header sent" in lines[1]
    assert "python3 .ci/lock.py --upgrade-package requests," in lines[2] and "pyyaml" not in result.stdout
    assert sorted(advisory_service.asked) == ["/pypi/pyyaml/6.0.4/json", "/pypi/requests/2.99.0/json"]


def test_audit_passes_a_clean_set_and_a_withdrawn_advisory(tmp_path: Path, advisory_service: _Proxy) -> None:
    withdrawn = {**ADVISORY, "withdrawn": "2099-01-02T00:00:00Z"}
    advisory_service.advisories = {("requests", "2.99.0"): [withdrawn], ("pyyaml", "6.0.4"): []}
    result = _audit(_lock(tmp_path, "requests==2.99.0", "pyyaml==6.0.4"), advisory_service.env())
    assert (result.returncode, result.stdout) == (
        0,
        "ci: vulnerability audit: 2 locked packages checked, no known vulnerability\n",
    ), result.stderr


def test_audit_says_it_skipped_when_the_service_has_no_data(tmp_path: Path, advisory_service: _Proxy) -> None:
    # pip-audit alone prints "No known vulnerabilities found" here: nothing was checked, and CI must say so.
    result = _audit(_lock(tmp_path, "requests==2.99.0", "pyyaml==6.0.4"), advisory_service.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ci: vulnerability audit skipped: the advisory service has no data for any")
    assert "no known vulnerability" not in result.stdout


def test_audit_names_what_it_could_not_check(tmp_path: Path, advisory_service: _Proxy) -> None:
    advisory_service.advisories = {("pyyaml", "6.0.4"): []}
    result = _audit(_lock(tmp_path, "requests==2.99.0", "pyyaml==6.0.4"), advisory_service.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 locked packages checked, no known vulnerability" in result.stdout
    assert "1 not checked (requests)" in result.stdout


def test_audit_skips_saying_why_when_the_service_cannot_be_reached(tmp_path: Path) -> None:
    # A port bound but not listening refuses connections, and no other process can take it meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
        env["HTTPS_PROXY"] = f"http://ci:proxy-password-canary@127.0.0.1:{closed.getsockname()[1]}"
        result = _audit(_lock(tmp_path, "requests==2.99.0"), env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ci: vulnerability audit skipped: ")
    assert "cannot be reached" in result.stdout and "ProxyError" in result.stdout
    assert "proxy-password-canary" not in result.stdout


def test_audit_fails_when_pip_audit_fails_for_another_reason(tmp_path: Path, advisory_service: _Proxy) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("requests==2.99.0\n")  # no hash: pip-audit --require-hashes refuses it
    result = _audit(lock, advisory_service.env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"ci: vulnerability audit of {lock} failed: pip-audit stopped" in result.stdout


def test_audit_messages_never_show_a_password_from_a_url() -> None:
    scrub = _script("audit").scrub
    line = scrub("ProxyError: https://ci:proxy-password-canary@proxy.lan:3128/ refused\n  (and more)")
    assert line == "ProxyError: https://***@proxy.lan:3128/ refused (and more)"
    assert len(scrub("x" * 1000)) == 300
