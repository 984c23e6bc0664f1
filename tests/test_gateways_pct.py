"""How commands reach a node's pct: locally, and over a real OpenSSH server on loopback with the forced command."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FORCED_COMMAND, HostPct, NodeSshd

from reconciler.config import ProvisionConfig
from reconciler.gateways.pct import Pct
from reconciler.model.errors import SetupError

ECHO = 'for word in started "$@"; do echo "$word"; done; cat; echo "to stderr" >&2; exit 3'


def never() -> str | None:
    return None


@pytest.fixture(params=["local", "ssh"])
def pct(request: pytest.FixtureRequest, host_pct: HostPct, tmp_path: Path) -> Pct:
    """The gateway with either transport; ssh goes through sshd and node/reconciler-pct."""
    if request.param == "local":
        return Pct(ProvisionConfig(transport="local", local={"pct": str(host_pct.path)}, step_timeout=2))
    sshd: NodeSshd = request.getfixturevalue("host_sshd")
    return Pct(ProvisionConfig.model_validate(sshd.provision(step_timeout=2)))


def test_a_command_gets_its_arguments_and_stdin_intact_and_every_line_comes_back_in_order(
    pct: Pct, host_pct: HostPct
) -> None:
    hostile = ["it's $(reboot)", "'; rm -rf /tmp/x; '", "two\nlines", ""]
    lines: list[str] = []
    outcome = pct.exec("pve1", 200, ["sh", "-c", ECHO, "sh", *hostile], "from stdin\n", "step", lines.append, never)
    assert outcome.status == 3
    assert lines == ["started", *"\n".join(hostile).split("\n"), "from stdin", "to stderr"]
    assert outcome.tail == tuple(lines)
    [call] = host_pct.calls()
    assert call[:3] == ["exec", "200", "--"]
    assert call[-4:] == hostile  # one argv word each, never read by a shell on the node


def test_a_step_that_outlives_its_timeout_is_killed_and_says_so(pct: Pct) -> None:
    began = time.monotonic()
    with pytest.raises(SetupError, match=r"took longer than provision.step_timeout \(2 s\); it was killed") as caught:
        pct.exec("pve1", 200, ["sh", "-c", "echo waiting; exec sleep 60"], "", "setup step slow", print, never)
    assert time.monotonic() - began < 20
    assert caught.value.output == ("waiting",)
    assert caught.value.temporary


def test_a_stop_ends_the_running_command_on_the_node_too(pct: Pct, tmp_path: Path) -> None:
    # A step timeout far away: what ends the command is the stop, over SSH as well as here.
    pct = Pct(pct.config.model_copy(update={"step_timeout": 600.0}))
    marker = tmp_path / "pid"
    stop_at = time.monotonic() + 1.0

    def abort() -> str | None:
        return "interrupted: the reconciler stopped" if time.monotonic() > stop_at else None

    with pytest.raises(SetupError, match="interrupted: the reconciler stopped"):
        pct.exec("pve1", 200, ["sh", "-c", f"echo $$ > {marker}; exec sleep 60"], "", "setup step", print, abort)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the stopped command still runs"


def test_a_command_that_never_stops_printing_is_still_stopped_at_its_timeout(pct: Pct) -> None:
    began = time.monotonic()
    with pytest.raises(SetupError, match=r"took longer than provision\.step_timeout"):
        pct.exec("pve1", 200, ["sh", "-c", "while :; do echo tick; sleep 0.05; done"], "", "chatty", _drop, never)
    assert time.monotonic() - began < 20


def _drop(line: str) -> None:
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "Z"
    return state != "Z"


def test_an_unknown_host_key_is_refused_and_nothing_runs(host_sshd: NodeSshd, host_pct: HostPct) -> None:
    config: dict[str, Any] = host_sshd.provision()
    config["ssh"]["known_hosts"] = str(host_sshd.wrong_known_hosts)
    pct = Pct(ProvisionConfig.model_validate(config))
    with pytest.raises(SetupError) as caught:
        pct.exec("pve1", 200, ["true"], "", "setup step", print, never)
    assert caught.value.step == "connect to node pve1"
    assert "host key is not the one in" in caught.value.reason and "never accepted" in caught.value.reason
    assert not caught.value.temporary
    assert host_pct.calls() == []


def test_a_node_without_a_known_host_key_is_refused(host_sshd: NodeSshd, host_pct: HostPct, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config: dict[str, Any] = host_sshd.provision()
    config["ssh"]["known_hosts"] = str(empty)
    with pytest.raises(SetupError, match="unknown or changed"):
        Pct(ProvisionConfig.model_validate(config)).exec("pve1", 200, ["true"], "", "step", print, never)
    assert host_pct.calls() == []
    assert empty.read_text() == ""  # never learned


def test_the_forced_command_runs_nothing_but_pct_exec_and_pct_set(host_sshd: NodeSshd, host_pct: HostPct) -> None:
    pct = Pct(ProvisionConfig.model_validate(host_sshd.provision()))
    for words in (["destroy", "200"], ["exec", "200", "true"], ["set", "200", "--delete", "net0"], ["exec", "x", "--"]):
        result = subprocess.run(pct.argv("pve1", words), capture_output=True, text=True, timeout=30)
        assert result.returncode == 126, words
        assert "reconciler-pct: refused" in result.stderr
    assert host_pct.calls() == []
    result = subprocess.run(pct.argv("pve1", ["set", "200", "--features", "nesting=1,keyctl=1"]), timeout=30)
    assert result.returncode == 0
    assert host_pct.calls() == [["set", "200", "--features", "nesting=1,keyctl=1"]]


def test_pct_and_ssh_get_none_of_the_daemons_secrets(pct: Pct, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXMOX_TOKEN_SECRET", "very-secret-token-value")
    lines: list[str] = []
    pct.exec("pve1", 200, ["sh", "-c", "env"], "", "step", lines.append, never)
    assert not any("very-secret-token-value" in line for line in lines)
    assert "very-secret-token-value" not in " ".join(pct.argv("pve1", ["exec", "200", "--", "true"]))


def test_the_forced_command_can_be_held_to_the_reconcilers_vmid_range(host_pct: HostPct) -> None:
    def run(command: str) -> int:
        env = {"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": command, "RECONCILER_PCT": str(host_pct.path)}
        return subprocess.run([str(FORCED_COMMAND), "200", "299"], env=env, capture_output=True).returncode

    assert run("pct exec 150 -- true") == 126
    assert run("pct set 300 --features nesting=1,keyctl=1") == 126
    assert run("pct exec 250 -- true") == 0
    assert host_pct.calls() == [["exec", "250", "--", "true"]]


def test_an_endless_line_of_output_is_cut_and_the_next_line_still_comes_back(pct: Pct) -> None:
    # One line of 5 MB and no newline for a long while: kept to its first MAX_LINE bytes, never held whole.
    script = "head -c 5000000 /dev/zero | tr -c x x; echo; echo after"
    lines: list[str] = []
    outcome = pct.exec("pve1", 200, ["sh", "-c", script], "", "step", lines.append, never)
    assert outcome.status == 0
    assert lines == ["x" * 1000 + " [line cut]", "after"]
    assert outcome.tail == tuple(lines)
