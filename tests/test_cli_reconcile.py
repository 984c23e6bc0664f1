"""`reconciler reconcile`, run as the operator runs it: a subprocess asking a real `reconciler run` for a pass."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import git
import pytest
from clirun import STATUS_KEYS, run
from conftest import API_TOKEN, DaemonProcess, FakeCluster, OperatorClone, free_port, request_yaml

from reconciler.daemon.passes import Outcome, Passes, ask
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase


def reconcile(daemon: DaemonProcess, *args: str, token: str | None = API_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in daemon.env.items() if k != "RECONCILER_API_TOKEN"}
    if token is not None:
        env["RECONCILER_API_TOKEN"] = token
    return run("reconcile", "--config", str(daemon.config_path), *args, env=env)


def remote_status(operator: OperatorClone, name: str) -> str:
    operator.repo.git.fetch("-q", "origin")
    try:
        return str(operator.repo.git.show(f"origin/main:status/{name}.yaml"))
    except git.GitCommandError:
        return ""


def test_reconcile_a_named_request_waits_until_it_is_ready_and_prints_it(
    daemon: DaemonProcess, operator: OperatorClone, cluster: FakeCluster
) -> None:
    daemon.configure().start()  # hourly polls, no watch: only `reconcile` can start the pass
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.push()

    result = reconcile(daemon, "blog")

    assert result.returncode == 0, result.stdout + result.stderr + daemon.log()[-2000:]
    assert "asking the daemon at http://127.0.0.1:" in result.stderr
    assert "started job" in result.stdout and "for blog" in result.stdout
    assert "blog: Ready" in result.stdout
    assert "phase: Ready" in remote_status(operator, "blog")  # it waited for the create and the address
    assert [c.config["hostname"] for c in cluster.containers()] == ["blog"]
    assert daemon.metric("reconciler_triggers_total", reason="reconcile") == 1
    assert daemon.metric("reconciler_reconcile_requests_total", result="answered") == 1
    assert API_TOKEN not in daemon.log() + result.stdout + result.stderr


def test_reconcile_exits_1_when_a_named_request_ends_invalid_and_shows_why(
    daemon: DaemonProcess, operator: OperatorClone
) -> None:
    daemon.configure().start()
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    result = reconcile(daemon, "bad")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "bad: Invalid" in result.stdout
    assert "pve9" in result.stdout  # the reason, in the problem lines
    assert "bad failing" in result.stdout


def test_reconcile_as_json_has_the_documented_shape_and_without_names_lists_what_changed(
    daemon: DaemonProcess, operator: OperatorClone
) -> None:
    daemon.configure().start()
    operator.write("requests/blog.yaml", request_yaml("blog"))
    operator.push()
    assert reconcile(daemon, "blog").returncode == 0
    operator.pull()
    operator.write("requests/bad.yaml", request_yaml("bad", node="pve9"))
    operator.push()

    result = reconcile(daemon, "-o", "json")

    assert result.returncode == 1, result.stdout + result.stderr  # without names: any request shown failing
    doc = json.loads(result.stdout)
    assert list(doc) == ["passes", "started", "requests", "unknown", "settled", "error"]
    [one] = doc["passes"]
    assert list(one) == ["number", "revision", "commit", "error"]
    assert one["revision"] == operator.repo.head.commit.hexsha and one["error"] is None
    assert one["commit"] == git.Repo(daemon_remote(operator)).commit("main").hexsha  # the status it pushed
    # Only what this pass changed: bad is new; blog, Ready before, is not shown again.
    assert [r["name"] for r in doc["requests"]] == ["bad"]
    assert list(doc["requests"][0]) == [k for k in STATUS_KEYS if k != "changed"]
    assert doc["requests"][0]["phase"] == "Invalid"
    assert doc["unknown"] == [] and doc["settled"] is True and doc["error"] is None


def daemon_remote(operator: OperatorClone) -> str:
    return str(operator.repo.remotes.origin.url)


def test_a_name_no_request_has_exits_2_and_says_so(daemon: DaemonProcess, operator: OperatorClone) -> None:
    daemon.configure().start()

    result = reconcile(daemon, "nosuch")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "no request named nosuch" in result.stdout


def test_a_wrong_or_missing_token_is_refused_and_starts_no_pass(daemon: DaemonProcess) -> None:
    daemon.configure().start()

    wrong = reconcile(daemon, token="not-the-token")
    missing = reconcile(daemon, token=None)
    status, body = daemon.post("/reconcile", b"{}", {"Content-Type": "application/json"})

    assert wrong.returncode == 2 and "refused the token" in wrong.stderr
    assert "RECONCILER_API_TOKEN" in wrong.stderr
    assert missing.returncode == 2 and "RECONCILER_API_TOKEN" in missing.stderr
    assert status == 401 and "not-the-token" not in body
    assert daemon.metric("reconciler_reconcile_requests_total", result="unauthorized") == 2
    assert daemon.metric("reconciler_triggers_total", reason="reconcile") == 0
    assert "not-the-token" not in daemon.log()


def test_a_daemon_without_a_token_has_the_endpoint_off_and_says_so_at_start(
    daemon: DaemonProcess, config_path: Path
) -> None:
    del daemon.env["RECONCILER_API_TOKEN"]
    daemon.configure().start()

    result = reconcile(daemon)

    assert result.returncode == 2
    assert "reconcile endpoint off" in result.stderr and "daemon's environment" in result.stderr
    assert "reconcile endpoint off: token not set" in daemon.log()
    assert daemon.metric("reconciler_triggers_total", reason="reconcile") == 0


def test_without_a_daemon_it_says_so_and_suggests_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    if Path("/etc/reconciler/config.yaml").exists():  # --url alone reads no config only when there is none
        pytest.skip("this machine has /etc/reconciler/config.yaml")

    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "reconcile", "--url", url],
        capture_output=True,
        text=True,
        env={"RECONCILER_API_TOKEN": "x", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no daemon answers at {url}" in result.stderr
    assert "reconciler once" in result.stderr


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"names": "blog"}', b'{"wait": -1}', b'{"other": 1}', b'{"wait": true}'],
)
def test_a_malformed_ask_gets_400_in_words_and_starts_no_pass(daemon: DaemonProcess, body: bytes) -> None:
    daemon.configure().start()

    status, text = daemon.post("/reconcile", body, {"Authorization": f"Bearer {API_TOKEN}"})

    assert status == 400
    assert json.loads(text)["error"]
    assert daemon.metric("reconciler_triggers_total", reason="reconcile") == 0


# The waiting itself, without a daemon: numbered passes and an asker in a thread.


def standing(name: str, phase: Phase) -> Standing:
    return Standing(name=name, request=f"requests/{name}.yaml", phase=phase, message=str(phase))


def test_an_ask_waits_for_a_pass_begun_after_it_not_the_one_running_and_follows_until_settled() -> None:
    import threading

    passes = Passes()
    fired: list[str] = []
    running = passes.begin()  # a pass under way when the ask comes: it may have fetched before the push
    answer: dict[str, Any] = {}
    asker = threading.Thread(target=lambda: answer.update(doc=ask(passes, fired.append, ["web"], 30)))
    asker.start()
    while not fired:
        time.sleep(0.01)
    passes.end(Outcome(running, "r0", statuses={"web": standing("web", Phase.READY)}))
    second = passes.begin()
    passes.end(Outcome(second, "r1", "c1", {"web": 7}, {"web": standing("web", Phase.PROVISIONING)}))
    third = passes.begin()
    passes.end(Outcome(third, "r1", "c2", {}, {"web": standing("web", Phase.READY)}))
    asker.join(10)

    status, doc = answer["doc"]
    assert fired == ["reconcile"]
    assert status == 200
    assert [p["number"] for p in doc["passes"]] == [second, third]
    assert doc["started"] == [{"request": "web", "job": 7}]
    assert [(r["name"], r["phase"]) for r in doc["requests"]] == [("web", "Ready")]
    assert doc["settled"] is True


def test_an_ask_that_outlives_its_wait_says_so() -> None:
    passes = Passes()

    status, doc = ask(passes, lambda reason: None, [], 0.05)

    assert status == 504
    assert doc["error"] == "no answer within 0.05 s" and doc["settled"] is False
