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
    _, _, checks = command.group(1).partition("&& .venv/bin/pip install -e '.[test]' && ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet --disable-pip-version-check -e '.[test]'" in ci
    assert checks in ci.splitlines()
