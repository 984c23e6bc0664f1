"""Triggers arriving while a cycle runs coalesce into one more cycle."""

from __future__ import annotations

import threading

from reconciler.daemon.triggers import Triggers


def test_triggers_fired_during_a_cycle_come_back_as_one_wake_up() -> None:
    triggers = Triggers()
    for reason in ("webhook", "webhook", "remote changed", "webhook"):
        triggers.fire(reason)
    assert triggers.wait(0) == {"webhook", "remote changed"}
    assert triggers.wait(0.05) == set()


def test_a_trigger_from_another_thread_wakes_the_waiting_loop() -> None:
    triggers = Triggers()
    threading.Timer(0.05, triggers.fire, args=("webhook",)).start()
    assert triggers.wait(10) == {"webhook"}
