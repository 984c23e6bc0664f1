#!/usr/bin/env python3
"""Check the locked dependency sets for known vulnerabilities with pip-audit.

Usage: `.venv/bin/python .ci/audit.py requirements.lock requirements-test.lock` (pip-audit comes with the test
extra and is taken from beside the interpreter). Exits 1 when a locked package has a known vulnerability, naming
it, its advisory and the fixed versions. When the advisory service cannot be reached or has no data for the
locked versions, it prints `ci: vulnerability audit skipped: <reason>` and exits 0: CI must not fail for lack of
network, but it must not print a clean result it did not check either (pip-audit alone reports "No known
vulnerabilities found" when it could check nothing).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PIP_AUDIT = Path(sys.executable).parent / "pip-audit"
# Seconds for one request to the advisory service, and for one lock's whole audit: a service that accepts the
# connection and never answers must not hold CI until its own time limit.
REQUEST_TIMEOUT = 15
AUDIT_TIMEOUT = 300
# What pip-audit prints when the service cannot be reached or answers with an error; anything else is a failure.
UNREACHABLE = re.compile(
    r"Could not connect|not redirecting properly|ServiceError|"
    r"requests\.exceptions\.(ConnectionError|ProxyError|SSLError|Timeout|ConnectTimeout|ReadTimeout|"
    r"ChunkedEncodingError|RetryError)"
)
# A proxy URL in an error may carry a user and password: never print them.
USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def scrub(text: str, limit: int = 300) -> str:
    """One line of a tool's message, with credentials in URLs masked and its length capped."""
    line = " ".join(USERINFO.sub("***@", text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def unreachable_reason(stderr: str) -> str | None:
    """Why pip-audit could not fetch advisories, or None when it failed for another reason."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if UNREACHABLE.search(line):
            return scrub(line)
    return None


def summarize(reports: Mapping[str, Mapping[str, Any]]) -> tuple[int, list[str]]:
    """The exit code and the lines to print for pip-audit's JSON reports, one per lock file."""
    found: dict[tuple[str, str], list[str]] = {}
    advisories: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    checked: set[str] = set()
    skipped: dict[str, str] = {}
    for lock, report in reports.items():
        for dep in report.get("dependencies", []):
            name = str(dep["name"])
            if "skip_reason" in dep:
                skipped.setdefault(name, str(dep["skip_reason"]))
                continue
            checked.add(name)
            if dep.get("vulns"):
                key = (name, str(dep["version"]))
                found.setdefault(key, []).append(lock)
                advisories[key] = dep["vulns"]
    skipped = {name: reason for name, reason in skipped.items() if name not in checked}
    if found:
        count = sum(len(vulns) for vulns in advisories.values())
        noun = "vulnerability" if count == 1 else "vulnerabilities"
        lines = [f"ci: vulnerability audit failed: {count} known {noun} in the locked packages"]
        for (name, version), locks in sorted(found.items()):
            for vuln in advisories[(name, version)]:
                ids = " ".join([str(vuln["id"]), *map(str, vuln.get("aliases", []))])
                fixed = ", ".join(map(str, vuln.get("fix_versions", []))) or "no fixed release yet"
                about = scrub(str(vuln.get("description", "")), 160)
                lines.append(f"  {name}=={version} ({', '.join(locks)}): {ids}; fixed in {fixed}. {about}".rstrip())
        upgrade = " ".join(f"--upgrade-package {name}" for name, _ in sorted(found))
        lines.append(f"  Move the pins past the fixes: python3 .ci/lock.py {upgrade}, then rerun CI.")
        return 1, lines
    if not checked:
        if not skipped:
            return 0, ["ci: vulnerability audit skipped: the locks list no package"]
        example = scrub(next(iter(skipped.values())))
        why = f"the advisory service has no data for any of the {len(skipped)} locked packages"
        return 0, [f"ci: vulnerability audit skipped: {why} (pip-audit: {example}; and so on)"]
    lines = [f"ci: vulnerability audit: {len(checked)} locked packages checked, no known vulnerability"]
    if skipped:
        names = ", ".join(sorted(skipped))
        example = scrub(next(iter(skipped.values())))
        lines.append(f"ci: vulnerability audit: {len(skipped)} not checked ({names}): {example}")
    return 0, lines


def audit(lock: Path, cache: Path) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report for one lock file, or None and the reason it could not run to the end."""
    report = cache / f"{lock.name}.json"
    command = [
        str(PIP_AUDIT),
        "--disable-pip",
        "--require-hashes",
        "--requirement",
        str(lock),
        "--format",
        "json",
        "--aliases",
        "on",
        "--desc",
        "on",
        "--output",
        str(report),
        "--progress-spinner",
        "off",
        # A fresh cache each run: advisories published since the last run count at once.
        "--cache-dir",
        str(cache / "http"),
        "--timeout",
        str(REQUEST_TIMEOUT),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=AUDIT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"Timeout: the advisory service gave no complete answer within {AUDIT_TIMEOUT} s"
    if report.exists():
        return json.loads(report.read_text()), ""
    return None, done.stderr


def main(argv: list[str]) -> int:
    """Audit each lock named on the command line."""
    if not argv:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    if not PIP_AUDIT.exists():
        print(f"ci: vulnerability audit failed: no {PIP_AUDIT}; the test extra installs it: pip install -e '.[test]'")
        return 2
    reports: dict[str, dict[str, Any]] = {}
    unreachable: list[str] = []
    with tempfile.TemporaryDirectory(prefix="reconciler-audit-") as tmp:
        for name in argv:
            report, stderr = audit(Path(name).resolve(), Path(tmp))
            if report is not None:
                reports[name] = report
                continue
            reason = unreachable_reason(stderr)
            if reason is None:
                tail = " | ".join(scrub(line) for line in stderr.strip().splitlines()[-3:])
                print(f"ci: vulnerability audit of {name} failed: pip-audit stopped: {tail}")
                return 2
            unreachable.append(f"{name}: the advisory service cannot be reached ({reason})")
    if not reports:
        print(f"ci: vulnerability audit skipped: {'; '.join(unreachable)}")
        return 0
    code, lines = summarize(reports)
    print("\n".join([*lines, *(f"ci: vulnerability audit skipped for {item}" for item in unreachable)]))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
