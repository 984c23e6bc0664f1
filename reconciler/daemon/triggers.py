"""Why the next pass runs: triggers that arrive during a pass coalesce into one more pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Triggers:
    """A set of pending reasons to reconcile, shared by the webhook, the watcher, jobs, signals and the timer."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, on_fire: Callable[[str], None] | None = None
    ) -> None:
        self._cond = threading.Condition()
        self._reasons: set[str] = set()
        self._clock = clock
        self._on_fire = on_fire or (lambda reason: None)

    def fire(self, reason: str) -> None:
        self._on_fire(reason)
        with self._cond:
            self._reasons.add(reason)
            self._cond.notify_all()

    def wait(self, timeout: float) -> set[str]:
        """The reasons gathered so far, waiting up to timeout seconds for the first; empty on timeout."""
        deadline = self._clock() + timeout
        with self._cond:
            while not self._reasons:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return set()
                self._cond.wait(remaining)
            reasons, self._reasons = self._reasons, set()
            return reasons
