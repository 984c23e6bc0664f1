"""Why the next cycle runs: triggers that arrive during a cycle coalesce into one more cycle."""

from __future__ import annotations

import threading
import time


class Triggers:
    """A set of pending reasons to reconcile, shared by the webhook, the watcher, signals and the timer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reasons: set[str] = set()

    def fire(self, reason: str) -> None:
        with self._cond:
            self._reasons.add(reason)
            self._cond.notify_all()

    def wait(self, timeout: float) -> set[str]:
        """The reasons gathered so far, waiting up to timeout seconds for the first; empty on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._reasons:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return set()
                self._cond.wait(remaining)
            reasons, self._reasons = self._reasons, set()
            return reasons
