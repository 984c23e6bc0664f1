"""When the daemon looks again without a trigger (pure: the clock is given)."""

from __future__ import annotations

from reconciler.daemon.loop import next_wake


def test_the_poll_interval_unless_something_is_due_sooner() -> None:
    assert next_wake(1000.0, 60.0, provisioning=False, recheck=10.0, next_retry=None) == 1060.0
    assert next_wake(1000.0, 60.0, provisioning=True, recheck=10.0, next_retry=None) == 1010.0
    assert next_wake(1000.0, 60.0, provisioning=False, recheck=10.0, next_retry=1030.0) == 1030.01
    assert next_wake(1000.0, 60.0, provisioning=True, recheck=10.0, next_retry=1005.0) == 1005.01
    assert next_wake(1000.0, 60.0, provisioning=False, recheck=10.0, next_retry=2000.0) == 1060.0
