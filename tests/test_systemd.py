"""The systemd unit: it verifies, and its hardening rates 2.0 or lower ("OK") with systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "reconciler.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed: unit checks not run")


@needs_analyze
def test_the_unit_is_hardened_to_ok() -> None:
    result = subprocess.run(
        [str(ANALYZE), "security", "--offline=true", str(UNIT)], capture_output=True, text=True, check=False
    )
    found = re.search(r"Overall exposure level for reconciler\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0 and found.group(2) == "OK"


@needs_analyze
def test_the_unit_verifies(tmp_path: Path) -> None:
    # Only ExecStart's path is machine-specific: point it at the reconciler installed here, keep the rest.
    installed = Path(sys.executable).parent / "reconciler"
    if not installed.exists():
        pytest.skip(f"no installed console script at {installed}")
    text = UNIT.read_text()
    assert "ExecStart=/opt/reconciler/bin/reconciler run --config /etc/reconciler/config.yaml" in text
    unit = tmp_path / "reconciler.service"
    unit.write_text(text.replace("ExecStart=/opt/reconciler/bin/reconciler ", f"ExecStart={installed} "))
    result = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_unit_runs_the_daemon_as_notify_with_a_watchdog_and_secrets_from_the_env_file() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=120s",
        "User=reconciler",
        "StateDirectory=reconciler",
        "EnvironmentFile=/etc/reconciler/reconciler.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines()
    assert "SECRET=" not in text.replace("# Secrets live here only (mode 0600): PROXMOX_TOKEN_SECRET", "")
