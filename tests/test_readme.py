"""The README's promises that code can check: the role it documents and the test command CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.gateways.proxmox import REQUIRED_PRIVILEGES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_documented_role_is_exactly_the_one_the_tests_grant() -> None:
    privs = re.search(r'pveum role add Reconciler --privs "([^"]+)"', README)
    assert privs is not None
    assert sorted(privs.group(1).split()) == sorted(REQUIRED_PRIVILEGES)


def test_ci_runs_the_readmes_test_command() -> None:
    command = re.search(r"# 2\. Run the tests.*\n(python3 -m venv .*)\n", README)
    assert command is not None
    _, _, checks = command.group(1).partition("&& .venv/bin/pip install --no-deps -e . && ")
    assert "--require-hashes -r requirements-test.lock" in command.group(1)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ".venv/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-test.lock" in ci
    assert ".venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e ." in ci
    assert checks in ci


def test_the_daemon_is_installed_from_the_lock_only() -> None:
    installs = re.findall(r"/opt/reconciler/bin/pip install [^\n`]*", README)
    assert installs
    assert any("--require-hashes -r" in i and "requirements.lock" in i for i in installs)
    assert all("--require-hashes" in i or "--no-deps" in i for i in installs), installs
