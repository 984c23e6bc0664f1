"""Per-request retry backoff (pure, with a clock the test turns)."""

from __future__ import annotations

from conftest import PROFILES, SITE, request_yaml

from reconciler.apply import Outcome
from reconciler.daemon.backoff import Backoff
from reconciler.desired.validate import RequestFile, validate
from reconciler.plan import Create


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def action(revision: str) -> Create:
    [d], _ = validate([RequestFile("requests/a.yaml", "a", request_yaml("a").encode(), revision)], PROFILES, SITE)
    return Create(d, 200)


def failed() -> list[Outcome]:
    return [Outcome("a", 1, "Failed", "create failed: boom")]


def test_failures_double_the_wait_up_to_the_cap_and_success_clears_it() -> None:
    clock = Clock()
    backoff = Backoff(30, 100, clock)
    waits = []
    for _ in range(4):
        backoff.record(failed(), {"a": "r1"})
        waits.append(backoff.waiting()["a"])
        assert not backoff.allows(action("r1"))
        clock.now += waits[-1]
        assert backoff.allows(action("r1"))
    assert waits == [30, 60, 100, 100]
    backoff.record([Outcome("a", 2, "Ready", "ok")], {"a": "r1"})
    assert backoff.waiting() == {}


def test_a_changed_request_file_is_retried_at_once() -> None:
    backoff = Backoff(30, 100, Clock())
    backoff.record(failed(), {"a": "r1"})
    assert not backoff.allows(action("r1"))
    assert backoff.allows(action("r2"))
    backoff.record(failed(), {"a": "r2"})
    assert backoff.waiting()["a"] == 30  # a new file starts a new count
