#!/usr/bin/env python3
"""Regenerate requirements.lock and requirements-test.lock from pyproject.toml, pinned with hashes.

Run from anywhere, with network access to the package index: `python3 .ci/lock.py`. Pins already in a lock are
kept unless pyproject.toml asks otherwise; pass uv's own options to move them, e.g. `--upgrade` (everything) or
`--upgrade-package requests`. The locks are for CPython 3.11 on Linux x86_64, where the daemon runs.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The resolver, pinned so that two people locking the same pyproject.toml get the same file.
UV = "uv==0.13.9"
PYTHON = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
# Lock file -> whether it holds the extras (demo, test) too, in the order they are compiled. The daemon's install
# uses only requirements.lock, so fakepve (AGPL) and the test tools never reach a production machine; the test
# lock is compiled within the daemon's pins so that the tests run the versions the daemon installs.
LOCKS = {"requirements.lock": False, "requirements-test.lock": True}
FINGERPRINT = "# pyproject-sha256: "


def fingerprint(pyproject: dict[str, Any], extras: bool) -> str:
    """The hash of what a lock is compiled from: requires-python, the dependencies and, for the test lock, extras."""
    project = pyproject["project"]
    inputs: dict[str, Any] = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(project.get("dependencies", [])),
    }
    if extras:
        optional = project.get("optional-dependencies", {})
        inputs["optional-dependencies"] = {name: sorted(reqs) for name, reqs in sorted(optional.items())}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def header(pyproject: dict[str, Any], extras: bool) -> list[str]:
    """The lines this script adds under uv's own header: the target, the install command and the fingerprint."""
    install = "pip install --require-hashes -r requirements.lock && pip install --no-deps ."
    if extras:
        install = "pip install --require-hashes -r requirements-test.lock && pip install --no-deps -e ."
    return [
        f"# For CPython {PYTHON} on Linux x86_64 ({PLATFORM}). Install: {install}",
        f"{FINGERPRINT}{fingerprint(pyproject, extras)}",
    ]


def main(argv: list[str]) -> int:
    """Compile both locks with uv from a throw-away virtualenv."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    with tempfile.TemporaryDirectory(prefix="reconciler-lock-") as tmp:
        venv.create(tmp, with_pip=True)
        bin_dir = Path(tmp) / "bin"
        subprocess.run([bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check", UV], check=True)
        for name, extras in LOCKS.items():
            command = [
                str(bin_dir / "uv"),
                "pip",
                "compile",
                "pyproject.toml",
                *(["--all-extras", "--constraint", "requirements.lock"] if extras else []),
                "--generate-hashes",
                "--python-version",
                PYTHON,
                "--python-platform",
                PLATFORM,
                # Only the command line decides, never a uv.toml or a user's uv config.
                "--no-config",
                "--custom-compile-command",
                "python3 .ci/lock.py",
                "--output-file",
                name,
                "--quiet",
                *argv,
            ]
            subprocess.run(command, cwd=ROOT, check=True)
            lock = ROOT / name
            lines = lock.read_text().splitlines()
            # uv's header is the leading comment block; ours goes right under it.
            end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
            lines[end:end] = header(pyproject, extras)
            lock.write_text("\n".join(lines) + "\n")
            print(f"lock: wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
