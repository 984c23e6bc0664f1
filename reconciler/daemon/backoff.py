"""Retry backoff per request: a failing request waits longer after each failure; a changed file goes at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reconciler.apply import Outcome
from reconciler.plan import Action


@dataclass
class _Failing:
    failures: int
    retry_at: float
    revision: str | None


class Backoff:
    """Doubles the wait after each failure of a request, from base up to cap seconds."""

    def __init__(self, base: float, cap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.cap = cap
        self.clock = clock
        self._failing: dict[str, _Failing] = {}

    def allows(self, action: Action) -> bool:
        """Whether the action may run now: no recent failure, the wait is over, or the file changed."""
        state = self._failing.get(action.desired.name)
        if state is None or state.revision != action.desired.revision:
            return True
        return self.clock() >= state.retry_at

    def record(self, outcomes: Iterable[Outcome], revisions: dict[str, str | None]) -> None:
        """Learn from a cycle's outcomes; revisions maps request name to the commit that last changed it."""
        for outcome in outcomes:
            if outcome.phase != "Failed":
                self._failing.pop(outcome.name, None)
                continue
            revision = revisions.get(outcome.name)
            state = self._failing.get(outcome.name)
            failures = state.failures + 1 if state and state.revision == revision else 1
            delay = min(self.cap, self.base * 2 ** (failures - 1))
            self._failing[outcome.name] = _Failing(failures, self.clock() + delay, revision)

    def waiting(self) -> dict[str, float]:
        """Request -> seconds until its next try, for those still waiting."""
        now = self.clock()
        return {n: s.retry_at - now for n, s in self._failing.items() if s.retry_at > now}
