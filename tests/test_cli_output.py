"""The command line's output for people and for programs: tables, documents, colour only on a terminal, the
watch of `status` and the progress line of `once`; each run as the operator runs it, a real subprocess, on a
pipe or on a pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import queue
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import git
import pytest
import yaml
from clirun import once, plan, run
from conftest import FakeCluster, OperatorClone, request_yaml

ESCAPE = "\x1b["
JOB_KEYS = [
    "id",
    "type",
    "request",
    "profile",
    "status",
    "created",
    "started",
    "finished",
    "duration_seconds",
    "summary",
    "error",
    "payload",
    "result",
]
UTC_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def terminal_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a person's terminal: a TERM that can colour, no NO_COLOR unless given."""
    out = {k: v for k, v in env.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return {**out, "TERM": "xterm-256color", **extra}


def on_pty(*args: str, env: dict[str, str], stream: str = "stdout") -> tuple[int, str, str]:
    """Run reconciler with stream ("stdout" or "stderr") on a pseudo-terminal, the other on a pipe.

    Returns the exit status, what the terminal got, and what the pipe got.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    other = "stderr" if stream == "stdout" else "stdout"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdin=subprocess.DEVNULL,
        env=env,
        **{stream: slave, other: subprocess.PIPE},  # type: ignore[call-overload]
    )
    os.close(slave)
    got: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every end of the terminal's other side is closed
                return
            if not chunk:
                return
            got.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, err = proc.communicate(timeout=120)
    piped = out if stream == "stderr" else err
    reader.join(30)
    os.close(master)
    return proc.returncode, b"".join(got).decode(errors="replace"), piped.decode(errors="replace")


def two_requests(operator: OperatorClone, config_path: Path, env: dict[str, str]) -> None:
    """good becomes Ready (a create job); bad is Invalid (a validate job)."""
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()
    result = run("once", "--config", str(config_path), env=env)
    assert result.returncode == 1, result.stdout + result.stderr


# status


def test_status_table_colours_the_phase_on_a_terminal_only(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    two_requests(operator, config_path, env)
    config = ("status", "--config", str(config_path))

    code, terminal, _ = on_pty(*config, env=terminal_env(env))
    piped = run(*config, env={**env, "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    _, plain, _ = on_pty(*config, env=terminal_env(env, NO_COLOR="1"))
    _, dumb, _ = on_pty(*config, env=terminal_env(env, TERM="dumb"))

    assert code == 1
    assert "\x1b[32mReady" in terminal and "\x1b[31mInvalid" in terminal  # green and red
    assert ESCAPE not in piped.stdout + piped.stderr  # FORCE_COLOR does not make a pipe a terminal
    assert ESCAPE not in plain and ESCAPE not in dumb
    header, *rows, summary = piped.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "HEALTH"] and [r.split()[:2] for r in rows] == [
        ["bad", "Invalid"],
        ["good", "Ready"],
    ]
    assert all(line == line.rstrip() for line in piped.stdout.splitlines())  # no padding left at line ends
    assert summary.endswith(": 1 Invalid, 1 Ready")
    # Without colour, a terminal gets the same table (the AGE column aside: it counts on).
    words = [line.split()[:7] for line in piped.stdout.splitlines()]
    assert (
        [line.split()[:7] for line in plain.splitlines()] == [line.split()[:7] for line in dumb.splitlines()] == words
    )


class Lines:
    """A process's stdout read line by line in a thread, so a test waits for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [*map(self._queue.put, stdout), self._queue.put(None)], daemon=True).start()

    def until(self, wanted: str, timeout: float = 60) -> list[str]:
        """The lines read up to and with the first (new) one that wanted (a regular expression) matches."""
        deadline = time.monotonic() + timeout
        got = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            assert line is not None, f"the output ended before {wanted!r}: {self.seen}"
            self.seen.append(line.rstrip("\n"))
            got.append(line.rstrip("\n"))
            if re.match(wanted, line):
                return got
        raise AssertionError(f"no line {wanted!r} within {timeout} s: {self.seen}")


def test_status_watch_prints_a_new_table_when_the_remote_branch_moves_and_ends_cleanly_on_sigterm(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], remote: Path
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()
    once(config_path, env)
    watch = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "status", "--config", str(config_path), "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = Lines(watch)
        first = lines.until("1 request in status/ at main ")
        first_head = git.Repo(remote).commit("main").hexsha
        assert first[0].startswith(f"main at {first_head} (read ")
        assert first[1].split()[:2] == ["NAME", "PHASE"] and first[2].split()[:2] == ["good", "Ready"]

        operator.pull()
        operator.write("requests/blog.yaml", request_yaml("blog"))
        pushed = operator.push()
        once(config_path, env)
        seen = lines.until(r"2 requests in status/ at main \w+: 2 Ready$")
        # The operator's push may show on its own first (still one status), then a status commit of the pass.
        after = git.Repo(remote).git.rev_list(f"{pushed}..main").split()
        headings = [line.split()[2] for line in seen if line.startswith("main at ")]
        assert headings[-1] in after and all(h in (pushed, *after) for h in headings), (headings, after)
        second = seen[max(i for i, line in enumerate(seen) if line.startswith("main at ")) :]
        assert [row.split()[:2] for row in second[2:4]] == [["blog", "Ready"], ["good", "Ready"]]
        assert all(ESCAPE not in line for line in lines.seen)
    finally:
        watch.terminate()
        _, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    assert "Traceback" not in err


def test_status_watch_refuses_a_document_output_and_a_working_tree(tmp_path: Path) -> None:
    as_json = run("status", "--watch", "-o", "json", "--repo", str(tmp_path))
    assert as_json.returncode == 2 and "--watch follows the remote's head" in as_json.stderr
    bad = run("status", "--watch", "--interval", "0")
    assert bad.returncode == 2 and "'0' is not a positive number of seconds" in bad.stderr


# jobs


def test_jobs_lists_a_table_and_documents_of_a_stable_shape(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    two_requests(operator, config_path, env)
    config = ("--config", str(config_path))

    table = run("jobs", *config, env=env)
    listed = json.loads(run("jobs", *config, "-o", "json", env=env).stdout)
    as_yaml = yaml.safe_load(run("jobs", *config, "-o", "yaml", env=env).stdout)

    assert table.returncode == 0, table.stderr
    header, *rows, summary = table.stdout.splitlines()
    assert header.split() == ["ID", "CREATED", "STATUS", "TYPE", "REQUEST", "DURATION", "SUMMARY"]
    by_type = {row.split()[3]: row.split() for row in rows}
    # good is on DHCP: its lease is there at once, read with its state (no find-address job waits for it).
    assert sorted(by_type) == ["create", "validate"]
    create = by_type["create"]
    assert create[2] == "succeeded" and create[4] == "good" and re.fullmatch(UTC_TIME, create[1])
    assert re.fullmatch(r"\d+\.\ds|\d+m\d\ds", create[5])
    assert by_type["validate"][2] == "failed" and "pve9" in " ".join(by_type["validate"][6:])
    assert summary == "2 jobs: 1 succeeded, 1 failed"

    assert list(listed) == ["jobs"] and as_yaml == listed
    assert all(list(job) == JOB_KEYS for job in listed["jobs"])
    [job] = [j for j in listed["jobs"] if j["type"] == "create"]
    assert (job["request"], job["profile"], job["status"], job["error"]) == (
        "good",
        "generic-service",
        "succeeded",
        None,
    )
    assert all(re.fullmatch(UTC_TIME, job[k]) for k in ("created", "started", "finished"))
    assert isinstance(job["duration_seconds"], float) and job["duration_seconds"] >= 0
    assert job["payload"]["vmid"] == 200

    one = json.loads(run("jobs", str(job["id"]), *config, "-o", "json", env=env).stdout)
    assert list(one) == [*JOB_KEYS, "log"] and {k: one[k] for k in JOB_KEYS} == job
    assert any(line["message"].startswith("create task UPID:pve1:") for line in one["log"])
    assert all(list(line) == ["timestamp", "level", "message"] for line in one["log"])
    assert all(re.fullmatch(UTC_TIME, line["timestamp"]) for line in one["log"])
    assert yaml.safe_load(run("jobs", str(job["id"]), *config, "-o", "yaml", env=env).stdout) == one

    human = run("jobs", str(job["id"]), *config, env=env)
    assert f"job {job['id']}: create good (generic-service): succeeded" in human.stdout
    assert re.search(r", took (\d+\.\ds|\d+m\d\ds)\n", human.stdout)
    missing = run("jobs", "999", *config, "-o", "json", env=env)
    assert (missing.returncode, missing.stdout) == (1, "") and "no job 999" in missing.stderr

    code, terminal, _ = on_pty("jobs", *config, env=terminal_env(env))
    assert code == 0 and "\x1b[32msucceeded" in terminal and "\x1b[31mfailed" in terminal
    _, plain, _ = on_pty("jobs", *config, env=terminal_env(env, NO_COLOR="1"))
    assert ESCAPE not in plain and "2 jobs: 1 succeeded, 1 failed" in plain
    assert ESCAPE not in table.stdout


# plan


def test_plan_prints_text_json_and_yaml_and_colours_its_lines_on_a_terminal_only(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.push()

    text = plan(config_path, env)
    as_json = plan(config_path, env, "-o", "json")
    alias = plan(config_path, env, "--json")
    as_yaml = plan(config_path, env, "-o", "yaml")

    assert (text.returncode, as_json.returncode, as_yaml.returncode) == (2, 2, 2), text.stderr
    files = len(json.loads(as_json.stdout)["files"])
    assert text.stdout.endswith(f"\nPlan: 2 to create, 0 to change, 0 to destroy; {files} files to change.\n")
    assert ESCAPE not in text.stdout
    doc = json.loads(as_json.stdout)
    assert json.loads(alias.stdout) == doc == yaml.safe_load(as_yaml.stdout)
    assert (doc["summary"]["create"], doc["summary"]["change"], doc["summary"]["destroy"]) == (2, 0, 0)
    assert doc["summary"]["text"] == text.stdout.splitlines()[-1]
    assert "--json" not in run("plan", "--help").stdout  # the old spelling works, but is not offered

    code, terminal, _ = on_pty("plan", "--config", str(config_path), env=terminal_env(env))
    assert code == 2 and "\x1b[32m+ create good" in terminal
    _, plain, _ = on_pty("plan", "--config", str(config_path), env=terminal_env(env, NO_COLOR="1"))
    assert ESCAPE not in plain and "+ create good" in plain


# once: the progress line


@pytest.mark.parametrize("colour", [True, False])
def test_once_shows_its_jobs_progress_on_a_terminal(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str], colour: bool
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()

    extra = {} if colour else {"NO_COLOR": "1"}
    code, terminal, stdout = on_pty(
        "once", "--config", str(config_path), env=terminal_env(env, **extra), stream="stderr"
    )

    assert code == 0, terminal
    assert "good: Ready" in stdout and ESCAPE not in stdout  # the results go to stdout, a pipe here
    assert re.search(r"jobs: \d+/\d+ done", terminal), terminal
    assert ESCAPE in terminal  # the line is drawn and taken away again (cursor moves, even without colour)
    assert cluster.secret not in terminal


def test_once_shows_no_progress_on_a_pipe(
    operator: OperatorClone, cluster: FakeCluster, config_path: Path, env: dict[str, str]
) -> None:
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push()

    result = run("once", "--config", str(config_path), env={**env, "TERM": "xterm-256color", "FORCE_COLOR": "1"})

    assert result.returncode == 0, result.stderr
    assert "jobs:" not in result.stderr and ESCAPE not in result.stderr + result.stdout
    assert "good: Ready" in result.stdout
